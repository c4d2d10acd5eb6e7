"""Symile through the shared trainer (issue #7, study 4): the ``symile_xor`` /
``symile_xor_missing`` datasets (determinism, XOR structure, the missing-modality convention),
the ``symile`` objective adapter against a float64 loop reference written here (value, and
gradient by finite differences, for both negative samplings and the ``clip_sum`` baseline),
8 devices == 1 device (value and gradient), bf16 / extreme inputs, argument errors, and the
zero-shot prediction of one modality from the others."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl.data import catalog, embedded
from jaxcl.eval.multimodal import predict_modality, predict_modality_accuracy
from jaxcl.train import objectives
from tests.reference import fd_coords
from tests.reference import unit as _unit, lse as _lse

B, M, D = 8, 3, 4
T = 0.5
RNG = jax.random.key(3)
LABELS = np.zeros(B, np.int32)


def _z(seed=0, k=1):
  return np.random.default_rng(seed).normal(size=(B, k * M, D)).astype(np.float32)


# ------------------------------------------------------------------------------ the datasets


@pytest.fixture(scope="module")
def xor():
  return {n: embedded.generate(n) for n in ("symile_xor", "symile_xor_missing")}


def _decode(x, m):
  """Bits of modality ``m``'s observed rows by the nearest code (noise std 0.5 << spacing)."""
  codes = embedded._xor_codes()[m]  # [bits, 2, embed]
  blk = x[:, m * embedded.XOR_BLOCK:(m + 1) * embedded.XOR_BLOCK]
  emb = blk[:, :-1].reshape(len(x), embedded.XOR_BITS, embedded.XOR_EMBED)
  dist = ((emb[:, :, None, :] - codes[None]) ** 2).sum(-1)  # [N, bits, 2]
  return np.argmin(dist, -1)


def test_xor_datasets_match_catalog_and_are_deterministic(xor):
  again = embedded.generate("symile_xor_missing")
  for name, splits in xor.items():
    info = catalog.info(name)
    assert info.kind == "multimodal" and [m.name for m in info.modalities] == ["a", "b", "c"]
    assert sum(m.size for m in info.modalities) == info.shape[0] == 3 * embedded.XOR_BLOCK
    for split, (x, y, extra) in splits.items():
      assert x.shape == (info.splits[split], *info.shape) and x.dtype == np.float32
      assert y.dtype == np.int32 and set(np.unique(y)) == set(range(info.num_classes))
      assert set(extra) == {k for k, _ in info.extra_labels}
  for split, (x, y, extra) in xor["symile_xor_missing"].items():
    np.testing.assert_array_equal(x, again[split][0])
    np.testing.assert_array_equal(y, again[split][1])


def test_xor_rows_are_a_xor_b_and_pairwise_independent(xor):
  x, y, extra = xor["symile_xor"]["train"]
  bits = [_decode(x, m) for m in range(3)]
  np.testing.assert_array_equal(bits[2], bits[0] ^ bits[1])
  code = lambda b: (b << np.arange(b.shape[1])[None, :]).sum(1)
  np.testing.assert_array_equal(code(bits[2]), y)
  np.testing.assert_array_equal(code(bits[0]), extra["a"])
  np.testing.assert_array_equal(code(bits[1]), extra["b"])
  # Pairwise independence: every (a, c) value pair about equally often.
  k = 2 ** embedded.XOR_BITS
  counts = np.bincount(k * extra["a"] + y, minlength=k * k)
  assert counts.min() > 0.9 * len(y) / k ** 2 and counts.max() < 1.1 * len(y) / k ** 2
  # The candidates are the noise-free observed blocks, row v = value code v.
  cand = embedded.symile_xor_candidates(2)
  assert cand.shape == (k, embedded.XOR_BLOCK) and np.all(cand[:, -1] == 0)
  np.testing.assert_array_equal(code(_decode(np.tile(cand, (1, 3)), 2)), np.arange(k))


