"""Reading: whole splits as arrays (``load_arrays``) and sharded, resumable grain loaders.

Both read through ``tfds.data_source`` (``array_record``, random access, no TensorFlow): the
embedded datasets are prepared on first use by ``builders.prepare``; CIFAR-10 must already
be prepared in ``array_record`` format in the data dir (``tfds build cifar10
--file_format=array_record`` on a machine with network) and is never downloaded here.

``make_loader`` is a ``grain.DataLoader`` over that source with an ``IndexSampler`` that
shards the records by JAX process (``ShardByJaxProcess``), shuffles them from ``seed`` and
repeats for ``num_epochs``; each process receives ``global_batch_size / process_count``
examples per step. The returned iterator is a ``grain.DataLoaderIterator`` whose
``get_state()`` is ``bytes`` (UTF-8 JSON text: ``last_seen_indices``, ``last_worker_index``,
``worker_count``, ``sampler`` and ``data_source`` reprs); ``json.loads(state)`` gives a plain
dict for ``orbax``'s ``JsonSave`` and ``json.dumps(d).encode()`` gives it back to
``set_state``. After ``set_state(s)`` the iterator yields exactly the batches that followed
the moment ``s`` was taken.

Example:
  >>> from jaxcl import data
  >>> it = data.make_loader("wine", "train", global_batch_size=16, seed=0)
  >>> batch = next(it); batch["x"].shape, batch["y"].dtype
  ((16, 13), dtype('int32'))
  >>> state = it.get_state(); expected = next(it)["y"]
  >>> it.set_state(state); bool((next(it)["y"] == expected).all())
  True
"""
from __future__ import annotations

import functools

import grain
import numpy as np

from jaxcl.data import catalog


def _to_xy(name):
  """Record dict of the stored features -> ``{"x": float32, "y": int32 | float32}``."""
  meta = catalog.info(name)
  y_dtype = np.float32 if meta.is_regression else np.int32
  if name == "cifar10":  # tfds features: image uint8 [32, 32, 3], label int64, id str
    return lambda r: {"x": np.asarray(r["image"], np.float32) / 255.0,
                      "y": np.asarray(r["label"], y_dtype)}
  extra = [k for k, _ in meta.extra_labels]
  return lambda r: {"x": np.asarray(r["x"], np.float32), "y": np.asarray(r["y"], y_dtype),
                    **{k: np.asarray(r[k], np.int32) for k in extra}}


class _ToXY(grain.transforms.Map):
  """Picklable grain map (workers pickle operations) wrapping ``_to_xy(name)``."""

  def __init__(self, name):
    self._name = name
    self._fn = _to_xy(name)

  def __getstate__(self):
    return {"_name": self._name}

  def __setstate__(self, state):
    self.__init__(state["_name"])

  def map(self, element):
    return self._fn(element)


