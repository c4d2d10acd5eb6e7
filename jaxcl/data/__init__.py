"""Datasets for pretraining and evaluation: embedded (offline) tfds builders read with grain.

Public API:

* ``DATASETS``: ``("mnist1d", "digits", "wine", "breast_cancer", "diabetes", "ordinal", "digits_easy",
  "multilabel_protos", "digits_grating", "cifar10")`` (``multilabel_protos``: multi-hot
  ``y [N, 20]``, ``DatasetInfo.multi_label``; ``digits_grating``: SepCLR's background /
  target sets, extra label arrays ``orientation`` / ``digit`` / ``target``).
* ``info(name) -> DatasetInfo`` (``name, kind, shape, num_classes, splits, embedded``).
* ``load_arrays(name, split, *, data_dir=None) -> {"x": float32 [N, *shape], "y": [N]}``.
* ``make_loader(name, split, *, global_batch_size, seed, shuffle=True, num_epochs=None,
  drop_remainder=True, data_dir=None, worker_count=0, shard_options=None, in_memory=False,
  classes=())`` -> ``grain.DataLoaderIterator`` of per-process batches; ``get_state()`` is JSON
  ``bytes``; ``classes`` keeps only those labels (``subset_arrays`` does the same for arrays);
  ``per_class`` / ``imbalance`` keep a few-shot / long-tail subset (``count_indices``: the kept
  positions, ``train_subset_arrays``: the same for arrays).
* ``data_source(name, split, *, data_dir=None)``: the ``tfds.data_source`` behind both.
* ``prepare(name, data_dir=None)``: write an embedded dataset's ``array_record`` files.

Data dir: ``data_dir`` > ``$JAXCL_DATA_DIR`` > ``$TFDS_DATA_DIR`` > ``~/tensorflow_datasets``.
Additions to the original interface: ``shard_options`` and ``in_memory`` on ``make_loader``,
``embedded`` on ``DatasetInfo``, ``data_source``, ``prepare``, ``EMBEDDED``.

Example:
  >>> from jaxcl import data
  >>> data.info("digits").shape, data.load_arrays("digits", "test")["x"].shape
  ((8, 8, 1), (360, 8, 8, 1))
"""
from jaxcl import _extras  # noqa: E402

_extras.require("train", __name__)

from jaxcl.data.catalog import DATASETS, EMBEDDED, DatasetInfo, info
from jaxcl.data.loader import data_source, load_arrays, make_loader, subset_arrays
from jaxcl.data.loader import count_indices, train_subset_arrays
from jaxcl.data.catalog import Modality, split_modalities
from jaxcl.data.embedded import prompts  # zero-shot prompts of multimodal sets (or None)


def prepare(name, data_dir=None):
  """Generates the embedded dataset ``name`` as ``array_record`` in ``data_dir`` (once)."""
  from jaxcl.data import builders  # pylint: disable=g-import-not-at-top  (imports tfds)
  builders.prepare(name, data_dir)


__all__ = ["DATASETS", "EMBEDDED", "DatasetInfo", "info", "load_arrays", "make_loader",
           "data_source", "prepare", "subset_arrays"]
__all__ += ["count_indices", "train_subset_arrays", "Modality", "split_modalities", "prompts"]
