"""MEOW / AdaMEOW objectives (jaxcl.losses.meow), the heterogeneous graph generator
(jaxcl.data.hetero) and the recipe's checks: float64 loop references (value and gradient by
central differences), sharded == single device, the AdaMEOW collapse guard, bad inputs."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from jaxcl.data import hetero
from tests.reference import check_value_and_grad, lse, unit

N, D, T = 8, 5, 0.5
RNG = np.random.default_rng(0)
A = RNG.standard_normal((N, D)).astype(np.float32)
B = RNG.standard_normal((N, D)).astype(np.float32)
CL = np.stack([np.arange(N) % 3, np.arange(N) % 2], 1).astype(np.int32)
VALID = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
MLP = {k: np.asarray(v) for k, v in losses.contrib.init_weight_mlp(jax.random.key(1), D, 4).items()}


def _units(x):
  return [unit(r) for r in np.asarray(x, np.float64)]


def ref_meow(a, p, clusters, valid):
  a, p = _units(a), _units(p)
  out = np.zeros(len(a))
  for i in range(len(a)):
    if not valid[i]:
      continue
    terms = []
    for j in range(len(a)):
      w = clusters.shape[1] - sum(int(clusters[i, t] == clusters[j, t])
                                  for t in range(clusters.shape[1]))
      if valid[j] and w > 0:
        terms.append(math.log(w) + float(np.dot(a[i], p[j])) / T)
    if terms:
      out[i] = lse(terms) - float(np.dot(a[i], p[i])) / T
  return out


def ref_adameow(a, c, w1, b1, w2, b2, norm, valid):
  a, c = _units(a), _units(c)
  out = np.zeros(len(a))
  for i in range(len(a)):
    if not valid[i]:
      continue
    ws, ss = [], []
    for j in range(len(a)):
      if valid[j]:
        h = np.tanh((a[i] + c[j]) @ np.asarray(w1, np.float64) + b1)
        ws.append(1.0 / (1.0 + math.exp(-(float(h @ w2) + float(b2)))))
        ss.append(float(np.dot(a[i], c[j])) / T)
    ws = np.array(ws)
    if norm == "mean":
      ws = ws / ws.mean()
    elif norm == "sum":
      ws = ws / ws.sum()
    out[i] = lse([math.log(w) + s for w, s in zip(ws, ss)]) - float(np.dot(a[i], c[i])) / T
  return out


def ref_proto(z, mu, assign, phi):
  z, mu, phi = _units(z), _units(mu), np.asarray(phi, np.float64)
  out = np.zeros(len(z))
  for i in range(len(z)):
    s = [float(np.dot(z[i], mu[k])) / phi[k] for k in range(len(mu))]
    out[i] = lse(s) - s[assign[i]]
  return out


def test_meow_info_nce_value_and_grad():
  lib = lambda a, p: losses.contrib.meow_info_nce(a, p, CL, temperature=T, valid=VALID)
  want, _ = check_value_and_grad(lib, lambda a, p: ref_meow(a, p, CL, VALID), [A, B])
  assert want[3] == 0 and np.all(want[VALID] != 0)
  # One clustering where every node is co-clustered with i: no denominator, loss 0.
  same = np.zeros((N, 1), np.int32)
  assert np.all(np.asarray(losses.contrib.meow_info_nce(A, B, same)) == 0)


@pytest.mark.parametrize("norm", [None, "mean"])
def test_adameow_value_and_grad(norm):
  b2 = np.float32(MLP["b2"])

  def lib(a, c, w1, b1, w2):
    mlp = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}
    return losses.contrib.adameow_info_nce(a, c, mlp, temperature=T, normalize_weights=norm,
                                   valid=VALID, block_size=3)

  ref = lambda a, c, w1, b1, w2: ref_adameow(a, c, w1, b1, w2, b2, norm, VALID)
  # b1, w2 are rank 1: pass them as [1, H] rows to the reference's finite differences.
  lib2 = lambda a, c, w1, b1, w2: lib(a, c, w1, b1[0], w2[0])
  ref2 = lambda a, c, w1, b1, w2: ref(a, c, w1, b1[0], w2[0])
  check_value_and_grad(lib2, ref2, [A, B, MLP["w1"], MLP["b1"][None], MLP["w2"][None]])


def test_adameow_collapse_guard():
  """The released form lowers its loss by shrinking every weight (d loss / d b2 > 0, unbounded
  below as b2 -> -inf); the row-mean form is invariant to a common scale of the weights, which
  is what b2 -> -inf becomes (sigmoid(x) ~ e^x): flat there, ~0 gradient at b2 = 0."""
  def mean_loss(b2, norm):
    mlp = {**{k: jnp.asarray(v) for k, v in MLP.items()}, "b2": b2}
    return jnp.mean(losses.contrib.adameow_info_nce(A, B, mlp, normalize_weights=norm))
  mean_loss = jax.jit(mean_loss, static_argnums=1)
  grad = jax.jit(jax.grad(mean_loss), static_argnums=1)
  g_code = float(grad(jnp.float32(0.0), None))
  g_mean = float(grad(jnp.float32(0.0), "mean"))
  # "sum" = "mean" - log(#candidates): the same gradients.
  np.testing.assert_allclose(float(mean_loss(jnp.float32(0.0), "sum")),
                             float(mean_loss(jnp.float32(0.0), "mean")) - math.log(N), rtol=1e-5)
  assert g_code > 0.1 and abs(g_mean) < 1e-2 * g_code
  code = [float(mean_loss(jnp.float32(b), None)) for b in (0.0, -20.0)]
  mean = [float(mean_loss(jnp.float32(b), "mean")) for b in (-20.0, -30.0)]
  assert code[1] < code[0] - 10 and abs(mean[1] - mean[0]) < 1e-4


def test_proto_nce_and_concentration():
  mu = RNG.standard_normal((3, D)).astype(np.float32)
  assign = np.array([0, 1, 2, 0, 1, 2, 0, 0], np.int32)
  phi = np.array([0.3, 0.5, 0.8], np.float32)
  check_value_and_grad(lambda z, m: losses.contrib.proto_nce(z, m, assign, phi),
                       lambda z, m: ref_proto(z, m, assign, phi), [A, mu])
  # Concentration: mean ||z - mu|| / log(n + 5), clipped to the 10-90 percentiles, mean = T.
  got = np.asarray(losses.contrib.concentration(A, mu, assign, temperature=0.4))
  z, m = np.array(_units(A)), np.array(_units(mu))
  raw = np.array([np.mean([np.linalg.norm(z[i] - m[k]) for i in range(N) if assign[i] == k])
                  / math.log((assign == k).sum() + 5) for k in range(3)])
  raw = np.clip(raw, np.percentile(raw, 10), np.percentile(raw, 90))
  np.testing.assert_allclose(got, 0.4 * raw / raw.mean(), rtol=1e-5)


def test_meow_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  a, p = RNG.standard_normal((16, D)).astype(np.float32), RNG.standard_normal((16, D))
  cl = RNG.integers(0, 3, (16, 2)).astype(np.int32)
  valid = np.arange(16) % 5 != 2
  f = lambda ax: lambda a, p, c, v: losses.contrib.meow_info_nce(a, p, c, valid=v, axis_name=ax,
                                                         impl="dense")
  sharded = jax.shard_map(f("d"), mesh=mesh, in_specs=(P("d"),) * 4, out_specs=P("d"))

  @jax.jit
  def both(a, p):
    g = lambda fn: jax.value_and_grad(lambda a, p: jnp.mean(fn(a, p, cl, valid)), (0, 1))(a, p)
    return f(None)(a, p, cl, valid), g(f(None)), sharded(a, p, cl, valid), g(sharded)

  v1, (l1, g1), v8, (l8, g8) = both(a, p.astype(np.float32))
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  for x, y in zip(g8, g1):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_extreme_and_bf16_inputs():
  big = A * 1e4
  v = np.asarray(losses.contrib.meow_info_nce(big.astype(jnp.bfloat16), B, CL, temperature=0.05))
  assert v.dtype == np.float32 and np.all(np.isfinite(v))
  mlp = {k: jnp.asarray(x) for k, x in MLP.items()}
  v = np.asarray(losses.contrib.adameow_info_nce(big, B.astype(jnp.bfloat16), mlp, temperature=0.05))
  assert np.all(np.isfinite(v))


def test_bad_inputs_name_the_argument():
  mlp = {k: jnp.asarray(x) for k, x in MLP.items()}
  with pytest.raises(ValueError, match="'clusters'"):
    losses.contrib.meow_info_nce(A, B, CL[:5])
  with pytest.raises(TypeError, match="'clusters'"):
    losses.contrib.meow_info_nce(A, B, CL.astype(np.float32))
  with pytest.raises(ValueError, match="'positive'"):
    losses.contrib.meow_info_nce(A, B[:4], CL)
  with pytest.raises(TypeError, match="'anchor'"):
    losses.contrib.meow_info_nce(A.astype(np.int32), B, CL)
  with pytest.raises(ValueError, match="'normalize_weights'"):
    losses.contrib.adameow_info_nce(A, B, mlp, normalize_weights="max")
  with pytest.raises(ValueError, match="'mlp'"):
    losses.contrib.adameow_info_nce(A, B, {"w1": mlp["w1"]})
  with pytest.raises(ValueError, match="'concentrations'"):
    losses.contrib.proto_nce(A, A[:3], np.zeros(N, np.int32), np.ones(2, np.float32))
  with pytest.raises(ValueError, match="'concentrations'"):
    losses.contrib.proto_nce(A, A[:3], np.zeros(N, np.int32), -np.ones(3, np.float32))


def test_hetero_generator_structure():
  kw = dict(num_papers=300, num_authors=60, num_venues=9, author_homophily=0.8,
            venue_homophily=0.7)
  g = hetero.make_hetero(3, **kw)
  g2 = hetero.make_hetero(3, **kw)
  for x, y in zip(g, g2):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))   # deterministic in the seed
  assert not np.array_equal(hetero.make_hetero(4, **kw).labels, g.labels)
  assert np.bincount(g.labels).tolist() == [100, 100, 100]
  assert np.bincount(g.labels[g.train]).tolist() == [20, 20, 20]
  splits = np.concatenate([g.train, g.val, g.test])
  assert sorted(splits.tolist()) == list(range(300))             # disjoint, covering
  # Slots follow the paper's class with prob h + (1 - h) / C.
  same_a = np.mean(g.author_class[g.paper_author] == g.labels[:, None])
  same_v = np.mean(g.venue_class[g.paper_venue] == g.labels)
  assert abs(same_a - (0.8 + 0.2 / 3)) < 0.04 and abs(same_v - (0.7 + 0.3 / 3)) < 0.06
  pa, pv = hetero.incidence(g)
  assert pa.sum() == 300 * 3 and np.all(pv.sum(1) == 1)
  mps = hetero.metapaths(g)
  for name, a in mps.items():
    assert a.shape == (300, 300) and np.all(np.diag(a) == 0) and np.array_equal(a, a.T)
    # Reference: papers sharing an author / the venue (loops).
    inter = [set(g.paper_author[i]) for i in range(300)] if name == "PAP" else [
        {g.paper_venue[i]} for i in range(300)]
    i, j = 5, np.flatnonzero(a[5])[0]
    assert inter[i] & inter[j] and not any(inter[5] & inter[k] for k in np.flatnonzero(
        a[5] == 0) if k != 5)
    homophily = (a * (g.labels[:, None] == g.labels[None, :])).sum() / a.sum()
    assert homophily > 0.5            # well above the 1/3 of a class-blind graph
  with pytest.raises(ValueError, match="'num_papers'"):
    hetero.make_hetero(0, num_papers=10)
  with pytest.raises(ValueError, match="'author_homophily'"):
    hetero.make_hetero(0, author_homophily=1.5)


def test_recipe_checks():
  from configs.meow_synthetic import get_config
  from jaxcl.recipes import meow
  cfg = get_config().meow
  meow.check(cfg)
  for key, bad in (("method", "heco"), ("cluster_ks", [1]), ("weight_norm", "max"),
                   ("lr", 0.0)):
    c = cfg.copy_and_resolve_references()
    c[key] = bad
    with pytest.raises(ValueError, match=f"config.meow.{key}"):
      meow.check(c)
