"""jaxcl.augment: shapes, dtypes, per-key determinism, jit/vmap, value ranges, multi-crop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import augment

SHAPES = {"signal1d": (6, 40, 1), "image": (6, 12, 12, 3), "tabular": (6, 13)}


def _x(kind, seed=0):
  x = jax.random.uniform(jax.random.key(seed), SHAPES[kind])
  return x if kind == "image" else 2 * x - 1


def _view(kind, **params):
  return jax.jit(augment.make_view_fn(kind, **params))


@pytest.fixture(scope="module")
def views():
  return {k: _view(k) for k in SHAPES}


@pytest.mark.parametrize("kind", list(SHAPES))
def test_shape_dtype_determinism_and_independence(kind, views):
  x = _x(kind)
  f = views[kind]
  a = f(jax.random.key(0), x)
  assert a.shape == x.shape and a.dtype == x.dtype
  assert np.isfinite(np.asarray(a)).all()
  np.testing.assert_array_equal(a, f(jax.random.key(0), x))   # same key, same view
  b = f(jax.random.key(1), x)
  assert not np.allclose(a, b)                                  # other key, other view
  # examples get independent draws: identical inputs give different views
  same = jnp.broadcast_to(x[:1], x.shape)
  c = np.asarray(f(jax.random.key(2), same)).reshape(x.shape[0], -1)
  assert not np.allclose(c[0], c[1])


def test_bf16_input_keeps_dtype():
  x = _x("image").astype(jnp.bfloat16)
  assert _view("image")(jax.random.key(0), x).dtype == jnp.bfloat16


def test_image_values_stay_in_unit_range_and_grayscale_channels_equal():
  x = _x("image")
  v = _view("image")(jax.random.key(3), x)
  assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
  g = _view("image", gray_prob=1.0, jitter_prob=0.0)(jax.random.key(3), x)
  np.testing.assert_allclose(g[..., 0], g[..., 1], atol=1e-6)
  np.testing.assert_allclose(g[..., 1], g[..., 2], atol=1e-6)


def test_identity_settings_reproduce_input():
  # With every random change switched off each view is exactly the input: checks the
  # warp / crop-resize geometry (half-pixel centres, interpolation weights) is the identity.
  sig = _view("signal1d", max_shift=0.0, stretch=(1.0, 1.0), scale=(1.0, 1.0),
                             ramp=0.0, noise_std=0.0, mask_prob=0.0)
  x = _x("signal1d")
  np.testing.assert_allclose(sig(jax.random.key(0), x), x, atol=1e-6)
  img = _view("image", crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0),
                             flip_prob=0.0, jitter_prob=0.0, gray_prob=0.0, blur_prob=0.0)
  x = _x("image")
  np.testing.assert_allclose(img(jax.random.key(0), x), x, atol=1e-5)
  tab = _view("tabular", noise_std=0.0, drop_prob=0.0)
  np.testing.assert_array_equal(tab(jax.random.key(0), _x("tabular")), _x("tabular"))


def test_signal_shift_is_a_circular_roll():
  # An integer shift with nothing else is np.roll: pick max_shift so d is drawn in [-L, L]
  # and compare against every roll.
  x = _x("signal1d")[:1]
  f = _view("signal1d", max_shift=1.0, stretch=(1.0, 1.0), scale=(1.0, 1.0),
                           ramp=0.0, noise_std=0.0, mask_prob=0.0)
  v = np.asarray(f(jax.random.key(7), x))[0, :, 0]
  x0 = np.asarray(x)[0, :, 0]
  # the view is a convex mix of two neighbouring rolls
  errs = []
  for s in range(40):
    a, b = np.roll(x0, s), np.roll(x0, s + 1)
    w = np.clip(np.dot(v - a, b - a) / max(np.dot(b - a, b - a), 1e-12), 0, 1)
    errs.append(np.abs(v - (a + w * (b - a))).max())
  assert min(errs) < 1e-5


def test_masking_zeroes_one_contiguous_segment():
  f = _view("signal1d", max_shift=0.0, stretch=(1.0, 1.0), scale=(1.0, 1.0),
                           ramp=0.0, noise_std=0.0, mask_prob=1.0, mask_frac=(0.25, 0.25))
  x = _x("signal1d") + 3.0  # nowhere zero
  v = np.asarray(f(jax.random.key(0), x))[..., 0]
  for row in v:
    z = np.flatnonzero(row == 0)
    assert len(z) == 10 and np.all(np.diff(z) == 1)


def test_tabular_dropout_rate():
  f = _view("tabular", noise_std=0.0, drop_prob=0.3, mask_value=0.0)
  x = jnp.ones((512, 13))
  frac = float(jnp.mean(f(jax.random.key(0), x) == 0))
  assert abs(frac - 0.3) < 0.03


def test_two_views_differ_and_vmap_over_keys():
  f = augment.make_view_fn("signal1d")
  x = _x("signal1d")
  v1, v2 = jax.jit(lambda k, x: augment.two_views(f, k, x))(jax.random.key(0), x)
  assert v1.shape == v2.shape == x.shape and not np.allclose(v1, v2)
  many = jax.jit(jax.vmap(lambda k: f(k, x)))(jax.random.split(jax.random.key(0), 3))
  assert many.shape == (3, *x.shape)


def test_bad_arguments_name_the_problem():
  with pytest.raises(ValueError, match="kind"):
    augment.make_view_fn("audio")
  with pytest.raises(ValueError, match="crop_scael"):
    augment.make_view_fn("image", crop_scael=(0.1, 1.0))
  with pytest.raises(ValueError, match="per-example dims"):
    augment.make_view_fn("image")(jax.random.key(0), jnp.zeros((2, 8, 8)))


@pytest.mark.parametrize("shape,gsize,lsize,want_g,want_l", [
    ((2, 8, 8, 3), 6, 3, (6, 6, 3), (3, 3, 3)),
    ((2, 40, 1), 32, 12, (32, 1), (12, 1)),
])
def test_multi_crop_sizes(shape, gsize, lsize, want_g, want_l):
  x = jax.random.uniform(jax.random.key(0), shape)
  crops = jax.jit(lambda k, x: augment.multi_crop(k, x, global_size=gsize, local_size=lsize,
                                                  num_local=2))(jax.random.key(1), x)
  assert [c.shape[1:] for c in crops] == [want_g] * 2 + [want_l] * 2
  assert not np.allclose(crops[0], crops[1])
  assert all(np.isfinite(np.asarray(c)).all() for c in crops)
