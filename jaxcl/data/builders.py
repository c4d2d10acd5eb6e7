"""tfds builders for the embedded datasets, prepared in ``array_record`` without TensorFlow.

Each embedded dataset is a ``tfds.core.GeneratorBasedBuilder`` registered under its jaxcl
name (``mnist1d``, ``digits``, ``wine``, ``breast_cancer``, ``diabetes``), with features
``{"x": Tensor(shape, float32), "y": ClassLabel(C) | Tensor((), float32)}`` and
``disable_shuffling`` so the stored order is the generator's order. tfds 4.9 writes
``array_record`` shards and ``dataset_info.json`` with its own example serializer, so
preparing and reading never import TensorFlow; once prepared, ``tfds.data_source(name,
split=..., data_dir=...)`` serves the data in any process, even one that never imported
jaxcl (tfds then reads the directory with its read-only builder), exactly like CIFAR-10 or
ImageNet on a pod.

Example:
  >>> import tempfile, tensorflow_datasets as tfds
  >>> from jaxcl.data import builders
  >>> d = tempfile.mkdtemp()
  >>> builders.prepare("wine", d)
  >>> len(tfds.data_source("wine", split="test", data_dir=d))
  36
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import sys

import numpy as np
import tensorflow_datasets as tfds

from jaxcl.data import catalog, embedded

_VERSION = "1.1.0"  # bump when a generator changes (1.1.0: ordinal; train25 splits)


def _features(info: catalog.DatasetInfo):
  y = (tfds.features.Tensor(shape=(), dtype=np.float32) if info.is_regression
       else tfds.features.ClassLabel(num_classes=info.num_classes))
  if info.multi_label:  # a multi-hot label set per example
    y = tfds.features.Tensor(shape=(info.num_classes,), dtype=np.int32)
  extra = {k: tfds.features.ClassLabel(num_classes=n) for k, n in info.extra_labels}
  return tfds.features.FeaturesDict(
      {"x": tfds.features.Tensor(shape=info.shape, dtype=np.float32), "y": y, **extra})


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base: subclasses set ``name``; examples come from ``embedded.generate(name)``."""

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {_VERSION: "Generated offline by jaxcl.data.embedded."}
  # tfds 4.9.10's ``code_path`` imports ``importlib_resources`` (declared only for Python <
  # 3.9) for builders defined in a package; no checksums file is needed, so skip the lookup.
  code_path = None

  def _info(self):
    meta = catalog.info(self.name)
    return tfds.core.DatasetInfo(
        builder=self, description=(embedded.__doc__ or "").strip().splitlines()[0],
        features=_features(meta), supervised_keys=("x", "y"), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    arrays = embedded.generate(self.name)
    return {split: self._generate_examples(*a) for split, a in arrays.items()}

  def _generate_examples(self, x, y, extra=None):
    extra = extra or {}
    for i in range(len(y)):
      yield i, {"x": x[i], "y": y[i], **{k: v[i] for k, v in extra.items()}}


def _make_builder_class(name):
  cls_name = "".join(p.capitalize() for p in name.split("_")) + "Builder"
  return type(cls_name, (_EmbeddedBuilder,), {"name": name, "__module__": __name__})


BUILDERS = {name: _make_builder_class(name) for name in catalog.EMBEDDED}


def resolve_data_dir(data_dir=None) -> str:
  """``data_dir`` > ``$JAXCL_DATA_DIR`` > ``$TFDS_DATA_DIR`` > ``~/tensorflow_datasets``."""
  d = (data_dir or os.environ.get("JAXCL_DATA_DIR") or os.environ.get("TFDS_DATA_DIR")
       or "~/tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(os.fspath(d)))


@contextlib.contextmanager
def _file_lock(path):
  # Several processes of one job may share a data dir: one prepares, the others wait.
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def builder(name: str, data_dir=None):
  """The (possibly unprepared) tfds builder of embedded dataset ``name``."""
  catalog.check_name(name)
  if name not in BUILDERS:
    raise ValueError(f"{name!r} is not embedded (no offline builder); embedded: "
                     f"{', '.join(BUILDERS)}")
  return BUILDERS[name](data_dir=resolve_data_dir(data_dir), file_format="array_record")


def prepare(name: str, data_dir=None) -> None:
  """Generates and writes ``name`` into ``data_dir`` once (no-op when already prepared)."""
  b = builder(name, data_dir)
  if b.is_prepared():
    return
  root = resolve_data_dir(data_dir)
  os.makedirs(root, exist_ok=True)
  with _file_lock(os.path.join(root, f".jaxcl_{name}.lock")):
    b = builder(name, data_dir)  # another process may have finished while we waited
    if not b.is_prepared():
      # tfds announces a "download" on stdout; nothing is downloaded, so say what happens on
      # stderr instead (keeps stdout, and the doctests that read it, clean).
      print(f"jaxcl: preparing the embedded dataset {name!r} in {root} (once)", file=sys.stderr)
      with contextlib.redirect_stdout(io.StringIO()):
        b.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
