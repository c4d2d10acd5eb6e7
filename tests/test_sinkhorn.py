"""Log-domain Sinkhorn (SwAV codes) and entropic OT against float64 loops, ott-jax, and the
sharded computation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import sinkhorn
from tests import ssl_reference as ref


def _scores(seed, b, k):
  z = ref.unit(np.random.default_rng(seed).normal(size=(b, 6)))
  c = ref.unit(np.random.default_rng(seed + 1).normal(size=(k, 6)))
  return (z @ c.T).astype(np.float32)                       # cosine scores, as in SwAV


@pytest.mark.parametrize("b,k,eps,iters", [(12, 5, 0.05, 3), (7, 16, 0.05, 1), (20, 4, 0.1, 10)])
def test_codes_match_float64_loop(b, k, eps, iters):
  s = _scores(0, b, k)
  got = sinkhorn.sinkhorn_knopp(s, epsilon=eps, num_iters=iters)
  assert got.dtype == jnp.float32 and got.shape == (b, k)
  np.testing.assert_allclose(got, ref.sinkhorn_swav(s, eps, iters), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.sum(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_and_sharp_epsilon_stay_finite(dtype):
  # eps = 0.01: exp(S / eps) reaches e^100, which overflows float32 and float16 if taken raw.
  s = jnp.asarray(_scores(1, 16, 8), dtype)
  got = sinkhorn.sinkhorn_knopp(s, epsilon=0.01, num_iters=3)
  assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
  want = ref.sinkhorn_swav(np.asarray(s.astype(jnp.float32)), 0.01, 3)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_codes_are_stop_gradient():
  s = jnp.asarray(_scores(2, 8, 4))
  g = jax.grad(lambda x: jnp.sum(sinkhorn.sinkhorn_knopp(x) * jnp.arange(4.0)))(s)
  assert np.all(np.asarray(g) == 0)


def test_padding_and_discarded_rows():
  s = _scores(3, 10, 5)
  valid = np.array([1, 1, 0, 1, 1, 1, 1, 0, 1, 1], bool)
  got = np.asarray(sinkhorn.sinkhorn_knopp(s, valid=valid))
  np.testing.assert_allclose(got[valid], ref.sinkhorn_swav(s[valid], 0.05, 3), rtol=1e-4,
                             atol=1e-6)
  assert np.all(got[~valid] == 0)
  tail = sinkhorn.sinkhorn_knopp(s, num_discard=4)
  np.testing.assert_allclose(tail, ref.sinkhorn_swav(s, 0.05, 3)[4:], rtol=1e-4, atol=1e-6)


def test_sharded_codes_equal_single_device():
  s = _scores(4, 32, 6)                                       # 4 rows per device
  valid = np.ones(32, bool)
  valid[[3, 17, 18]] = False
  body = lambda x, v: sinkhorn.sinkhorn_knopp(x, axis_name="data", valid=v, num_iters=4)
  got = ref.shard(body, (P("data"), P("data")), P("data"))(s, valid)
  want = sinkhorn.sinkhorn_knopp(s, valid=valid, num_iters=4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(got)[valid], ref.sinkhorn_swav(s[valid], 0.05, 4),
                             rtol=1e-4, atol=1e-6)


def test_entropic_ot_matches_float64_loop():
  rng = np.random.default_rng(5)
  cost = rng.uniform(size=(5, 7)).astype(np.float32)
  a = rng.uniform(0.5, 1.5, size=5)
  a /= a.sum()
  for kw in ({}, {"a": a}):
    got = sinkhorn.entropic_ot(cost, epsilon=0.1, num_iters=20, **kw)
    want = ref.entropic_ot(cost, 0.1, 20, a=kw.get("a"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(np.sum(got, axis=0), 1 / 7, rtol=1e-5)   # exact after a g step


def test_against_ott_jax():
  ott = pytest.importorskip("ott")
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn as ott_sinkhorn
  solver = ott_sinkhorn.Sinkhorn(max_iterations=300, threshold=1e-5)
  solve = jax.jit(lambda cost, eps: solver(linear_problem.LinearProblem(
      geometry.Geometry(cost_matrix=cost, epsilon=eps))).matrix)
  # Entropic OT on a cost matrix (BECLR's OpTA).
  cost = np.random.default_rng(6).uniform(size=(5, 9)).astype(np.float32)
  plan = solve(cost, 0.1)
  got = sinkhorn.entropic_ot(cost, epsilon=0.1, num_iters=500)
  np.testing.assert_allclose(got, plan, rtol=1e-3, atol=1e-5)
  # SwAV's Sinkhorn-Knopp, run to convergence, is the OT plan for cost -S with marginals
  # 1/B (samples) and 1/K (prototypes), rescaled by B.
  s = _scores(7, 12, 4)
  plan = solve(-s, 0.05)
  codes = sinkhorn.sinkhorn_knopp(s, epsilon=0.05, num_iters=500)
  np.testing.assert_allclose(codes, 12 * np.asarray(plan), rtol=1e-3, atol=1e-5)
  assert ott.__version__


def test_opta_is_the_barycentric_map():
  rng = np.random.default_rng(8)
  protos = rng.normal(size=(3, 4)).astype(np.float32)
  queries = rng.normal(size=(9, 4)).astype(np.float32)
  cost = np.sum((protos[:, None].astype(np.float64) - queries[None]) ** 2, -1)
  plan = ref.entropic_ot(cost / cost.max(), 0.1, 50)
  want = plan @ queries / plan.sum(1, keepdims=True)
  got = sinkhorn.opta(protos, queries, epsilon=0.1, num_iters=50)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bad_inputs_name_the_argument():
  s = _scores(0, 4, 3)
  with pytest.raises(TypeError, match="'scores'"):
    sinkhorn.sinkhorn_knopp(s.astype(np.int32))
  with pytest.raises(ValueError, match="'scores'"):
    sinkhorn.sinkhorn_knopp(s[0])
  with pytest.raises(ValueError, match="'num_iters'"):
    sinkhorn.sinkhorn_knopp(s, num_iters=0)
  with pytest.raises(ValueError, match="'epsilon'"):
    sinkhorn.sinkhorn_knopp(s, epsilon=0.0)
  with pytest.raises(ValueError, match="'valid'"):
    sinkhorn.sinkhorn_knopp(s, valid=np.ones(3, bool))
  with pytest.raises(ValueError, match="'a'"):
    sinkhorn.entropic_ot(s, epsilon=0.1, a=np.ones(3) / 3)
  with pytest.raises(ValueError, match="'queries'"):
    sinkhorn.opta(s, s[:, :2])
