"""Regression evaluation (jaxcl.eval.regression) and the regression branch of the eval path."""
import ml_collections
import numpy as np
import pytest
import scipy.stats
from sklearn.linear_model import Ridge

from jaxcl.data import catalog, embedded
from jaxcl.eval import evaluate, regression


def test_fit_ridge_matches_sklearn():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(40, 5)), rng.normal(size=40) * 3 + 1
  l2 = 0.05
  w, b = regression.fit_ridge(x, y, l2)
  ref = Ridge(alpha=len(x) * l2).fit(x, y)
  np.testing.assert_allclose(w, ref.coef_, rtol=1e-8)
  np.testing.assert_allclose(b, ref.intercept_, rtol=1e-8)


def test_ridge_probe_recovers_a_linear_target_and_picks_l2_on_validation():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(300, 4))
  y = x @ np.array([2.0, -1.0, 0.5, 0.0]) + 10.0
  res = regression.ridge_probe(x[:240], y[:240], x[240:], y[240:], l2s=(1e-4, 10.0))
  assert res["l2"] == 1e-4 and res["val_mae"][1e-4] < res["val_mae"][10.0]
  noise = regression.ridge_probe(x[:240], rng.permutation(y[:240]), x[240:], y[240:])
  assert res["mae"] < 0.5 * noise["mae"]   # rows are L2-normalised first: not exactly linear


@pytest.mark.parametrize("seed", [0, 1])
def test_spearman_matches_scipy_with_ties(seed):
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=50), rng.integers(0, 5, size=50).astype(float)
  np.testing.assert_allclose(regression.spearman(a, b), scipy.stats.spearmanr(a, b)[0],
                             rtol=1e-10)


def test_ordinality_is_one_for_a_line_and_near_zero_for_noise():
  y = np.arange(30, dtype=float)
  line = np.stack([np.cos(y / 40), np.sin(y / 40)], 1)          # distance grows with |dy|
  assert regression.ordinality(line, y) > 0.99   # < 1 only from rounding among equal |dy|
  noise = np.random.default_rng(2).normal(size=(30, 8))
  assert abs(regression.ordinality(noise, y)) < 0.2


@pytest.mark.long
def test_evaluate_features_reports_mae_for_a_regression_target():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(120, 6)).astype(np.float32)
  y = (f[:, 0] * 5).astype(np.float32)
  cfg = ml_collections.ConfigDict({"probe_val_fraction": 0.1})
  res = evaluate.evaluate_features(f[:100], y[:100], f[100:], y[100:], 0, cfg)
  assert set(res) == {"probe_mae", "probe_l2", "probe_val_mae", "ordinality"}
  assert res["probe_mae"] < np.mean(np.abs(y[100:] - y[:100].mean()))
  table = evaluate.markdown_table({"x": res})
  assert "ridge probe MAE" in table and f"{res['probe_mae']:.3f}" in table
  assert "MAE" in evaluate.summary_line(res)


def test_ordinal_dataset_matches_catalog():
  info = catalog.info("ordinal")
  out = embedded.generate("ordinal")
  assert info.is_regression and set(out) == set(info.splits)
  for split, (x, y) in out.items():
    assert x.shape == (info.splits[split],) + info.shape and y.dtype == np.float32
    assert np.all(y == np.round(y))                            # integer bins
  np.testing.assert_array_equal(out["train25"][1], out["train"][1][:info.splits["train25"]])
