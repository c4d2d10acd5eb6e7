"""k-means in JAX: greedy k-means++ seeding and Lloyd iterations, sharded-data aware.

Lloyd (Lloyd 1982): alternate ``a_i = argmin_j d(x_i, c_j)`` and ``c_j = mean_{a_i = j} x_i``;
a cluster that loses all its points keeps its previous centroid. ``metric="cosine"`` is
spherical k-means: rows and centroids L2-normalised, ``d = ||x - c||^2 = 2 - 2 cos`` and the
centroid is the normalised mean. ``inertia = sum_i d(x_i, c_{a_i})`` (scikit-learn's
definition for the Euclidean metric).

Seeding (Arthur & Vassilvitskii 2007, greedy variant as in scikit-learn): the first centroid is
a uniform draw; each next one is the best of ``num_local_trials`` candidates drawn with
probability ``proportional to D(x)^2`` (the one that lowers the potential most).

Sharded data (``axis_name`` inside ``shard_map``): Lloyd assigns local rows and ``psum``s the
per-cluster sums and counts, so every device holds the same centroids, equal to the
single-device ones. Seeding runs on the all-gathered data (``[N, D]`` per device; draws depend
only on ``rng``, so it is identical everywhere): fine for the between-stage clustering of
MCL / BECLR memories, not for datasets that do not fit on one device.

Used by MCL (clusters between stages), MEOW and BECLR (memory initialisation).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl import kmeans
  >>> x = jnp.concatenate([jnp.zeros((5, 2)), jnp.ones((5, 2)) * 10.])
  >>> res = kmeans.kmeans(x, 2, jax.random.key(0))
  >>> sorted(int(v) for v in jnp.bincount(res.assignments, length=2))
  [5, 5]
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.losses import _common as c

METRICS = ("euclidean", "cosine")


class KMeansResult(NamedTuple):
  centroids: jax.Array      # [k, D] float32, identical on every device
  assignments: jax.Array    # [B_local] int32 (-1 for padded rows)
  inertia: jax.Array        # scalar, over the global valid rows


def _check(x, metric, fn):
  x = c.embeddings("x", x, fn, what="[points, dim]")
  if metric not in METRICS:
    raise ValueError(f"{fn}: 'metric' must be one of {METRICS}, got {metric!r}")
  return c.l2_normalize(x) if metric == "cosine" else x.astype(jnp.float32)


def sq_distances(x, centroids):
  """``[n, k]`` squared Euclidean distances, float32, clamped at 0."""
  d = (jnp.sum(x * x, -1)[:, None] - 2.0 * jnp.einsum("nd,kd->nk", x, centroids)
       + jnp.sum(centroids * centroids, -1)[None, :])
  return jnp.maximum(d, 0.0)


def assign(x, centroids, *, metric="euclidean"):
  """Nearest centroid of every row and its squared distance (rows prepared by ``metric``)."""
  x = _check(x, metric, "assign")
  if metric == "cosine":
    centroids = c.l2_normalize(centroids)
  d = sq_distances(x, centroids.astype(jnp.float32))
  return jnp.argmin(d, axis=1).astype(jnp.int32), jnp.min(d, axis=1)


@functools.partial(jax.jit, static_argnames=("k", "metric", "axis_name", "num_local_trials"))
def kmeans_plusplus(x, k, rng, *, metric="euclidean", valid=None, axis_name=None,
                    num_local_trials=None):
  """Greedy k-means++ seeds ``[k, D]`` (on the gathered data when ``axis_name`` is given)."""
  fn = "kmeans_plusplus"
  x = _check(x, metric, fn)
  valid = c.valid_mask(valid, x.shape[0], fn)
  xs = collectives.all_gather(x, axis_name)
  ok = collectives.all_gather(valid, axis_name)
  n = xs.shape[0]
  if not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"{fn}: 'k' must be an int in [1, {n}] (global points), got {k!r}")
  trials = num_local_trials or 2 + int(math.log(k))
  okf = ok.astype(jnp.float32)
  k0, rng = jax.random.split(rng)
  first = jax.random.categorical(k0, jnp.where(ok, 0.0, -jnp.inf))
  closest = sq_distances(xs, xs[first][None])[:, 0] * okf
  centroids = jnp.zeros((k, xs.shape[1]), jnp.float32).at[0].set(xs[first])

  def body(i, carry):
    centroids, closest = carry
    # Points already at distance 0 (duplicates) are never drawn unless nothing else is left.
    logp = jnp.where(ok & (closest > 0), jnp.log(jnp.maximum(closest, 1e-30)), -jnp.inf)
    logp = jnp.where(jnp.any(jnp.isfinite(logp)), logp, jnp.where(ok, 0.0, -jnp.inf))
    cand = jax.random.categorical(jax.random.fold_in(rng, i), logp, shape=(trials,))
    new = jnp.minimum(closest[None, :], sq_distances(xs[cand], xs) * okf[None, :])
    best = jnp.argmin(jnp.sum(new, axis=1))
    return centroids.at[i].set(xs[cand[best]]), new[best]

  centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, closest))
  # Identical on every device; pmax makes shard_map see them as replicated (out_specs P()).
  return collectives.pmax(centroids, axis_name)


@functools.partial(jax.jit, static_argnames=("num_iters", "metric", "axis_name"))
def lloyd(x, centroids, *, num_iters=20, metric="euclidean", valid=None, axis_name=None):
  """``num_iters`` Lloyd updates from ``centroids``, then a final assignment."""
  fn = "lloyd"
  x = _check(x, metric, fn)
  centroids = c.embeddings("centroids", centroids, fn, what="[k, dim]").astype(jnp.float32)
  c.check_same("x", x, "centroids", centroids, 1, fn, "feature size")
  valid = c.valid_mask(valid, x.shape[0], fn)
  k = centroids.shape[0]
  if metric == "cosine":
    centroids = c.l2_normalize(centroids)

  def step(_, cent):
    labels = jnp.argmin(sq_distances(x, cent), axis=1)
    onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32) * valid[:, None]
    sums = collectives.psum(onehot.T @ x, axis_name)
    counts = collectives.psum(jnp.sum(onehot, axis=0), axis_name)
    new = sums / jnp.maximum(counts, 1.0)[:, None]
    if metric == "cosine":
      new = c.l2_normalize(new)
    return jnp.where(counts[:, None] > 0, new, cent)

  centroids = jax.lax.fori_loop(0, num_iters, step, centroids)
  centroids = collectives.pmax(centroids, axis_name)       # replicated, see kmeans_plusplus
  d = sq_distances(x, centroids)
  labels = jnp.where(valid, jnp.argmin(d, axis=1), -1).astype(jnp.int32)
  inertia = collectives.psum(jnp.sum(jnp.where(valid, jnp.min(d, axis=1), 0.0)), axis_name)
  return KMeansResult(centroids, labels, inertia)


def kmeans(x, k, rng, *, num_iters=20, metric="euclidean", valid=None, axis_name=None,
           num_local_trials=None):
  """k-means++ seeding then Lloyd. Returns :class:`KMeansResult`.

  Args:
    x: ``[B_local, D]`` points (any float dtype).
    k: number of clusters (static).
    rng: PRNG key for the seeding (the same on every device).
    num_iters: Lloyd updates (static; no early stop, so it is jit- and shard_map-friendly).
    metric: ``"euclidean"`` or ``"cosine"`` (spherical k-means).
    valid: ``[B_local]`` bool; padded rows are ignored (assignment -1).
    axis_name: mesh axis name(s) when the rows are sharded.
    num_local_trials: k-means++ candidates per seed (default ``2 + int(log k)``).
  """
  seeds = kmeans_plusplus(x, k, rng, metric=metric, valid=valid, axis_name=axis_name,
                          num_local_trials=num_local_trials)
  return lloyd(x, seeds, num_iters=num_iters, metric=metric, valid=valid, axis_name=axis_name)
