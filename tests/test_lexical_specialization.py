"""Lexical specialization (arXiv 2208.01018): label-based NT-Xent (jaxcl.losses.contrib.label_nt_xent,
pytorch-metric-learning NTXentLoss semantics) against a float64 loop reference written here
(value and finite-difference gradient), its reductions (unique labels = SimCLR NT-Xent; other
positives out of the denominator, unlike SupCon), 8 devices = 1 device, blockwise = dense,
bf16 / extreme inputs, argument errors, the trainer adapter; the recipe's pieces (synonym
retrieval sets, the training pool / held-out synsets, subword pooling, chunked embedding)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses, models
from tests.reference import check_value_and_grad, lse, unit

B, D = 6, 5
LABELS = np.array([3, 1, 3, 2, 1, 3], np.int32)   # synset 3 three times, 1 twice, 2 once
VALID = np.array([1, 1, 1, 1, 0, 1], bool)        # row 4 is padding


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ the float64 loop reference


def ref_label_nt_xent(f, y, temperature, valid=None, normalize=True):
  """One term per ordered positive pair (a, p) of the B*V rows: -log(e^{s_ap} / (e^{s_ap} +
  sum over the anchor's other-label rows)); mean over all pairs, returned per sample as
  B * (sum of its anchors' terms) / (number of pairs)."""
  f = np.asarray(f, np.float64)
  b, v, _ = f.shape
  ok = [True] * b if valid is None else [bool(t) for t in valid]
  rows = [(i, w) for i in range(b) for w in range(v) if ok[i]]
  vec = {(i, w): (unit(f[i, w]) if normalize else f[i, w]) for i, w in rows}
  s = lambda a, c: float(np.dot(vec[a], vec[c])) / temperature
  sums, pairs = np.zeros(b), 0
  for a in rows:
    negs = [s(a, n) for n in rows if y[n[0]] != y[a[0]]]
    for p in rows:
      if p != a and y[p[0]] == y[a[0]]:
        pairs += 1
        sums[a[0]] += lse([s(a, p)] + negs) - s(a, p)
  return b * sums / pairs if pairs else sums


CASES = {
    "paper_tau": (dict(temperature=0.07), 2, LABELS),
    "valid": (dict(temperature=0.2, valid=VALID), 2, LABELS),
    "three_views_unnormalized": (dict(temperature=1.0, normalize=False), 3, LABELS),
    "unique_labels": (dict(temperature=0.5), 2, np.arange(B, dtype=np.int32)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_match_the_loop_reference(case):
  kw, views, y = CASES[case]
  f = _data(0, B, views, D)
  f[:, 1:] += f[:, :1]
  if not kw.get("normalize", True):
    f *= 0.4
  want, _ = check_value_and_grad(lambda f: losses.contrib.label_nt_xent(f, y, **kw),
                                 lambda f: ref_label_nt_xent(f, y, **kw), [f])
  if "valid" in kw:
    assert want[4] == 0 and np.all(want[VALID] != 0)


def test_unique_labels_is_nt_xent_and_repeats_differ_from_supcon():
  f = _data(1, B, 2, D)
  f[:, 1] += f[:, 0]
  uniq = np.arange(B, dtype=np.int32)

  @jax.jit
  def all_(f):
    return (losses.contrib.label_nt_xent(f, uniq, temperature=0.3),
            losses.nt_xent(f[:, 0], f[:, 1], temperature=0.3),
            losses.supcon(f, uniq, temperature=0.3),
            losses.contrib.label_nt_xent(f, LABELS, temperature=0.3), losses.supcon(f, LABELS,
                                                                             temperature=0.3))

  lab_u, ntx, sup_u, lab, sup = all_(f)
  np.testing.assert_allclose(lab_u, ntx, rtol=1e-5)
  # Every label once per pair: PML = SupCon (one positive per anchor) ...
  np.testing.assert_allclose(np.mean(lab_u), np.mean(sup_u), rtol=1e-5)
  # ... repeated labels: the other positives leave the denominator, SupCon keeps them.
  assert abs(float(np.mean(lab)) - float(np.mean(sup))) > 1e-3


def test_no_negative_and_no_positive_edge_cases():
  f = _data(2, 4, 2, D)
  same, ids = np.zeros(4, np.int32), np.arange(4, dtype=np.int32)

  @jax.jit
  def all_(f):
    return (losses.contrib.label_nt_xent(f, same),                # every row positive: no negative
            losses.contrib.label_nt_xent(f[:, :1], ids),          # one view, unique labels: no positive
            jax.grad(lambda f: jnp.sum(losses.contrib.label_nt_xent(f, same)))(f))

  no_neg, no_pos, g = all_(f)
  np.testing.assert_array_equal(no_neg, np.zeros(4))
  np.testing.assert_array_equal(no_pos, np.zeros(4))
  assert np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------ sharded, blockwise


SX = _data(3, 16, 2, 6)
SW = _data(4, 6, 6)
SL = np.random.default_rng(5).integers(0, 5, size=16).astype(np.int32)
SVALID = np.ones(16, bool)
SVALID[[3, 12]] = False


def _fn(axis_name, impl):
  return lambda w, x, y, valid: losses.contrib.label_nt_xent(
      x @ w, y, temperature=0.1, valid=valid, axis_name=axis_name, impl=impl, block_size=4)


def test_sharded_and_blockwise_equal_single_device_dense():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  sharded = jax.shard_map(_fn("d", "blockwise"), mesh=mesh,
                          in_specs=(P(), P("d"), P("d"), P("d")), out_specs=P("d"))

  def per_and_grad(f, *args):
    per, vjp = jax.vjp(lambda w: f(w, *args), SW)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  (v1, g1), (v8, g8) = jax.jit(lambda x, y, m: (  # dense on 1 device, blockwise on 8
      per_and_grad(_fn(None, "dense"), x, y, m), per_and_grad(sharded, x, y, m)))(SX, SL, SVALID)
  v1 = np.asarray(v1)
  assert np.all(v1[~SVALID] == 0) and np.abs(v1).max() > 0
  want = ref_label_nt_xent(np.einsum("bvd,de->bve", SX, SW), SL, 0.1, valid=SVALID)
  np.testing.assert_allclose(v1, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * np.abs(np.asarray(g1)).max())


# ------------------------------------------------------------------ precision, errors, adapter


def test_bf16_and_extreme_inputs():
  f = _data(6, B, 2, D)
  f[:, 1] += f[:, 0]
  fn = lambda f, t=0.07: losses.contrib.label_nt_xent(f, LABELS, temperature=t)
  grad = jax.grad(lambda f, t=0.07: jnp.sum(fn(f, t)))

  @jax.jit
  def variants(f):
    zero = f.at[2].set(0.0)
    return (fn(f), fn(f.astype(jnp.bfloat16)), grad(f.astype(jnp.bfloat16)),
            (fn(1e4 * f), grad(1e4 * f)), (fn(f, 1e-3), grad(f, 1e-3)), (fn(zero), grad(zero)))

  ref, low, g_low, *extreme = variants(f)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=2e-2, atol=5e-2)
  for value, g in [(None, g_low)] + extreme:
    if value is not None:
      assert np.all(np.isfinite(np.asarray(value)))
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


def test_bad_inputs_name_the_argument():
  f = _data(7, B, 2, D)
  cases = [
      (lambda: losses.contrib.label_nt_xent(f[:, 0], LABELS),
       r"label_nt_xent: 'features' must have rank 3"),
      (lambda: losses.contrib.label_nt_xent(f.astype(np.int32), LABELS),
       r"'features' must be a floating-point array"),
      (lambda: losses.contrib.label_nt_xent(f, LABELS[:3]), r"'labels' must have shape \(6,\)"),
      (lambda: losses.contrib.label_nt_xent(f, LABELS.astype(np.float32)), r"'labels' must be integers"),
      (lambda: losses.contrib.label_nt_xent(f, LABELS, temperature=0.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.label_nt_xent(f, LABELS, valid=VALID[:2]), r"'valid' must have shape"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


def test_trainer_adapter_passes_the_labels():
  from jaxcl.train import objectives
  obj = objectives.make_objective("label_nt_xent", {"temperature": 0.07}, num_views=2)
  f = _data(8, B, 2, D)
  got, want = jax.jit(lambda f: (obj(f, LABELS, jax.random.key(0), None),
                                 losses.contrib.label_nt_xent(f, LABELS, temperature=0.07)))(f)
  np.testing.assert_allclose(got, want, rtol=1e-6)


# ------------------------------------------------------------------ the recipe's pieces


def test_synonym_retrieval_sets():
  from jaxcl.recipes.lexical_specialization import synonym_retrieval
  seen = [["dog", "domestic_dog", "Canis_familiaris"], ["cat", "true_cat"], ["only"]]
  # 'Dog' / 'auto' / 'car' are query texts (case-insensitive): never in the corpus, so the
  # synsets left with no other lemma ('only', 'car', 'auto') are dropped.
  unseen = [["car", "auto", "Dog"], ["auto", "car"], ["boat", "ship"]]
  r = synonym_retrieval(seen, unseen)
  assert r["corpus"] == ["domestic dog", "Canis familiaris", "true cat", "ship"]
  assert r["queries"] == ["dog", "cat", "boat"]
  assert [p.tolist() for p in r["positives"]] == [[0, 1], [2], [3]]
  assert r["seen"].tolist() == [True, True, False]


def test_subword_pooling_and_chunked_embedding():
  from jaxcl.recipes.lexical_specialization import embed
  kw = dict(vocab=120, dim=8, depth=1, heads=2, mlp_dim=16, max_len=6)
  ids = np.array([[101, 7, 9, 102, 0, 0], [101, 5, 102, 0, 0, 0], [101, 8, 8, 8, 102, 0]])
  enc = models.BertEncoder(**kw, return_tokens=True, normalize=False)
  pooled = models.BertEncoder(**kw, pool_exclude=(101, 102))

  @jax.jit
  def ref(x):
    params = enc.init(jax.random.key(0), x)["params"]
    plain, tokens = enc.apply({"params": params}, x)
    return params, plain, tokens

  params, plain, tokens = ref(jnp.asarray(ids))
  sub = (ids != 0) & (ids != 101) & (ids != 102)
  want = (np.asarray(tokens) * sub[..., None]).sum(1) / sub.sum(1, keepdims=True)
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(embed(pooled, params, ids.astype(np.float32), batch=2), want,
                             rtol=1e-5, atol=1e-6)
  plain = np.asarray(plain) / np.linalg.norm(plain, axis=1, keepdims=True)
  assert np.abs(plain - want).max() > 1e-3  # [CLS] / [SEP] change the default mean


@pytest.mark.requires("wordnet")
def test_training_pool_and_held_out_synsets():
  from jaxcl.data import wordnet
  from jaxcl.recipes.lexical_specialization import build_task
  task = build_task(split_seed=0, pool_synsets=60, pairs_per_synset=2, sim_pairs=20,
                    retrieval_synsets=20)
  wn = wordnet.load_wordnet()
  test = set(wordnet.split_synsets(wn, "test", seed=0).tolist())
  pool = set(task["pool"].tolist())
  assert len(pool) >= 60 and not pool & test
  assert set(task["pairs"]["label"].tolist()) <= pool and len(task["pairs"]["a"]) >= len(pool)
  assert np.bincount(np.unique(task["pairs"]["label"], return_inverse=True)[1]).max() <= 2
  for part in ("seen", "unseen"):
    s = task["similarity"][part]
    assert len(s["a"]) == len(s["b"]) == len(s["score"]) == 20
    assert np.all((s["score"] >= 0) & (s["score"] <= 1))
  r = task["retrieval"]
  assert 0 < r["seen"].sum() < len(r["seen"]) and len(r["positives"]) == len(r["queries"])
  assert not {q.lower() for q in r["queries"]} & {c.lower() for c in r["corpus"]}
