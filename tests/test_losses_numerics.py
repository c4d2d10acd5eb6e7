"""Acceptance 3: mixed precision and extreme inputs.

* bfloat16 / float16 inputs give finite float32 results within 2e-2 relative of float32 inputs;
  float64 inputs (with x64 enabled) are accepted and still give float32 results;
* inputs scaled by 1e4 and inputs with an all-zero row give finite values and gradients.

One jitted function per loss computes every variant, so each loss compiles once.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses

B, K, D = 8, 3, 6
LABELS = np.array([0, 1, 0, 1, 2, 2, 3, 0], np.int32)
X = np.random.default_rng(0).normal(size=(B, K, D)).astype(np.float32)
X[:, 1] += X[:, 0]                                  # correlated views: losses away from log N
HARD = np.random.default_rng(1).normal(size=(B, 2, D)).astype(np.float32)

# name -> f(x [B, K, D]) -> per-example float32 losses
LOSSES = {
    "info_nce": lambda x: losses.info_nce(x[:, 0], x[:, 1], negatives=x[:, 2:3]),
    "clip_loss": lambda x: losses.clip_loss(x[:, 0], x[:, 1]),
    "nt_xent": lambda x: losses.nt_xent(x[:, 0], x[:, 1]),
    "dcl": lambda x: losses.dcl(x[:, 0], x[:, 1]),
    "dclw": lambda x: losses.dclw(x[:, 0], x[:, 1]),
    "siglip_loss": lambda x: losses.siglip_loss(x[:, 0], x[:, 1], temperature=0.1, bias=-5.0),
    "supcon": lambda x: losses.supcon(x[:, :2], LABELS),
    "mv_info_nce": lambda x: losses.mv_info_nce(x),
    "mv_dhel": lambda x: losses.mv_dhel(x),
    "symile": lambda x: losses.symile([x[:, 0], x[:, 1], x[:, 2]], temperature=0.1,
                                      negatives="n_squared"),
}


def _with_zero_row(x):
  return x.at[2].set(0.0)


@pytest.mark.parametrize("name", list(LOSSES))
def test_precision_and_extreme_inputs(name):
  f = LOSSES[name]
  grad = jax.grad(lambda x: jnp.sum(f(x)))

  @jax.jit
  def variants(x):
    low = {str(dt.dtype): f(x.astype(dt)) for dt in (jnp.bfloat16, jnp.float16)}
    big, zero = 1e4 * x, _with_zero_row(x)
    # float16 rows of norm ~1e4 overflow if squared in float16: normalisation must upcast.
    low["float16 x 1e4"] = f(big.astype(jnp.float16))
    return f(x), low, (f(big), grad(big)), (f(zero), grad(zero)), grad(x.astype(jnp.bfloat16))

  ref, low, (v_big, g_big), (v_zero, g_zero), g_bf16 = variants(X)
  ref = np.asarray(ref)
  assert ref.dtype == np.float32 and np.all(np.isfinite(ref))
  for dt, val in low.items():
    val = np.asarray(val)
    assert val.dtype == np.float32, dt  # logits, log-sum-exp and result in float32
    assert np.all(np.isfinite(val)), dt
    # 2e-2 relative to the loss's scale (per-example values near 0 have no relative meaning).
    np.testing.assert_allclose(val, ref, rtol=2e-2, atol=2e-2 * np.abs(ref).mean(), err_msg=dt)
    np.testing.assert_allclose(val.mean(), ref.mean(), rtol=2e-2, err_msg=dt)
  # The gradient w.r.t. a bfloat16 input is bfloat16 (jax keeps the primal dtype) and finite.
  assert g_bf16.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g_bf16, np.float32)))
  for what, (v, g) in {"x 1e4": (v_big, g_big), "zero row": (v_zero, g_zero)}.items():
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)), what
  # normalize=True: scaling every row by 1e4 changes nothing, up to float32 rounding of the
  # normalisation (an ulp of the unit rows, amplified by DCLW's exp weights: 2.1e-5 relative
  # seen on an AVX-512 Xeon, < 1e-5 on an AVX2 EPYC).
  np.testing.assert_allclose(v_big, ref, rtol=1e-4, atol=1e-6, err_msg="scale invariance")
  # A zero row normalises to zero; its gradient is finite (checked above), the rest unchanged.
  assert np.abs(np.asarray(g_zero)).sum() > 0


def test_unnormalized_large_inputs_stay_finite():
  # normalize=False with huge logits (1e8 / T): the log-sum-exp must not overflow.
  x = 1e4 * X
  f = lambda x: jnp.sum(losses.info_nce(x[:, 0], x[:, 1], negatives=x[:, 2:3],
                                        normalize=False))
  v, g = jax.jit(jax.value_and_grad(f))(x)
  assert np.isfinite(v) and np.all(np.isfinite(g))


def test_float64_inputs_give_float32():
  x = np.asarray(X, np.float64)
  with jax.enable_x64(True):
    out = losses.nt_xent(x[:, 0], x[:, 1])
    g = jax.grad(lambda a: jnp.sum(losses.nt_xent(a, x[:, 1])))(x[:, 0])
  assert out.dtype == jnp.float32
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(out, losses.nt_xent(X[:, 0], X[:, 1]), rtol=1e-6)


# name -> f(x [B, K, D], valid [B], impl) -> per-example losses
PADDED = {
    "info_nce": lambda x, v, impl: losses.info_nce(x[:, 0], x[:, 1], negatives=x[:, 2:3],
                                                   valid=v, impl=impl, block_size=4),
    "clip_loss": lambda x, v, impl: losses.clip_loss(x[:, 0], x[:, 1], valid=v, impl=impl,
                                                     block_size=4),
    "nt_xent": lambda x, v, impl: losses.nt_xent(x[:, 0], x[:, 1], valid=v, impl=impl,
                                                 block_size=4),
    "dcl": lambda x, v, impl: losses.dcl(x[:, 0], x[:, 1], valid=v, impl=impl, block_size=4),
    "dclw": lambda x, v, impl: losses.dclw(x[:, 0], x[:, 1], valid=v, impl=impl, block_size=4),
    "siglip_loss": lambda x, v, impl: losses.siglip_loss(x[:, 0], x[:, 1], valid=v, impl=impl,
                                                         block_size=4),
    "supcon": lambda x, v, impl: losses.supcon(x[:, :2], LABELS[:x.shape[0]], valid=v,
                                               impl=impl, block_size=4),
    "mv_info_nce": lambda x, v, impl: losses.mv_info_nce(x, valid=v, impl=impl, block_size=4),
    "mv_dhel": lambda x, v, impl: losses.mv_dhel(x, valid=v, impl=impl, block_size=4),
    "symile": lambda x, v, impl: losses.symile([x[:, 0], x[:, 1], x[:, 2]], temperature=0.1,
                                               negatives="n_squared", valid=v, impl=impl,
                                               block_size=4),
}


@pytest.mark.parametrize("impl", ["dense", "blockwise"])
@pytest.mark.parametrize("name", list(PADDED))
def test_all_padding_batch_gives_zero_value_and_gradient(name, impl):
  # A global batch that is all padding (the tail of an epoch, a filtered batch): value 0 and a
  # zero gradient, not NaN (DCLW's softmax over zero valid rows was 0/0 in its weights).
  x = jnp.asarray(X[:6])
  valid = np.zeros(6, bool)
  v, g = jax.jit(jax.value_and_grad(lambda x: jnp.sum(PADDED[name](x, valid, impl))))(x)
  assert float(v) == 0.0
  g = np.asarray(g)
  assert np.all(np.isfinite(g)), f"{np.isnan(g).sum()} of {g.size} gradient entries are NaN"
  assert np.all(g == 0.0)


def test_normalisation_gradient_is_bounded():
  # d(x / max(||x||, eps))/dx has spectral norm 1 / max(||x||, eps) <= 1 / eps = 1e6; with the
  # squared norm clamped at 1e-24 an all-zero row got a gradient 1e12 times the cotangent.
  from jaxcl.losses import _common as c
  direction = np.linspace(-1.0, 1.0, D).astype(np.float32)
  direction /= np.linalg.norm(direction)
  for norm in (0.0, 1e-12, 1e-9, 1e-7, 1e-6, 1e-5, 1e-2, 1.0, 1e4):
    jac = jax.jacobian(c.l2_normalize)(jnp.float32(norm) * direction)
    bound = 1.0 / max(norm, 1e-6)
    assert np.linalg.norm(np.asarray(jac), 2) <= 1.0001 * min(bound, 1e6), norm
  # Rows that are not tiny are unit vectors, as before.
  np.testing.assert_allclose(np.linalg.norm(c.l2_normalize(X[:, 0]), axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_zero_row_gradient_is_bounded(name):
  # A valid all-zero row (a dead ReLU head): its gradient is at most 1e6 times the gradient
  # with respect to its normalised row (~|dL/du| <= 2 / T here), never the 1e12 x of a
  # squared-norm clamp at 1e-24, which one SGD step turns into a destroyed encoder.
  f = LOSSES[name]
  g = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(_with_zero_row(jnp.asarray(X))))
  zero_row, others = np.linalg.norm(g[2]), np.delete(g, 2, axis=0)
  assert np.all(np.isfinite(g))
  assert zero_row <= 1e6 * 2 / 0.1 * K, zero_row       # 2e7: T >= 0.1 for every loss here
  assert np.abs(others).max() < 1e3
