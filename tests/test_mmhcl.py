"""MMHCL (arXiv 2504.16576): the full-node GRACE contrast and BPR against float64 loops (value
and gradient), blockwise == dense, 8 devices == 1, bf16 / extreme inputs, argument errors; the
recipe's pieces (BPR sampler, LightGCN / fused embeddings, Recall / NDCG vs loops, the data
generator) and one tiny run through ``python -m jaxcl.main``'s dispatch."""
import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import graph, losses
from tests.reference import check_value_and_grad, lse, unit

N, D = 6, 4
VALID = np.array([1, 1, 0, 1, 1, 1], bool)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _views(seed, n=N, d=D):
  z1 = _data(seed, n, d)
  return z1, z1 + 0.7 * _data(seed + 1, n, d)


def ref_grace(z1, z2, temperature, intra_view=True, symmetric=False, valid=None,
              normalize=True):
  """-s(a_n, b_n) + log(sum_m exp s(a_n, b_m) + sum_{m != n} exp s(a_n, a_m)), loops."""
  ok = [True] * len(z1) if valid is None else list(valid)
  prep = lambda z: [unit(r) if normalize else np.asarray(r, np.float64) for r in z]

  def one(a, b):
    out = np.zeros(len(a))
    for n in range(len(a)):
      if not ok[n]:
        continue
      c = [float(a[n] @ b[m]) / temperature for m in range(len(a)) if ok[m]]
      if intra_view:
        c += [float(a[n] @ a[m]) / temperature for m in range(len(a)) if ok[m] and m != n]
      out[n] = lse(c) - float(a[n] @ b[n]) / temperature
    return out

  a, b = prep(z1), prep(z2)
  return 0.5 * (one(a, b) + one(b, a)) if symmetric else one(a, b)


