"""Acceptance 1: every objective against the float64 loop references of ``tests/reference.py``.

Values to 1e-5 relative; gradients (w.r.t. the embeddings and, where traced, the temperature
and bias) against central finite differences of the float64 reference. Gradients are taken of
``sum_i g_i loss_i`` with random weights ``g`` so every per-example term is checked.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses
from tests import reference as ref

B, D, M = 6, 5, 2
IDS = np.array([0, 1, 0, 2, 3, 1], np.int32)            # duplicates: rows 0/2 and 1/5
VALID = np.array([1, 1, 1, 0, 1, 1], bool)              # row 3 is padding
VALUE_RTOL, VALUE_ATOL = 1e-5, 1e-6


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _weights(seed=99, n=B):
  return np.random.default_rng(seed).uniform(0.5, 1.5, size=n)


def assert_values(got, want):
  got = np.asarray(got)
  assert got.dtype == np.float32 and got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=VALUE_RTOL, atol=VALUE_ATOL)


def assert_grad(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * max(1e-3, np.abs(want).max()))


def check(lib_fn, ref_fn, inputs, grads=True, g=None):
  """Values (1e-5) and d/dx_k sum_i g_i loss_i for every input (FD of the reference).

  The library side is one jitted function returning values and gradients: compiling once is
  much cheaper than dispatching op by op.
  """
  inputs = [np.asarray(x) for x in inputs]
  want = ref_fn(*inputs)
  g = _weights(n=len(want)) if g is None else g
  argnums = tuple(range(len(inputs)))

  @jax.jit
  def lib(*xs):
    return lib_fn(*xs), jax.grad(lambda *xs: jnp.sum(g * lib_fn(*xs)), argnums=argnums)(*xs)

  values, lib_grads = lib(*inputs)
  assert_values(values, want)
  if not grads:
    return want
  rng = np.random.default_rng(5)
  for k, x in enumerate(inputs):
    def scalar(xk, k=k):
      xs = list(inputs)
      xs[k] = xk
      return float(np.dot(g, ref_fn(*xs)))
    # Finite differences of the loop reference are slow: check one random coordinate of every
    # row vector, plus the derivative along one random direction of the whole input.
    got = np.asarray(lib_grads[k], np.float64)
    coords = [idx + (int(rng.integers(x.shape[-1])),) for idx in np.ndindex(*x.shape[:-1])]
    assert_grad([got[c] for c in coords], ref.fd_coords(scalar, x, coords))
    direction = rng.normal(size=x.shape)
    assert_grad(np.sum(got * direction), ref.fd_directional(scalar, x, direction))
  return want


# ------------------------------------------------------------------ info_nce / clip

INFO_CASES = {
    "plain_T0.1": dict(temperature=0.1),
    "T1_unnormalized": dict(temperature=1.0, normalize=False),
    "ids_valid": dict(temperature=0.2, sample_ids=IDS, valid=VALID),
    "hard_negatives_mnrl": dict(temperature=0.05, negatives="hard", valid=VALID),
    "hard_negatives_ids": dict(temperature=0.1, negatives="hard", sample_ids=IDS, valid=VALID),
    "shared_negatives": dict(temperature=0.3, negatives="shared", sample_ids=IDS),
}


def _negatives(kind, seed=3):
  if kind == "hard":
    return _data(seed, B, M, D)
  if kind == "shared":
    return _data(seed, 3, D)
  return None


@pytest.mark.parametrize("case", list(INFO_CASES))
def test_info_nce_values_and_grads(case):
  kw = dict(INFO_CASES[case])
  neg = _negatives(kw.pop("negatives", None))
  q, k = _data(0, B, D), _data(1, B, D)
  k = k + q  # correlated positives so the loss is not at its random-embedding value
  if neg is None:
    want = check(lambda q, k: losses.info_nce(q, k, **kw),
                 lambda q, k: ref.info_nce(q, k, **kw), [q, k])
  else:
    want = check(lambda q, k, n: losses.info_nce(q, k, negatives=n, **kw),
                 lambda q, k, n: ref.info_nce(q, k, negatives=n, **kw), [q, k, neg])
  if kw.get("valid") is not None:
    assert np.all(want[~VALID] == 0) and np.all(want[VALID] != 0)


@pytest.mark.parametrize("b,d", [(3, 7), (11, 2)])
def test_other_batch_and_feature_sizes(b, d):
  q, k, neg = _data(30, b, d), _data(31, b, d), _data(32, b, 1, d)
  ids = np.arange(b, dtype=np.int32) % 2                  # many duplicates
  valid = np.arange(b) != 1
  kw = dict(temperature=0.15, sample_ids=ids, valid=valid)
  check(lambda q, k, n: losses.info_nce(q, k, negatives=n, **kw),
        lambda q, k, n: ref.info_nce(q, k, negatives=n, **kw), [q, k, neg])
  check(lambda a, b: losses.nt_xent(a, b, **kw), lambda a, b: ref.nt_xent(a, b, **kw), [q, k])


def test_padded_rows_have_zero_gradient():
  q, k, neg = _data(0, B, D), _data(1, B, D), _data(3, B, M, D)
  loss = lambda *x: jnp.sum(losses.info_nce(x[0], x[1], negatives=x[2], valid=VALID))
  gq, gk, gn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, neg)
  assert np.all(np.asarray(gq)[~VALID] == 0)
  assert np.all(np.asarray(gk)[~VALID] == 0)
  assert np.all(np.asarray(gn)[~VALID] == 0)
  assert np.all(np.abs(np.asarray(gq)[VALID]).sum(-1) > 0)


@pytest.mark.parametrize("kw", [dict(temperature=0.07), dict(temperature=0.5, sample_ids=IDS,
                                                             valid=VALID)])
def test_clip_values_and_grads(kw):
  a, b = _data(4, B, D), _data(5, B, D)
  check(lambda a, b: losses.clip_loss(a, b, **kw),
        lambda a, b: ref.clip_loss(a, b, **kw), [a, b])


def test_clip_mean_is_symmetric_cross_entropy():
  # The CLIP objective written as the two cross-entropies of one logits matrix.
  a, b = _data(4, B, D), _data(5, B, D)
  an, bn = ref._prep(a, True), ref._prep(b, True)
  logits = an @ bn.T / 0.07
  ce = lambda l: np.mean([np.log(np.exp(l[i]).sum()) - l[i, i] for i in range(B)])
  np.testing.assert_allclose(float(jnp.mean(losses.clip_loss(a, b, temperature=0.07))),
                             0.5 * (ce(logits) + ce(logits.T)), rtol=1e-5)


# ------------------------------------------------------------------ two-view family

TWO_VIEW = {
    "nt_xent": (losses.nt_xent, ref.nt_xent),
    "dcl": (losses.dcl, ref.dcl),
}


@pytest.mark.parametrize("name", list(TWO_VIEW))
@pytest.mark.parametrize("kw", [dict(temperature=0.5), dict(temperature=0.1, sample_ids=IDS,
                                                            valid=VALID, normalize=False)],
                         ids=["plain", "ids_valid_unnormalized"])
def test_two_view_values_and_grads(name, kw):
  lib, rf = TWO_VIEW[name]
  z1, z2 = _data(6, B, D), _data(7, B, D)
  if not kw.get("normalize", True):
    z1, z2 = 0.5 * z1, 0.5 * z2
  check(lambda a, b: lib(a, b, **kw), lambda a, b: rf(a, b, **kw), [z1, z2])


@pytest.mark.parametrize("kw", [dict(temperature=0.1, sigma=0.5),
                                dict(temperature=0.2, sigma=0.3, sample_ids=IDS, valid=VALID)])
def test_dclw_values_and_stop_gradient_weights(kw):
  z1, z2 = _data(6, B, D), _data(7, B, D)
  z2 = z2 + z1
  valid = kw.get("valid")
  # The weights w_i are constants for the gradient: differentiate the reference at fixed w.
  w0 = ref.dclw_weights(z1, z2, kw["sigma"], valid)
  np.testing.assert_array_equal(ref.dclw(z1, z2, **kw), ref.dclw(z1, z2, weights=w0, **kw))
  check(lambda a, b: losses.dclw(a, b, **kw),
        lambda a, b: ref.dclw(a, b, weights=w0, **kw), [z1, z2])


def test_dclw_weights_sum_to_n():
  # sum_i w_i = 2N - N = N over the valid rows: a property of 2 - N softmax.
  z1, z2 = _data(6, B, D), _data(7, B, D)
  w = ref.dclw_weights(z1, z2, 0.5, VALID)
  np.testing.assert_allclose(w[VALID].sum(), VALID.sum())


# ------------------------------------------------------------------ SigLIP


@pytest.mark.parametrize("kw", [dict(temperature=0.1, bias=-10.0),
                                dict(temperature=0.5, bias=-1.0, sample_ids=IDS, valid=VALID)])
def test_siglip_values_and_grads(kw):
  a, b = _data(8, B, D), _data(9, B, D)
  b = b + a
  check(lambda a, b: losses.siglip_loss(a, b, **kw),
        lambda a, b: ref.siglip_loss(a, b, **kw), [a, b])


def test_siglip_temperature_and_bias_gradients():
  a, b = _data(8, B, D), _data(9, B, D)
  g = _weights()
  t0, b0 = 0.3, -2.0
  lib = lambda t, bias: jnp.sum(g * losses.siglip_loss(a, b, temperature=t, bias=bias,
                                                       valid=VALID))
  gt, gb = jax.jit(jax.grad(lib, argnums=(0, 1)))(jnp.float32(t0), jnp.float32(b0))
  rf = lambda t, bias: float(np.dot(g, ref.siglip_loss(a, b, t, bias, valid=VALID)))
  eps = 1e-6
  np.testing.assert_allclose(gt, (rf(t0 + eps, b0) - rf(t0 - eps, b0)) / (2 * eps), rtol=1e-4)
  np.testing.assert_allclose(gb, (rf(t0, b0 + eps) - rf(t0, b0 - eps)) / (2 * eps), rtol=1e-4)


# ------------------------------------------------------------------ traced temperatures

TEMPERATURE_FNS = {
    "info_nce": (lambda x, y, t: losses.info_nce(x, y, temperature=t, negatives=_data(3, B, M, D)),
                 lambda x, y, t: ref.info_nce(x, y, t, negatives=_data(3, B, M, D))),
    "clip_loss": (lambda x, y, t: losses.clip_loss(x, y, temperature=t, valid=VALID),
                  lambda x, y, t: ref.clip_loss(x, y, t, valid=VALID)),
    "nt_xent": (lambda x, y, t: losses.nt_xent(x, y, temperature=t),
                lambda x, y, t: ref.nt_xent(x, y, t)),
    "dcl": (lambda x, y, t: losses.dcl(x, y, temperature=t), lambda x, y, t: ref.dcl(x, y, t)),
    "supcon": (lambda x, y, t: losses.supcon(jnp.stack([x, y], 1), IDS, temperature=t),
               lambda x, y, t: ref.supcon(np.stack([x, y], 1), IDS, t)),
    "mv_info_nce": (lambda x, y, t: losses.mv_info_nce(jnp.stack([x, y], 1), temperature=t),
                    lambda x, y, t: ref.mv_info_nce(np.stack([x, y], 1), t)),
}


@pytest.mark.parametrize("name", list(TEMPERATURE_FNS))
def test_traced_temperature_gradient(name):
  lib, rf = TEMPERATURE_FNS[name]
  x, y = _data(10, B, D), _data(11, B, D)
  g = _weights()
  t0, eps = 0.2, 1e-6
  both = lambda t: (lib(x, y, t), jax.grad(lambda t: jnp.sum(g * lib(x, y, t)))(t))
  value, got = jax.jit(both)(jnp.float32(t0))
  want = (np.dot(g, rf(x, y, t0 + eps)) - np.dot(g, rf(x, y, t0 - eps))) / (2 * eps)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert_values(value, rf(x, y, t0))  # a traced temperature gives the float-temperature value


# ------------------------------------------------------------------ SupCon

LABELS = np.array([0, 1, 0, 1, 2, 3], np.int32)          # labels 2 and 3 occur once


@pytest.mark.parametrize("kw,views", [
    (dict(temperature=0.1), 2),
    (dict(temperature=0.07, base_temperature=0.07), 2),
    (dict(temperature=0.2, base_temperature=0.07, valid=VALID), 3),
    (dict(temperature=0.1), 1),                          # singletons have no positive: loss 0
])
def test_supcon_values_and_grads(kw, views):
  f = _data(12, B, views, D)
  want = check(lambda f: losses.supcon(f, LABELS, **kw),
               lambda f: ref.supcon(f, LABELS, **kw), [f])
  if views == 1:
    assert want[4] == 0 and want[5] == 0


# ------------------------------------------------------------------ multi-view


@pytest.mark.parametrize("name,kw,views", [
    ("mv_info_nce", dict(temperature=0.2), 3),
    ("mv_info_nce", dict(temperature=0.1, normalize=False, valid=VALID), 4),
    ("mv_dhel", dict(temperature=0.5, valid=VALID), 3),
    ("mv_dhel", dict(temperature=0.1, normalize=False), 4),
    ("mv_average", dict(temperature=0.2, valid=VALID), 3),
    ("mv_average", dict(temperature=0.5, normalize=False), 4),
])
def test_multiview_values_and_grads(name, kw, views):
  lib, rf = getattr(losses, name), getattr(ref, name)
  v = _data(13, B, views, D)
  if not kw.get("normalize", True):
    v = 0.4 * v
  check(lambda v: lib(v, **kw), lambda v: rf(v, **kw), [v])


def test_mv_dhel_two_views_is_dhel():
  # K = 2: -s(z1_i, z2_i) + log sum_{j!=i} e(z1_i, z1_j) + log sum_{j!=i} e(z2_i, z2_j).
  v = _data(13, B, 2, D)
  u = ref._prep(v, True)
  want = [-u[i, 0] @ u[i, 1] / 0.2 + sum(
      np.log(sum(np.exp(u[i, k] @ u[j, k] / 0.2) for j in range(B) if j != i)) for k in range(2))
          for i in range(B)]
  np.testing.assert_allclose(losses.mv_dhel(v, temperature=0.2), want, rtol=1e-5)


def test_mv_average_two_views_is_nt_xent():
  # K = 2: the mean of the other views is the other view, so "average" is NT-Xent.
  v = _data(13, B, 2, D)
  np.testing.assert_allclose(losses.mv_average(v, temperature=0.3, valid=VALID),
                             ref.nt_xent(v[:, 0], v[:, 1], 0.3, valid=VALID), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ Symile


@functools.lru_cache(maxsize=None)
def symile_perms(seed, n_mod, n):
  """The permutations symile(negatives='n', rng=key(seed)) documents: fold_in(fold_in(rng, m), o)."""
  rng = jax.random.key(seed)
  return [{o: np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.fold_in(rng, m), o),
                                                n))
           for o in range(n_mod) if o != m} for m in range(n_mod)]


@pytest.mark.parametrize("n_mod,negatives,use_valid", [
    (2, "n_squared", True), (3, "n_squared", False), (2, "n", False), (3, "n", True)])
def test_symile_values_and_grads(n_mod, negatives, use_valid):
  mods = [_data(20 + m, B, D) for m in range(n_mod)]
  rng = jax.random.key(7)
  valid = VALID if use_valid else None
  perms = symile_perms(7, n_mod, B) if negatives == "n" else None
  kw = dict(temperature=0.1, negatives=negatives, valid=valid)
  lib = lambda *ms: losses.symile(list(ms), rng=rng, **kw)
  rf = lambda *ms: ref.symile(list(ms), 0.1, negatives, perms=perms, valid=valid)
  check(lib, rf, mods)


def test_symile_traced_temperature_gradient():
  mods = [_data(20 + m, B, D) for m in range(3)]
  g, t0, eps = _weights(), 0.3, 1e-6
  got = jax.jit(jax.grad(lambda t: jnp.sum(g * losses.symile(mods, temperature=t,
                                                             negatives="n_squared"))))(
                                                                 jnp.float32(t0))
  rf = lambda t: np.dot(g, ref.symile(mods, t, "n_squared"))
  np.testing.assert_allclose(got, (rf(t0 + eps) - rf(t0 - eps)) / (2 * eps), rtol=1e-4)


def test_symile_n_depends_on_rng_only_through_the_key():
  mods = [_data(20 + m, B, D) for m in range(3)]
  f = jax.jit(lambda key: losses.symile(mods, temperature=0.1, negatives="n", rng=key))
  np.testing.assert_array_equal(f(jax.random.key(1)), f(jax.random.key(1)))
  assert not np.allclose(f(jax.random.key(1)), f(jax.random.key(2)))
