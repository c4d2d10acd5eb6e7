"""Metrics to ``workdir/metrics.jsonl`` and TensorBoard, and a tqdm bar (process 0 only).

Example:
  >>> w = MetricWriter("/tmp/jaxcl_doc_run")  # doctest: +SKIP
  >>> w.write(10, {"loss": 1.5}); w.close()  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import time
import warnings

import jax

from jaxcl import jsonio


class MetricWriter:
  """Appends one JSON line per call and mirrors scalars to TensorBoard; no-op off process 0.

  ``start`` (the step the run resumes from; 0 for a fresh run) drops the history logged after
  it by an earlier, interrupted run of the same workdir, so every step is logged once:
  ``metrics.jsonl`` keeps only its lines with ``step <= start`` (rewritten atomically; a line
  torn by a kill is dropped) and TensorBoard hides its events from step ``start + 1`` on
  (``purge_step``).
  """

  def __init__(self, workdir, tensorboard=True, start=None):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      if start is not None and os.path.exists(self.path):
        kept = [r for r in _records(self.path) if r.get("step", 0) <= start]
        jsonio.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
      if tensorboard:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                purge_step=None if start is None else start + 1)

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


def _records(path):
  """The records of a ``metrics.jsonl``, skipping (with a warning) lines that do not parse: a
  line torn by a kill mid-write."""
  records, bad = [], 0
  with open(path) as f:
    for line in f:
      if line.strip():
        try:
          records.append(json.loads(line))
        except ValueError:
          bad += 1
  if bad:
    warnings.warn(f"{path}: skipped {bad} unreadable line(s) (torn by an interrupted run)",
                  RuntimeWarning, stacklevel=3)
  return records


def read_metrics(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  return _records(path) if os.path.exists(path) else []


def progress(total, initial, enabled):
  """tqdm bar with ETA on process 0 when ``enabled``; ``None`` elsewhere."""
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)
