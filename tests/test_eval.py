"""Evaluation: linear probe vs scikit-learn, weighted kNN vs a NumPy loop, recall vs a loop."""
import numpy as np
import pytest

from jaxcl.eval import knn, probe, retrieval


def _blobs(seed, n_per=40, classes=3, dim=5, spread=0.6):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, dim)) * 3
  x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres])
  y = np.repeat(np.arange(classes), n_per)
  return x.astype(np.float32), y.astype(np.int32)


def test_logistic_matches_sklearn():
  from sklearn.linear_model import LogisticRegression
  x, y = _blobs(0, spread=2.0)  # overlapping classes: a unique, finite optimum
  l2 = 1e-2
  w, b = probe.fit_logistic(x, y, 3, l2=l2, steps=300)
  ref = LogisticRegression(C=1.0 / (len(y) * l2), tol=1e-10, max_iter=10000).fit(x, y)
  ours = np.asarray(probe.jax.nn.softmax(x @ np.asarray(w) + np.asarray(b)))
  np.testing.assert_allclose(ours, ref.predict_proba(x), atol=2e-3)
  obj = lambda W, B: float(probe.logistic_objective((W, B), x, y, l2))
  assert obj(w, b) <= obj(ref.coef_.T.astype(np.float32), ref.intercept_.astype(np.float32)) + 1e-5


def test_linear_probe_separable():
  x, y = _blobs(1, n_per=60)
  xt, yt = _blobs(1, n_per=20)  # same centres (same seed), fresh noise below
  xt = xt + 0.1 * np.random.default_rng(2).normal(size=xt.shape).astype(np.float32)
  res = probe.linear_probe(x, y, xt, yt, 3, l2s=(1e-4, 1e-2), steps=100)
  from sklearn.linear_model import LogisticRegression
  ref = LogisticRegression(max_iter=1000).fit(x, y).score(xt, yt)
  assert res["accuracy"] >= ref - 0.02 and res["accuracy"] > 0.95
  assert res["l2"] in (1e-4, 1e-2)


def _knn_loop(bank, bank_y, queries, classes, k, t):
  bn = bank / np.linalg.norm(bank, axis=1, keepdims=True)
  out = []
  for q in queries:
    s = bn @ (q / np.linalg.norm(q))
    idx = np.argsort(-s, kind="stable")[:k]
    votes = np.zeros(classes)
    for j in idx:
      votes[bank_y[j]] += np.exp(s[j] / t)
    out.append(int(np.argmax(votes)))
  return np.array(out)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_matches_loop(k):
  x, y = _blobs(3, spread=3.0)  # overlapping: votes matter
  q, _ = _blobs(4, n_per=15, spread=3.0)
  ours = np.asarray(knn.knn_predict(x, y, q, num_classes=3, k=k, temperature=0.07, chunk=16))
  np.testing.assert_array_equal(ours, _knn_loop(x, y, q, 3, k, 0.07))


def test_retrieval_recall_matches_loop():
  rng = np.random.default_rng(5)
  g = rng.normal(size=(37, 8)).astype(np.float32)
  q = g + 1.5 * rng.normal(size=g.shape).astype(np.float32)
  ks = (1, 5, 10)
  ours = retrieval.retrieval_recall(q, g, ks)
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  gn = g / np.linalg.norm(g, axis=1, keepdims=True)
  hits = {k: 0 for k in ks}
  for i in range(len(q)):
    s = gn @ qn[i]
    rank = sum(1 for j in range(len(g)) if s[j] > s[i])
    for k in ks:
      hits[k] += rank < k
  assert ours == {k: hits[k] / len(q) for k in ks}
  assert 0 < ours[1] < ours[10] <= 1  # the toy data is neither trivial nor hopeless
  with pytest.raises(ValueError, match="paired"):
    retrieval.retrieval_recall(q[:5], g, ks)
