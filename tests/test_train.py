"""Trainer: sharding equivalence (devices, processes), resume after SIGKILL, config errors,
NaN guard. Tiny MLP on MNIST-1D, 3-8 steps each."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcl.train import ConfigError, NonFiniteLossError, default_config, setup, train
from jaxcl.train.sharding import global_batch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = 3


def tiny_config(**over):
  c = default_config()
  c.data.name = "mnist1d"
  c.batch_size = 16
  c.num_steps = STEPS
  c.log_every = 1
  c.model.encoder = "mlp"
  c.model.head_hidden = 32
  c.model.head_out = 16
  # SGD, not Adam: Adam divides by sqrt(v), so rounding noise in gradients that are ~0 (a bias
  # before BatchNorm) becomes lr-sized parameter noise and no tolerance would be meaningful.
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.warmup_steps = 1
  c.checkpoint.every = 1000
  c.eval.at_end = False
  c.plots = False
  c.progress = False
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def dataset_batches(name, batch_size, steps):
  """The first ``steps`` consecutive batches of ``name``'s training split (stored order)."""
  from jaxcl import data
  x = data.load_arrays(name, "train")
  return [{k: np.asarray(v[s * batch_size:(s + 1) * batch_size]) for k, v in x.items()}
          for s in range(steps)]


def step_history(config, batches, devices=None):
  """Runs the trainer's step on ``batches``; returns ``(parts, [(state before, metrics,
  state after), ...])`` (states copied, so the donated buffers stay readable)."""
  import jax.numpy as jnp
  parts = setup(config, devices=devices)
  state, hist = parts["state"], []
  for batch in batches:
    before = state
    state, metrics = parts["step"](jax.tree.map(jnp.copy, state),
                                   global_batch(parts["mesh"], batch))
    hist.append((before, {k: float(v) for k, v in metrics.items()}, state))
  return parts, hist


def leaves(tree):
  return [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(tree)]


def _flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(jax.device_get(v))
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def run_steps(config, devices=None, local_rows=None):
  """``STEPS`` train steps on fixed batches (rows ``s*B .. (s+1)*B`` of MNIST-1D train).

  ``local_rows`` selects this process's part of each global batch (multi-process runs).
  """
  from jaxcl import data
  parts = setup(config, devices=devices)
  x = data.load_arrays("mnist1d", "train")
  b = config.batch_size
  local_rows = slice(0, b) if local_rows is None else local_rows
  state, losses = parts["state"], []
  for s in range(STEPS):
    rows = {k: np.asarray(v[s * b:(s + 1) * b])[local_rows] for k, v in x.items()}
    state, metrics = parts["step"](state, global_batch(parts["mesh"], rows))
    losses.append(float(metrics["loss"]))
  return np.array(losses), _flat({"params": state.params, "stats": state.batch_stats})


def _compare(a_losses, a_params, b_losses, b_params, atol=1e-5):
  np.testing.assert_allclose(a_losses, b_losses, atol=atol, rtol=0)
  assert set(a_params) == set(b_params)
  for k in a_params:
    np.testing.assert_allclose(a_params[k], b_params[k], atol=atol, rtol=0, err_msg=k)


@pytest.mark.long
def test_eight_devices_equal_one_device():
  assert jax.device_count() == 8
  l8, p8 = run_steps(tiny_config())
  l1, p1 = run_steps(tiny_config(), devices=jax.devices()[:1])
  _compare(l8, p8, l1, p1)
  assert l8[0] != l8[-1]  # the parameters really moved
  # FSDP: big kernels stored sharded over 'data' give the same numbers.
  fsdp = tiny_config(**{"sharding.fsdp": True, "sharding.fsdp_min_size": 1000})
  sharded = setup(fsdp)["state"].params
  specs = [x.sharding.spec for x in jax.tree.leaves(sharded)]
  assert any("data" in tuple(s) for s in specs) and any(tuple(s) == () for s in specs)
  lf, pf = run_steps(fsdp)
  _compare(lf, pf, l1, p1)
  p0 = _flat({"params": setup(tiny_config())["state"].params})
  assert any(np.abs(p0[k] - p8[k]).max() > 1e-4 for k in p0)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.long
