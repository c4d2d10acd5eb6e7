"""Metrics to ``workdir/metrics.jsonl`` and TensorBoard, and a tqdm bar (process 0 only).

Example:
  >>> w = MetricWriter("/tmp/jaxcl_doc_run")  # doctest: +SKIP
  >>> w.write(10, {"loss": 1.5}); w.close()  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time

import jax


class MetricWriter:
  """Appends one JSON line per call and mirrors scalars to TensorBoard; no-op off process 0."""

  def __init__(self, workdir, tensorboard=True):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step, scalars):
    if not self.active:
      return
    record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self.tb is not None:
      self.tb.close()


def read_metrics(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def progress(total, initial, enabled):
  """tqdm bar with ETA on process 0 when ``enabled``; ``None`` elsewhere."""
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)
