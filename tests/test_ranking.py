"""Retrieval (MRR / nDCG / Recall / Accuracy @k) and similarity (Spearman / Pearson) metrics
against brute-force loops and scipy."""
import math

import numpy as np
import pytest
import scipy.stats

from jaxcl.eval import ranking


def _loop(query, corpus, positives, k):
  mrr = ndcg = rec = acc = 0.0
  for q, p in zip(query, positives):
    sims = [float(q @ c / (np.linalg.norm(q) * np.linalg.norm(c))) for c in corpus]
    order = sorted(range(len(corpus)), key=lambda j: (-sims[j], j))[:k]
    hits = [j in p for j in order]
    mrr += next((1.0 / (i + 1) for i, h in enumerate(hits) if h), 0.0)
    dcg = sum(1.0 / math.log2(i + 2) for i, h in enumerate(hits) if h)
    ndcg += dcg / sum(1.0 / math.log2(i + 2) for i in range(min(k, len(p))))
    rec += sum(hits) / len(p)
    acc += any(hits)
  n = len(query)
  return {f"mrr@{k}": mrr / n, f"ndcg@{k}": ndcg / n, f"recall@{k}": rec / n,
          f"accuracy@{k}": acc / n}


def test_ranking_matches_a_loop():
  rng = np.random.default_rng(0)
  corpus = rng.normal(size=(40, 6)).astype(np.float32)
  query = rng.normal(size=(25, 6)).astype(np.float32)
  positives = [set(rng.choice(40, size=rng.integers(1, 4), replace=False).tolist())
               for _ in range(25)]
  got = ranking.ranking_metrics(query, corpus, positives, ks=(1, 3, 10), chunk=8)
  for k in (1, 3, 10):
    for name, v in _loop(query, corpus, positives, k).items():
      assert got[name] == pytest.approx(v, abs=1e-9), name
  perfect = ranking.ranking_metrics(corpus, corpus, [[i] for i in range(40)], ks=(1, 10))
  assert perfect["mrr@10"] == perfect["ndcg@10"] == perfect["recall@1"] == 1.0


def test_correlations_match_scipy():
  rng = np.random.default_rng(1)
  a = rng.normal(size=50)
  b = np.round(a + rng.normal(size=50), 1)   # ties in b
  assert ranking.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-12)
  assert ranking.pearson(a, b) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)
  np.testing.assert_allclose(ranking.average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
  e = rng.normal(size=(30, 4)).astype(np.float32)
  gold = np.sum(e * e[::-1], axis=1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(e[::-1], axis=1))
  r = ranking.similarity_correlation(e, e[::-1], gold)
  assert r["spearman"] == pytest.approx(1.0, abs=1e-6) and r["pearson"] == pytest.approx(1.0, abs=1e-5)


def test_errors_name_the_argument():
  q = np.ones((2, 3), np.float32)
  with pytest.raises(ValueError, match="'positives'"):
    ranking.ranking_metrics(q, q, [[0]])
  with pytest.raises(ValueError, match="'positives'"):
    ranking.ranking_metrics(q, q, [[0], [5]])
  with pytest.raises(ValueError, match="k=10"):
    ranking.ranking_metrics(q, q, [[0], [1]], ks=(10,))
  with pytest.raises(ValueError, match="'a' and 'b'"):
    ranking.pearson([1.0], [2.0])
