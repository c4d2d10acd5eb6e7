"""CoDiEmb through the trainer: the joint IR + STS objective and the naive one-InfoNCE baseline
(float64 loop references, value and gradient; 8 devices == 1), the task / score labels, the
trainer adapter, delta-guided fusion vs plain averaging (NumPy loops), and the WordNet recipe's
pieces on a stand-in WordNet (rows, balanced single-task batches, held-out evaluation sets; the
end-to-end run with real WordNet is the study's smoke test, tests/test_studies.py)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import fusion, losses
from tests import ssl_reference as ref
from tests.test_codiemb import ref_ir, ref_sts

B, M, D, NP = 8, 4, 6, 2
S = M // 2


def _inputs(seed):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(B, M, D)).astype(np.float32)
  task = np.array([0, 1, 0, 1, 1, 0, 1, 0], np.int32)
  scores = np.where(task[:, None] == 1, rng.uniform(0, 1, (B, S)), 0).astype(np.float32)
  scores[1, 0] = 0.8  # surely above the 0.75 threshold
  return z, task, scores


def ref_joint(z, task, scores, t=0.02):
  """CoDiEmb: the IR reference on the IR rows, the STS reference on all pairs of STS rows."""
  ir, sts = task == 0, task == 1
  out = np.zeros(len(z))
  out[ir] = ref_ir(z[ir, 0], z[ir, 1:NP + 1], z[ir, NP + 1:], t, np.ones(ir.sum(), bool))
  a, b = z[sts][:, 0::2].reshape(-1, z.shape[2]), z[sts][:, 1::2].reshape(-1, z.shape[2])
  out[sts] = ref_sts(a, b, scores[sts].reshape(-1), 0.05, 0.1, w=(2.0, 0.5, 5.0, 0.0))
  return out


def ref_info_nce(z, task, scores, t=0.02, thr=0.75):
  zn = ref.unit(z.astype(np.float64))
  anchors = []  # (row, slot, u, v)
  for i, s in itertools.product(range(len(z)), range(S)):
    if task[i] == 0 and s < NP:
      anchors.append((i, s, zn[i, 0], zn[i, 1 + s]))
    elif task[i] == 1 and scores[i, s] >= thr:
      anchors.append((i, s, zn[i, 2 * s], zn[i, 2 * s + 1]))
  negs = [zn[i, k] for i in range(len(z)) if task[i] == 0 for k in range(NP + 1, M)]
  out, count = np.zeros(len(z)), np.zeros(len(z))
  for i, s, u, v in anchors:
    cands = [v2 for j, t2, _, v2 in anchors if j != i or t2 == s] + negs
    out[i] += -u @ v / t + ref.lse([u @ c / t for c in cands])
    count[i] += 1
  return np.where(count > 0, out / np.maximum(count, 1), 0.0)


@pytest.mark.parametrize("form", ["codiemb", "info_nce"])
def test_joint_matches_loop_reference_value_and_gradient(form):
  z, task, scores = _inputs(0)
  want_fn = ref_joint if form == "codiemb" else ref_info_nce
  f = lambda z: losses.contrib.codiemb_joint(z, task, scores, positives=NP, form=form)
  g = np.random.default_rng(1).uniform(0.5, 1.5, B)
  value, got = jax.jit(lambda z: (f(z), jax.grad(lambda z: jnp.sum(g * f(z)))(z)))(z)
  np.testing.assert_allclose(value, want_fn(z, task, scores), rtol=5e-5, atol=5e-5)
  direction = np.random.default_rng(2).normal(size=z.shape)
  np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                             ref.fd_directional(lambda x: g @ want_fn(x, task, scores), z,
                                                direction), rtol=5e-4)


def test_sharded_equals_single_device():
  """8 devices, one row each: value (every form) and gradient equal the single-device call."""
  z, task, scores = _inputs(3)
  w = np.random.default_rng(4).uniform(0.5, 1.5, B).astype(np.float32)

  def loss(z, task, scores, w, ax=None):
    return tuple(jnp.sum(w * losses.contrib.codiemb_joint(z, task, scores, positives=NP, form=f,
                                                  axis_name=ax)) for f in ("codiemb", "info_nce"))

  body = lambda *a: jax.tree.map(lambda x: jax.lax.psum(x, "data"), loss(*a, ax="data"))
  total = ref.shard(body, (P("data"),) * 4, P())
  vg = lambda fn: jax.value_and_grad(lambda *a: sum(fn(*a)))
  (got_v, got_g), (want_v, want_g) = jax.jit(lambda *a: (vg(total)(*a), vg(loss)(*a)))(
      z, task, scores, w)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-5)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-5)


def test_labels_round_trip_and_adapter():
  from jaxcl.train.objectives import make_objective
  z, task, scores = _inputs(5)
  y = losses.contrib.codiemb_labels(task, scores, S)
  assert y.dtype == np.int32 and np.all((y < 0) == (task == 1))
  obj = make_objective("codiemb_joint", {"positives": NP, "form": "codiemb"}, num_views=M)
  y1 = losses.contrib.codiemb_labels([1, 1], [[0.0], [1.0]], 1)
  (t2, s2), (_, s1), got, want = jax.jit(lambda z, y, y1: (
      losses.contrib.codiemb_unpack_labels(y, S), losses.contrib.codiemb_unpack_labels(y1, 1),
      obj(z, y, None, None), losses.contrib.codiemb_joint(z, task, scores, positives=NP)))(z, y, y1)
  np.testing.assert_array_equal(t2, task)
  np.testing.assert_allclose(s2, scores, atol=0.5 / (2 ** 15 - 1))
  np.testing.assert_array_equal(s1, [[0.0], [1.0]])
  np.testing.assert_allclose(got, want, rtol=1e-4)  # scores quantised to 2^-15
  with pytest.raises(ValueError, match="even number"):
    make_objective("codiemb_joint", {}, num_views=3)
  with pytest.raises(ValueError, match="'scores'"):
    losses.contrib.codiemb_labels([1], [[1.5, 0.0]], 2)
  with pytest.raises(ValueError, match="'task'"):
    losses.contrib.codiemb_labels([2], [[0.5, 0.0]], 2)


def test_bf16_extreme_and_bad_inputs():
  z, task, scores = _inputs(6)
  def extreme(z):
    big = jnp.asarray(z * 1e4, jnp.bfloat16)
    out = [losses.contrib.codiemb_joint(big, task, scores, positives=NP, form=f, temperature=1e-4)
           for f in ("codiemb", "info_nce")]
    one_task = [jax.grad(lambda z: jnp.sum(losses.contrib.codiemb_joint(  # single-task batches
        z, jnp.full(B, t), scores, positives=NP)))(z) for t in (0, 1)]
    return out + one_task + [losses.contrib.codiemb_joint(z, task, scores, positives=NP,
                                                  valid=jnp.zeros(B, bool))]
  *got, none_valid = jax.jit(extreme)(z)
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in got)
  np.testing.assert_array_equal(none_valid, 0.0)
  for kw, name in (({"form": "cosent"}, "'form'"), ({"positives": 4}, "'positives'"),
                   ({"temperature": 0.0}, "'temperature'"),
                   ({"sts_temperature": -1.0}, "'sts_temperature'")):
    with pytest.raises(ValueError, match=name):
      losses.contrib.codiemb_joint(z, task, scores, **{"positives": NP, **kw})
  with pytest.raises(ValueError, match="even number"):
    losses.contrib.codiemb_joint(z[:, :3], task, scores)
  with pytest.raises(ValueError, match="'task'"):
    losses.contrib.codiemb_joint(z, task[:3], scores)
  with pytest.raises(ValueError, match="'scores'"):
    losses.contrib.codiemb_joint(z, task, scores[:, :1])
  with pytest.raises(TypeError, match="'z'"):
    losses.contrib.codiemb_joint(z.astype(np.int32), task, scores)


def test_fusion_matches_numpy_loops():
  rng = np.random.default_rng(7)
  init = {"a": rng.normal(size=(3, 2)), "b": {"c": rng.normal(size=4)}}
  ckpts = [jax.tree.map(lambda x: x + rng.normal(size=x.shape) * (k + 1), init) for k in range(3)]
  ckpts[0]["b"]["c"][1] = init["b"]["c"][1]  # an element one checkpoint left alone
  for k in range(3):
    ckpts[k]["a"][0, 0] = init["a"][0, 0]    # an element no checkpoint moved
  avg = fusion.average(ckpts)
  for power, gran in ((1.0, "element"), (2.0, "element"), (1.0, "tensor")):
    got = fusion.delta_guided(init, ckpts, power=power, granularity=gran)
    for path in (("a",), ("b", "c")):
      t0 = init[path[0]] if len(path) == 1 else init["b"]["c"]
      ts = [c[path[0]] if len(path) == 1 else c["b"]["c"] for c in ckpts]
      flat0, flats = t0.reshape(-1), [t.reshape(-1) for t in ts]
      want = np.empty_like(flat0)
      for e in range(len(flat0)):
        d = [f[e] - flat0[e] for f in flats]
        if gran == "tensor":
          mags = [np.sqrt(np.mean((f - flat0) ** 2)) for f in flats]
        else:
          mags = [abs(x) for x in d]
        w = [mg ** power for mg in mags]
        tot = sum(w)
        want[e] = flat0[e] + (sum(wk * dk for wk, dk in zip(w, d)) / tot if tot > 1e-12 else 0)
      g = got[path[0]] if len(path) == 1 else got["b"]["c"]
      np.testing.assert_allclose(g.reshape(-1), want, rtol=1e-5, atol=1e-6)
      a = avg[path[0]] if len(path) == 1 else avg["b"]["c"]
      np.testing.assert_allclose(a, np.mean(ts, axis=0), rtol=1e-5, atol=1e-6)
  assert got["a"][0, 0] == np.float32(init["a"][0, 0])
  np.testing.assert_allclose(fusion.delta_guided(init, ckpts, power=0.0)["a"], avg["a"],
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="'checkpoints'"):
    fusion.average([])
  with pytest.raises(ValueError, match="'checkpoints'"):
    fusion.delta_guided(init, [{"a": init["a"]}])
  with pytest.raises(ValueError, match="'granularity'"):
    fusion.delta_guided(init, ckpts, granularity="layer")


# ---- the recipe on a stand-in WordNet (no data files, a word tokenizer, a tiny BERT) ----------

def _fake_wordnet():
  from jaxcl.data.wordnet import WordNet
  n, hyper = 40, [()]
  for i in range(1, 40):
    hyper.append(((i - 1) // 3,))
  lemmas = tuple((f"w{i}",) if i % 3 else (f"w{i}", f"v{i}", f"u{i}") for i in range(n))
  defs = tuple(f"thing {i % 7} of kind {i // 3}" for i in range(n))
  return WordNet(offsets=np.arange(n, dtype=np.int64), pos=np.array(["n"] * n), lemmas=lemmas,
                 glosses=defs, definitions=defs, hypernyms=tuple(hyper), directory="",
                 _cache={})


def _tokenize(texts, pad_to=None):
  rows = [[2] + [4 + (sum(map(ord, w)) % 36) for w in t.split()] + [3] for t in texts]
  width = max(map(len, rows)) if pad_to is None else pad_to
  ids = np.zeros((len(rows), width), np.int32)
  for r, row in enumerate(rows):
    ids[r, :len(row)] = row
  return {"input_ids": ids}


def _config():
  from configs.codiemb_wordnet import get_config
  c = get_config()
  c.model.pretrained = ""
  c.model.encoder_kwargs = dict(vocab=40, dim=8, depth=1, heads=2, mlp_dim=16, max_len=8)
  c.num_steps, c.batch_size, c.optim.warmup_steps = 2, 8, 1
  m = c.codiemb
  m.ir_rows = m.sts_rows = 8
  m.text_len, m.word_len, m.test_fraction = 8, 4, 0.25
  m.eval_queries, m.eval_distractors, m.eval_pairs = 6, 10, 8
  m.fuse_checkpoints = 2
  return c


def test_recipe_rows_sampler_and_eval_sets():
  from jaxcl.data import text, wordnet
  from jaxcl.recipes import codiemb
  wn, m = _fake_wordnet(), _config().codiemb
  cols = codiemb.ir_rows(wn, m, seed=0)
  test = set(wordnet.split_synsets(wn, "test", test_fraction=0.25).tolist())
  for q, p1, p2, neg in zip(*cols):
    i = wn.definitions.index(q)
    assert i not in test and {p1, p2} <= set(wn.lemmas[i]) and neg not in wn.lemmas[i]
    assert p1 != p2 or len(wn.lemmas[i]) == 1
  _, x, y, task = codiemb.training_data(wn, m, _tokenize, 0, vocab=40)
  assert x.shape == (16, 4 * 8) and np.all((y < 0) == (task == 1))
  it = text.batches(x, y, global_batch_size=4, seed=0, groups=task, process_index=0,
                    process_count=1)
  kinds = [set((next(it)["y"] < 0).tolist()) for _ in range(4)]
  assert kinds == [{False}, {True}, {False}, {True}]  # single-task batches, alternating
  sets = codiemb.eval_sets(wn, m, _tokenize)
  corpus_ids = sets["corpus"]
  rd = wordnet.reverse_dictionary(wn, "test", test_fraction=0.25, pos="n")
  for qi, ps in zip(sets["queries"], sets["positives"]):
    k = [j for j, t in enumerate(rd["queries"])
         if np.array_equal(text.encode(_tokenize, [t], m.text_len)[0], qi)][0]
    want = {tuple(text.encode(_tokenize, [rd["corpus"][c]], m.word_len)[0])
            for c in rd["positives"][k]}
    assert {tuple(corpus_ids[p]) for p in ps} == want
