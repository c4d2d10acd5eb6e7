"""Regression probe and ordinality of frozen features (datasets with a continuous target).

Ridge probe: features ``x`` are L2-normalised and standardised with the training statistics
(as for the linear probe, :func:`jaxcl.eval.probe.standardize`; so only the direction of a
feature vector counts, as in the contrastive losses), then, with centred ``X`` and
``y`` (so the intercept is not penalised)::

    w = argmin 1/n ||X w - y||^2 + l2 ||w||^2 = (X^T X + n l2 I)^{-1} X^T y

in float64. ``l2`` is chosen by mean absolute error on a validation split carved from the
training set, then the probe is refit on all of it; the test mean absolute error is reported.

Ordinality (as in the SupReMix / RnC studies): the Spearman rank correlation, over all pairs
``a < b`` of (at most ``max_rows``) test rows, between the embedding distance
``||u_a - u_b||`` of the L2-normalised features and the target distance ``|y_a - y_b|``
(ties get average ranks). 1 means distances in feature space order pairs exactly as the
target does.

Example:
  >>> import numpy as np
  >>> x = np.random.default_rng(0).normal(size=(200, 3))
  >>> y = x @ np.array([1.0, -2.0, 0.5]) + 3.0
  >>> mae = ridge_probe(x[:150], y[:150], x[150:], y[150:])["mae"]
  >>> bool(mae < 0.5 * np.mean(np.abs(y[150:] - y[:150].mean())))  # beats the mean predictor
  True
"""
from __future__ import annotations

import numpy as np

from jaxcl.eval.probe import split_train_val, standardize


def fit_ridge(x, y, l2):
  """``(w, b)`` of ridge regression ``min 1/n ||x w + b - y||^2 + l2 ||w||^2`` (float64)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  mx, my = x.mean(0), y.mean()
  xc = x - mx
  w = np.linalg.solve(xc.T @ xc + len(x) * l2 * np.eye(x.shape[1]), xc.T @ (y - my))
  return w, my - mx @ w


def mae(pred, y):
  return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(y, np.float64))))


def _features(*xs):
  return [np.asarray(f, np.float64) for f in standardize(*[np.asarray(x, np.float32) for x in xs])]


def ridge_probe(train_x, train_y, test_x, test_y, *, l2s=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                val_fraction=0.1, seed=0):
  """Ridge probe with ``l2`` picked by validation MAE. ``{"mae", "l2", "val_mae": {l2: mae}}``."""
  train_x = np.asarray(train_x).reshape(len(train_x), -1)
  test_x = np.asarray(test_x).reshape(len(test_x), -1)
  train_y, test_y = np.asarray(train_y, np.float64), np.asarray(test_y, np.float64)
  tr, va = split_train_val(len(train_y), val_fraction, seed)
  xtr, xva = _features(train_x[tr], train_x[va])
  val = {}
  for l2 in l2s:
    w, b = fit_ridge(xtr, train_y[tr], l2)
    val[float(l2)] = mae(xva @ w + b, train_y[va])
  best = min(val, key=lambda k: (val[k], -k))
  xtrain, xtest = _features(train_x, test_x)
  w, b = fit_ridge(xtrain, train_y, best)
  return {"mae": mae(xtest @ w + b, test_y), "l2": best, "val_mae": val}


def _average_ranks(v):
  order = np.argsort(v, kind="stable")
  _, inverse, counts = np.unique(v[order], return_inverse=True, return_counts=True)
  ends = np.cumsum(counts)
  avg = ends - (counts - 1) / 2.0           # 1-based average rank of each tie group
  ranks = np.empty(len(v))
  ranks[order] = avg[inverse]
  return ranks


def spearman(a, b):
  """Spearman rank correlation of two 1-D arrays (average ranks for ties)."""
  ra, rb = _average_ranks(np.asarray(a, np.float64)), _average_ranks(np.asarray(b, np.float64))
  ra, rb = ra - ra.mean(), rb - rb.mean()
  denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
  return float(np.sum(ra * rb) / denom) if denom > 0 else 0.0


def ordinality(feats, y, max_rows=1000):
  """Spearman correlation of pairwise feature distance and ``|y_a - y_b|`` (see module doc)."""
  f = np.asarray(feats, np.float64).reshape(len(feats), -1)[:max_rows]
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  y = np.asarray(y, np.float64)[:max_rows]
  a, b = np.triu_indices(len(f), k=1)
  return spearman(np.linalg.norm(f[a] - f[b], axis=1), np.abs(y[a] - y[b]))
