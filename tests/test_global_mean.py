"""``jaxcl.losses.global_mean``: the masked mean of per-example losses over the global batch.

Float64 loop reference, sharded (``shard_map`` over the 8 virtual devices) == single device for
value and gradient, padding (padded rows neither count nor receive a gradient, even if their
value is NaN) and an all-padding batch (0, zero gradient).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses

B, D = 24, 5
R = np.random.default_rng(0)
PER = R.normal(size=(B,)).astype(np.float32) ** 2
VALID = R.random(B) < 0.6
X = R.normal(size=(B, 2, D)).astype(np.float32)


def _reference(per, valid):
  total, count = 0.0, 0
  for v, ok in zip(np.asarray(per, np.float64), valid):
    if ok:
      total += v
      count += 1
  return total / count if count else 0.0


@pytest.mark.parametrize("valid", [None, VALID, np.zeros(B, bool)], ids=["all", "padded", "none"])
def test_matches_a_float64_loop(valid):
  got = losses.global_mean(PER, valid)
  assert got.dtype == jnp.float32 and got.shape == ()
  want = _reference(PER, np.ones(B, bool) if valid is None else valid)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  with jax.enable_x64(True):
    np.testing.assert_allclose(float(losses.global_mean(np.float64(PER), valid)), want,
                               rtol=1e-6)


def test_without_padding_it_is_the_plain_mean():
  per = jnp.asarray(PER)
  assert float(losses.global_mean(per)) == float(jnp.mean(per))
  assert float(losses.global_mean(per, np.ones(B, bool))) == float(jnp.mean(per))


def test_padded_rows_neither_count_nor_get_a_gradient():
  per = jnp.asarray(PER).at[~VALID].set(jnp.nan)           # whatever a padded row holds
  v, g = jax.value_and_grad(lambda p: losses.global_mean(p, VALID))(per)
  np.testing.assert_allclose(float(v), _reference(PER, VALID), rtol=1e-6)
  g = np.asarray(g)
  np.testing.assert_array_equal(g[~VALID], 0.0)
  np.testing.assert_allclose(g[VALID], 1.0 / VALID.sum(), rtol=1e-6)


def test_all_padding_is_zero_with_zero_gradient():
  none = np.zeros(B, bool)
  v, g = jax.value_and_grad(lambda p: losses.global_mean(p, none))(jnp.asarray(PER))
  assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def _loss(x, valid, axis_name=None):
  per = losses.nt_xent(x[:, 0], x[:, 1], valid=valid, axis_name=axis_name)
  return losses.global_mean(per, valid, axis_name)


@pytest.mark.parametrize("valid", [VALID, np.zeros(B, bool), None], ids=["padded", "none", "all"])
def test_sharded_equals_single_device(valid):
  n = 8
  mesh = jax.make_mesh((n,), ("d",), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))
  valid_arr = np.ones(B, bool) if valid is None else valid
  if valid is None:
    local = lambda x, v: _loss(x, None, "d")
  else:
    local = lambda x, v: _loss(x, v, "d")
  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P())
  with jax.set_mesh(mesh):
    v, g = jax.jit(jax.value_and_grad(sharded))(X, valid_arr)
  v_ref, g_ref = jax.jit(jax.value_and_grad(lambda x: _loss(x, valid)))(X)
  np.testing.assert_allclose(float(v), float(v_ref), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5,
                             atol=1e-6 * max(np.abs(np.asarray(g_ref)).max(), 1e-30))
  assert np.all(np.isfinite(np.asarray(g)))


def test_errors_name_the_argument():
  with pytest.raises(ValueError, match=r"global_mean: 'per_example' must have rank 1"):
    losses.global_mean(np.ones((B, 2), np.float32))
  with pytest.raises(ValueError, match=r"global_mean: 'valid' must have shape"):
    losses.global_mean(PER, VALID[:3])
  with pytest.raises(TypeError, match=r"global_mean: 'per_example' must be a floating"):
    losses.global_mean(np.ones(B, np.int32))
