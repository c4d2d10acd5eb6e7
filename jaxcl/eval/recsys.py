"""Top-k recommendation metrics over all items: Recall@k and NDCG@k (binary relevance).

For user ``u`` with held-out relevant items ``P_u`` (non-empty), items ranked by ``scores[u]``
after removing ``exclude[u]`` (the items already seen in training), ``hit_r = [rank-r item in
P_u]`` (ties: the lower item index first, ``lax.top_k``)::

    Recall@k_u = sum_{r <= k} hit_r / |P_u|
    NDCG@k_u   = (sum_{r <= k} hit_r / log2(r + 1)) / (sum_{r <= min(k, |P_u|)} 1 / log2(r + 1))

the definitions of NGCF / LightGCN / MMHCL's evaluation (``ndcg_at_k`` with the ideal list of
``min(k, |P_u|)`` hits). Users without a relevant item get NaN (``has_relevant`` = False) and are
left out of :func:`summarize` means.

Example:
  >>> import numpy as np
  >>> s = np.array([[3., 2., 1.]], np.float32)
  >>> r = topk_metrics(s, np.zeros((1, 3), bool), np.array([[False, True, False]]), 2)
  >>> [round(float(v[0]), 4) for v in r[:2]]
  [1.0, 0.6309]
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("k",))
def _metrics(scores, exclude, relevant, k):
  s = jnp.where(exclude, -jnp.inf, scores.astype(jnp.float32))
  top = jax.lax.top_k(s, k)[1]
  hit = jnp.take_along_axis(relevant, top, axis=1).astype(jnp.float32)
  n_rel = jnp.sum(relevant, axis=1).astype(jnp.float32)
  disc = 1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=jnp.float32))
  dcg = hit @ disc
  ideal = jnp.cumsum(disc)[jnp.clip(n_rel.astype(jnp.int32), 1, k) - 1]
  has = n_rel > 0
  recall = jnp.where(has, jnp.sum(hit, 1) / jnp.maximum(n_rel, 1.0), jnp.nan)
  ndcg = jnp.where(has, dcg / ideal, jnp.nan)
  return recall, ndcg, has


def topk_metrics(scores, exclude, relevant, k: int = 20):
  """Per-user ``(recall, ndcg, has_relevant)`` ``[U]`` for ``scores`` ``[U, I]``, bool
  ``exclude`` / ``relevant`` ``[U, I]`` (module docstring)."""
  scores = jnp.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"topk_metrics: 'scores' must be [users, items], got {tuple(scores.shape)}")
  for name, m in (("exclude", exclude), ("relevant", relevant)):
    if jnp.shape(m) != scores.shape:
      raise ValueError(f"topk_metrics: '{name}' must have the shape of 'scores' "
                       f"{tuple(scores.shape)}, got {tuple(jnp.shape(m))}")
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= scores.shape[1]:
    raise ValueError(f"topk_metrics: 'k' must be an int in [1, {scores.shape[1]}], got {k!r}")
  return _metrics(scores, jnp.asarray(exclude, bool), jnp.asarray(relevant, bool), k)


def summarize(recall, ndcg, has, groups):
  """``{f"{metric}_{group}": mean over users in the group with a relevant item}`` for the
  bool ``[U]`` masks in ``groups`` (e.g. ``{"all": ..., "sparse": ...}``)."""
  recall, ndcg, has = (np.asarray(x) for x in (recall, ndcg, has))
  out = {}
  for g, m in groups.items():
    m = np.asarray(m, bool) & has
    out[f"recall_{g}"] = float(recall[m].mean()) if m.any() else float("nan")
    out[f"ndcg_{g}"] = float(ndcg[m].mean()) if m.any() else float("nan")
    out[f"users_{g}"] = int(m.sum())
  return out
