"""Few-shot episodes and OpTA (jaxcl.eval.fewshot) against float64 loops, ott-jax and
hand-derived cases."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import sinkhorn
from jaxcl.eval import fewshot
from tests import ssl_reference as ref


def _blobs(seed, n_classes=6, per_class=30, dim=5, spread=1.0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(n_classes, dim)) * 3
  y = np.repeat(np.arange(n_classes), per_class)
  x = centres[y] + spread * rng.normal(size=(len(y), dim))
  return x.astype(np.float32), y


def test_episodes_are_disjoint_draws_from_the_held_out_classes():
  _, y = _blobs(0)
  held_out = (1, 3, 4, 5)
  eps = fewshot.sample_episodes(jax.random.key(3), y, held_out, 50, n_way=3, k_shot=2,
                                n_query=4)
  assert eps.support.shape == (50, 3, 2) and eps.query.shape == (50, 3, 4)
  for s, q, ways in zip(np.asarray(eps.support), np.asarray(eps.query),
                        np.asarray(eps.classes)):
    assert len(set(ways)) == 3
    rows = np.concatenate([s, q], axis=1)
    assert len(set(rows.ravel())) == rows.size                 # no example drawn twice
    np.testing.assert_array_equal(y[rows], np.asarray(held_out)[ways][:, None] + 0 * rows)
  again = fewshot.sample_episodes(jax.random.key(3), y, held_out, 50, n_way=3, k_shot=2,
                                  n_query=4)
  np.testing.assert_array_equal(again.query, eps.query)      # a pure function of the key
  other = fewshot.sample_episodes(jax.random.key(4), y, held_out, 50, n_way=3, k_shot=2,
                                  n_query=4)
  assert not np.array_equal(other.query, eps.query)
  # Every held-out class and (nearly) every example of it gets drawn over 50 episodes.
  assert set(np.asarray(eps.classes).ravel()) == set(range(len(held_out)))
  drawn = set(np.concatenate([np.asarray(eps.support).ravel(), np.asarray(eps.query).ravel()]))
  assert len(drawn) > 0.9 * 30 * len(held_out)


def test_sampling_errors_name_the_argument():
  _, y = _blobs(0, per_class=5)
  with pytest.raises(ValueError, match="k_shot \\+ n_query"):
    fewshot.sample_episodes(jax.random.key(0), y, (0, 1, 2), 2, n_way=3, k_shot=1, n_query=5)
  with pytest.raises(ValueError, match="'n_way'"):
    fewshot.sample_episodes(jax.random.key(0), y, (0, 1), 2, n_way=3, k_shot=1, n_query=1)
  with pytest.raises(ValueError, match="'method'"):
    fewshot.classify(jnp.zeros((2, 1, 3)), jnp.zeros((4, 3)), method="svm")
  with pytest.raises(ValueError, match="'kind'"):
    fewshot.preprocess(jnp.zeros((2, 3)), "whiten")


def test_nearest_prototype_matches_a_loop():
  rng = np.random.default_rng(1)
  support = rng.normal(size=(4, 3, 6))
  queries = rng.normal(size=(20, 6))
  protos = support.mean(1)
  want = [int(np.argmin([np.sum((q - p) ** 2) for p in protos])) for q in queries]
  got = fewshot.nearest_prototype(fewshot.prototypes(jnp.asarray(support, jnp.float32)),
                                  jnp.asarray(queries, jnp.float32))
  np.testing.assert_array_equal(got, want)


def _episode_features(seed=2, k_shot=1):
  x, y = _blobs(seed)
  eps = fewshot.sample_episodes(jax.random.key(seed), y, (0, 1, 2, 3, 4), 1, n_way=5,
                                k_shot=k_shot, n_query=15)
  s = x[np.asarray(eps.support[0])]
  q = x[np.asarray(eps.query[0]).ravel()]
  return s, q


def _opta_loop(protos, queries, epsilon, num_iters, passes):
  """float64 reference: max-normalised squared-distance cost, scaling-form Sinkhorn,
  barycentric map, repeated."""
  p = np.asarray(protos, np.float64)
  z = np.asarray(queries, np.float64)
  for _ in range(passes):
    cost = np.array([[np.sum((pi - zj) ** 2) for zj in z] for pi in p])
    plan = ref.entropic_ot(cost / cost.max(), epsilon, num_iters)
    p = plan @ z / plan.sum(1, keepdims=True)
  return p, plan


@pytest.mark.parametrize("k_shot,passes", [(1, 1), (1, 5), (5, 2)])
def test_opta_on_an_episode_matches_float64_loop(k_shot, passes):
  s, q = _episode_features(k_shot=k_shot)
  want, _ = _opta_loop(s.mean(1), q, 0.05, 200, passes)
  got = sinkhorn.opta(jnp.asarray(s.mean(1)), jnp.asarray(q), epsilon=0.05, num_iters=200,
                      num_passes=passes)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_opta_plan_on_an_episode_matches_ott_jax():
  pytest.importorskip("ott")
  from ott.geometry import geometry
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn as ott_sinkhorn
  s, q = _episode_features()
  p = s.mean(1)
  cost = np.sum((p[:, None].astype(np.float64) - q[None]) ** 2, -1)
  cost = (cost / cost.max()).astype(np.float32)
  out = ott_sinkhorn.Sinkhorn(max_iterations=2000, threshold=1e-6)(
      linear_problem.LinearProblem(geometry.Geometry(cost_matrix=cost, epsilon=0.05)))
  ours = sinkhorn.entropic_ot(cost, epsilon=0.05, num_iters=500)
  np.testing.assert_allclose(ours, out.matrix, rtol=1e-3, atol=1e-5)
  # The map OpTA builds from that plan.
  plan = np.asarray(out.matrix, np.float64)
  want = plan @ q / plan.sum(1, keepdims=True)
  got = sinkhorn.opta(jnp.asarray(p), jnp.asarray(q), epsilon=0.05, num_iters=500)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("epsilon", [0.05, 0.3, 1.0])
def test_barycentric_map_on_a_hand_derived_case(epsilon):
  # P1 = 0, P2 = 4 on a line, queries z1 = 1, z2 = 3: cost [[1, 9], [9, 1]] / 9. The cost is
  # symmetric under swapping both rows and columns, so the scalings u, v are constant and
  # the plan is K / sum(K) with K = exp(-C / eps): pi_11 = pi_22 = 1 / (2 (1 + r)),
  # pi_12 = pi_21 = r / (2 (1 + r)), r = exp(-(9 - 1) / 9 / eps). Row sums are 1/2, so
  # P_hat_1 = s z1 + (1 - s) z2 and P_hat_2 = (1 - s) z1 + s z2 with s = 1 / (1 + r).
  protos = jnp.array([[0.0, 0.0], [4.0, 0.0]])
  queries = jnp.array([[1.0, 0.0], [3.0, 0.0]])
  r = np.exp(-(8 / 9) / epsilon)
  s = 1 / (1 + r)
  want = np.array([[s * 1 + (1 - s) * 3, 0.0], [(1 - s) * 1 + s * 3, 0.0]])
  got = sinkhorn.opta(protos, queries, epsilon=epsilon, num_iters=50)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # More queries: z = {1, 1.5} near P1 and {2.5, 3} near P2. Swapping the prototypes and
  # reversing the queries leaves the cost unchanged, so u_1 = u_2 (take 1) and the column
  # marginals give v_j = 1 / (4 (K_1j + K_2j)); row i then sums to
  # sum_j K_ij / (4 (K_1j + K_2j)) = 1/2, since the terms of columns j and 5 - j add to 1/4.
  queries = jnp.array([[1.0, 0.0], [1.5, 0.0], [2.5, 0.0], [3.0, 0.0]])
  k = np.exp(-np.array([[1, 2.25, 6.25, 9], [9, 6.25, 2.25, 1]]) / 9 / epsilon)
  plan = k / (4 * k.sum(0, keepdims=True))
  np.testing.assert_allclose(plan.sum(1), 0.5)
  want_x = plan @ np.array([1, 1.5, 2.5, 3]) / 0.5
  got = sinkhorn.opta(protos, queries, epsilon=epsilon, num_iters=50)
  np.testing.assert_allclose(got[:, 0], want_x, rtol=1e-5)
  np.testing.assert_allclose(got[:, 1], 0.0, atol=1e-6)


def test_accuracies_are_a_jitted_vmap_of_the_single_episode_classifier():
  x, y = _blobs(5, spread=2.5)
  eps = fewshot.sample_episodes(jax.random.key(7), y, (0, 1, 2, 3, 4, 5), 5, n_way=5,
                                k_shot=1, n_query=6)
  for method, passes in (("prototype", 0), ("prototype", 3)):
    got = fewshot.episode_accuracies(x, eps, method=method, opta_passes=passes, chunk=2)
    one = jax.jit(lambda s, q: fewshot.classify(s, q, method=method, opta_passes=passes))
    want = []
    for s, q in zip(np.asarray(eps.support), np.asarray(eps.query)):
      pred = one(jnp.asarray(x[s]), jnp.asarray(x[q.ravel()]))
      want.append(np.mean(np.asarray(pred) == np.repeat(np.arange(5), 6)))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_logistic_on_the_support_matches_sklearn():
  # Through the jitted, vmapped episode path: the accuracy of LR on the support (sklearn's
  # C = 1, i.e. l2 = 1 / n_support) equals sklearn's on the same episode.
  from sklearn.linear_model import LogisticRegression
  x, y = _blobs(4, spread=2.5)
  eps = fewshot.sample_episodes(jax.random.key(4), y, (0, 1, 2, 3, 4), 2, n_way=5, k_shot=5,
                                n_query=15)
  got = fewshot.episode_accuracies(x, eps, method="logistic", logistic_steps=200)
  for e in range(2):
    s, q = np.asarray(eps.support[e]), np.asarray(eps.query[e])
    clf = LogisticRegression(C=1.0, max_iter=1000, tol=1e-8).fit(
        x[s.ravel()], np.repeat(np.arange(5), 5))
    assert got[e] == pytest.approx(clf.score(x[q.ravel()], np.repeat(np.arange(5), 15)))


def test_opta_corrects_a_biased_one_shot_prototype():
  # One shot of a wide Gaussian is a poor estimate of the class mean; the 15 queries per
  # class are not. OpTA must lift mean 1-shot accuracy (the paper's sample-bias argument).
  x, y = _blobs(6, n_classes=5, per_class=60, spread=2.2)
  eps = fewshot.sample_episodes(jax.random.key(0), y, tuple(range(5)), 100, n_way=5,
                                k_shot=1, n_query=15)
  base = fewshot.episode_accuracies(x, eps).mean()
  opta = fewshot.episode_accuracies(x, eps, opta_passes=1).mean()
  assert opta > base + 0.03, (base, opta)


def test_preprocess():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 7)) * 3 + 1, jnp.float32)
  np.testing.assert_allclose(jnp.linalg.norm(fewshot.preprocess(x, "l2"), axis=1), 1, rtol=1e-5)
  st = fewshot.preprocess(x, "standardize")
  np.testing.assert_allclose(st.mean(1), 0, atol=1e-5)
  np.testing.assert_allclose(st.std(1), 1, rtol=1e-4)
  mean, ci = fewshot.mean_ci95([0.5, 0.7])
  assert mean == pytest.approx(0.6) and ci == pytest.approx(1.96 * 0.1 / np.sqrt(2))
