"""Graceful stop on SIGTERM / SIGINT (preemption): the signal only sets a flag; the trainer
checks it at every step boundary, all processes agree, save a checkpoint and stop.

While :class:`StopSignals` is active, the first SIGTERM or SIGINT is recorded instead of
ending the process; :meth:`StopSignals.requested` returns the signal number agreed by every
process (the maximum over processes, :func:`jaxcl.train.distributed.all_processes_max`; 0 =
keep going). A second signal restores its previous handler and is delivered again (a second
Ctrl-C interrupts at once, a second SIGTERM terminates). Handlers can be installed only in the main
thread; elsewhere :class:`StopSignals` does nothing. The trainer exits a stopped run with
:class:`Preempted`, whose ``exit_code`` is ``128 + signal``: 143 for SIGTERM, 130 for SIGINT.

Example:
  >>> with StopSignals() as stop:  # doctest: +SKIP
  ...   for step in range(n):
  ...     train_step()
  ...     if stop.requested():
  ...       save(step); raise Preempted(step, stop.requested(), "runs/x/checkpoints")
"""
from __future__ import annotations

import signal
import threading

from jaxcl.train import distributed

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run stopped on a signal at a step boundary, after saving a checkpoint at ``step``;
  rerunning the same command resumes there. ``exit_code = 128 + signum``."""

  def __init__(self, step, signum, directory):
    self.step, self.signum = int(step), int(signum)
    self.exit_code = 128 + self.signum
    super().__init__(f"preempted at step {self.step} ({signal.Signals(self.signum).name}): "
                     f"checkpoint saved in {directory}; rerun the same command to resume")


class StopSignals:
  """Context manager that turns SIGTERM / SIGINT into a flag (see the module docstring)."""

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def _handle(self, signum, frame):
    # No I/O here: the handler may interrupt a print of the main thread (reentrant write).
    if self.signum:  # a second signal: what it did before, now
      signal.signal(signum, self._previous.pop(signum, None) or signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    self.signum = signum

  def install(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def restore(self):
    """The handlers from before :meth:`install` (a recorded signal stays in ``signum``)."""
    for s, handler in self._previous.items():
      signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    self._previous = {}

  __enter__ = install

  def __exit__(self, *exc):
    self.restore()

  def requested(self) -> int:
    """The signal to stop on, the same on every process (collective); 0 = none."""
    return distributed.all_processes_max(self.signum)