def test_missing_variant_masks_train_blocks_only(xor):
  full, miss = xor["symile_xor"], xor["symile_xor_missing"]
  blk = embedded.XOR_BLOCK
  for split in ("train", "test"):
    xf, yf, _ = full[split]
    xm, ym, em = miss[split]
    np.testing.assert_array_equal(yf, ym)
    gone = (em["missing"][:, None] >> np.arange(3)[None, :]) & 1 == 1
    if split == "test":
      assert not gone.any()
    else:
      assert abs(gone.mean() - embedded.XOR_MISSING) < 0.02
    for m in range(3):
      b_f, b_m = xf[:, m * blk:(m + 1) * blk], xm[:, m * blk:(m + 1) * blk]
      np.testing.assert_array_equal(b_m[~gone[:, m]], b_f[~gone[:, m]])
      np.testing.assert_array_equal(b_m[gone[:, m], :-1], 0.0)
      np.testing.assert_array_equal(b_m[:, -1], gone[:, m].astype(np.float32))


# ---------------------------------------------------------------- the float64 loop reference


def _perms(rng, n):
  """The documented draws: view v, anchor m, other modality o -> fold_in(fold_in(fold_in(
  rng, v), m), o)."""
  return {(v, m, o): np.asarray(jax.random.permutation(
      jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, v), m), o), n))
          for v in range(2) for m in range(M) for o in range(M) if o != m}


def ref_symile(z, temperature, negatives, perms=None, form="symile"):
  """Per-example loss of the adapter, by loops over anchors, modalities and candidates."""
  z = np.asarray(z, np.float64)
  b, cols, _ = z.shape
  out = np.zeros(b)
  views = cols // M
  for v in range(views):
    r = [[_unit(z[i, v * M + m]) for m in range(M)] for i in range(b)]
    mip = lambda vecs: float(sum(np.prod([u[e] for u in vecs]) for e in range(len(vecs[0]))))
    for i in range(b):
      if form == "clip_sum":
        total = 0.0
        for p, q in itertools.combinations(range(M), 2):
          for s, t in ((p, q), (q, p)):
            logits = [float(r[i][s] @ r[j][t]) / temperature for j in range(b)]
            total += 0.5 * (_lse(logits) - logits[i])
        out[i] += total / views
        continue
      total = 0.0
      for m in range(M):
        others = [o for o in range(M) if o != m]
        pos = mip([r[i][k] for k in range(M)]) / temperature
        if negatives == "n_squared":
          cands = [mip([r[i][m]] + [r[j][o] for j, o in zip(js, others)]) / temperature
                   for js in itertools.product(range(b), repeat=len(others))]
        else:
          cands = [pos] + [mip([r[i][m]] + [r[perms[(v, m, o)][j]][o] for o in others])
                           / temperature for j in range(b) if j != i]
        total += _lse(cands) - pos
      out[i] += total / M / views
  return out


CASES = [("symile", "n", 1), ("symile", "n_squared", 1), ("clip_sum", "n", 1),
         ("symile", "n", 2)]


def _objective(form, negatives, k, **kw):
  kwargs = {"temperature": T, "negatives": negatives, "form": form, **kw}
  return objectives.make_objective("symile", kwargs, k * M, num_global_views=k)


@pytest.mark.long
@pytest.mark.parametrize("form, negatives, k", CASES)
def test_adapter_matches_loop_reference_value_and_gradient(form, negatives, k):
  obj = _objective(form, negatives, k)
  params = obj.init(jax.random.key(0), D)
  z = _z(1, k)
  perms = _perms(RNG, B)
  ref = lambda zz, t=T: ref_symile(zz, t, negatives, perms, form)
  got = obj.apply(params, jnp.asarray(z), LABELS, RNG, None)
  np.testing.assert_allclose(got, ref(z), rtol=2e-5, atol=2e-5)
  gz, gp = jax.grad(lambda zz, p: jnp.mean(obj.apply(p, zz, LABELS, RNG, None)),
                    argnums=(0, 1))(jnp.asarray(z), params)
  coords = [(0, 0, 0), (3, 1, 2), (5, k * M - 1, 3), (7, 2, 1)]
  fd = fd_coords(lambda zz: float(np.mean(ref(zz))), z, coords)
  np.testing.assert_allclose([gz[c] for c in coords], fd, rtol=1e-3, atol=1e-5)
  # d/d log_scale: T = exp(-log_scale).
  ls = math.log(1.0 / T)
  fd_s = fd_coords(lambda s: float(np.mean(ref(z, math.exp(-s[0])))), np.array([ls]), [(0,)])
  np.testing.assert_allclose(gp["log_scale"], fd_s[0], rtol=1e-3, atol=1e-5)


