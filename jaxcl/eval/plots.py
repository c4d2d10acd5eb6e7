"""PNG plots of a run in ``workdir/plots/``: loss curve, accuracy curves, 2-D PCA of test
embeddings coloured by class (matplotlib, Agg backend: no display needed).

Example:
  >>> import numpy as np
  >>> pca_2d(np.eye(3)).shape
  (3, 2)
"""
from __future__ import annotations

import os

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def pca_2d(x):
  """Projection on the two leading principal components (SVD of the centred data)."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  x = x - x.mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  return x @ vt[:2].T


def loss_curve(records, path):
  plt = _plt()
  steps = [r["step"] for r in records if "loss" in r]
  loss = [r["loss"] for r in records if "loss" in r]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(steps, loss)
  ax.set_xlabel("step"), ax.set_ylabel("training loss"), ax.set_title("contrastive loss")
  fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def accuracy_curve(history, path, baselines=None):
  """``history``: list of ``{"step", "linear_probe", "knn"}``; baselines drawn as lines."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(5, 3.5))
  steps = [h["step"] for h in history]
  for key, label in (("linear_probe", "linear probe"), ("knn", "kNN")):
    ax.plot(steps, [100 * h[key] for h in history], marker="o", label=label)
  for i, (name, r) in enumerate((baselines or {}).items()):
    ax.axhline(100 * r["linear_probe"], ls="--", color=f"C{i + 2}", label=f"{name} (probe)")
  ax.set_xlabel("step"), ax.set_ylabel("test accuracy (%)"), ax.legend(fontsize=7)
  fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def embedding_plot(feats, labels, path, title="test embeddings (PCA)"):
  plt = _plt()
  xy = pca_2d(feats)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  sc = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(labels), cmap="tab10", s=5)
  fig.colorbar(sc, ax=ax, label="class")
  ax.set_title(title), ax.set_xticks([]), ax.set_yticks([])
  fig.tight_layout(), fig.savefig(path, dpi=110), plt.close(fig)


def write_all(workdir, records, history, baselines, feats, labels):
  out = os.path.join(workdir, "plots")
  os.makedirs(out, exist_ok=True)
  paths = {"loss": os.path.join(out, "loss.png"), "accuracy": os.path.join(out, "accuracy.png"),
           "embeddings": os.path.join(out, "embeddings_pca.png")}
  if records:
    loss_curve(records, paths["loss"])
  if history:
    accuracy_curve(history, paths["accuracy"], baselines)
  if feats is not None:
    embedding_plot(feats, labels, paths["embeddings"])
  return paths
