"""Weighted k-nearest-neighbour classifier on cosine similarity (InstDisc / DINO protocol).

For a query ``q`` and the ``k`` most similar training features ``x_j`` (cosine similarity
``s_j``), class ``c`` scores ``sum_j exp(s_j / T) [y_j = c]``; the prediction is the argmax.
Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
arXiv 1805.01978 (k=200, T=0.07); Caron et al., DINO, arXiv 2104.14294 (k=20, T=0.07).

Queries are processed in chunks so memory is ``chunk x N_train``.

Example:
  >>> import numpy as np
  >>> bank = np.eye(3, dtype=np.float32); labels = np.array([0, 1, 2])
  >>> knn_predict(bank, labels, bank + 0.1, num_classes=3, k=1).tolist()
  [0, 1, 2]
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.eval.probe import l2_normalize


@functools.partial(jax.jit, static_argnames=("num_classes", "k", "chunk"))
def _knn(bank, bank_y, queries, temperature, num_classes, k, chunk):
  bank = l2_normalize(bank)
  n = queries.shape[0]
  pad = (-n) % chunk
  q = l2_normalize(jnp.pad(queries, ((0, pad), (0, 0))))

  def one(qc):
    sims = qc @ bank.T
    top, idx = jax.lax.top_k(sims, k)
    w = jnp.exp(top / temperature)
    votes = jax.nn.one_hot(bank_y[idx], num_classes) * w[..., None]
    return jnp.argmax(jnp.sum(votes, axis=1), axis=-1)

  pred = jax.lax.map(one, q.reshape(-1, chunk, q.shape[-1]))
  return pred.reshape(-1)[:n]


def knn_predict(bank, bank_y, queries, *, num_classes, k=20, temperature=0.07, chunk=256):
  k = min(k, len(bank_y))
  chunk = min(chunk, max(1, len(queries)))
  return _knn(jnp.asarray(bank, jnp.float32), jnp.asarray(bank_y, jnp.int32),
              jnp.asarray(queries, jnp.float32), jnp.float32(temperature), num_classes, k, chunk)


def knn_accuracy(bank, bank_y, queries, query_y, *, num_classes, k=20, temperature=0.07):
  pred = knn_predict(bank, bank_y, queries, num_classes=num_classes, k=k, temperature=temperature)
  return float(np.mean(np.asarray(pred) == np.asarray(query_y)))
