"""SupReMix (jaxcl.losses.contrib.supremix) against an explicit float64 loop reference written here.

The reference builds every mixture vector (``a z_j + (1 - a) z_k``) and takes its dot product
with the anchor, loops over anchors, real candidates, mix-neg candidates and mix-pos triples,
and applies the weights to ``exp(logit)`` in a plain sum; the library never forms a mixture.
Gradients: central finite differences of the reference in which the mixtures' ingredients are
held at the base point (the mixtures are detached in SupReMix).
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from jaxcl.losses.supremix import mix_neg_alphas

B, V, D = 6, 2, 3
Y = np.array([0.0, 1.0, 1.0, 2.0, 4.0, 3.0], np.float32)   # ties, gaps, a 2-step window edge
VALID = np.array([True, True, True, True, True, False])
RNG = jax.random.key(3)
BETA = (2.0, 8.0)


def _features(seed, b=B, v=V, d=D):
  return np.random.default_rng(seed).normal(size=(b, v, d)).astype(np.float32)


def _unit(x):
  return x / math.sqrt(float(np.dot(x, x)))


def _w(dy, weighting):
  dy = abs(dy)
  return {"l1_inv": dy + 1.0, "l2_inv": dy * dy + 1.0, "none": 1.0}[weighting]


def reference(za, zc, zm, y, alpha, temperature, window, weighting="l1_inv", valid=None,
              block_max_shift=False):
  """float64 per-example SupReMix. ``za`` anchors, ``zc`` real candidates and ``zm`` mixture
  ingredients (all ``[B, V, D]``, normalised here); ``alpha[r, c]`` for view-major rows."""
  b, v, _ = za.shape
  rows = lambda z: [_unit(np.asarray(z[i, k], np.float64)) for k in range(v) for i in range(b)]
  za, zc, zm = rows(za), rows(zc), rows(zm)
  yr = [float(y[i]) for _ in range(v) for i in range(b)]
  ok = [True if valid is None else bool(valid[i]) for _ in range(v) for i in range(b)]
  n = v * b
  out = np.zeros((v, b))
  for r in range(n):
    if not ok[r]:
      continue
    real, mixes, pos = [], [], []   # (logit, weight); positives: (block, logit)
    mix_vecs = []
    for a in range(n):
      if a != r and ok[a]:
        l = np.dot(za[r], zc[a]) / temperature
        real.append((l, _w(yr[r] - yr[a], weighting)))
        if yr[a] == yr[r]:
          pos.append(("real", l))
    for k in range(n):
      if ok[k] and yr[k] != yr[r]:
        al = float(alpha[r, k])
        m = al * zm[r] + (1 - al) * zm[k]
        mix_vecs.append(m)
        mixes.append((np.dot(za[r], m) / temperature,
                      _w(yr[r] - (al * yr[r] + (1 - al) * yr[k]), weighting)))
    for j in range(n):
      for k in range(n):
        if not (ok[j] and ok[k] and yr[j] < yr[r] < yr[k]):
          continue
        if yr[r] - yr[j] >= window or yr[k] - yr[r] >= window:
          continue
        al = (yr[k] - yr[r]) / (yr[k] - yr[j])
        mix_vecs.append(al * zm[j] + (1 - al) * zm[k])
        l = np.dot(za[r], mix_vecs[-1]) / temperature
        mixes.append((l, _w(yr[r] - (al * yr[j] + (1 - al) * yr[k]), weighting)))
        pos.append(("mix", l))
    if not pos:
      continue
    shift_real = shift_mix = 0.0
    if block_max_shift:  # each block shifted by its own detached row max (real: self included)
      shift_real = max(np.dot(zm[r], zm[a]) / temperature for a in range(n) if ok[a] or a == r)
      shift_mix = max(np.dot(zm[r], m) / temperature for m in mix_vecs) if mix_vecs else 0.0
    denom = (sum(w * math.exp(l - shift_real) for l, w in real)
             + sum(w * math.exp(l - shift_mix) for l, w in mixes))
    num = [l - (shift_real if blk == "real" else shift_mix) for blk, l in pos]
    out[r // b, r % b] = -(sum(num) / len(num) - math.log(denom))
  return out.mean(0)


def alphas(n=V * B):
  return np.asarray(mix_neg_alphas(RNG, jnp.arange(n), n, BETA), np.float64)


def lib(z, y=Y, **kw):
  kw = {"temperature": 0.5, "window": 2.0, "rng": RNG, "valid": VALID, **kw}
  return losses.contrib.supremix(z, y, **kw)


CASES = [
    {},
    {"weighting": "l2_inv"},
    {"weighting": "none", "temperature": 0.2},
    {"block_max_shift": True},
    {"window": 5.0},
]


@pytest.mark.long
@pytest.mark.parametrize("kw", CASES)
def test_values_match_loop_reference(kw):
  z = _features(0)
  got = np.asarray(lib(z, **kw))
  ref_kw = {k: v for k, v in kw.items() if k in ("weighting", "block_max_shift")}
  want = reference(z, z, z, Y, alphas(), kw.get("temperature", 0.5), kw.get("window", 2.0),
                   valid=VALID, **ref_kw)
  assert got.dtype == np.float32 and got.shape == (B,)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
  assert got[~VALID].tolist() == [0.0] and np.all(got[VALID] > 0)


@pytest.mark.long
@pytest.mark.parametrize("kw", [{}, {"block_max_shift": True, "weighting": "l2_inv"}])
def test_gradient_matches_finite_differences_of_detached_reference(kw):
  z0 = _features(1)
  g = np.random.default_rng(7).normal(size=B)        # arbitrary weights of the per-example losses
  got = jax.grad(lambda z: jnp.sum(lib(z, **kw) * g))(jnp.asarray(z0))
  a = alphas()
  ref_kw = {k: v for k, v in kw.items() if k in ("weighting", "block_max_shift")}
  f = lambda z: float(np.dot(reference(z, z, z0, Y, a, 0.5, 2.0, valid=VALID, **ref_kw), g))
  eps, want = 1e-6, np.zeros(z0.shape)
  for idx in np.ndindex(z0.shape):
    zp, zm = z0.astype(np.float64), z0.astype(np.float64)
    zp[idx] += eps
    zm[idx] -= eps
    want[idx] = (f(zp) - f(zm)) / (2 * eps)
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-3, atol=2e-5)
  assert np.all(np.asarray(got)[~VALID] == 0)
  # The mixtures are detached: a reference that differentiates through them disagrees.
  f_through = lambda z: float(np.dot(reference(z, z, z, Y, a, 0.5, 2.0, valid=VALID,
                                               **ref_kw), g))
  zp, zm = z0.astype(np.float64), z0.astype(np.float64)
  zp[0, 0, 0] += eps
  zm[0, 0, 0] -= eps
  assert abs((f_through(zp) - f_through(zm)) / (2 * eps) - want[0, 0, 0]) > 1e-4


def test_integer_labels_and_bin_width():
  z = _features(2)
  y_int = np.array([0, 1, 1, 2, 4, 3], np.int32)
  np.testing.assert_allclose(lib(z, y_int), lib(z, y_int.astype(np.float32)), rtol=1e-6)
  # bin_width=10 on a continuous target is the loss on floor(y / 10).
  y_cont = y_int * 10.0 + np.array([3.1, 0.2, 9.9, 5.0, 1.0, 7.7], np.float32)
  np.testing.assert_allclose(lib(z, y_cont, bin_width=10.0), lib(z, y_int), rtol=1e-6)


def test_without_mixtures_and_weights_is_supcon_on_binned_labels():
  z = _features(9)
  y_cont = np.array([3.0, 12.0, 17.5, 21.0, 39.0, 8.0], np.float32)
  bins = np.floor(y_cont / 10.0).astype(np.int32)               # 0 1 1 2 3 0
  got = losses.contrib.supremix(z, y_cont, temperature=0.3, bin_width=10.0, weighting="none",
                        mix_neg=False, mix_pos=False)
  np.testing.assert_allclose(got, losses.supcon(z, bins, temperature=0.3), rtol=1e-5)
  # Each family changes the value on its own.
  one = lambda **kw: np.asarray(losses.contrib.supremix(z, y_cont, temperature=0.3, bin_width=10.0,
                                                rng=RNG, weighting="none", **kw))
  assert not np.allclose(one(mix_neg=False), got) and not np.allclose(one(mix_pos=False), got)


@pytest.mark.long
def test_chunked_equals_unchunked():
  z = jnp.asarray(_features(3))
  g = jnp.asarray(np.random.default_rng(8).normal(size=B), jnp.float32)
  vg = lambda cs: jax.value_and_grad(lambda z: jnp.sum(lib(z, chunk_size=cs) * g))(z)
  (v_full, g_full), (v1, g1), (v5, g5) = vg(V * B), vg(1), vg(5)   # 5: uneven last chunk
  for v, gr in ((v1, g1), (v5, g5)):
    np.testing.assert_allclose(v, v_full, rtol=1e-6)
    np.testing.assert_allclose(gr, g_full, rtol=1e-5, atol=1e-7)


def test_bfloat16_inputs_are_finite():
  z = jnp.asarray(_features(4), jnp.bfloat16)
  out = lib(z)
  grad = jax.grad(lambda z: jnp.mean(lib(z)))(z)
  assert out.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(out)))
  assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))
  np.testing.assert_allclose(out, lib(jnp.asarray(z, jnp.float32)), rtol=2e-2)


@pytest.mark.parametrize("call, match", [
    (lambda: losses.contrib.supremix(np.zeros((4, 8), np.float32), np.zeros(4), rng=RNG), "'features'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8), np.int32), np.zeros(4), rng=RNG), "'features'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(3), rng=RNG), "'labels'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4, bool), rng=RNG), "'labels'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4)), "'rng'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, temperature=0.0),
     "'temperature'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, window=-1), "'window'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, beta=2.0), "'beta'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, beta=(2, 0)), "'beta'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, weighting="l1"),
     "'weighting'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, bin_width=0),
     "'bin_width'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, chunk_size=0),
     "'chunk_size'"),
    (lambda: losses.contrib.supremix(np.zeros((4, 2, 8)), np.zeros(4), rng=RNG, valid=np.ones(3)),
     "'valid'"),
])
def test_bad_inputs_name_the_argument(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


# Sharded: 16 samples on 8 devices (2 each), padding on two devices, labels with ties across
# devices; a replicated projection W carries the gradient.
SB, DIN = 16, 5
SY = np.array([0, 1, 2, 0, 3, 5, 1, 2, 4, 4, 6, 1, 3, 0, 2, 7], np.float32)
SVALID = np.ones(SB, bool)
SVALID[[5, 12]] = False


@functools.lru_cache(maxsize=None)
def _mesh():
  return jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))


@pytest.mark.long
def test_sharded_equals_single_device():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(SB, V, DIN)), jnp.float32)
  w0 = jnp.asarray(np.random.default_rng(6).normal(size=(DIN, D + 1)), jnp.float32)
  kw = dict(temperature=0.3, window=3.0, rng=RNG, block_max_shift=True)
  fn = lambda w, x, y, v, axis_name=None: losses.contrib.supremix(x @ w, y, valid=v,
                                                          axis_name=axis_name, **kw)
  mesh = _mesh()
  sharded = lambda w, *a: jax.shard_map(lambda w, *a: fn(w, *a, axis_name="d"), mesh=mesh,
                                        in_specs=(P(), P("d"), P("d"), P("d")),
                                        out_specs=P("d"))(w, *a)
  args = (x, SY, SVALID)
  want, want_g = jax.value_and_grad(lambda w: jnp.mean(fn(w, *args)))(w0)
  per_single = fn(w0, *args)
  per_sharded = jax.jit(sharded)(w0, *args)
  got_g = jax.jit(jax.grad(lambda w: jnp.mean(sharded(w, *args))))(w0)
  np.testing.assert_allclose(per_sharded, per_single, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(per_single)[~SVALID] == 0) and float(want) > 0


@pytest.mark.long  # a study smoke
def test_study_smoke(tmp_path):
  """``experiments/supremix.py --smoke``: one 3-step SupReMix run on diabetes plus the untrained
  baselines, through the shared trainer; writes the table, JSON and plot."""
  import json
  from experiments import supremix
  supremix.main(["--smoke", "--out", str(tmp_path)])
  out = json.loads((tmp_path / "supremix.json").read_text())
  assert out["command"] == "python -m experiments.supremix --smoke"
  losses_run = {s["setting"]["loss"]: s for s in out["summary"]}
  assert set(losses_run) == {"supremix", "raw inputs", "random encoder"}
  for s in losses_run.values():
    assert s["probe_mae"]["mean"] > 0 and -1 <= s["ordinality"]["mean"] <= 1
  md = (tmp_path / "supremix.md").read_text()
  assert "## Verdict" in md and "| diabetes | train | supremix | 0.5 |" in md
  assert (tmp_path / "supremix.png").stat().st_size > 0
