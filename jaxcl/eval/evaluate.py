"""Evaluates a frozen encoder: features on all devices, linear probe, kNN, geometry metrics.

``evaluate_encoder`` encodes the train and test splits (sharded ``P('data')`` over the mesh),
then reports the linear-probe and weighted-kNN test accuracy, and on the test split the
alignment of two augmented views, the uniformity and the effective rank of the features
(:mod:`jaxcl.metrics`). For a regression dataset (``num_classes == 0``, e.g. ``diabetes``) the
ridge-probe test MAE and the ordinality replace the probe and kNN accuracy
(:mod:`jaxcl.eval.regression`). ``markdown_table`` formats several such results.

Example:
  >>> print(markdown_table({"raw inputs": {"linear_probe": 0.3, "knn": 0.5}}))
  | representation | linear probe | kNN (k=20) | alignment | uniformity | eff. rank |
  |---|---|---|---|---|---|
  | raw inputs | 30.00% | 50.00% | - | - | - |
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcl import metrics
from jaxcl.eval import regression
from jaxcl.eval.knn import knn_accuracy
from jaxcl.eval.probe import linear_probe

GEOMETRY_ROWS = 2048  # uniformity is O(N^2): enough rows for a stable estimate


def encode(apply_fn, variables, x, mesh, batch_size=1024):
  """``apply_fn(variables, x) -> features`` over ``x`` in chunks sharded over all devices."""
  n_dev = mesh.devices.size
  batch_size = max(n_dev, batch_size - batch_size % n_dev)
  sharding = NamedSharding(mesh, P("data"))
  fn = jax.jit(apply_fn, in_shardings=(NamedSharding(mesh, P()), sharding),
               out_shardings=NamedSharding(mesh, P()))
  x = np.asarray(x, np.float32)
  out = []
  for start in range(0, len(x), batch_size):
    chunk = x[start:start + batch_size]
    n = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
    arr = jax.make_array_from_callback(chunk.shape, sharding, lambda idx, c=chunk: c[idx])
    # Replicated output: every process reads its own copy (works across hosts too).
    out.append(np.asarray(fn(variables, arr).addressable_data(0))[:n])
  return np.concatenate(out)


def geometry(feats, feats_view1=None, feats_view2=None):
  f = jnp.asarray(feats[:GEOMETRY_ROWS], jnp.float32)
  out = {"uniformity": float(metrics.uniformity(f)), "effective_rank": float(metrics.effective_rank(f))}
  if feats_view1 is not None:
    out["alignment"] = float(metrics.alignment(jnp.asarray(feats_view1[:GEOMETRY_ROWS]),
                                               jnp.asarray(feats_view2[:GEOMETRY_ROWS])))
  return out


def evaluate_features(train_f, train_y, test_f, test_y, num_classes, eval_config, seed=0):
  """Linear probe and kNN test accuracy of fixed features; for a regression target
  (``num_classes == 0``) the ridge-probe test MAE and the ordinality instead
  (:mod:`jaxcl.eval.regression`)."""
  train_f = np.asarray(train_f, np.float32).reshape(len(train_f), -1)
  test_f = np.asarray(test_f, np.float32).reshape(len(test_f), -1)
  if num_classes == 0:
    rp = regression.ridge_probe(train_f, train_y, test_f, test_y,
                                val_fraction=eval_config.probe_val_fraction, seed=seed)
    return {"probe_mae": rp["mae"], "probe_l2": rp["l2"], "probe_val_mae": rp["val_mae"][rp["l2"]],
            "ordinality": regression.ordinality(test_f, test_y)}
  lp = linear_probe(train_f, train_y, test_f, test_y, num_classes,
                    l2s=tuple(eval_config.probe_l2), steps=eval_config.probe_steps,
                    val_fraction=eval_config.probe_val_fraction, seed=seed)
  knn = knn_accuracy(train_f, train_y, test_f, test_y, num_classes=num_classes,
                     k=eval_config.knn_k, temperature=eval_config.knn_temperature)
  return {"linear_probe": lp["accuracy"], "probe_l2": lp["l2"], "knn": knn}


def markdown_table(results, k=20):
  if any("probe_mae" in r for r in results.values()):  # regression target
    cols = ("probe_mae", "ordinality", "alignment", "uniformity", "effective_rank")
    head = "| representation | ridge probe MAE | ordinality | alignment | uniformity | eff. rank |"
  else:
    cols = ("linear_probe", "knn", "alignment", "uniformity", "effective_rank")
    head = f"| representation | linear probe | kNN (k={k}) | alignment | uniformity | eff. rank |"
  lines = [head, "|---|---|---|---|---|---|"]
  for name, r in results.items():
    cells = []
    for c in cols:
      v = r.get(c)
      cells.append("-" if v is None else (f"{100 * v:.2f}%" if c in ("linear_probe", "knn")
                                          else f"{v:.3f}"))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def summary_line(res):
  """One line for logs: probe and kNN accuracy, or ridge-probe MAE and ordinality."""
  if "probe_mae" in res:
    return f"ridge probe MAE {res['probe_mae']:.3f}  ordinality {res['ordinality']:.3f}"
  return f"linear probe {100 * res['linear_probe']:.2f}%  kNN {100 * res['knn']:.2f}%"
