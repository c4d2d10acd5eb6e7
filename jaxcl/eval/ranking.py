"""Text retrieval and similarity metrics: MRR@k, nDCG@k, Recall@k / Accuracy@k, Spearman, Pearson.

Retrieval (sentence-transformers' ``InformationRetrievalEvaluator`` definitions, binary
relevance): each query ``q`` has a set ``P_q`` of relevant corpus rows; the corpus is ranked by
cosine similarity (ties broken by the lower index, as ``top_k``), ``hit_i = [rank-i row in P_q]``::

    MRR@k      = mean_q 1 / (first i <= k with hit_i)        (0 if none in the top k)
    nDCG@k     = mean_q (sum_{i<=k} hit_i / log2(i + 1)) / (sum_{i<=min(k, |P_q|)} 1 / log2(i + 1))
    Recall@k   = mean_q |top-k ∩ P_q| / |P_q|
    Accuracy@k = mean_q [top-k ∩ P_q non-empty]

Similarity (STS-style): Pearson's r of the cosine similarities of paired embeddings with the
gold scores, and Spearman's rho = Pearson's r of their ranks (ties get their average rank, as
``scipy.stats.spearmanr``).

Example:
  >>> import numpy as np
  >>> q = np.eye(3, dtype=np.float32); c = np.eye(3, dtype=np.float32)
  >>> ranking_metrics(q, c, [[0], [1], [2]], ks=(1,))["mrr@1"]
  1.0
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.eval.probe import l2_normalize


@functools.partial(jax.jit, static_argnames=("k",))
def _top_k(q, corpus, k):
  return jax.lax.top_k(l2_normalize(q) @ l2_normalize(corpus).T, k)[1]


def top_k_indices(query, corpus, k, chunk=1024):
  """``[Q, k]`` corpus indices of each query's ``k`` most cosine-similar rows, best first."""
  query, corpus = np.asarray(query, np.float32), np.asarray(corpus, np.float32)
  if query.ndim != 2 or corpus.ndim != 2 or query.shape[1] != corpus.shape[1]:
    raise ValueError(f"ranking_metrics: 'query' [Q, D] and 'corpus' [N, D] must share D, got "
                     f"{query.shape} and {corpus.shape}")
  if not 1 <= k <= len(corpus):
    raise ValueError(f"ranking_metrics: k={k} must be in [1, {len(corpus)}] (corpus rows)")
  out = []
  for s in range(0, len(query), chunk):
    qc = query[s:s + chunk]
    pad = chunk - len(qc) if len(query) > chunk else 0  # one compiled shape for all chunks
    qc = np.concatenate([qc, np.zeros((pad, qc.shape[1]), np.float32)])
    out.append(np.asarray(_top_k(jnp.asarray(qc), jnp.asarray(corpus), k))[:len(qc) - pad])
  return np.concatenate(out)


def ranking_metrics(query, corpus, positives, ks=(1, 5, 10), chunk=1024):
  """MRR@k, nDCG@k, Recall@k and Accuracy@k for every ``k`` in ``ks`` (module doc).

  Args:
    query: ``[Q, D]`` query embeddings; corpus: ``[N, D]``.
    positives: for each query, the corpus indices relevant to it (a non-empty sequence).
  """
  if len(positives) != len(query):
    raise ValueError(f"ranking_metrics: 'positives' must list the relevant rows of each of the "
                     f"{len(query)} queries, got {len(positives)} entries")
  pos = [set(int(i) for i in p) for p in positives]
  if any(not p for p in pos) or any(not 0 <= i < len(corpus) for p in pos for i in p):
    raise ValueError(f"ranking_metrics: every entry of 'positives' must be a non-empty set of "
                     f"corpus indices in [0, {len(corpus)})")
  kmax = max(ks)
  top = top_k_indices(query, corpus, kmax, chunk)
  hits = np.array([[int(t) in p for t in row] for row, p in zip(top, pos)], np.float64)
  n_pos = np.array([len(p) for p in pos], np.float64)
  disc = 1.0 / np.log2(np.arange(2, kmax + 2))
  out = {}
  for k in ks:
    h = hits[:, :k]
    first = np.where(h.any(axis=1), np.argmax(h, axis=1) + 1, np.inf)
    ideal = np.array([disc[:min(k, int(n))].sum() for n in n_pos])
    out[f"mrr@{k}"] = float(np.mean(1.0 / first))
    out[f"ndcg@{k}"] = float(np.mean((h * disc[:k]).sum(axis=1) / ideal))
    out[f"recall@{k}"] = float(np.mean(h.sum(axis=1) / n_pos))
    out[f"accuracy@{k}"] = float(np.mean(h.any(axis=1)))
  return out


def average_ranks(x):
  """Ranks ``1..n`` of ``x`` with ties sharing their average rank."""
  x = np.asarray(x, np.float64).reshape(-1)
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x))
  sx = x[order]
  start = 0
  for end in range(1, len(x) + 1):
    if end == len(x) or sx[end] != sx[start]:
      ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
      start = end
  return ranks


def pearson(a, b):
  a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
  if a.shape != b.shape or len(a) < 2:
    raise ValueError(f"pearson: 'a' and 'b' must be two sequences of one length >= 2, got "
                     f"{a.shape} and {b.shape}")
  a, b = a - a.mean(), b - b.mean()
  den = math.sqrt(float(a @ a) * float(b @ b))
  return float(a @ b / den) if den > 0 else float("nan")


def spearman(a, b):
  """Spearman's rho (Pearson's r of the average ranks)."""
  return pearson(average_ranks(a), average_ranks(b))


def similarity_correlation(emb_a, emb_b, gold):
  """STS evaluation: cosine of each embedding pair vs the gold scores ->
  ``{"spearman", "pearson"}``."""
  cos = np.asarray(jnp.sum(l2_normalize(emb_a) * l2_normalize(emb_b), axis=-1), np.float64)
  return {"spearman": spearman(cos, gold), "pearson": pearson(cos, gold)}
