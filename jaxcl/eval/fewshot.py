"""Few-shot episodes on frozen features: nearest prototype, OpTA, logistic regression.

An ``n_way``-``k_shot`` episode draws ``n_way`` classes from a set of held-out classes and,
from each, ``k_shot`` support and ``n_query`` query examples (disjoint). Queries are
classified with the support only (no training on the held-out classes):

* **nearest prototype** (Snell et al. 2017): ``P_c = mean_{support of c} x``;
  ``y_hat(z) = argmin_c ||z - P_c||^2``;
* **OpTA** (BECLR, Poulakakis-Daktylidis & Jamali-Rad, ICLR 2024, arXiv 2402.02444): the
  prototypes are first moved onto the query distribution by entropic optimal transport
  (:func:`jaxcl.sinkhorn.opta`: cost ``||P_i - Z_j||^2 / max``, uniform marginals,
  barycentric map ``P_hat = diag(pi 1)^-1 pi Z_Q``), optionally for several passes; the
  reference evaluation uses eps 0.05 and 5 passes at 1-shot, 2 at 5-shot. The paper's
  argument: with few shots a prototype is a biased estimate of its class mean, and the
  unlabelled queries of the episode correct the bias; the gain should shrink with more
  shots;
* **logistic regression** on the support (the UniSiam / BECLR evaluation: sklearn
  ``LogisticRegression(C=1)``, i.e. ``l2 = 1 / n_support`` in :mod:`jaxcl.eval.probe`'s
  objective); with OpTA it is trained on the transported prototypes (one row per class,
  as the reference evaluation does after OpTA).

Episodes are index arrays drawn from an explicit key, so the same key gives the same
episodes for every method; everything after the draw is ``jit``-ed and ``vmap``-ed over
episodes.

Example:
  >>> import jax, numpy as np
  >>> from jaxcl.eval import fewshot
  >>> rng = np.random.default_rng(0)
  >>> y = np.repeat(np.arange(4), 30)
  >>> x = (np.eye(4)[y] * 4 + rng.normal(size=(120, 4))).astype(np.float32)
  >>> eps = fewshot.sample_episodes(jax.random.key(0), y, (0, 1, 2, 3), 8, n_way=3,
  ...                               k_shot=1, n_query=5)
  >>> eps.support.shape, eps.query.shape
  ((8, 3, 1), (8, 3, 5))
  >>> acc = fewshot.episode_accuracies(x, eps, method="prototype")
  >>> acc.shape, bool(acc.mean() > 0.8)
  ((8,), True)
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import sinkhorn
from jaxcl.eval import probe

METHODS = ("prototype", "logistic")
PREPROCESS = ("l2", "standardize", "none")


class Episodes(NamedTuple):
  """Indices into the feature matrix; leading ``[E]`` when batched."""
  support: jax.Array   # [(E,) n_way, k_shot] int32
  query: jax.Array     # [(E,) n_way, n_query] int32
  classes: jax.Array   # [(E,) n_way] int32 original class ids (way c is classes[c])


def class_pools(labels, classes, min_count=1):
  """``(pools [C, M] int32, counts [C] int32)``: the row indices of each class, padded.

  Host-side (NumPy); ``M`` is the largest class size, pads are -1.
  """
  labels = np.asarray(labels)
  idx = [np.flatnonzero(labels == c) for c in classes]
  for c, i in zip(classes, idx):
    if len(i) < min_count:
      raise ValueError(f"class_pools: class {c} has {len(i)} examples, the episode needs "
                       f"{min_count} (k_shot + n_query)")
  m = max(len(i) for i in idx)
  pools = np.full((len(idx), m), -1, np.int32)
  for r, i in enumerate(idx):
    pools[r, :len(i)] = i
  return jnp.asarray(pools), jnp.asarray([len(i) for i in idx], jnp.int32)


def sample_episode(key, pools, counts, *, n_way, k_shot, n_query):
  """One episode from ``class_pools`` output; ``jit``/``vmap``-able (static sizes)."""
  k_cls, k_ex = jax.random.split(key)
  ways = jax.random.permutation(k_cls, pools.shape[0])[:n_way]

  def draw(k, c):
    # Uniform draw without replacement among the valid entries of the padded pool.
    noise = jax.random.uniform(k, (pools.shape[1],))
    order = jnp.argsort(jnp.where(jnp.arange(pools.shape[1]) < counts[c], noise, 2.0))
    return pools[c, order[:k_shot + n_query]]

  rows = jax.vmap(draw)(jax.random.split(k_ex, n_way), ways)
  return Episodes(rows[:, :k_shot], rows[:, k_shot:], ways.astype(jnp.int32))


def sample_episodes(key, labels, classes, num_episodes, *, n_way=5, k_shot=1, n_query=15):
  """``num_episodes`` episodes over ``classes`` (the held-out classes) of ``labels``.

  ``Episodes.classes`` holds positions in ``classes``; map back with ``np.asarray(classes)``.
  """
  if n_way > len(classes):
    raise ValueError(f"sample_episodes: 'n_way' ({n_way}) exceeds the {len(classes)} classes")
  pools, counts = class_pools(labels, classes, k_shot + n_query)
  return _sample_many(jax.random.split(key, num_episodes), pools, counts, n_way=n_way,
                      k_shot=k_shot, n_query=n_query)


@functools.partial(jax.jit, static_argnames=("n_way", "k_shot", "n_query"))
def _sample_many(keys, pools, counts, *, n_way, k_shot, n_query):
  return jax.vmap(lambda k: sample_episode(k, pools, counts, n_way=n_way, k_shot=k_shot,
                                           n_query=n_query))(keys)


def preprocess(x, kind="l2"):
  """Per-sample feature normalisation: ``l2`` (unit rows), ``standardize`` (each row to zero
  mean and unit std over its features, BECLR's evaluation), or ``none``."""
  if kind not in PREPROCESS:
    raise ValueError(f"preprocess: 'kind' must be one of {PREPROCESS}, got {kind!r}")
  x = jnp.asarray(x, jnp.float32)
  if kind == "l2":
    return probe.l2_normalize(x)
  if kind == "standardize":
    return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6)
  return x