def data_source(name: str, split: str, *, data_dir=None):
  """``tfds.data_source(name, split)``, preparing embedded datasets first; never downloads."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jaxcl.data import builders  # pylint: disable=g-import-not-at-top
  catalog.check_split(name, split)
  root = builders.resolve_data_dir(data_dir)
  if catalog.info(name).embedded:
    builders.prepare(name, root)
    return tfds.data_source(name, split=split, data_dir=root, download=False)
  try:
    return tfds.data_source(name, split=split, data_dir=root, download=False)
  except Exception as e:  # tfds raises several types for "not prepared here"
    raise FileNotFoundError(_not_prepared(name, root)) from e


def _not_prepared(name, root, detail=""):
  return (f"dataset {name!r} is not prepared in array_record format under {root!r} "
          f"({detail + '; ' if detail else ''}jaxcl never downloads). On a machine with network "
          f"run `tfds build {name} --file_format=array_record --data_dir={root}` and copy the "
          f"directory.")


def check_prepared(name: str, splits, *, data_dir=None) -> str:
  """The directory of a prepared (non-embedded) tfds dataset that holds ``splits``, found from
  the files alone (``<data_dir>/<name>/[<config>/]<version>/dataset_info.json`` and each
  split's ``<name>-<split>.array_record*`` shards): no tfds call, so cheap and never a
  download. ``FileNotFoundError`` saying how to prepare it otherwise."""
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from jaxcl.data import builders  # pylint: disable=g-import-not-at-top
  root = builders.resolve_data_dir(data_dir)
  base = os.path.join(glob.escape(root), glob.escape(name))
  dirs = sorted(os.path.dirname(f) for pattern in ("*", os.path.join("*", "*"))
                for f in glob.glob(os.path.join(base, pattern, "dataset_info.json")))
  detail = f"no {os.path.join(root, name, '<version>', 'dataset_info.json')}"
  for d in dirs:
    missing = [s for s in splits
               if not glob.glob(os.path.join(glob.escape(d), f"{name}-{s}.array_record*"))]
    if not missing:
      return d
    detail = f"{d} has no array_record files of split(s) {', '.join(map(repr, missing))}"
  raise FileNotFoundError(_not_prepared(name, root, detail))


@functools.lru_cache(maxsize=None)
def _embedded_arrays(name, split, root):
  src = data_source(name, split, data_dir=root)
  out = _stack([src[i] for i in range(len(src))], _to_xy(name))
  for v in out.values():
    v.setflags(write=False)  # shared by every caller of the cache
  return out


def _stack(records, to_xy):
  xy = [to_xy(r) for r in records]
  return {k: np.stack([e[k] for e in xy]) for k in xy[0]}


def load_arrays(name: str, split: str, *, data_dir=None) -> dict[str, np.ndarray]:
  """The whole split in memory: ``{"x": float32 [N, *shape], "y": int32|float32 [N]}`` (and
  the dataset's ``extra_labels``, int32 ``[N]`` each).

  Deterministic: the stored order, identical on every call and in every process. Embedded
  datasets are cached per process and returned read-only (copy before writing in place).
  """
  from jaxcl.data import builders  # pylint: disable=g-import-not-at-top
  catalog.check_split(name, split)
  root = builders.resolve_data_dir(data_dir)
  if catalog.info(name).embedded:
    return dict(_embedded_arrays(name, split, root))
  src = data_source(name, split, data_dir=root)
  return _stack([src[i] for i in range(len(src))], _to_xy(name))


class _ArraySource:
  """grain ``RandomAccessDataSource`` over in-memory ``{"x", "y"}`` arrays."""

  def __init__(self, arrays, desc):
    self._desc = desc
    self._arrays = arrays

  def __len__(self):
    return len(self._arrays["y"])

  def __getitem__(self, i):
    return {k: v[i] for k, v in self._arrays.items()}

  def __repr__(self):
    # grain validates a restored state against repr(data_source); reusing the repr of the
    # tfds source the arrays were read from makes states of both loader kinds interchangeable.
    return self._desc


class _Subset:
  """grain ``RandomAccessDataSource``: the records ``indices`` of ``source``, in that order."""

  def __init__(self, source, indices, desc):
    self._source, self._indices, self._desc = source, np.asarray(indices, np.int64), desc

  def __len__(self):
    return len(self._indices)

  def __getitem__(self, i):
    return self._source[int(self._indices[i])]

  def __repr__(self):
    return self._desc


def class_indices(labels, classes, *, where="classes"):
  """Positions of the rows whose label is in ``classes`` (stored order); ``ValueError`` naming
  ``where`` when a class is unknown or no row is left."""
  labels = np.asarray(labels)
  classes = tuple(int(k) for k in classes)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: a class subset needs class labels, the dataset is a regression")
  present = set(np.unique(labels).tolist())
  unknown = [k for k in classes if k not in present]
  if unknown:
    raise ValueError(f"{where}: classes {unknown} do not occur (labels: {sorted(present)})")
  return np.flatnonzero(np.isin(labels, classes))


def subset_arrays(arrays, classes, *, where="classes"):
  """``{k: v[rows]}`` of the rows whose ``"y"`` is in ``classes`` (all rows if empty)."""
  if not classes:
    return arrays
  idx = class_indices(arrays["y"], classes, where=where)
  return {k: v[idx] for k, v in arrays.items()}


def count_indices(labels, *, per_class=0, imbalance=1.0, where="data"):
  """Positions (stored order) of the rows kept by a few-shot / long-tail training set.

  ``per_class > 0`` keeps the first ``per_class`` rows of each class in the stored order;
  ``imbalance > 1`` then keeps, of the ``c``-th present class (ascending label, ``c = 0 ..
  C-1``), its first ``max(1, floor(n_max * imbalance ** (-c / (C - 1))))`` rows, ``n_max``
  the largest class count left (the usual exponential long-tail profile: class 0 keeps all,
  class ``C-1`` ``n_max / imbalance``). ``per_class=0, imbalance=1`` keep every row. A pure
  function of ``labels``; ``ValueError`` naming ``where`` on bad arguments or regression
  targets.
  """
  labels = np.asarray(labels)
  if isinstance(per_class, bool) or int(per_class) != per_class or per_class < 0:
    raise ValueError(f"{where}: 'per_class' must be an int >= 0 (0 = all), got {per_class!r}")
  if isinstance(imbalance, bool) or not float(imbalance) >= 1.0:
    raise ValueError(f"{where}: 'imbalance' must be a number >= 1 (1 = off), got {imbalance!r}")
  per_class, imbalance = int(per_class), float(imbalance)
  if not per_class and imbalance == 1.0:
    return np.arange(len(labels))
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: 'per_class' / 'imbalance' need class labels, the dataset is a "
                     "regression")
  classes = np.unique(labels)
  rows = {k: np.flatnonzero(labels == k) for k in classes.tolist()}
  if per_class:
    rows = {k: r[:per_class] for k, r in rows.items()}
  if imbalance > 1.0 and len(classes) > 1:
    n_max = max(len(r) for r in rows.values())
    last = len(classes) - 1
    rows = {k: r[:max(1, int(np.floor(n_max * imbalance ** (-c / last) + 1e-9)))]
            for c, (k, r) in enumerate(sorted(rows.items()))}
  return np.sort(np.concatenate(list(rows.values())))


def train_subset_arrays(arrays, *, per_class=0, imbalance=1.0, where="data"):
  """``{k: v[rows]}`` of the rows :func:`count_indices` keeps (``arrays`` itself if all)."""
  if not per_class and float(imbalance) == 1.0:
    return arrays
  idx = count_indices(arrays["y"], per_class=per_class, imbalance=imbalance, where=where)
  return {k: v[idx] for k, v in arrays.items()}


def make_loader(name: str, split: str, *, global_batch_size: int, seed: int, shuffle=True,
                num_epochs=None, drop_remainder=True, data_dir=None, worker_count=0,
                shard_options=None, in_memory=False, classes=(), per_class=0, imbalance=1.0):
  """A resumable grain iterator of per-process batches ``{"x", "y"}`` of ``name/split``.

  Args:
    global_batch_size: examples per step over all processes; each process gets
      ``global_batch_size // shard_count`` (``ValueError`` naming it if not divisible).
    seed: shuffle seed (non-negative 32-bit int); the order is a pure function of it.
    shuffle: global shuffle, a fresh permutation every epoch.
    num_epochs: ``None`` repeats forever.
    drop_remainder: drop a last incomplete batch.
    worker_count: grain worker processes (0: read in the calling process).
    shard_options: ``grain.sharding.ShardOptions``; default ``ShardByJaxProcess`` (every
      process sees a disjoint, equal-sized part of the records).
    in_memory: serve from ``load_arrays`` (read once through ``tfds.data_source``) instead of
      decoding each record from ``array_record`` on every step; the same order, batches and
      state semantics, about ten times faster for the small embedded datasets.
    classes: keep only the records of these class labels (e.g. few-shot pretraining on the
      base classes); empty = all. The order and the state format are unchanged, over the
      subset.
    per_class, imbalance: a few-shot / long-tail subset of those records (after ``classes``;
      :func:`count_indices`): the first ``per_class`` of each class, then the exponential
      long-tail profile of ratio ``imbalance``; ``0`` / ``1.0`` = off. Same order and state
      semantics, over the subset.

  Returns:
    A ``grain.DataLoaderIterator`` with ``get_state() -> bytes`` / ``set_state(bytes)``
    (see the module docstring for the format).
  """
  catalog.check_split(name, split)
  if shard_options is None:
    shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if global_batch_size <= 0 or global_batch_size % shard_options.shard_count:
    raise ValueError(
        f"make_loader: 'global_batch_size' ({global_batch_size}) must be a positive multiple "
        f"of the number of processes ({shard_options.shard_count})")
  desc = repr(data_source(name, split, data_dir=data_dir))
  if classes:
    desc += f" classes={sorted(int(k) for k in classes)}"
  counted = bool(per_class) or float(imbalance) != 1.0
  if counted:
    desc += f" per_class={int(per_class)} imbalance={float(imbalance)}"
  if in_memory:
    arrays = subset_arrays(load_arrays(name, split, data_dir=data_dir), classes,
                           where="make_loader: 'classes'")
    arrays = train_subset_arrays(arrays, per_class=per_class, imbalance=imbalance,
                                 where="make_loader")
    source = _ArraySource(arrays, desc)
    ops = [grain.transforms.Batch(global_batch_size // shard_options.shard_count,
                                  drop_remainder=drop_remainder)]
  else:
    source = data_source(name, split, data_dir=data_dir)
    if classes or counted:
      labels = load_arrays(name, split, data_dir=data_dir)["y"]
      idx = (class_indices(labels, classes, where="make_loader: 'classes'") if classes
             else np.arange(len(labels)))
      idx = idx[count_indices(labels[idx], per_class=per_class, imbalance=imbalance,
                              where="make_loader")]
      source = _Subset(source, idx, desc)
    ops = [_ToXY(name), grain.transforms.Batch(global_batch_size // shard_options.shard_count,
                                               drop_remainder=drop_remainder)]
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard_options, shuffle=shuffle,
      num_epochs=num_epochs, seed=seed)
  # grain's default read-ahead (16 threads, 500 records) scans its whole buffer per record:
  # ~90 ms per 128-row batch on a 2-core CPU, more than a small model's step. In-memory
  # arrays need no read threads (grain's advice); records from disk keep a few threads and
  # about two batches of read-ahead. The order and the iterator state do not depend on it.
  per_batch = global_batch_size // shard_options.shard_count
  read = (grain.ReadOptions(num_threads=0, prefetch_buffer_size=0) if in_memory else
          grain.ReadOptions(num_threads=4, prefetch_buffer_size=2 * per_batch))
  loader = grain.DataLoader(data_source=source, sampler=sampler, operations=ops,
                            worker_count=worker_count, read_options=read)
  return iter(loader)