CASES = {
    "mmhcl": dict(temperature=0.6),
    "symmetric_valid": dict(temperature=0.3, symmetric=True, valid=VALID),
    "inter_only": dict(temperature=0.5, intra_view=False),
    "unnormalized": dict(temperature=2.0, normalize=False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_grace_value_and_gradient_match_the_loop(case):
  kw = CASES[case]
  z1, z2 = _views(0)
  want, _ = check_value_and_grad(lambda a, b: losses.contrib.grace_loss(a, b, **kw),
                                 lambda a, b: ref_grace(a, b, **kw), [z1, z2])
  if "valid" in kw:
    assert want[2] == 0


def test_bpr_value_and_gradient_match_the_loop():
  u, p, n = _data(1, 5, 3), _data(2, 5, 3), _data(3, 5, 3)
  ref = lambda u, p, n: np.array([math.log1p(math.exp(-(float(u[b] @ p[b]) - float(u[b] @ n[b]))))
                                  for b in range(len(u))])
  check_value_and_grad(losses.contrib.bpr_loss, ref, [u, p, n])


def test_grace_blockwise_equals_dense():
  z1, z2 = _views(4, 11, 5)
  vg = lambda impl: jax.value_and_grad(lambda a, b: jnp.sum(losses.contrib.grace_loss(
      a, b, impl=impl, block_size=4)), argnums=(0, 1))(z1, z2)
  dense, tiled = jax.jit(lambda: (vg("dense"), vg("blockwise")))()
  np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-5)
  for a, b in zip(tiled[1], dense[1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grace_sharded_equals_single_device():
  z1, z2 = _views(5, 16, 5)
  valid = np.ones(16, bool)
  valid[[3, 12]] = False
  w = _data(6, 5, 5)
  fn = lambda ax: lambda w, a, b, v: losses.contrib.grace_loss(a @ w, b @ w, valid=v, axis_name=ax,
                                                       temperature=0.4, symmetric=True)
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  sharded = jax.shard_map(fn("d"), mesh=mesh, in_specs=(P(), P("d"), P("d"), P("d")),
                          out_specs=P("d"))

  def both(f):
    per, vjp = jax.vjp(lambda w: f(w, z1, z2, valid), w)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  (v1, g1), (v8, g8) = jax.jit(lambda: (both(fn(None)), both(sharded)))()
  assert np.all(np.asarray(v1)[~valid] == 0) and np.abs(np.asarray(g1)).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-6)


def test_grace_bf16_extreme_inputs_and_errors():
  z1, z2 = _views(7)
  ref, low, big, cold, zero = jax.jit(lambda a, b: (
      losses.contrib.grace_loss(a, b), losses.contrib.grace_loss(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)),
      losses.contrib.grace_loss(1e4 * a, b), jax.grad(lambda a: jnp.sum(losses.contrib.grace_loss(
          a, b, temperature=1e-3)))(a), jax.grad(lambda a: jnp.sum(losses.contrib.grace_loss(
              a.at[1].set(0.0), b)))(a)))(z1, z2)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(big, ref, rtol=1e-4)          # normalised: scale-free
  assert np.all(np.isfinite(cold)) and np.all(np.isfinite(zero))
  with pytest.raises(ValueError, match="'z1' and 'z2' must have the same batch size"):
    losses.contrib.grace_loss(z1, z2[:3])
  with pytest.raises(TypeError, match="'z1' must be a floating-point"):
    losses.contrib.grace_loss(z1.astype(np.int32), z2)
  with pytest.raises(ValueError, match="'temperature' must be > 0"):
    losses.contrib.grace_loss(z1, z2, temperature=0.0)
  with pytest.raises(ValueError, match="'user' and 'neg' must have the same shape"):
    losses.contrib.bpr_loss(z1, z2, z2[:, :2])


# ------------------------------------------------------------------ the recipe's pieces


def test_topk_metrics_match_loops():
  from jaxcl.eval import recsys
  r = np.random.default_rng(8)
  scores = r.normal(size=(7, 12)).astype(np.float32)
  exclude = r.random((7, 12)) < 0.2
  relevant = (r.random((7, 12)) < 0.3) & ~exclude
  relevant[5] = False                                       # a user without a held-out item
  rec, ndcg, has = recsys.topk_metrics(scores, exclude, relevant, 4)
  for u in range(7):
    order = [i for i in np.argsort(-scores[u], kind="stable") if not exclude[u, i]][:4]
    hits = [bool(relevant[u, i]) for i in order]
    n = int(relevant[u].sum())
    if n == 0:
      assert not has[u] and np.isnan(rec[u])
      continue
    dcg = sum(h / math.log2(r_ + 2) for r_, h in enumerate(hits))
    idcg = sum(1 / math.log2(r_ + 2) for r_ in range(min(4, n)))
    np.testing.assert_allclose(rec[u], sum(hits) / n, rtol=1e-6)
    np.testing.assert_allclose(ndcg[u], dcg / idcg, rtol=1e-5)
  s = recsys.summarize(rec, ndcg, has, {"all": np.ones(7, bool), "few": np.arange(7) < 3})
  assert s["users_all"] == 6 and s["users_few"] == 3
  np.testing.assert_allclose(s["recall_few"], np.mean(np.asarray(rec)[:3]), rtol=1e-6)
  with pytest.raises(ValueError, match="'exclude' must have the shape"):
    recsys.topk_metrics(scores, exclude[:3], relevant, 4)


@functools.lru_cache(maxsize=None)
def _tiny_graphs():
  c, mmhcl, data = _tiny()
  return mmhcl.build_graphs(data, 3)


def _tiny():
  from configs.mmhcl_synthetic import get_config
  from jaxcl.recipes import mmhcl
  c = get_config()
  c.data.num_users, c.data.num_items, c.data.mean_interactions = 40, 30, 6.0
  c.data.modality_dims = (16, 16)      # one kNN compile for both modalities
  c.mmhcl.dim, c.mmhcl.batch_size, c.mmhcl.steps, c.mmhcl.topk = 8, 32, 2, 3
  c.mmhcl.impl = "dense"   # blockwise == dense is tested above
  return c, mmhcl, mmhcl.data_from_config(c)


def test_generator_structure_and_sampler():
  c, mmhcl, data = _tiny()
  again = mmhcl.data_from_config(c)
  np.testing.assert_array_equal(data.train[1], again.train[1])   # a pure function of the seed
  tr, va, te = data.matrix("train"), data.matrix("val"), data.matrix("test")
  assert not (tr & va).any() and not (tr & te).any() and not (va & te).any()
  assert tr.sum(1).min() >= 1 and va.sum(1).min() >= 1 and te.sum(1).min() >= 1
  assert [f.shape for f in data.features] == [(30, 16), (30, 16)]
  g = _tiny_graphs()
  users, pos, neg = mmhcl.sample_batch(jax.random.key(0), g, 256)
  users, pos, neg = map(np.asarray, (users, pos, neg))
  assert tr[users, pos].all() and not tr[users, neg].any()
  assert len(set(pos[users == users[0]].tolist())) <= tr[users[0]].sum()


def test_embeddings_match_dense_lightgcn_and_fusion():
  c, mmhcl, data = _tiny()
  g = _tiny_graphs()
  cfg = mmhcl._Static(c.mmhcl)   # pylint: disable=protected-access
  p = mmhcl.init_params(jax.random.key(1), data.num_users, data.num_items, 8, "mmhcl")
  c.mmhcl.view = "first_order"
  first = mmhcl._Static(c.mmhcl)   # pylint: disable=protected-access
  batch = mmhcl.sample_batch(jax.random.key(2), g, 16)
  want = lambda a, b: jnp.mean(losses.contrib.grace_loss(a, b, temperature=0.6))

  @jax.jit
  def run(p, g):
    e = mmhcl.embed(p, g, cfg)
    return (e, mmhcl.loss_fn(p, g, batch, cfg)[1], mmhcl.loss_fn(p, g, batch, first)[1],
            want(e["user"], e["user_2"]), want(e["user_1"], e["user_2"]))

  e, fused, paper, w_fused, w_paper = run(p, g)
  a = np.asarray(graph.to_dense(g["ui"]), np.float64)
  x = np.concatenate([p["user"], p["item"]]).astype(np.float64)
  layers = [x, a @ x, a @ a @ x]
  u1 = np.mean(layers, 0)[:data.num_users]
  uu = np.asarray(graph.hyper_dense(g["uu"]), np.float64)
  u2 = np.linalg.matrix_power(uu, 3) @ np.asarray(p["user_uu"], np.float64)
  np.testing.assert_allclose(e["user_1"], u1, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(e["user_2"], u2, rtol=1e-4, atol=1e-6)
  norm = np.linalg.norm(u2, axis=1, keepdims=True)
  assert (norm == 0).any()           # users sharing no item with anyone: U_2 = 0, U = U_1
  np.testing.assert_allclose(e["user"], u1 + u2 / np.where(norm > 0, norm, 1.0), rtol=1e-4,
                             atol=1e-5)
  # The contrast's first view: the fused embedding (code) or the first-order one (paper).
  np.testing.assert_allclose(fused["cl_user"], w_fused, rtol=1e-5)
  np.testing.assert_allclose(paper["cl_user"], w_paper, rtol=1e-5)
  np.testing.assert_allclose(fused["bpr"], paper["bpr"], rtol=1e-6)


@pytest.mark.long
def test_recipe_runs_through_the_dispatch_and_checks_its_block(tmp_path):
  from jaxcl import recipes
  c, mmhcl, _ = _tiny()
  c.mmhcl.method = "lightgcn"          # the cheap arm: the plumbing (the study smoke runs MMHCL)
  out = recipes.run(c, str(tmp_path))
  saved = json.loads((tmp_path / "mmhcl.json").read_text())
  assert saved["metrics"]["test/recall_all"] == out["test/recall_all"]
  assert 0 <= out["test/recall_all"] <= 1 and np.isfinite(out["train/bpr"])
  assert (tmp_path / "embeddings.npz").exists()
  c.mmhcl.method = "ngcf"
  with pytest.raises(ValueError, match="config.mmhcl.method must be one of"):
    mmhcl.check(c.mmhcl)
  c.mmhcl.method, c.mmhcl.steps = "lightgcn", 0
  with pytest.raises(ValueError, match="config.mmhcl.steps must be an int >= 1"):
    mmhcl.check(c.mmhcl)
