"""Positive logits come from the same similarity product as the candidates, at any precision.

On TPU the default matmul precision rounds the operands to bfloat16 (TF32 on GPU). A loss that
took its positive logit from a separate float32 ``sum(q * k)`` while the log-sum-exp took the
same logit from the kernel's product went negative (-0.13 per example at T = 0.01, B = 256) and
its gradient was rounding noise once the positives dominate. ``jaxcl.kernels.bfloat16_products``
(a testing hook) emulates TPU's default on CPU: with it, every loss that is >= 0 in exact
arithmetic stays >= 0 and gradients stay within bfloat16 tolerance of the exact ones;
``precision="highest"`` turns the rounding off again, and reaches every product (dense,
blockwise and ring kernels, forward and backward).
"""
import functools

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import kernels, losses

T, B, D = 0.01, 256, 32
EPS32 = float(np.finfo(np.float32).eps)


def _views(b, noise, seed=0):
  r = np.random.default_rng(seed)
  x0 = r.normal(size=(b, D))
  return np.stack([x0 + noise * r.normal(size=(b, D)) for _ in range(3)], 1).astype(np.float32)


# Two regimes: positives dominate (the loss has converged, ~0) and a moderate loss (~5).
DATA = {"converged": _views(B, 0.3), "moderate": _views(B, 1.0)}
SMALL = {name: x[:32] for name, x in DATA.items()}   # symile n_squared: N^2 candidates
LABELS = np.arange(B, dtype=np.int32) % (B // 2)

# name -> (f(x, **kw) -> per-example, >= 0 in exact arithmetic, small batch)
LOSSES = {
    "info_nce": (lambda x, **kw: losses.info_nce(x[:, 0], x[:, 1], temperature=T, **kw), True),
    "info_nce_hard": (lambda x, **kw: losses.info_nce(x[:, 0], x[:, 1], negatives=x[:, 2:],
                                                      temperature=T, **kw), True),
    "clip_loss": (lambda x, **kw: losses.clip_loss(x[:, 0], x[:, 1], temperature=T, **kw), True),
    "nt_xent": (lambda x, **kw: losses.nt_xent(x[:, 0], x[:, 1], temperature=T, **kw), True),
    "dcl": (lambda x, **kw: losses.dcl(x[:, 0], x[:, 1], temperature=T, **kw), False),
    "dclw": (lambda x, **kw: losses.dclw(x[:, 0], x[:, 1], temperature=T, **kw), False),
    "supcon": (lambda x, **kw: losses.supcon(x[:, :2], LABELS[:x.shape[0]], temperature=T, **kw),
               True),
    "mv_info_nce": (lambda x, **kw: losses.mv_info_nce(x, temperature=T, **kw), True),
    "mv_dhel": (lambda x, **kw: losses.mv_dhel(x, temperature=T, **kw), False),
    "symile_n": (lambda x, **kw: losses.symile([x[:, 0], x[:, 1], x[:, 2]], temperature=T,
                                               rng=jax.random.key(0), **kw), True),
    "symile_n_squared": (lambda x, **kw: losses.symile(
        [x[:, 0], x[:, 1], x[:, 2]], temperature=T, negatives="n_squared", **kw), True),
    "siglip_loss": (lambda x, **kw: losses.siglip_loss(x[:, 0], x[:, 1], temperature=T,
                                                       bias=-10.0, **kw), True),
}


def _data(name):
  return SMALL if name == "symile_n_squared" else DATA


def _values_and_grads(f, data, **kw):
  """One jitted function per call, traced here (the hook is read at trace time)."""
  def one(x):
    per, vjp = jax.vjp(lambda x: f(x, block_size=64, **kw), x)
    return per, vjp(jnp.full_like(per, 1.0 / per.shape[0]))[0]
  return jax.jit(lambda d: {n: one(x) for n, x in d.items()})(data)


@pytest.mark.parametrize("impl", ["dense", "blockwise"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_bfloat16_products_keep_losses_nonnegative_and_gradients_close(name, impl):
  f, nonneg = LOSSES[name]
  data = _data(name)
  exact = _values_and_grads(f, data, impl=impl)
  with kernels.bfloat16_products():
    rounded = _values_and_grads(f, data, impl=impl)
  for regime in data:
    (per_e, g_e), (per_r, g_r) = exact[regime], rounded[regime]
    per_e, per_r, g_e, g_r = (np.asarray(a) for a in (per_e, per_r, g_e, g_r))
    assert np.all(np.isfinite(per_r)) and np.all(np.isfinite(g_r)), regime
    if nonneg:
      # A positive that is a candidate can never beat the log-sum-exp: >= 0 up to float32
      # rounding (was -0.13 with the positive from a separate float32 product).
      assert per_r.min() > -1e-6, (regime, per_r.min())
      assert per_e.min() > -1e-6, (regime, per_e.min())
    # bfloat16 operands move each logit by ~2^-9 |s| with |s| <= 1/T = 100, hence a few % of
    # the largest gradient entry; the floor is float32 cancellation in a converged loss
    # ((1/T) (sum_j p_j k_j - k_i) with p_i ~ 1). Rounding noise / T, the old bias, is 1e3 x it.
    tol = 5e-2 * np.abs(g_e).max() + 64 * EPS32 / (T * per_e.shape[0])
    err = np.abs(g_r - g_e).max()
    assert err <= tol, (regime, err, tol)


@pytest.mark.parametrize("name", list(LOSSES))
def test_precision_highest_turns_the_rounding_off(name):
  # precision= reaches every product of the loss, the positives' included: with the hook on
  # and precision="highest" nothing is rounded.
  f, _ = LOSSES[name]
  data = {"moderate": _data(name)["moderate"]}
  for impl in ("dense", "blockwise"):
    exact = _values_and_grads(f, data, impl=impl)
    with kernels.bfloat16_products():
      high = _values_and_grads(f, data, impl=impl, precision="highest")
      pair = _values_and_grads(f, data, impl=impl,
                               precision=("highest", "float32"))
    for got in (high, pair):  # noqa: B007
      for a, e in zip(got["moderate"], exact["moderate"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-6,
                                   atol=1e-6 * np.abs(np.asarray(e)).max(), err_msg=impl)


def _dot_precisions(jaxpr):
  """Every dot_general's precision in a closed jaxpr, sub-jaxprs (scan, custom_vjp, shard_map)
  included."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      out.append(eqn.params["precision"])
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (tuple, list)) else (p,)):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          out += _dot_precisions(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          out += _dot_precisions(sub)
  return out


HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("name", list(LOSSES))
def test_precision_reaches_every_dot_forward_and_backward(name):
  f, _ = LOSSES[name]
  x = _data(name)["moderate"][:16]
  for impl in ("dense", "blockwise"):
    g = jax.grad(lambda x: jnp.sum(f(x, impl=impl, block_size=8, precision="highest")))
    precisions = _dot_precisions(jax.make_jaxpr(g)(x).jaxpr)
    assert precisions and all(p == HIGHEST for p in precisions), (impl, set(precisions))


@pytest.mark.parametrize("name", ["info_nce", "siglip_loss"])
def test_precision_reaches_the_ring(name):
  f, _ = LOSSES[name]
  mesh = jax.make_mesh((2,), ("d",), devices=jax.devices()[:2],
                       axis_types=(jax.sharding.AxisType.Auto,))
  per_device = functools.partial(f, impl="ring", block_size=4, axis_name="d",
                                 precision="highest")
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=P("d"), out_specs=P("d"))
  x = DATA["moderate"][:16]
  with jax.set_mesh(mesh):
    precisions = _dot_precisions(
        jax.make_jaxpr(jax.grad(lambda x: jnp.sum(sharded(x))))(x).jaxpr)
  assert precisions and all(p == HIGHEST for p in precisions), set(precisions)


def test_bad_precision_is_an_error_naming_it():
  x = DATA["moderate"][:4]
  with pytest.raises(ValueError, match=r"info_nce: 'precision' must be"):
    losses.info_nce(x[:, 0], x[:, 1], precision="fp8")


def test_hook_is_scoped():
  a = jnp.float32([[1.0 + 2.0 ** -10]])
  exact = float(kernels.product("id,jd->ij", a, a)[0, 0])
  with kernels.bfloat16_products():
    assert float(kernels.product("id,jd->ij", a, a)[0, 0]) == 1.0
  assert float(kernels.product("id,jd->ij", a, a)[0, 0]) == exact != 1.0
