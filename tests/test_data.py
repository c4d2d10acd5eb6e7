"""jaxcl.data: tfds builders served without TensorFlow, determinism, resumable sharded loaders."""
import json
import subprocess
import sys

import grain
import numpy as np
import pytest

from jaxcl import data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_bad_name_lists_known_names(data_dir):
  for call in (lambda: data.info("mnist"),
               lambda: data.load_arrays("mnist", "train", data_dir=data_dir),
               lambda: data.make_loader("mnist", "train", global_batch_size=8, seed=0,
                                        data_dir=data_dir)):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*mnist1d.*breast_cancer"):
      call()
  with pytest.raises(ValueError, match="no split 'validation'"):
    data.load_arrays("wine", "validation", data_dir=data_dir)


@pytest.mark.parametrize("name", ["wine", "breast_cancer", "diabetes", "digits", "mnist1d"])
def test_splits_shapes_dtypes_match_info(name, data_dir):
  meta = data.info(name)
  seen = {}
  for split, n in meta.splits.items():
    a = data.load_arrays(name, split, data_dir=data_dir)
    assert a["x"].shape == (n, *meta.shape) and a["x"].dtype == np.float32
    assert a["y"].shape == (n,)
    assert a["y"].dtype == (np.float32 if meta.num_classes == 0 else np.int32)
    assert np.isfinite(a["x"]).all()
    seen[split] = a
  if meta.num_classes:
    assert set(np.unique(seen["train"]["y"])) == set(range(meta.num_classes))
  if meta.kind == "tabular":  # standardised with *train* statistics
    np.testing.assert_allclose(seen["train"]["x"].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(seen["train"]["x"].std(0), 1, atol=1e-3)
  if meta.kind == "image":
    assert seen["train"]["x"].min() >= 0 and seen["train"]["x"].max() <= 1
  # train and test are disjoint rows
  tr = {r.tobytes() for r in seen["train"]["x"]}
  assert not any(r.tobytes() in tr for r in seen["test"]["x"])


def test_stored_data_equals_generated_whatever_the_global_rng(data_dir):
  # Same arrays in every process: the generators ignore numpy's global RNG state (mnist1d
  # seeds it; we restore it) and tfds stores the generator's order.
  from jaxcl.data import embedded
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  gen = embedded.generate("mnist1d")
  np.testing.assert_array_equal(np.random.get_state()[1], before)
  for split, (x, y) in gen.items():
    a = data.load_arrays("mnist1d", split, data_dir=data_dir)
    np.testing.assert_array_equal(a["x"], x)
    np.testing.assert_array_equal(a["y"], y)


def test_prepared_dir_is_served_by_plain_tfds_without_tensorflow(data_dir):
  # A fresh interpreter that never imports jaxcl reads the prepared dir with tfds alone,
  # the way a pod job reads CIFAR-10.
  a = data.load_arrays("wine", "test", data_dir=data_dir)
  it = data.make_loader("wine", "train", global_batch_size=8, seed=1, data_dir=data_dir)
  assert next(it)["x"].shape == (8, 13)
  assert "tensorflow" not in sys.modules
  np.save(data_dir + "/wine_x.npy", a["x"])
  prog = f"""
import sys, numpy as np, tensorflow_datasets as tfds
ds = tfds.data_source("wine", split="test", data_dir={data_dir!r}, download=False)
x = np.stack([ds[i]["x"] for i in range(len(ds))])
np.testing.assert_array_equal(x, np.load({data_dir!r} + "/wine_x.npy"))
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
assert "jaxcl" not in sys.modules
"""
  subprocess.run([sys.executable, "-c", prog], check=True, timeout=300)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_loader_order_from_seed_and_resume_gives_next_batches(data_dir):
  kw = dict(global_batch_size=32, data_dir=data_dir)
  a = _take(data.make_loader("breast_cancer", "train", seed=3, **kw), 20)  # > 1 epoch
  b = _take(data.make_loader("breast_cancer", "train", seed=3, **kw), 20)
  c = _take(data.make_loader("breast_cancer", "train", seed=4, **kw), 1)
  for p, q in zip(a, b):
    np.testing.assert_array_equal(p["x"], q["x"])
  assert not np.array_equal(a[0]["x"], c[0]["x"])
  assert a[0]["x"].shape == (32, 30) and a[0]["y"].dtype == np.int32

  it = data.make_loader("breast_cancer", "train", seed=3, **kw)
  _take(it, 7)
  state = it.get_state()
  assert isinstance(state, bytes)
  as_dict = json.loads(state)  # what a JSON checkpoint stores
  resumed = data.make_loader("breast_cancer", "train", seed=3, **kw)
  resumed.set_state(json.dumps(as_dict).encode())
  for want, got in zip(a[7:], _take(resumed, 13)):
    np.testing.assert_array_equal(want["x"], got["x"])
    np.testing.assert_array_equal(want["y"], got["y"])


def test_in_memory_loader_matches_tfds_loader_and_state(data_dir):
  kw = dict(global_batch_size=16, seed=5, data_dir=data_dir)
  it_a = data.make_loader("wine", "train", **kw)
  it_b = data.make_loader("wine", "train", in_memory=True, **kw)
  for p, q in zip(_take(it_a, 12), _take(it_b, 12)):
    np.testing.assert_array_equal(p["x"], q["x"])
  it_b.set_state(it_a.get_state())
  np.testing.assert_array_equal(next(it_a)["x"], next(it_b)["x"])


def test_epochs_are_full_permutations(data_dir):
  n = data.info("wine").splits["train"]
  it = data.make_loader("wine", "train", global_batch_size=2, seed=0, num_epochs=2,
                        data_dir=data_dir)
  rows = np.concatenate([b["x"] for b in it])
  assert len(rows) == 2 * n
  ref = data.load_arrays("wine", "train", data_dir=data_dir)["x"]
  key = lambda m: sorted(r.tobytes() for r in m)
  assert key(rows[:n]) == key(ref) == key(rows[n:])
  assert not np.array_equal(rows[:n], rows[n:])  # reshuffled each epoch


def test_two_process_shards_are_disjoint_halves(data_dir):
  n = data.info("wine").splits["train"]
  seen = []
  for k in range(2):
    opts = grain.sharding.ShardOptions(shard_index=k, shard_count=2, drop_remainder=True)
    it = data.make_loader("wine", "train", global_batch_size=8, seed=0, num_epochs=1,
                          shard_options=opts, drop_remainder=False, data_dir=data_dir)
    batches = list(it)
    assert batches[0]["x"].shape == (4, 13)  # per-process batch = global / 2
    seen.append({r.tobytes() for b in batches for r in b["x"]})
  assert not seen[0] & seen[1]
  assert len(seen[0]) == len(seen[1]) == n // 2


def test_global_batch_not_divisible_by_processes(data_dir):
  opts = grain.sharding.ShardOptions(shard_index=0, shard_count=2)
  with pytest.raises(ValueError, match="global_batch_size"):
    data.make_loader("wine", "train", global_batch_size=7, seed=0, shard_options=opts,
                     data_dir=data_dir)


def test_env_data_dir_is_used(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCL_DATA_DIR", str(tmp_path))
  assert data.load_arrays("wine", "test")["x"].shape == (36, 13)
  from jaxcl.data import builders
  assert (tmp_path / "wine" / builders._VERSION).is_dir()


def test_cifar10_through_mock_data_no_download(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    it = data.make_loader("cifar10", "train", global_batch_size=8, seed=0,
                          data_dir=str(tmp_path))
    b = next(it)
    a = data.load_arrays("cifar10", "test", data_dir=str(tmp_path))
  assert b["x"].shape == (8, 32, 32, 3) and b["x"].dtype == np.float32
  assert 0 <= b["x"].min() and b["x"].max() <= 1 and b["y"].dtype == np.int32
  assert a["x"].shape == (24, 32, 32, 3)
  assert "tensorflow" not in sys.modules


def test_cifar10_missing_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="cifar10.*not prepared"):
    data.load_arrays("cifar10", "train", data_dir=str(tmp_path))
