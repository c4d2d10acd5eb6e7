"""k-means: Lloyd vs scikit-learn from the same seeds, spherical k-means vs a NumPy loop,
k-means++ inertia vs scikit-learn's, sharded == single device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from jaxcl import kmeans
from tests import ssl_reference as ref

K = 4


def _blobs(n=64, std=1.5, seed=0):
  x, _ = make_blobs(n_samples=n, centers=K, n_features=3, cluster_std=std, random_state=seed)
  return x.astype(np.float32)


def test_lloyd_matches_sklearn_from_the_same_init():
  x = _blobs(std=2.5)                                  # overlapping: several Lloyd moves
  init = x[[0, 1, 2, 3]]
  sk = KMeans(K, init=init.astype(np.float64), n_init=1, max_iter=10, tol=0.0,
              algorithm="lloyd").fit(x.astype(np.float64))
  assert sk.n_iter_ > 1
  got = kmeans.lloyd(x, init, num_iters=10)
  np.testing.assert_allclose(got.centroids, sk.cluster_centers_, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(got.assignments, sk.labels_)
  np.testing.assert_allclose(got.inertia, sk.inertia_, rtol=1e-4)


def _spherical_loop(x, cent, iters):
  x, cent = ref.unit(x), ref.unit(cent)
  for _ in range(iters):
    labels = np.array([np.argmax([xi @ c for c in cent]) for xi in x])
    cent = np.array([ref.unit(x[labels == j].mean(0)) if np.any(labels == j) else cent[j]
                     for j in range(len(cent))])
  labels = np.array([np.argmax([xi @ c for c in cent]) for xi in x])
  inertia = sum(np.sum((x[i] - cent[labels[i]]) ** 2) for i in range(len(x)))
  return cent, labels, inertia


def test_cosine_is_spherical_kmeans():
  x = _blobs(std=3.0, seed=1)
  init = x[[5, 6, 7, 8]]
  got = kmeans.lloyd(x, init, num_iters=5, metric="cosine")
  cent, labels, inertia = _spherical_loop(x, init, 5)
  np.testing.assert_allclose(got.centroids, cent, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(got.assignments, labels)
  np.testing.assert_allclose(got.inertia, inertia, rtol=1e-4)


def test_kmeans_plusplus_inertia_close_to_sklearn():
  x = _blobs(n=96, std=1.0, seed=2)
  ours = [float(kmeans.kmeans(x, K, jax.random.key(s), num_iters=10).inertia) for s in range(4)]
  theirs = [KMeans(K, n_init=1, random_state=s).fit(x).inertia_ for s in range(4)]
  assert np.mean(ours) <= 1.05 * np.mean(theirs), (ours, theirs)
  seeds = np.asarray(kmeans.kmeans_plusplus(x, K, jax.random.key(0)))
  dist = np.linalg.norm(seeds[:, None] - x[None], axis=-1)
  assert np.all(dist.min(axis=1) < 1e-5)                        # seeds are data points
  assert len({int(i) for i in dist.argmin(axis=1)}) == K       # and distinct


def test_padding_is_ignored():
  x = _blobs(std=2.0, seed=3)
  valid = np.ones(len(x), bool)
  valid[::7] = False
  init = x[[1, 2, 3, 4]]
  got = kmeans.lloyd(x, init, num_iters=6, valid=valid)
  want = kmeans.lloyd(x[valid], init, num_iters=6)
  np.testing.assert_allclose(got.centroids, want.centroids, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.inertia, want.inertia, rtol=1e-5)
  assert np.all(np.asarray(got.assignments)[~valid] == -1)


def test_sharded_equals_single_device(metric="cosine"):
  # One metric: the sharded path (psum'd sums/counts, gathered seeding) is metric-agnostic.
  x = _blobs(std=2.0, seed=4)                                   # 8 rows per device
  valid = np.ones(len(x), bool)
  valid[[3, 40, 41]] = False
  body = lambda a, v: kmeans.kmeans(a, K, jax.random.key(5), num_iters=6, metric=metric,
                                    valid=v, axis_name="data")
  got = ref.shard(body, (P("data"), P("data")), kmeans.KMeansResult(P(), P("data"), P()))(
      x, valid)
  want = kmeans.kmeans(x, K, jax.random.key(5), num_iters=6, metric=metric, valid=valid)
  np.testing.assert_allclose(got.centroids, want.centroids, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got.assignments, want.assignments)
  np.testing.assert_allclose(got.inertia, want.inertia, rtol=1e-5)


def test_bad_inputs_name_the_argument():
  x = _blobs()
  with pytest.raises(ValueError, match="'metric'"):
    kmeans.kmeans(x, K, jax.random.key(0), metric="manhattan")
  with pytest.raises(ValueError, match="'k'"):
    kmeans.kmeans(x[:3], K, jax.random.key(0))
  with pytest.raises(TypeError, match="'x'"):
    kmeans.kmeans(x.astype(np.int32), K, jax.random.key(0))
  with pytest.raises(ValueError, match="'centroids'"):
    kmeans.lloyd(x, jnp.zeros((K, 2)))
