"""Checkpoint fusion: plain averaging and delta-guided fusion (CoDiEmb) of parameter pytrees.

Checkpoints ``theta_1..theta_n`` fine-tuned from one initialisation ``theta_0`` (same tree
structure and shapes), deltas ``d_k = theta_k - theta_0``::

    average:       theta = (1/n) sum_k theta_k                      (a uniform "model soup")
    delta_guided:  theta = theta_0 + sum_k w_k * d_k,   w_k = |d_k|^p / sum_j |d_j|^p

with the weights per element (``granularity="element"``) or per tensor (``"tensor"``: ``|d_k|``
is the tensor's RMS delta), ``p = power`` (1). An element no checkpoint moved (all
``|d_k| = 0``) keeps ``theta_0``; ``power = 0`` is plain averaging. The CoDiEmb paper (Zhang et
al., arXiv 2508.11442) describes its fusion only as fine-grained merging weights computed from
each checkpoint's parameter deviation from the pretrained model; the formula above is this
library's reading of that sentence (the exact one is not in the paper's released code): a
parameter a checkpoint moved far from the init counts more for that parameter.

Example:
  >>> import numpy as np
  >>> init = {"w": np.zeros(2)}
  >>> ckpts = [{"w": np.array([1.0, 0.0])}, {"w": np.array([3.0, 2.0])}]
  >>> average(ckpts)["w"].tolist(), delta_guided(init, ckpts)["w"].tolist()
  ([2.0, 1.0], [2.5, 2.0])
"""
from __future__ import annotations

import jax
import numpy as np

GRANULARITIES = ("element", "tensor")


def _check(checkpoints, fn):
  checkpoints = list(checkpoints)
  if not checkpoints:
    raise ValueError(f"{fn}: 'checkpoints' is empty: give one or more parameter trees")
  struct = jax.tree.structure(checkpoints[0])
  for i, t in enumerate(checkpoints[1:], 1):
    if jax.tree.structure(t) != struct:
      raise ValueError(f"{fn}: 'checkpoints'[{i}] has another tree structure than "
                       f"'checkpoints'[0]")
    for a, b in zip(jax.tree.leaves(checkpoints[0]), jax.tree.leaves(t)):
      if np.shape(a) != np.shape(b):
        raise ValueError(f"{fn}: 'checkpoints'[{i}] has a leaf of shape {np.shape(b)} where "
                         f"'checkpoints'[0] has {np.shape(a)}")
  return checkpoints


def average(checkpoints):
  """Element-wise mean of the parameter trees (float32 NumPy leaves)."""
  checkpoints = _check(checkpoints, "average")
  return jax.tree.map(lambda *x: np.mean([np.asarray(v, np.float32) for v in x], axis=0),
                      *checkpoints)


def delta_guided(init, checkpoints, *, power=1.0, granularity="element", eps=1e-12):
  """``theta_0 + sum_k w_k d_k`` with ``w_k`` from the deltas' magnitudes (module docstring).

  Args:
    init: the common starting tree ``theta_0`` (e.g. the pretrained weights).
    checkpoints: a sequence of trees of ``init``'s structure and shapes.
    power: ``p >= 0``; granularity: ``"element"`` or ``"tensor"``.
  """
  fn = "delta_guided"
  checkpoints = _check([init] + list(checkpoints), fn)[1:]
  if not checkpoints:
    raise ValueError(f"{fn}: 'checkpoints' is empty: give one or more parameter trees")
  if granularity not in GRANULARITIES:
    raise ValueError(f"{fn}: 'granularity' must be one of {GRANULARITIES}, got {granularity!r}")
  if not float(power) >= 0:
    raise ValueError(f"{fn}: 'power' must be >= 0, got {power!r}")

  def fuse(t0, *ts):
    t0 = np.asarray(t0, np.float32)
    d = np.stack([np.asarray(t, np.float32) - t0 for t in ts])
    mag = np.abs(d)
    if granularity == "tensor":
      mag = np.sqrt(np.mean(mag.reshape(len(ts), -1) ** 2, axis=1)).reshape(
          (len(ts),) + (1,) * t0.ndim) * np.ones_like(d)
    w = mag ** float(power)
    total = w.sum(0)
    w = np.where(total > eps, w / np.maximum(total, eps), 1.0 / len(ts))
    return (t0 + (w * d).sum(0)).astype(np.float32)

  return jax.tree.map(fuse, init, *checkpoints)