def prototypes(support):
  """``[n_way, k_shot, D] -> [n_way, D]`` per-class means."""
  return jnp.mean(support, axis=1)


def nearest_prototype(protos, queries):
  """``argmin_c ||z - P_c||^2`` for every query row. ``[n_q]`` int32."""
  d = (jnp.sum(queries ** 2, -1)[:, None] - 2 * queries @ protos.T
       + jnp.sum(protos ** 2, -1)[None, :])
  return jnp.argmin(d, axis=1).astype(jnp.int32)


def _logistic_predict(train_x, train_y, test_x, n_way, steps):
  w, b = probe._fit(train_x, train_y, jnp.float32(1.0 / train_x.shape[0]), n_way, steps)
  return probe.predict(w, b, test_x)


def classify(support, queries, *, method="prototype", opta_passes=0, epsilon=0.05,
             num_iters=200, logistic_steps=50):
  """Predicted way of every query of one episode.

  Args:
    support: ``[n_way, k_shot, D]`` support features (way-major).
    queries: ``[n_q, D]`` query features (all ways, any order).
    method: ``"prototype"`` (nearest prototype) or ``"logistic"`` (LR on the support, or on
      the transported prototypes when ``opta_passes > 0``).
    opta_passes: 0 = no OpTA; ``p > 0`` = ``p`` OpTA passes on the prototypes.
    epsilon, num_iters: OpTA's entropic regularisation (on the max-normalised cost) and
      Sinkhorn iterations.

  Returns:
    ``[n_q]`` int32 ways.
  """
  if method not in METHODS:
    raise ValueError(f"classify: 'method' must be one of {METHODS}, got {method!r}")
  n_way, k_shot, d = support.shape
  protos = prototypes(support)
  if opta_passes:
    protos = sinkhorn.opta(protos, queries, epsilon=epsilon, num_iters=num_iters,
                           num_passes=opta_passes)
  if method == "prototype":
    return nearest_prototype(protos, queries)
  if opta_passes:
    train_x, train_y = protos, jnp.arange(n_way, dtype=jnp.int32)
  else:
    train_x = support.reshape(n_way * k_shot, d)
    train_y = jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), k_shot)
  return _logistic_predict(train_x, train_y, queries, n_way, logistic_steps)


@functools.partial(jax.jit, static_argnames=("method", "opta_passes", "num_iters",
                                             "logistic_steps", "chunk"))
def _accuracies(features, support, query, method, opta_passes, epsilon, num_iters,
                logistic_steps, chunk):
  def one(s, q):
    n_way, n_query = q.shape
    pred = classify(features[s], features[q.reshape(-1)], method=method,
                    opta_passes=opta_passes, epsilon=epsilon, num_iters=num_iters,
                    logistic_steps=logistic_steps)
    truth = jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), n_query)
    return jnp.mean((pred == truth).astype(jnp.float32))

  e = support.shape[0]
  pad = (-e) % chunk
  s = jnp.concatenate([support, jnp.repeat(support[:1], pad, 0)])
  q = jnp.concatenate([query, jnp.repeat(query[:1], pad, 0)])
  s = s.reshape((-1, chunk) + s.shape[1:])
  q = q.reshape((-1, chunk) + q.shape[1:])
  # lax.map over chunks of vmapped episodes bounds the memory of many-episode runs.
  acc = jax.lax.map(lambda sq: jax.vmap(one)(*sq), (s, q))
  return acc.reshape(-1)[:e]


def episode_accuracies(features, episodes, *, method="prototype", opta_passes=0,
                       epsilon=0.05, num_iters=200, logistic_steps=50, chunk=100):
  """Query accuracy of every episode (``[E]`` float32); ``features`` already preprocessed."""
  features = jnp.asarray(features, jnp.float32).reshape(len(features), -1)
  return _accuracies(features, jnp.asarray(episodes.support), jnp.asarray(episodes.query),
                     method, int(opta_passes), jnp.float32(epsilon), int(num_iters),
                     int(logistic_steps), int(min(chunk, episodes.support.shape[0])))


def mean_ci95(acc):
  """``(mean, 1.96 * std / sqrt(E))`` of episode accuracies, the few-shot convention."""
  acc = np.asarray(acc, np.float64)
  return float(acc.mean()), float(1.96 * acc.std() / math.sqrt(len(acc)))
