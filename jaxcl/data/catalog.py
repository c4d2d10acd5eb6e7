"""What each dataset is: kind, per-example shape, classes and split sizes (no I/O here).

``info(name)`` answers from this table without touching the disk, so configs can be checked
(shapes, class counts, batch divisibility) before anything is generated or read.

Example:
  >>> from jaxcl import data
  >>> data.info("mnist1d").shape
  (40, 1)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class Modality:
  """One block of a multimodal example: ``kind`` is ``"image" | "signal1d" | "tabular" |
  "tokens"`` (token ids stored as float32, ``0`` = padding, ``vocab`` ids in all)."""
  name: str
  kind: str
  shape: tuple[int, ...]
  vocab: int = 0

  @property
  def size(self) -> int:
    return int(math.prod(self.shape))


def split_modalities(x, modalities):
  """``x [B, F]`` -> one ``[B, *shape]`` array per modality (tokens as int32), in order."""
  total = sum(m.size for m in modalities)
  if x.ndim != 2 or x.shape[-1] != total:
    raise ValueError(f"split_modalities: the modalities cover {total} features; 'x' must be "
                     f"[B, {total}], got shape {tuple(x.shape)}")
  out, start = [], 0
  for m in modalities:
    block = x[:, start:start + m.size].reshape((x.shape[0],) + tuple(m.shape))
    out.append(block.astype("int32") if m.kind == "tokens" else block)
    start += m.size
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of one dataset.

  Attributes:
    name: registry name (also the tfds builder name).
    kind: ``"signal1d" | "image" | "tabular"``; selects the default views.
    shape: per-example input shape: ``[length, channels]`` for signals, ``[H, W, C]`` for
      images, ``[F]`` for tabular data.
    num_classes: number of labels; ``0`` for regression (``y`` is then float32).
    splits: split name -> number of examples.
    embedded: True when the data is generated offline by jaxcl (no download ever).
    extra_labels: ``((name, num_classes), ...)`` further integer labels stored with each
      example (``load_arrays`` returns them under ``name``), e.g. the easy feature of
      ``digits_easy``.
    multi_label: ``y`` is a multi-hot int32 row ``[num_classes]`` per example (a label *set*,
      ``multilabel_protos``) instead of one class id; the built-in probe / kNN evaluation and
      the class-subset options (``classes``, ``per_class``, ``imbalance``) do not apply.
    modalities: for ``kind == "multimodal"``: the :class:`Modality` blocks of ``x [F]``
      (flattened, concatenated in order); the trainer builds one tower per modality.
  """
  name: str
  kind: str
  shape: tuple[int, ...]
  num_classes: int
  splits: Mapping[str, int]
  embedded: bool = True
  extra_labels: tuple[tuple[str, int], ...] = ()
  multi_label: bool = False
  modalities: tuple[Modality, ...] = ()

  @property
  def is_regression(self) -> bool:
    return self.num_classes == 0


def _caption_vocab():
  from jaxcl.data import captions  # numpy only
  return len(captions.VOCAB)


