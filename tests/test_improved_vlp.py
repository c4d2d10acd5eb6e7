"""Improved CLIP baselines / CL2L (jaxcl.losses.improved_vlp, arXiv 2305.08675): a float64 loop
reference written here (label smoothing as explicit soft targets, not the library's mean-logit
decomposition), gradients by finite differences, the reductions to InfoNCE / CLIP, 8 devices
= 1 device (value and gradient, dense and ring), bf16 and extreme inputs, argument errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import check_value_and_grad, fd_coords
from tests.reference import unit as _unit

B, D, DH = 6, 4, 3
VALID = np.array([1, 1, 0, 1, 1, 1], bool)            # row 2 is padding


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ the float64 loop reference


def ref_smoothed(q, k, t, eps, valid=None, normalize=True):
  """Cross-entropy of each valid row against the soft targets (1 - eps) onehot + eps / N over
  the N valid keys, by loops (PyTorch's ``cross_entropy(..., label_smoothing=eps)``)."""
  b = len(q)
  ok = [True] * b if valid is None else [bool(v) for v in valid]
  prep = (lambda x: _unit(x)) if normalize else (lambda x: np.asarray(x, np.float64))
  out = np.zeros(b)
  keys = [j for j in range(b) if ok[j]]
  n = len(keys)
  for i in range(b):
    if not ok[i]:
      continue
    lg = [float(np.dot(prep(q[i]), prep(k[j]))) / t for j in keys]
    m = max(lg)
    log_z = m + math.log(sum(math.exp(v - m) for v in lg))
    for j, v in zip(keys, lg):
      target = (1 - eps) * (j == i) + eps / n
      out[i] -= target * (v - log_z)
  return out


def ref_cl2l(u, v, hi, ht, t, th, eps, reduction="sum", valid=None, normalize=True):
  """The CL2L equation of the module docstring, term by term."""
  gi = ref_smoothed(u, v, t, 0.0, valid, normalize)
  gt = ref_smoothed(v, u, t, 0.0, valid, normalize)
  m = 0 if hi is None else hi.shape[1]
  li, lt = np.zeros(len(u)), np.zeros(len(u))
  for a in range(m):
    for w in range(m):
      li += ref_smoothed(hi[:, a], ht[:, w], th, eps, valid, normalize) / (m * m)
      lt += ref_smoothed(ht[:, a], hi[:, w], th, eps, valid, normalize) / (m * m)
  out = (gi + m * li) / (1 + m) + (gt + m * lt) / (1 + m)
  return out if reduction == "sum" else out / 2


# ------------------------------------------------------------------ value and gradient


def _check(lib_fn, ref_fn, inputs):
  return check_value_and_grad(lib_fn, ref_fn, inputs)[0]


SMOOTHED = {
    "eps0.1": dict(temperature=0.1, label_smoothing=0.1),
    "eps0.3_valid": dict(temperature=0.2, label_smoothing=0.3, valid=VALID),
    "eps0.2_unnormalized": dict(temperature=1.0, label_smoothing=0.2, normalize=False),
}


@pytest.mark.parametrize("case", list(SMOOTHED))
def test_smoothed_info_nce_matches_the_loop_reference(case):
  kw = SMOOTHED[case]
  q, k = _data(0, B, D), _data(1, B, D)
  k += q
  ref_kw = dict(valid=kw.get("valid"), normalize=kw.get("normalize", True))
  want = _check(lambda q, k: losses.contrib.smoothed_info_nce(q, k, **kw),
                lambda q, k: ref_smoothed(q, k, kw["temperature"], kw["label_smoothing"],
                                          **ref_kw), [q, k])
  if "valid" in kw:
    assert want[2] == 0 and np.all(want[VALID] != 0)


CL2L = {
    "m2_sum": (dict(temperature=0.07, local_temperature=0.1, label_smoothing=0.1), 2),
    "m1_avg_valid": (dict(temperature=0.2, local_temperature=0.3, label_smoothing=0.25,
                          reduction="avg", valid=VALID), 1),
    "m3_unnormalized": (dict(temperature=1.0, local_temperature=2.0, label_smoothing=0.1,
                             normalize=False), 3),
}


@pytest.mark.parametrize("case", list(CL2L))
def test_cl2l_matches_the_loop_reference(case):
  kw, m = CL2L[case]
  u, v = _data(2, B, D), _data(3, B, D)
  v += u
  hi, ht = _data(4, B, m, DH), _data(5, B, m, DH)
  ht += hi[:, ::-1]
  ref = lambda u, v, hi, ht: ref_cl2l(
      u, v, hi, ht, kw["temperature"], kw["local_temperature"], kw["label_smoothing"],
      kw.get("reduction", "sum"), kw.get("valid"), kw.get("normalize", True))
  want = _check(lambda u, v, hi, ht: losses.contrib.cl2l_loss(u, v, hi, ht, **kw), ref, [u, v, hi, ht])
  if "valid" in kw:
    assert want[2] == 0 and np.all(want[VALID] != 0)


def test_traced_temperatures_and_smoothing_get_their_gradients():
  u, v, hi, ht = _data(6, B, D), _data(7, B, D), _data(8, B, 2, DH), _data(9, B, 2, DH)
  x0, e = np.array([0.1, 0.2, 0.15]), 1e-6
  lib = lambda x: jnp.sum(losses.contrib.cl2l_loss(u, v, hi, ht, temperature=x[0],
                                           local_temperature=x[1], label_smoothing=x[2]))
  value, got = jax.jit(jax.value_and_grad(lib))(jnp.asarray(x0, jnp.float32))
  ref = lambda x: float(np.sum(ref_cl2l(u, v, hi, ht, *x)))
  np.testing.assert_allclose(value, ref(x0), rtol=1e-5)
  np.testing.assert_allclose(got, fd_coords(ref, x0, [(0,), (1,), (2,)], eps=e), rtol=1e-4)


def test_reductions_to_info_nce_and_clip():
  u, v, hi = _data(10, B, D), _data(11, B, D), _data(12, B, 2, DH)
  got = jax.jit(lambda u, v, hi: (
      losses.contrib.smoothed_info_nce(u, v, temperature=0.2, label_smoothing=0.0),
      losses.info_nce(u, v, temperature=0.2),
      losses.contrib.cl2l_loss(u, v, temperature=0.2, reduction="avg"),
      losses.clip_loss(u, v, temperature=0.2),
      # the same local views for both modalities, no smoothing, T_h = T and u = v = h:
      # every term is the same CLIP loss, so the mixture is that loss.
      losses.contrib.cl2l_loss(hi[:, 0], hi[:, 0], hi, hi, temperature=0.2, local_temperature=0.2,
                       label_smoothing=0.0, reduction="avg"),
      losses.clip_loss(hi[:, 0], hi[:, 0], temperature=0.2)))(u, v, hi)
  np.testing.assert_allclose(got[0], got[1], rtol=1e-6)
  np.testing.assert_allclose(got[2], got[3], rtol=1e-6)
  assert got[4].shape == (B,) and np.all(np.isfinite(np.asarray(got[4])))


def test_smoothing_is_the_mean_logit_mixture():
  # CE_eps = (1 - eps) CE + eps * (lse - mean logit): linear in eps.
  q, k = _data(13, B, D), _data(14, B, D)
  f = jax.jit(lambda e: losses.contrib.smoothed_info_nce(q, k, temperature=0.3, label_smoothing=e))
  a, b, c = (np.asarray(f(e), np.float64) for e in (0.0, 0.2, 0.4))
  np.testing.assert_allclose(b, (a + c) / 2, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN = 16, 5
SVALID = np.ones(NB, bool)
SVALID[[3, 12]] = False
SX = _data(20, NB, 2, 2, DIN)                          # [B, views, modalities, DIN]
SX[:, :, 1] += SX[:, :, 0]
SW = (_data(21, DIN, D), _data(22, DIN, D), _data(23, D, DH), _data(24, D, DH))


def _model(params, x, axis_name, impl):
  del axis_name, impl
  wi, wt, hi_w, ht_w = params
  u, v = x[:, 0, 0] @ wi, x[:, 0, 1] @ wt
  hi = jnp.stack([(x[:, a, 0] @ wi) @ hi_w for a in range(2)], axis=1)
  ht = jnp.stack([(x[:, a, 1] @ wt) @ ht_w for a in range(2)], axis=1)
  return u, v, hi, ht


SHARDED = ("cl2l_dense", "smoothed_ring")


@pytest.mark.parametrize("case", SHARDED)
def test_sharded_equals_single_device(case):
  # The full CL2L loss with the dense kernel; the smoothed term alone with the ring kernel
  # (single device: its blockwise form), small key blocks.
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))

  def make(axis_name):
    def fn(params, x, valid):
      u, v, hi, ht = _model(params, x, axis_name, None)
      if case == "smoothed_ring":
        return losses.contrib.smoothed_info_nce(hi[:, 0], ht[:, 1], temperature=0.2,
                                        label_smoothing=0.2, valid=valid, axis_name=axis_name,
                                        impl="ring" if axis_name else "blockwise", block_size=4)
      return losses.contrib.cl2l_loss(u, v, hi, ht, temperature=0.1, local_temperature=0.2,
                              label_smoothing=0.1, valid=valid, axis_name=axis_name)
    return fn

  single = make(None)
  sharded = jax.shard_map(make("d"), mesh=mesh, in_specs=(P(), P("d"), P("d")),
                          out_specs=P("d"))

  def per_example_and_mean_grad(f, params, *args):
    per, vjp = jax.vjp(lambda p: f(p, *args), params)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  @jax.jit
  def both(params, x, valid):
    return (per_example_and_mean_grad(single, params, x, valid),
            per_example_and_mean_grad(sharded, params, x, valid))

  (v1, g1), (v8, g8) = both(SW, SX, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.abs(v1).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_inputs():
  u, v, hi, ht = _data(30, B, D), _data(31, B, D), _data(32, B, 2, DH), _data(33, B, 2, DH)
  v += u
  ht += hi
  cl2l = lambda *a: losses.contrib.cl2l_loss(*a, temperature=0.1, local_temperature=0.1)
  fn = lambda q, k, t=0.1: losses.contrib.smoothed_info_nce(q, k, temperature=t, label_smoothing=0.1)
  grad = jax.grad(lambda q, k, t=0.1: jnp.sum(fn(q, k, t=t)), argnums=(0, 1))

  @jax.jit
  def variants(u, v, hi, ht):
    bf = [x.astype(jnp.bfloat16) for x in (u, v, hi, ht)]
    zero = u.at[1].set(0.0)
    return (cl2l(u, v, hi, ht), cl2l(*bf),
            jax.grad(lambda *a: jnp.sum(cl2l(*a)), argnums=(0, 1, 2, 3))(*bf),
            (fn(1e4 * u, v), grad(1e4 * u, v)), (fn(u, v, 1e-3), grad(u, v, t=1e-3)),
            (fn(zero, v), grad(zero, v)))

  ref, low, g_low, *extreme = variants(u, v, hi, ht)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=3e-2, atol=3e-2)
  for value, grads in [(None, g_low)] + extreme:
    if value is not None:
      assert np.all(np.isfinite(np.asarray(value)))
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in grads)


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  u, v, hi, ht = _data(40, B, D), _data(41, B, D), _data(42, B, 2, DH), _data(43, B, 2, DH)
  cases = [
      (lambda: losses.contrib.smoothed_info_nce(u, v[:3]), r"smoothed_info_nce: 'query' and 'key' "
                                                   r"must have the same batch size"),
      (lambda: losses.contrib.smoothed_info_nce(u, v, label_smoothing=1.0),
       r"'label_smoothing' must be a float in \[0, 1\)"),
      (lambda: losses.contrib.smoothed_info_nce(u.astype(np.int32), v),
       r"'query' must be a floating-point array"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi), r"cl2l_loss: pass both 'image_local' and 'text_local'"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi[:, 0], ht), r"'image_local' must have rank 3"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi[:3], ht), r"'image_local' must have the batch size"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi, ht[:, :1]),
       r"'image_local' and 'text_local' must have the same number of views m"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi, ht[..., :2]),
       r"'image_local' and 'text_local' must have the same feature size"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi[:, :0], ht[:, :0]), r"at least 1 view"),
      (lambda: losses.contrib.cl2l_loss(u, v, hi, ht, local_temperature=0.0),
       r"'local_temperature' must be > 0"),
      (lambda: losses.contrib.cl2l_loss(u, v, temperature=-1.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.cl2l_loss(u, v, reduction="mean"), r"'reduction' must be one of"),
      (lambda: losses.contrib.cl2l_loss(u, v, valid=VALID[:2]), r"'valid' must have shape"),
      (lambda: losses.contrib.cl2l_loss(u, v[:, :2]), r"'image' and 'text' must have the same feature"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


# ------------------------------------------------------------------ the trainer adapter


def test_adapter_composes_the_terms_and_owns_heads_and_scales():
  # z [B, K*M, D] view-major (column v*M + m): view 0 the global pair, views 1, 2 local
  # ("rest"), SimCLR on the last two image views; compared with the terms called directly.
  from jaxcl.train import objectives
  obj = objectives.make_objective("cl2l_loss", {
      "temperature": 0.07, "local_temperature": 0.1, "label_smoothing": 0.1,
      "local_views": "rest", "ssl_weight": 0.5, "ssl_temperature": 0.2, "head_hidden": 6,
      "head_out": 3}, 6)
  params = obj.project(obj.init(jax.random.key(0), D))
  assert sorted(params) == ["image_head", "local_log_scale", "log_scale", "ssl_head",
                            "text_head"]
  np.testing.assert_allclose(params["log_scale"], math.log(1 / 0.07), rtol=1e-6)
  z = _data(50, B, 6, D)
  head = losses.contrib.contrast_head

  def direct(p, z):
    return losses.contrib.cl2l_loss(
        z[:, 0], z[:, 1], jnp.stack([head(p["image_head"], z[:, v]) for v in (2, 4)], 1),
        jnp.stack([head(p["text_head"], z[:, v]) for v in (3, 5)], 1), temperature=0.07,
        local_temperature=0.1, label_smoothing=0.1) + 0.5 * losses.nt_xent(
            head(p["ssl_head"], z[:, 2]), head(p["ssl_head"], z[:, 4]), temperature=0.2)

  clip = objectives.make_objective("cl2l_loss", {"local_views": "none"}, 2)
  p = clip.init(jax.random.key(1), D)
  got, want, grads, clip_got, clip_want = jax.jit(lambda params, p, z: (
      obj.apply(params, z, None, None, None), direct(params, z),
      jax.grad(lambda q: jnp.mean(obj.apply(q, z, None, None, None)))(params),
      clip.apply(p, z[:, :2], None, None, None),
      2 * losses.clip_loss(z[:, 0], z[:, 1], temperature=0.07)))(params, p, z)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree.leaves(grads))
  # project clamps both scales at max_scale = 100; "none" is CLIP (x 2: reduction "sum").
  big = obj.project({**params, "log_scale": jnp.float32(9.0), "local_log_scale": 7.0})
  assert float(big["log_scale"]) == float(big["local_log_scale"]) == pytest.approx(math.log(100))
  assert sorted(p) == ["log_scale"] and sorted(clip.health(p, None, None)) == ["vlp/logit_scale"]
  np.testing.assert_allclose(clip_got, clip_want, rtol=1e-5)


def test_adapter_errors_name_the_argument():
  from jaxcl.train import objectives
  mk = lambda **kw: objectives.make_objective("cl2l_loss", kw, 4)
  for kw, match in [({"local_views": "some"}, r"'local_views' must be one of"),
                    ({"head_hidden": -1}, r"'head_hidden' must be an int >= 0"),
                    ({"image_modality": 1, "text_modality": 1}, r"two different modalities"),
                    ({"ssl_weight": -1.0}, r"'ssl_weight' must be >= 0"),
                    ({"local_temperature": 0.0}, r"must be > 0"),
                    ({"max_scale": 0.0}, r"'max_scale' must be > 0")]:
    with pytest.raises(ValueError, match=match):
      mk(**kw)
  obj = mk(local_views="rest")
  with pytest.raises(ValueError, match=r"local_views='rest' needs >= 2 views"):
    obj.apply(obj.init(jax.random.key(0), D), _data(51, B, 2, D), None, None, None)
  with pytest.raises(ValueError, match=r"not a multiple of num_modalities=2"):
    obj.apply(obj.init(jax.random.key(0), D), _data(51, B, 3, D), None, None, None)


def test_multimodal_local_views_get_their_per_modality_overrides(monkeypatch):
  # The trainer's multi-crop local views on a multimodal dataset: views.local_params =
  # {modality: overrides of augment.modalities}; here the local captions are fully masked and
  # the global view keeps them as they are.
  from jaxcl import data
  from jaxcl.train import trainer
  from configs.improved_vlp_digits import get_config
  seen = {}  # the step's view functions; no state or step is built
  monkeypatch.setattr(trainer, "create_state", lambda *a, **kw: (None, None))
  monkeypatch.setattr(trainer, "make_train_step", lambda *a, **kw: seen.setdefault("views", a[4]))
  c = get_config()
  c.model.encoder_kwargs = {"hidden": (16,)}
  c.model.modalities = {"text": {"encoder_kwargs": {"dim": 8, "depth": 1, "heads": 1}}}
  c.views.local_params = {"text": {"mask_prob": 1.0}}
  trainer.setup(c)
  views = seen["views"]
  assert len(views) == 3 and views[1] is views[2] and views[0] is not views[1]
  x = jnp.asarray(data.load_arrays("digits_captions", "test")["x"][:4])
  g, loc = jax.jit(lambda x: (views[0](jax.random.key(0), x), views[1](jax.random.key(0), x)))(x)
  tokens = np.asarray(x[:, 64:])
  np.testing.assert_array_equal(np.asarray(g[:, 64:]), tokens)
  np.testing.assert_array_equal(np.asarray(loc[:, 64:]), np.where(tokens > 0, 1.0, 0.0))
  assert not np.array_equal(np.asarray(g[:, :64]), np.asarray(x[:, :64]))  # shifted images