def test_two_processes_equal_one_process(tmp_path):
  worker = os.path.join(HERE, "train_worker.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  port = _free_port()
  ref = tmp_path / "ref.npz"
  procs = [subprocess.Popen([sys.executable, worker, str(tmp_path / "mp.npz"), "--devices=2",
                             "--num_processes=2", f"--process_id={i}", f"--port={port}"],
                            env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  single = subprocess.run([sys.executable, worker, str(ref), "--devices=4"], env=env, cwd=ROOT,
                          stderr=subprocess.PIPE, text=True, timeout=300)
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  mp, sp = dict(np.load(tmp_path / "mp.npz")), dict(np.load(ref))
  _compare(mp.pop("losses"), mp, sp.pop("losses"), sp)


def _final_params(workdir, step):
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  assert mngr.latest_step() == step
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  return _flat(state)


@pytest.mark.long
def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
  steps = 7
  over = {"num_steps": steps, "checkpoint.every": 3}
  ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "run")
  train(tiny_config(**over), ref_dir)
  cli = [sys.executable, "-m", "jaxcl.main", f"--config={os.path.join(HERE, 'train_config.py')}",
         f"--workdir={run_dir}", f"--config.num_steps={steps}", "--config.checkpoint.every=3"]
  killed = subprocess.run(cli + ["--config.debug.sigkill_at_step=5"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert killed.returncode == -9, killed.stderr[-3000:]
  logged = [int(l.split('"step": ')[1].split(",")[0]) for l in open(f"{run_dir}/metrics.jsonl")]
  assert logged == [1, 2, 3, 4, 5]
  resumed = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 3" in resumed.stdout
  ref, got = _final_params(ref_dir, steps), _final_params(run_dir, steps)
  assert set(ref) == set(got)
  for k in ref:  # same programs on the same devices: bitwise equal up to float noise
    np.testing.assert_allclose(got[k], ref[k], atol=1e-6, rtol=0, err_msg=k)


@pytest.mark.parametrize("over, match", [
    ({"batch_size": 12}, "batch_size=12 is not divisible by the number of devices"),
    ({"data.name": "no_such_data"}, "config.data.name='no_such_data'"),
    ({"data.name": ""}, "config.data.name is not set"),
    ({"loss.name": "nt_xnet"}, "config.loss.name='nt_xnet'"),
    ({"loss.kwargs": {"temprature": 0.1}}, "config.loss.kwargs.temprature"),
    ({"optim.name": "adam"}, "config.optim.name='adam'"),
])
def test_bad_config_fails_before_training(tmp_path, over, match):
  with pytest.raises(ConfigError, match=match):
    train(tiny_config(**over), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()  # nothing was written, nothing trained


@pytest.mark.long
def test_unknown_key_is_named(tmp_path):
  c = tiny_config()
  c.unlock()
  c.optim.learning_rate = 0.1
  with pytest.raises(ConfigError, match="unknown config key 'config.optim.learning_rate'"):
    train(c, str(tmp_path / "w"))
  cli = subprocess.run(
      [sys.executable, "-m", "jaxcl.main", f"--config={os.path.join(HERE, 'train_config.py')}",
       f"--workdir={tmp_path / 'w'}", "--config.optim.lrr=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert cli.returncode != 0 and "unknown config key 'lrr'" in cli.stderr, cli.stderr[-2000:]
  assert not (tmp_path / "w").exists()


@pytest.mark.long
def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "w")
  c = tiny_config(**{"num_steps": 8, "checkpoint.every": 2, "debug.nan_at_step": 5})
  with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 5.*step 4"):
    train(c, workdir)
  params = _final_params(workdir, 4)
  assert all(np.all(np.isfinite(v)) for v in params.values())


@pytest.mark.parametrize("name", ["simclr_mnist1d", "simclr_digits", "simclr_cifar10"])
def test_recipes_validate(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  info = __import__("jaxcl.train.config", fromlist=["x"]).validate(c, num_devices=8,
                                                                     num_processes=1)
  assert info.name == c.data.name
  from jaxcl.train.step import build_model
  build_model(c.model, bn_axis_name="data")  # encoder kwargs accepted
