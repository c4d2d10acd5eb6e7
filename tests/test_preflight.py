"""Validation before side effects (issue 18, item 5): a bad command-line value, a loss
hyper-parameter out of range, an encoder that does not fit the data, an unprepared tfds dataset
and a batch larger than the training split are each a one-line error before any directory,
checkpoint or compilation. Tiny MNIST-1D config of tests/test_train.py; the errors come before
any training, so each case takes about a second (the CLI cases a few: Python and JAX start-up).
"""
import math
import os
import subprocess
import sys

import pytest

from test_train import HERE, ROOT, tiny_config

from jaxcl.train import ConfigError, train


def _cli(workdir, *over):
  return subprocess.run([sys.executable, "-m", "jaxcl.main",
                         f"--config={os.path.join(HERE, 'train_config.py')}",
                         f"--workdir={workdir}", *over],
                        cwd=ROOT, capture_output=True, text=True, timeout=240)


def _one_line(stderr):
  """The lines of ``stderr`` that are not JAX / absl start-up noise."""
  lines = [ln for ln in stderr.splitlines() if ln.strip()]
  assert "Traceback" not in stderr, stderr[-3000:]
  return [ln for ln in lines if ln.startswith("jaxcl:")], lines


def _fails_before_side_effects(tmp_path, config, match):
  """``train`` raises ``ConfigError`` before the state is created (the first compilation)
  and before the workdir exists."""
  from jaxcl.train import trainer
  workdir = tmp_path / "w"

  def no_state(*a, **k):
    raise AssertionError("the checks must come before the state is created (compiled)")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(trainer, "create_state", no_state)
    with pytest.raises(ConfigError, match=match) as e:
      train(config, str(workdir))
  assert not workdir.exists(), sorted(os.listdir(workdir))  # no directory, no checkpoint
  assert "\n" not in str(e.value)
  return str(e.value)


# ------------------------------------------------------------------ bad command-line values

@pytest.mark.parametrize("flag, expected", [
    ("--config.batch_size=abc", "expected int"),
    ("--config.optim.lr=fast", "expected float"),
    ("--config.eval.at_end=maybe", "expected bool (true / false)"),
])
def test_bad_cli_value_is_one_line_naming_key_and_type(tmp_path, flag, expected):
  cli = _cli(tmp_path / "w", flag)
  errors, lines = _one_line(cli.stderr)
  assert cli.returncode == 2, cli.stderr[-3000:]
  assert errors == lines == [f"jaxcl: error: {flag}: {expected}"], lines
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ loss hyper-parameters

@pytest.mark.parametrize("loss, kwargs, key", [
    ("nt_xent", {"temperature": 0.0}, "temperature"),
    ("nt_xent", {"temperature": -0.5}, "temperature"),
    ("nt_xent", {"temperature": math.nan}, "temperature"),
    ("nt_xent", {"temperature": math.inf}, "temperature"),
    ("dcl", {"temperature": "0.1"}, "temperature"),
    ("supcon", {"temperature": 0.1, "base_temperature": 0.0}, "base_temperature"),
    ("dclw", {"temperature": 0.1, "sigma": 0.0}, "sigma"),
    ("truncated_info_nce", {"temperature": 0.1, "quantile": 1.5}, "quantile"),
    ("swav_loss", {"temperature": 0.1, "epsilon": 0.0}, "epsilon"),
    ("swav_loss", {"temperature": 0.1, "sinkhorn_iters": 0}, "sinkhorn_iters"),
    ("sepclr", {"common_dim": 8, "mi_weight": -1.0}, "mi_weight"),
    ("tcl_loss", {"min_temperature": 0.6}, "min_temperature"),
])
def test_loss_kwargs_values_are_checked_first(tmp_path, loss, kwargs, key):
  c = tiny_config(**{"loss.name": loss, "loss.kwargs": kwargs})
  _fails_before_side_effects(tmp_path, c, rf"config\.loss\.kwargs\.{key}\b")


def test_loss_kwargs_error_through_the_cli(tmp_path):
  cli = _cli(tmp_path / "w", "--config.loss.kwargs.temperature=0")
  errors, lines = _one_line(cli.stderr)
  assert cli.returncode == 1 and errors == lines, cli.stderr[-3000:]
  assert "config.loss.kwargs.temperature=0.0" in errors[0] and "> 0" in errors[0], errors
  assert not (tmp_path / "w").exists()


