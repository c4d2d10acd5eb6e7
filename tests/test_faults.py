"""Trainer fault tolerance: non-finite steps, SIGTERM / SIGINT preemption, unreadable
checkpoints and JSON files, metrics history on resume. Tiny MLP on MNIST-1D (tests/test_train's
``tiny_config``), through the CLI where the exit code or a signal is the point."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from test_train import HERE, ROOT, _flat, tiny_config

from jaxcl.train import CheckpointError, NonFiniteLossError, train


# Long enough that a signal sent once a few steps are logged arrives mid-run.
LONG_RUN = ("--config.num_steps=2000", "--config.checkpoint.every=1000")


def _cli(workdir, *over):
  return [sys.executable, "-m", "jaxcl.main", f"--config={os.path.join(HERE, 'train_config.py')}",
          f"--workdir={workdir}", *over]


def _steps_on_disk(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _restore(workdir, step):
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  return _flat(state)


def _logged_steps(workdir, strict=True):
  """Steps of ``metrics.jsonl``'s lines (``strict=False``: skipping a torn last line)."""
  steps = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      try:
        steps.append(json.loads(line)["step"])
      except json.JSONDecodeError:
        if strict:
          raise
  return steps


def _wait_for_steps(workdir, n, proc=None, timeout=240):
  """Blocks until ``metrics.jsonl`` has ``n`` lines (the run is past compilation)."""
  path, t0 = os.path.join(workdir, "metrics.jsonl"), time.time()
  while time.time() - t0 < timeout:
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f"the run ended early: {proc.communicate()[1][-3000:]}")
    if os.path.exists(path):
      with open(path) as f:
        if sum(1 for _ in f) >= n:
          return
    time.sleep(0.02)
  raise AssertionError(f"no {n} logged steps in {timeout} s")


# -- a. non-finite guard -------------------------------------------------------------------------