# clip_sum sums clip_loss terms, whose sharding tests/test_losses_sharded.py covers.
@pytest.mark.long
@pytest.mark.parametrize("form, negatives, k", CASES[:1])
def test_adapter_sharded_equals_single_device(form, negatives, k):
  obj = _objective(form, negatives, k)
  params = obj.init(jax.random.key(0), D)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  sharded = jax.jit(jax.shard_map(lambda p, z, y, r: obj.apply(p, z, y, r, "data"), mesh=mesh,
                                  in_specs=(P(), P("data"), P("data"), P()),
                                  out_specs=P("data")))
  z = jnp.asarray(_z(2, k))
  single = obj.apply(params, z, LABELS, RNG, None)
  np.testing.assert_allclose(sharded(params, z, LABELS, RNG), single, rtol=1e-5, atol=1e-6)
  mean = lambda f: (lambda p, z: jnp.mean(f(p, z)))
  g8 = jax.grad(mean(lambda p, z: sharded(p, z, LABELS, RNG)), argnums=(0, 1))(params, z)
  g1 = jax.grad(mean(lambda p, z: obj.apply(p, z, LABELS, RNG, None)), argnums=(0, 1))(params, z)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_adapter_scale_clamp_health_bf16_and_extremes():
  obj = _objective("symile", "n", 1)
  params = obj.init(jax.random.key(0), D)
  assert set(params) == {"log_scale"}
  big = obj.project({"log_scale": jnp.float32(9.0)})
  np.testing.assert_allclose(big["log_scale"], math.log(100.0), rtol=1e-6)
  np.testing.assert_allclose(obj.health(params, None, None)["logit_scale"], 1 / T, rtol=1e-6)
  fixed = _objective("symile", "n", 1, learn_temperature=False)
  assert fixed.init(jax.random.key(0), D) == {}
  z = _z(4)
  f32 = obj.apply(params, jnp.asarray(z), LABELS, RNG, None)
  bf16 = obj.apply(params, jnp.asarray(z, jnp.bfloat16), LABELS, RNG, None)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, rtol=0.05, atol=0.05)
  for scale in (1e-4, 1e4):  # normalised inside: the same loss
    got = obj.apply(params, jnp.asarray(z * scale), LABELS, RNG, None)
    np.testing.assert_allclose(got, f32, rtol=1e-4, atol=1e-5)
  hot = obj.apply(obj.project({"log_scale": jnp.float32(50.0)}), jnp.asarray(z), LABELS, RNG,
                  None)
  assert np.isfinite(np.asarray(hot)).all()


@pytest.mark.parametrize("kwargs, columns, views, match", [
    ({"form": "triple"}, 3, 1, "'form' must be one of"),
    ({}, 2, 2, "needs >= 2 modalities"),
    ({"num_modalities": 2}, 3, 1, "needs >= 2 modalities"),
    ({"temperature": 0.0}, 3, 1, "'temperature' must be > 0"),
    ({"max_scale": -1.0}, 3, 1, "'max_scale' must be > 0"),
])
def test_adapter_errors_name_the_argument(kwargs, columns, views, match):
  with pytest.raises(ValueError, match=match):
    objectives.make_objective("symile", kwargs, columns, num_global_views=views)


def test_recipe_kwargs_are_validated():
  from configs.symile_xor import get_config
  from jaxcl.train.config import ConfigError, make_objective, validate
  c = get_config()
  assert validate(c, num_devices=8, num_processes=1).name == "symile_xor"
  make_objective(c)
  c.loss.kwargs.modalities = 3
  with pytest.raises(ConfigError, match="config.loss.kwargs.modalities"):
    make_objective(c)


# ------------------------------------------------------------------------------ zero-shot


def test_predict_modality_scores_and_errors():
  e = np.eye(4, dtype=np.float32)
  # Symile: the elementwise product of the given embeddings picks the candidate; CLIP: their sum.
  a = np.array([[1, 3, 0, 0]], np.float32)
  b = np.array([[1, -1, 0, 0]], np.float32)
  cand = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, -1, 0, 0]], np.float32)
  np.testing.assert_array_equal(predict_modality([a, b], cand, "symile"), [3])
  np.testing.assert_array_equal(predict_modality([a, b], cand, "clip"), [0])
  np.testing.assert_array_equal(predict_modality([-a, b], cand, "symile"), [1])
  assert predict_modality_accuracy([e], e, np.arange(4), "clip") == 1.0
  with pytest.raises(ValueError, match="'score' must be"):
    predict_modality([a], cand, "mip")
  with pytest.raises(ValueError, match="'z_given'"):
    predict_modality([], cand)
