"""MoE-MNRL: BertMoE's enforced routing against a loop of dense BertEncoders, the pretrained
expert initialisation, MNR = info_nce at T = 0.05 against a float64 loop, and the recipe's data /
metric pieces against loops."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.models import BertEncoder, BertMoE
from jaxcl.models import bert_moe
from jaxcl.recipes import moe_mnrl

KW = dict(vocab=40, dim=8, depth=1, heads=2, mlp_dim=12, max_len=8)
E = 3


_moe = jax.jit(lambda p, x: BertMoE(**KW, num_experts=E).apply({"params": p}, x))
_dense = jax.jit(lambda p, ids: BertEncoder(**KW).apply({"params": p}, ids))


def _inputs():
  ids = np.array([[2, 5, 7, 9, 0, 0], [4, 4, 0, 0, 0, 0], [3, 1, 2, 8, 6, 0],
                  [7, 7, 7, 0, 0, 0], [5, 9, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6]], np.float32)
  route = np.array([2, 0, 1, 1, 0, 2], np.float32)
  return ids, route, np.concatenate([route[:, None], ids], 1)


def _moe_params():
  _, _, x = _inputs()
  return jax.jit(BertMoE(**KW, num_experts=E).init)(jax.random.key(0), jnp.asarray(x))["params"]


def _dense_of_expert(params, e):
  """BertEncoder params whose FFNs are expert ``e`` of the MoE params."""
  out = jax.tree.map(lambda a: a, params)
  for k in out:
    if k.startswith("layer_"):
      out[k] = {**out[k], **{n: jax.tree.map(lambda a: a[e], out[k][n])
                             for n in ("ffn_in", "ffn_out")}}
  return out


def test_routing_equals_dense_model_of_each_domain_value_and_grad():
  ids, route, x = _inputs()
  params = _moe_params()
  assert params["layer_0"]["ffn_in"]["kernel"].shape == (E, 8, 12)
  out = _moe(params, jnp.asarray(x))
  for e in range(E):  # rows of domain e == the dense model built from expert e
    rows = route == e
    ref = _dense(_dense_of_expert(params, e), jnp.asarray(ids))[rows]
    np.testing.assert_allclose(out[rows], ref, atol=1e-5)
  # Gradient: a loss on domain-0 rows reaches expert 0 only; the shared weights get the dense
  # model's gradient.
  w = jnp.asarray(np.random.default_rng(0).normal(size=(len(route), 8)) * (route == 0)[:, None],
                  jnp.float32)
  g = jax.jit(jax.grad(lambda p: jnp.sum(_moe(p, jnp.asarray(x)) * w)))(params)
  gd = jax.jit(jax.grad(lambda p: jnp.sum(_dense(p, jnp.asarray(ids)) * w)))(
      _dense_of_expert(params, 0))
  for layer in ("layer_0",):
    for n in ("ffn_in", "ffn_out"):
      k = g[layer][n]["kernel"]
      assert float(jnp.abs(k[1:]).max()) == 0.0
      np.testing.assert_allclose(k[0], gd[layer][n]["kernel"], atol=1e-5)
  np.testing.assert_allclose(g["word"]["embedding"], gd["word"]["embedding"], atol=1e-5)


def test_experts_start_as_the_pretrained_ffn_and_warm_start_copies_them():
  from jaxcl.train.step import TrainState
  ids, _, x = _inputs()
  bert = jax.tree.map(np.asarray, jax.jit(BertEncoder(**KW).init)(jax.random.key(3),
                                                                   jnp.asarray(ids))["params"])
  tree = {"towers_0": {"encoder": _moe_params()}, "other": {"w": np.ones(2, np.float32)}}
  state = TrainState(params=tree, batch_stats={}, opt_state=None, step=0, rng=None)
  new = bert_moe.warm_start(E, bert_params=bert)(state).params
  enc = new["towers_0"]["encoder"]
  for layer in ("layer_0",):
    for n in ("ffn_in", "ffn_out"):
      for p in ("kernel", "bias"):
        for e in range(E):
          np.testing.assert_array_equal(enc[layer][n][p][e], bert[layer][n][p])
    np.testing.assert_array_equal(enc[layer]["query"]["kernel"], bert[layer]["query"]["kernel"])
  np.testing.assert_array_equal(new["other"]["w"], 1.0)
  # Identical experts: the MoE is the dense model whatever the routing.
  np.testing.assert_allclose(_moe(enc, jnp.asarray(x)), _dense(bert, jnp.asarray(ids)),
                             atol=1e-5)
  # Only layer 1 with experts: layer 0 keeps the dense FFN.
  two = {**bert, "layer_1": bert["layer_0"]}
  part = bert_moe.expand_bert_params(two, E, moe_layers=(1,))
  assert part["layer_0"]["ffn_in"]["kernel"].shape == (8, 12)
  assert part["layer_1"]["ffn_in"]["kernel"].shape == (E, 8, 12)
  with pytest.raises(ValueError, match="structure"):  # a tree of another depth
    bert_moe.warm_start(E, bert_params=two)(state)


def test_bad_route_ids_and_inputs():
  _, _, x = _inputs()
  moe = BertMoE(**KW, num_experts=E)
  params = _moe_params()
  out = _moe(params, jnp.asarray(x).at[1, 0].set(E))
  assert bool(jnp.isnan(out[1]).all()) and bool(jnp.isfinite(out[0]).all())
  with pytest.raises(ValueError, match="'x' must be"):
    moe.apply({"params": params}, jnp.zeros((2, 1)))
  with pytest.raises(ValueError, match="num_experts"):
    BertMoE(**KW, num_experts=0).init(jax.random.key(0), jnp.asarray(x))
  with pytest.raises(ValueError, match="moe_layers"):
    BertMoE(**KW, moe_layers=(5,)).init(jax.random.key(0), jnp.asarray(x))
  with pytest.raises(ValueError, match="num_experts"):
    bert_moe.expand_bert_params({}, True)
  # bf16 compute: finite and close to float32.
  lo = jax.jit(BertMoE(**KW, num_experts=E, dtype=jnp.bfloat16).apply)({"params": params},
                                                                        jnp.asarray(x))
  assert lo.dtype == jnp.float32 and bool(jnp.isfinite(lo).all())
  np.testing.assert_allclose(lo, _moe(params, jnp.asarray(x)), atol=0.1)


def test_mnr_is_info_nce_at_scale_20_value_and_grad():
  # sentence-transformers' MultipleNegativesRankingLoss, re-derived as a float64 loop:
  # L = mean_i [log sum_j exp(20 cos(a_i, p_j)) - 20 cos(a_i, p_i)].
  from jaxcl.losses import info_nce
  rng = np.random.default_rng(1)
  a, p = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))

  def ref(a, p):
    cos = lambda u, v: float(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))
    tot = 0.0
    for i in range(len(a)):
      s = [20.0 * cos(a[i], p[j]) for j in range(len(p))]
      tot += np.log(np.sum(np.exp(s))) - s[i]
    return tot / len(a)

  loss = lambda a, p: jnp.mean(info_nce(a, p, temperature=0.05))
  val, (ga, gp) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(jnp.asarray(a, jnp.float32),
                                                          jnp.asarray(p, jnp.float32))
  np.testing.assert_allclose(float(val), ref(a, p), rtol=1e-5)
  eps = 1e-6
  for arr, g, which in ((a, ga, 0), (p, gp, 1)):
    for i, j in ((0, 0), (3, 2), (5, 4)):
      d = np.zeros_like(arr)
      d[i, j] = eps
      args = lambda s: (a + s * d, p) if which == 0 else (a, p + s * d)
      num = (ref(*args(1)) - ref(*args(-1))) / (2 * eps)
      np.testing.assert_allclose(float(g[i, j]), num, rtol=1e-3, atol=1e-5)


def test_route_blocks_against_a_loop():
  x = np.arange(2 * 6, dtype=np.float32).reshape(2, 6) + 1
  out = moe_mnrl.route_blocks(x, [4, 7], 2)
  ref = [[d] + list(row[:3]) + [d] + list(row[3:]) for d, row in zip((4, 7), x)]
  np.testing.assert_array_equal(out, np.array(ref, np.float32))
  with pytest.raises(ValueError, match="'x' must be"):
    moe_mnrl.route_blocks(x[:, :5], [0, 1], 2)
  with pytest.raises(ValueError, match="'domain'"):
    moe_mnrl.route_blocks(x, [0], 2)


def test_threshold_f1_and_auc_against_brute_force():
  rng = np.random.default_rng(2)
  pos, neg = np.round(rng.normal(0.6, 0.2, 15), 2), np.round(rng.normal(0.3, 0.2, 20), 2)
  t, f1 = moe_mnrl.best_f1_threshold(pos, neg)
  cands = np.concatenate([pos, neg])
  best = max(moe_mnrl.f1_at(pos, neg, c) for c in cands)  # every achievable cut
  assert f1 == pytest.approx(best) and moe_mnrl.f1_at(pos, neg, t) == pytest.approx(best)
  auc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])
  assert moe_mnrl.roc_auc(pos, neg) == pytest.approx(auc)
  assert moe_mnrl.best_f1_threshold(np.array([0.9]), np.array([0.1]))[1] == 1.0
  with pytest.raises(ValueError, match="pos_scores"):
    moe_mnrl.best_f1_threshold(np.zeros(0), neg)


def test_per_domain_runs_see_exactly_the_shared_runs_batches_of_their_domain():
  from jaxcl.data import text
  domain = np.repeat(np.arange(3), [40, 40, 40])
  x = np.arange(120, dtype=np.float32)[:, None]
  shared = text.batches(x, domain, global_batch_size=8, seed=3, groups=domain,
                        process_index=0, process_count=1)
  seen = [next(shared) for _ in range(9)]
  for d in range(3):
    rows = domain == d
    own = text.batches(x[rows], domain[rows], global_batch_size=8, seed=3,
                       groups=domain[rows], process_index=0, process_count=1)
    mine = [b["x"] for b in seen if int(b["y"][0]) == d]
    assert len(mine) == 3
    for b in mine:
      np.testing.assert_array_equal(next(own)["x"], b)


@pytest.mark.requires("wordnet")
def test_domain_pairs_and_eval_sets_on_wordnet():
  from jaxcl.data import wordnet
  wn = wordnet.load_wordnet()
  tr = moe_mnrl.domain_pairs(wn, ("v", "a"), "train", 25, seed=0, split_seed=0)
  assert np.bincount(tr["domain"]).tolist() == [25, 25]
  assert all(wn.pos[s] == "v" for s in tr["synset"][:25])
  assert all(wn.pos[s] in "as" for s in tr["synset"][25:])
  evs = moe_mnrl.eval_sets(wn, ("v", "a"), 20, 0.4, split_seed=0)
  assert not set(tr["synset"]) & {int(s) for ev in evs for s in ev["pairs"]["synset"]}
  for ev in evs:
    p, v = ev["pairs"], ev["n_val"]
    assert v == 8 and len(ev["positives"]) == 12
    for i, j in enumerate(ev["negative"]):  # a non-synonym partner from the same part
      assert (i < v) == (j < v) and i != j
      assert p["b"][j].lower() not in {wordnet.text(w).lower() for w in wn.lemmas[p["synset"][i]]}
    assert all(i - v in ev["positives"][i - v] for i in range(v, len(p["a"])))
  # Perfect embeddings (one direction per synset) give perfect metrics.
  ev = evs[0]
  z = np.eye(64, dtype=np.float32)[np.unique(ev["pairs"]["synset"], return_inverse=True)[1]]
  m = moe_mnrl.domain_metrics(z, z, ev)
  assert m["mrr@10"] == 1.0 and m["pair_f1"] == 1.0 and m["pair_auc"] == 1.0


def test_moe_arm_config_validates_after_registration():
  from jaxcl.train.config import make_objective, validate
  from configs.moe_mnrl_wordnet import get_config
  c = get_config()
  c.moe_mnrl.arm = "moe"
  tok = lambda s, pad_to: {"input_ids": np.array([[101, 7, 102]] * len(s))}
  pairs = {"a": np.array(["x", "y"], object), "b": np.array(["u", "v"], object),
           "synset": np.array([0, 1]), "domain": np.array([0, 2])}
  name, x, _ = moe_mnrl.register_pairs(pairs, tok, 8, 117659, routed=True)
  assert name == moe_mnrl.NAME + "_routed" and x.shape == (2, 18)
  assert x[1, 0] == 2 and x[1, 9] == 2 and x[1, 1] == 101
  tc = moe_mnrl.arm_config(c, name, 10)
  assert "moe_mnrl" not in tc and tc.model.modalities.text_0.encoder == "bert_moe"
  assert tc.model.modalities.text_0.encoder_kwargs.num_experts == 3
  assert validate(tc, num_devices=8, num_processes=1).name == name
  make_objective(tc)
  c.moe_mnrl.arm = "nope"
  with pytest.raises(ValueError, match="config.moe_mnrl.arm"):
    moe_mnrl.train(c, "/nonexistent")