# Split sizes are fixed by the generators in ``embedded.py`` (80/20 split, test = the rest);
# ``tests/test_data.py`` checks they agree with what is generated.
_INFOS = {
    "mnist1d": DatasetInfo("mnist1d", "signal1d", (40, 1), 10, {"train": 4000, "test": 1000}),
    "digits": DatasetInfo("digits", "image", (8, 8, 1), 10, {"train": 1437, "test": 360}),
    "wine": DatasetInfo("wine", "tabular", (13,), 3, {"train": 142, "test": 36}),
    "breast_cancer": DatasetInfo("breast_cancer", "tabular", (30,), 2,
                                 {"train": 455, "test": 114}),
    "diabetes": DatasetInfo("diabetes", "tabular", (10,), 0,
                            {"train": 353, "test": 89, "train25": 88}),
    # make_regression-style target rounded to integer bins (SupReMix's ordinal proxy).
    "ordinal": DatasetInfo("ordinal", "tabular", (16,), 0,
                           {"train": 480, "test": 120, "train25": 120}),
    # digits + an "easy" channel shared by both views (MCL's feature-suppression proxy).
    "digits_easy": DatasetInfo("digits_easy", "image", (8, 8, 2), 10,
                               {"train": 1437, "test": 360}, extra_labels=(("easy", 5),)),
    # Background gratings vs grating + digit targets (SepCLR's contrastive-analysis proxy).
    "digits_grating": DatasetInfo("digits_grating", "image", (8, 8, 1), 44,
                                  {"train": 2874, "test": 720},
                                  extra_labels=(("orientation", 4), ("digit", 11),
                                                ("target", 2))),
    # Label sets: relu(sum of label prototypes + noise), multi-hot y (LaSO's proxy, methods.md
    # section 28); train holds only the 15 "seen" labels, val / test all 20.
    "multilabel_protos": DatasetInfo("multilabel_protos", "tabular", (64,), 20,
                                     {"train": 4000, "val": 1000, "test": 2000},
                                     multi_label=True),
    # 8x8 digits + 16-word generated captions (jaxcl/data/captions.py): image-text pairs.
    "digits_captions": DatasetInfo(
        "digits_captions", "multimodal", (80,), 10, {"train": 11496, "test": 360},
        extra_labels=(("thickness", 3), ("slant", 3), ("width", 2), ("position", 3)),
        modalities=(Modality("image", "image", (8, 8, 1)),
                    Modality("text", "tokens", (16,), vocab=_caption_vocab()))),
    # Symile's binary XOR (embedded.py _symile_xor): modalities a, b, c = a XOR b (one bit each,
    # a random 8-d code + noise, last feature = missing indicator); y = c.
    **{name: DatasetInfo(
        name, "multimodal", (27,), 2, {"train": 10000, "test": 2000},
        extra_labels=(("a", 2), ("b", 2), ("missing", 8)),
        modalities=tuple(Modality(m, "tabular", (9,)) for m in ("a", "b", "c")))
       for name in ("symile_xor", "symile_xor_missing")},
    # breast_cancer (same split / standardisation) as M3CoL's 3 modalities: the 10 "mean",
    # 10 "standard error" and 10 "worst" features (sklearn's column order).
    "breast_cancer_blocks": DatasetInfo(
        "breast_cancer_blocks", "multimodal", (30,), 2, {"train": 455, "test": 114},
        modalities=tuple(Modality(m, "tabular", (10,)) for m in ("mean", "se", "worst"))),
    "cifar10": DatasetInfo("cifar10", "image", (32, 32, 3), 10, {"train": 50000, "test": 10000},
                           embedded=False),
}

DATASETS = tuple(_INFOS)
EMBEDDED = tuple(n for n, i in _INFOS.items() if i.embedded)


def register(info_: DatasetInfo) -> DatasetInfo:
  """Adds a runtime dataset (built in memory by a recipe, e.g. tokenized WordNet pairs of
  :mod:`jaxcl.data.text`) so the trainer can validate a config naming it. Such a dataset has no
  tfds builder: its batches come through ``jaxcl.train.train(..., iterator=...)``.
  Re-registering the same name with the same description is a no-op; a different one raises."""
  if not isinstance(info_, DatasetInfo):
    raise TypeError(f"register: 'info_' must be a DatasetInfo, got {type(info_).__name__}")
  old = _INFOS.get(info_.name)
  if old is not None and old != info_:
    raise ValueError(f"register: dataset {info_.name!r} is already registered as {old}")
  _INFOS[info_.name] = info_
  return info_


def check_name(name: str) -> str:
  if name not in _INFOS:
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
  return name


def check_split(name: str, split: str) -> str:
  splits = _INFOS[check_name(name)].splits
  if split not in splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(splits)}")
  return split


def info(name: str) -> DatasetInfo:
  """The static :class:`DatasetInfo` of ``name``; ``ValueError`` listing the names if unknown."""
  return _INFOS[check_name(name)]
