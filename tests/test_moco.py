"""MoCo pieces of the trainer: the FIFO queue against a NumPy ring, the EMA teacher, the
sharded step with teacher + queue (8 devices == 1 device), exact resume of both, config errors.
Tiny MLP on MNIST-1D, 2-4 steps each."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import queue as queue_lib
from jaxcl.train import ConfigError, momentum, setup, train
from jaxcl.train.sharding import global_batch
from tests.test_train import _compare, _final_params, _flat, tiny_config

MOCHI = {"temperature": 0.2, "num_hard": 8, "num_mix": 4, "num_mix_query": 2, "mine": "queue"}


def moco_config(**over):
  base = {"momentum.ema": 0.9, "queue.size": 40, "loss.name": "mochi_loss",
          "loss.kwargs": MOCHI}
  return tiny_config(**{**base, **over})


def test_queue_is_a_fifo_ring():
  size, dim = 5, 3
  q = queue_lib.init(jax.random.key(0), size, dim)
  want = np.asarray(q.keys).copy()
  np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1, rtol=1e-6)
  assert not np.asarray(queue_lib.valid(q)).any()
  pos = 0
  for step, b in enumerate((2, 2, 3, 5)):                  # wraps around twice
    rows = np.random.default_rng(step).normal(size=(b, dim)).astype(np.float32)
    q = jax.jit(queue_lib.enqueue)(q, rows)
    for r in rows:                                          # the loop reference
      want[pos] = r
      pos = (pos + 1) % size
    np.testing.assert_array_equal(np.asarray(q.keys), want)
    assert int(queue_lib.position(q)) == pos
  assert int(q.count) == 12 and np.asarray(queue_lib.valid(q)).all()
  with pytest.raises(ValueError, match="does not fit"):
    queue_lib.enqueue(q, np.zeros((size + 1, dim), np.float32))


def test_momentum_decay_and_update():
  m = [float(momentum.decay(0.9, t, 10, cosine=True)) for t in range(11)]
  want = [1 - 0.1 * (np.cos(np.pi * t / 10) + 1) / 2 for t in range(11)]
  np.testing.assert_allclose(m, want, rtol=1e-6)
  assert float(momentum.decay(0.9, 7, 10)) == pytest.approx(0.9)
  t, o = {"a": jnp.arange(3.0)}, {"a": jnp.ones(3)}
  np.testing.assert_allclose(momentum.update(t, o, 0.75)["a"], 0.75 * np.arange(3.0) + 0.25)


def run(config, steps, devices=None):
  """``steps`` train steps on fixed MNIST-1D batches; the whole state, flattened."""
  from jaxcl import data
  parts = setup(config, devices=devices)
  x = data.load_arrays("mnist1d", "train")
  b = config.batch_size
  state, losses, states = parts["state"], [], []
  for s in range(steps):
    rows = {k: np.asarray(v[s * b:(s + 1) * b]) for k, v in x.items()}
    states.append(_flat(state))
    state, metrics = parts["step"](state, global_batch(parts["mesh"], rows))
    losses.append(float(metrics["loss"]))
    assert 0 <= float(metrics["proxy_acc"]) <= 1
  return np.array(losses), _flat(state), states


@pytest.mark.long
def test_moco_step_sharded_equals_single_device():
  config = moco_config()
  l8, s8, history = run(config, 2)
  l1, s1, _ = run(config, 2, devices=jax.devices()[:1])
  _compare(l8, s8, l1, s1)
  assert l8[0] != l8[1]
  # The teacher follows the EMA of the online parameters after each optimiser step.
  p0, p1 = history[1], s8
  ema = [k for k in s8 if k.startswith(".ema['params']")]
  assert ema
  for k in ema:
    online = k.replace(".ema['params']", ".params")
    np.testing.assert_allclose(p1[k], 0.9 * p0[k] + 0.1 * p1[online], rtol=1e-5, atol=1e-6)
  # Two global batches of 16 keys went into the 40-slot queue, the rest is untouched.
  keys = s8[".queue.keys"]
  assert int(s8[".queue.count"]) == 32
  assert not np.allclose(keys[:32], history[0][".queue.keys"][:32])
  np.testing.assert_array_equal(keys[32:], history[0][".queue.keys"][32:])
  np.testing.assert_array_equal(keys[:16], history[1][".queue.keys"][:16])


def test_off_by_default_adds_nothing_to_the_state():
  state = setup(tiny_config())["state"]
  assert state.ema is None and state.queue is None


@pytest.mark.long
def test_resume_restores_teacher_and_queue(tmp_path):
  # Constant lr after one warmup step and a constant momentum: a 2-step run resumed to 4 steps
  # must equal 4 uninterrupted steps (the schedules do not depend on num_steps).
  over = {"checkpoint.every": 2, "optim.end_lr_factor": 1.0, "queue.size": 24}
  train(moco_config(num_steps=4, **over), str(tmp_path / "ref"))
  train(moco_config(num_steps=2, **over), str(tmp_path / "run"))
  train(moco_config(num_steps=4, **over), str(tmp_path / "run"))      # resumes from step 2
  ref, got = _final_params(str(tmp_path / "ref"), 4), _final_params(str(tmp_path / "run"), 4)
  count = [k for k in ref if "queue" in k and "count" in k]
  assert any("ema" in k for k in ref) and len(count) == 1
  assert int(got[count[0]]) == 64                                     # wrapped around the ring
  _compare(np.zeros(1), ref, np.zeros(1), got, atol=1e-6)


@pytest.mark.parametrize("over, match", [
    ({"momentum.ema": 1.0}, "momentum.ema"),
    ({"queue.size": 8}, "queue.size"),
    ({"loss.name": "nt_xent", "loss.kwargs": {"temperature": 0.5}}, "takes no queue"),
    ({"loss.kwargs": {**MOCHI, "queue": None}}, "queue's argument"),
])
def test_bad_moco_config_is_named(over, match):
  with pytest.raises(ConfigError, match=match):
    setup(moco_config(**over))


@pytest.mark.parametrize("name", ["moco_digits", "mochi_digits"])
def test_recipes_validate_and_build(name):
  import importlib
  from jaxcl.train.config import make_objective, validate
  c = importlib.import_module(f"configs.{name}").get_config()
  assert validate(c, num_devices=8, num_processes=1).name == "digits"
  assert c.momentum.ema > 0 and c.queue.size >= c.batch_size
  make_objective(c)


@pytest.mark.long  # a study smoke
def test_mochi_study_smoke(tmp_path):
  import json
  from experiments import mochi
  mochi.main(["--smoke", "--out", str(tmp_path)])
  out = json.loads((tmp_path / "mochi.json").read_text())
  assert out["command"] == "python -m experiments.mochi --smoke"
  assert [s["setting"]["method"] for s in out["summary"]] == ["mochi_batch", "mochi_moco"]
  assert all(0 < s["linear_probe"]["mean"] <= 1 for s in out["summary"])
  assert 0 <= out["summary"][1]["proxy_acc"]["mean"] <= 1       # logged by the MoCo run only
  assert "proxy_acc" not in out["summary"][0]
  md = (tmp_path / "mochi.md").read_text()
  assert "## Verdict" in md and (tmp_path / "mochi.png").stat().st_size > 0
