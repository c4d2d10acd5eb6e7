"""Text through the trainer: tokenized in-memory datasets served by an iterator.

A text dataset is an in-memory array ``x [N, M * L]`` of token ids (float32, ``0`` = padding,
the convention of :class:`jaxcl.data.catalog.Modality` ``"tokens"``) with labels ``y [N]``:

* ``M = 1`` (one text per example, e.g. SimCSE's glosses, views by dropout):
  ``kind="tokens"``, ``config.model.encoder = "bert"``;
* ``M >= 2`` (anchor / positive [/ hard negative] texts, e.g. MNRL's pairs): a multimodal
  dataset of ``M`` token blocks; ``config.model.shared_tower = True`` encodes every block with
  one tower (a bi-encoder), and the objective sees ``z [B, M, D]`` (column ``m`` = text ``m``).

:func:`register_texts` tokenizes the columns, registers the dataset's
:class:`~jaxcl.data.catalog.DatasetInfo` (so ``config.data.name`` validates) and returns the
arrays; :func:`batches` serves them (shuffled, per process, resumable; ``groups`` gives
single-group batches such as CoDiEmb's single-task batches) for
``jaxcl.train.train(config, workdir, iterator=...)``. With ``config.model.pretrained =
"minilm"`` the BERT tower starts from all-MiniLM-L6-v2 and ``tokenize`` should be its
WordPiece tokenizer (``jaxcl.models.pretrained.load_minilm()[2]``).

Example:
  >>> import numpy as np
  >>> from jaxcl.data import text
  >>> tok = lambda s, pad_to: {"input_ids": np.array([[2, 3, 0, 0][:pad_to]] * len(s))}
  >>> info, x, y = text.register_texts("doc_pairs", [["a", "b"], ["c", "d"]],
  ...                                  tokenize=tok, max_len=4, y=[0, 1], num_classes=2)
  >>> info.kind, x.shape, [m.name for m in info.modalities]
  ('multimodal', (2, 8), ['text_0', 'text_1'])
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from jaxcl.data import catalog
from jaxcl.data.grouped import GroupedBatches

BERT_VOCAB = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary


def encode(tokenize: Callable, texts: Sequence[str], max_len: int) -> np.ndarray:
  """``float32 [N, max_len]`` token ids of ``texts`` (truncated to ``max_len``; a truncated
  row keeps its final ``[SEP]``-like last id so every row ends as the tokenizer ends it)."""
  if max_len < 2:
    raise ValueError(f"encode: 'max_len' must be >= 2, got {max_len}")
  texts = list(texts)
  if not texts:
    return np.zeros((0, max_len), np.float32)
  ids = np.asarray(tokenize(texts, pad_to=None)["input_ids"])
  out = np.zeros((len(texts), max_len), np.float32)
  lengths = (ids != 0).sum(1)
  for r, n in enumerate(lengths):
    if n <= max_len:
      out[r, :n] = ids[r, :n]
    else:
      out[r, :max_len - 1] = ids[r, :max_len - 1]
      out[r, max_len - 1] = ids[r, n - 1]
  return out


def register_texts(name: str, columns: Sequence[Sequence[str]], *, tokenize: Callable,
                   max_len: int, y=None, num_classes: int = 0, vocab: int = BERT_VOCAB,
                   names: Sequence[str] | None = None):
  """Tokenizes ``columns`` (``M`` lists of ``N`` texts: ``columns[m][i]`` is text ``m`` of
  example ``i``) and registers dataset ``name``. Returns ``(info, x [N, M*max_len], y [N])``.

  ``y``: int labels (default: the row index, so every example is its own class);
  ``num_classes``: their number (default ``max(y) + 1``); ``names``: the modality names
  (default ``text_0 .. text_{M-1}``). The info lists no splits: the recipe serves its own
  train / eval rows (the trainer's split checks then do not apply).
  """
  columns = [list(c) for c in columns]
  if not columns:
    raise ValueError("register_texts: 'columns' is empty: give M >= 1 lists of texts")
  n = len(columns[0])
  if any(len(c) != n for c in columns):
    raise ValueError(f"register_texts: every column of 'columns' needs {n} texts, got "
                     f"{[len(c) for c in columns]}")
  y = np.arange(n, dtype=np.int32) if y is None else np.asarray(y, np.int32)
  if y.shape != (n,):
    raise ValueError(f"register_texts: 'y' must have shape ({n},), got {y.shape}")
  num_classes = int(num_classes or (int(y.max()) + 1 if n else 1))
  names = tuple(names or (f"text_{m}" for m in range(len(columns))))
  if len(names) != len(columns):
    raise ValueError(f"register_texts: 'names' has {len(names)} entries for {len(columns)} "
                     f"columns")
  x = np.concatenate([encode(tokenize, c, max_len) for c in columns], axis=1)
  if len(columns) == 1:
    info = catalog.DatasetInfo(name, "tokens", (max_len,), num_classes, {},
                               embedded=False)
  else:
    info = catalog.DatasetInfo(
        name, "multimodal", (len(columns) * max_len,), num_classes, {}, embedded=False,
        modalities=tuple(catalog.Modality(m, "tokens", (max_len,), vocab=vocab) for m in names))
  return catalog.register(info), x, y


def batches(x, y, *, global_batch_size: int, seed: int, groups=None, process_index=None,
            process_count=None) -> GroupedBatches:
  """Shuffled global batches of ``(x, y)`` (every ``global_batch_size`` rows from one group
  when ``groups`` is given, e.g. one task per batch), this process's rows, resumable through
  the trainer's checkpoints (``get_state`` / ``set_state``)."""
  groups = np.zeros(len(x), np.int32) if groups is None else np.asarray(groups)
  return GroupedBatches(x, y, groups, global_batch_size=global_batch_size, seed=seed,
                        process_index=process_index, process_count=process_count)