@pytest.mark.long
def test_cli_nonfinite_update_exits_nonzero_with_finite_checkpoints(tmp_path):
  """lr = 1e38 overflows the parameters at the second update (the loss stays finite)."""
  workdir = str(tmp_path / "w")
  run = subprocess.run(_cli(workdir, "--config.num_steps=6", "--config.checkpoint.every=1",
                            "--config.optim.lr=1e38"),
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  last = run.stderr.strip().splitlines()[-1]
  assert run.returncode == 1, (run.returncode, run.stderr[-3000:])
  found = re.fullmatch(r"jaxcl: error: non-finite (grad_norm|params) .*at step (\d+) .*: training "
                       r"stopped; the last good checkpoint is step (\d+) in .*", last)
  assert found and found.group(2) == found.group(3), last
  steps = _steps_on_disk(workdir)
  assert steps[-1] == int(found.group(2)), steps  # the bad state was not saved
  for step in steps:
    assert all(np.all(np.isfinite(v)) for v in _restore(workdir, step).values()), step


def test_nonfinite_step_is_not_applied():
  from test_train import dataset_batches, leaves, step_history
  c = tiny_config(**{"debug.nan_at_step": 1})
  _, hist = step_history(c, dataset_batches("mnist1d", c.batch_size, 2))
  (_, m0, after0), (before1, m1, after1) = hist
  assert m0["nonfinite"] == 0 and m1["nonfinite"] == 1 | 2 | 4  # loss, grad_norm, params
  assert int(after1.step) == 2  # the batch is consumed, nothing else changes
  for a, b in zip(leaves(before1.replace(step=0)), leaves(after1.replace(step=0))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.long
def test_max_skips_skips_then_stops(tmp_path, capsys):
  c = tiny_config(**{"num_steps": 5, "checkpoint.every": 1, "debug.nan_at_step": 2,
                     "nonfinite.max_skips": 1})
  train(c, str(tmp_path / "skip"))
  assert "step 2 skipped: non-finite loss (nan)" in capsys.readouterr().out
  assert _steps_on_disk(str(tmp_path / "skip"))[-1] == 5
  c.nonfinite.max_skips = 0
  with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 2"):
    train(c, str(tmp_path / "stop"))
  assert _steps_on_disk(str(tmp_path / "stop")) == [1, 2]


# -- b. SIGTERM / SIGINT -------------------------------------------------------------------------

@pytest.mark.long
def test_cli_sigterm_saves_exits_143_and_resumes(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen(_cli(workdir, *LONG_RUN), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_steps(workdir, 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 143, (proc.returncode, err[-3000:])
  found = re.search(r"preempted at step (\d+)", out)
  assert found, out[-2000:]
  n = int(found.group(1))
  assert 3 <= n < 2000 and _steps_on_disk(workdir) == [n]
  assert n == _logged_steps(workdir)[-1]
  train(tiny_config(**{"num_steps": n + 2}), workdir)  # the rerun (shorter, to save time)
  assert f"resumed from step {n} " in capsys.readouterr().out
  assert _steps_on_disk(workdir)[-1] == n + 2


@pytest.mark.long
def test_two_processes_sigterm_to_one_stops_both_at_one_step(tmp_path):
  from test_train import _free_port
  workdir = str(tmp_path / "w")
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
      "device_count=8", "device_count=4")}
  port = _free_port()
  procs = [subprocess.Popen(_cli(workdir, *LONG_RUN,
                                 f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                                 "--config.distributed.num_processes=2",
                                 f"--config.distributed.process_id={i}"),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  try:
    _wait_for_steps(workdir, 3, procs[0])
    procs[1].send_signal(signal.SIGTERM)  # one process only: both must stop at one step
    outs = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [143, 143], [e[-2000:] for _, e in outs]
  n = int(re.search(r"preempted at step (\d+)", outs[0][0]).group(1))
  assert _steps_on_disk(workdir) == [n]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", str(n), "data"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.long
def test_sigint_in_process_raises_preempted(tmp_path, capsys):
  from jaxcl.train import Preempted
  workdir = str(tmp_path / "w")
  caught = []  # a handler of the test's own, in case the trainer installs none
  previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
  sender = threading.Thread(target=lambda: (_wait_for_steps(workdir, 2),
                                            os.kill(os.getpid(), signal.SIGINT)))
  try:
    sender.start()
    with pytest.raises(Preempted) as info:
      train(tiny_config(**{"num_steps": 2000, "checkpoint.every": 1000}), workdir)
  finally:
    sender.join()
    signal.signal(signal.SIGINT, previous)
  assert not caught and info.value.exit_code == 130
  assert _steps_on_disk(workdir) == [info.value.step]
  assert f"preempted at step {info.value.step}" in capsys.readouterr().out


# -- c. unreadable checkpoints and JSON ----------------------------------------------------------

@pytest.mark.long
def test_restore_falls_back_past_truncated_checkpoint_and_eval_json(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  c = tiny_config(**{"num_steps": 4, "checkpoint.every": 2, "checkpoint.keep": 2})
  train(c, workdir)
  assert _steps_on_disk(workdir) == [2, 4]
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "4")):
    for name in files:
      os.truncate(os.path.join(root, name), 0)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    f.write('{"final": {}, "hist')  # torn write
  c.num_steps = 6
  with pytest.warns(RuntimeWarning) as warned:
    train(c, workdir)
  text = "\n".join(str(w.message) for w in warned)
  assert re.search(r"checkpoint .*checkpoints/4 .*unreadable.*moved to .*corrupt", text), text
  assert "eval.json" in text
  assert "resumed from step 2 " in capsys.readouterr().out
  assert _steps_on_disk(workdir) == [4, 6]
  assert os.listdir(os.path.join(workdir, "checkpoints", "corrupt"))
  # Nothing readable: an error (the config, not the files, may be wrong), nothing moved.
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
    for name in files:
      if "corrupt" not in root:
        os.truncate(os.path.join(root, name), 0)
  c.num_steps = 8
  with pytest.raises(CheckpointError, match=r"no readable checkpoint .*steps \[6, 4\]"):
    train(c, workdir)
  assert _steps_on_disk(workdir)[-1] == 6


# -- d. metrics history on resume ----------------------------------------------------------------

@pytest.mark.long
def test_sigkill_then_resume_logs_each_step_once(tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen(_cli(workdir, "--config.num_steps=2000", "--config.checkpoint.every=5"),
                          cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    _wait_for_steps(workdir, 12, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == -9
  logged = _logged_steps(workdir, strict=False)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 99999, "ti')  # a line torn by the kill
  num_steps = logged[-1] + 3
  train(tiny_config(**{"num_steps": num_steps, "checkpoint.every": 5}), workdir)
  assert _logged_steps(workdir) == list(range(1, num_steps + 1))
