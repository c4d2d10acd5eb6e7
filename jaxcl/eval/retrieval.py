"""Retrieval recall@k for paired embeddings (image-text, cross-modal).

Query ``i``'s match is gallery row ``i``. Its rank is the number of gallery rows strictly more
similar (cosine) than the match; ``R@k = mean_i [rank_i < k]`` (ties count in the query's
favour). CLIP (Radford et al., arXiv 2103.00020) reports R@1/5/10 this way.

Example:
  >>> import numpy as np
  >>> g = np.eye(4, dtype=np.float32)
  >>> retrieval_recall(g, g, ks=(1,))
  {1: 1.0}
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.eval.probe import l2_normalize


@functools.partial(jax.jit, static_argnames=("chunk",))
def _ranks(query, gallery, chunk):
  n = query.shape[0]
  pad = (-n) % chunk
  g = l2_normalize(gallery)
  q = l2_normalize(jnp.pad(query, ((0, pad), (0, 0))))
  rows = jnp.arange(n + pad)

  def one(args):
    qc, rc = args
    sims = qc @ g.T
    own = jnp.take_along_axis(sims, jnp.minimum(rc, n - 1)[:, None], axis=1)
    return jnp.sum(sims > own, axis=1)

  ranks = jax.lax.map(one, (q.reshape(-1, chunk, q.shape[-1]), rows.reshape(-1, chunk)))
  return ranks.reshape(-1)[:n]


def retrieval_ranks(query, gallery, chunk=256):
  query, gallery = jnp.asarray(query, jnp.float32), jnp.asarray(gallery, jnp.float32)
  if query.shape[0] != gallery.shape[0]:
    raise ValueError(f"retrieval_recall: 'query' and 'gallery' must be paired row by row, got "
                     f"{query.shape[0]} and {gallery.shape[0]} rows")
  return _ranks(query, gallery, min(chunk, query.shape[0]))


def retrieval_recall(query, gallery, ks=(1, 5, 10)):
  """``{k: R@k}`` of ``query[i] -> gallery[i]`` retrieval by cosine similarity."""
  ranks = np.asarray(retrieval_ranks(query, gallery))
  return {int(k): float(np.mean(ranks < k)) for k in ks}