# ------------------------------------------------------------------ the model on the data

def test_2d_encoder_on_1d_data_is_named_with_both_shapes(tmp_path):
  # Today: a reshape traceback from inside the first step, after the workdir was made.
  cli = _cli(tmp_path / "w", "--config.model.encoder=resnet18",
             "--config.model.encoder_kwargs={'width': 4}")
  errors, lines = _one_line(cli.stderr)
  assert cli.returncode == 1 and errors == lines, cli.stderr[-3000:]
  msg = errors[0]
  assert "config.model.encoder='resnet18'" in msg and "'mnist1d'" in msg, msg
  assert "(40, 1)" in msg and "[H, W, C]" in msg, msg
  assert not (tmp_path / "w").exists()


def test_1d_encoder_on_images_is_an_error_not_silent_training(tmp_path):
  # Today: cnn1d convolves the rows of the 8x8 digits and trains on z [B, 4, D] silently.
  c = tiny_config(**{"data.name": "digits", "model.encoder": "cnn1d"})
  msg = _fails_before_side_effects(tmp_path, c, r"config\.model\.encoder='cnn1d'")
  assert "(8, 8, 1)" in msg and "[length, channels]" in msg, msg


# ------------------------------------------------------------------ the data source

def test_unprepared_tfds_dataset_fails_fast_without_tfds(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds

  def no_tfds(*a, **k):
    raise AssertionError("preflight must look for the prepared files, not call tfds")
  for fn in ("data_source", "builder", "load"):
    monkeypatch.setattr(tfds, fn, no_tfds)
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  c = tiny_config(**{"data.name": "cifar10", "data.data_dir": str(data_dir)})
  msg = _fails_before_side_effects(tmp_path, c, r"config\.data\.name='cifar10'")
  assert f"tfds build cifar10 --file_format=array_record --data_dir={data_dir}" in msg, msg
  assert os.listdir(data_dir) == []  # nothing downloaded or written


def test_prepared_files_are_recognised(tmp_path):
  from jaxcl.data import info
  from jaxcl.train import config as cfg
  version = tmp_path / "cifar10" / "3.0.2"
  version.mkdir(parents=True)
  (version / "dataset_info.json").write_text("{}")
  (version / "cifar10-train.array_record-00000-of-00001").write_bytes(b"")
  c = tiny_config(**{"data.name": "cifar10", "data.data_dir": str(tmp_path)})
  cfg.check_data(c, info("cifar10"))  # the training split is there; no evaluation
  c.eval.at_end = True                # the final evaluation also reads the test split
  with pytest.raises(ConfigError, match="'test'"):
    cfg.check_data(c, info("cifar10"))
  (version / "cifar10-test.array_record-00000-of-00001").write_bytes(b"")
  cfg.check_data(c, info("cifar10"))


# ------------------------------------------------------------------ batch vs training split

def test_batch_larger_than_training_split(tmp_path):
  # wine has 142 training rows: batch 256 repeated rows inside every batch (false negatives).
  c = tiny_config(**{"data.name": "wine", "batch_size": 256})
  msg = _fails_before_side_effects(tmp_path, c, r"config\.batch_size=256")
  assert "142" in msg and "config.data.allow_repeats=True" in msg, msg


def test_batch_larger_than_the_selected_subset(tmp_path):
  # per_class=1: 10 MNIST-1D rows (counted from the labels, as the loader does) for batch 16.
  c = tiny_config(**{"data.per_class": 1})
  msg = _fails_before_side_effects(tmp_path, c, r"config\.batch_size=16")
  assert " 10 " in msg and "per_class" in msg, msg


def test_allow_repeats_trains(tmp_path):
  c = tiny_config(**{"data.name": "wine", "data.per_class": 1, "data.allow_repeats": True,
                     "num_steps": 1})
  train(c, str(tmp_path / "w"))  # 3 rows, batch 16: repeats, as asked
  assert (tmp_path / "w" / "metrics.jsonl").exists()
