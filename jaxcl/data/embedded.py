"""Offline generators for the embedded datasets (never a download).

* ``mnist1d``: Greydanus & Hsu, "Scaling down deep learning with MNIST-1D" (ICML 2024),
  generated procedurally by ``mnist1d.data.make_dataset`` with the package's default
  arguments (seed 42, 4000 train / 1000 test, length 40). ``get_dataset`` is *not* used: it
  downloads a pickle.
* ``digits``, ``wine``, ``breast_cancer``, ``diabetes``: scikit-learn's bundled copies.
  Fixed split: permutation from ``numpy.random.default_rng(SPLIT_SEED)``, first
  ``int(0.8 N)`` rows train, the rest test. Tabular features are standardised with train
  statistics ``(x - mean_train) / std_train``; digits pixels are ``v / 16`` in ``[0, 1]``;
  the diabetes target is the raw disease-progression score (float32). The regression sets
  (``diabetes``, ``ordinal``) also have a ``train25`` split: the first ``int(0.25 N_train)``
  rows of ``train`` (a random quarter, standardised with the full train statistics), for
  few-sample studies.

* ``digits_easy`` (the feature-suppression proxy of MCL, Zhang et al. ECCV 2024,
  arXiv 2402.11816): ``digits`` (same split) with a second channel that is constant over the
  image, ``(e + 0.5) / EASY_LEVELS`` for an "easy" label ``e`` drawn uniformly from
  ``default_rng(EASY_SEED)`` independently of the digit. Crops, flips and blur keep that
  channel, so both views of an example share it: a feature that alone solves part of
  instance discrimination and tells nothing about the digit.

* ``ordinal`` (the synthetic ordinal-regression proxy of SupReMix, methods.md section 6):
  ``sklearn.datasets.make_regression(600, 16 features, 8 informative, noise 10,
  random_state=ORDINAL_SEED)``, target standardised and rounded to integer bins,
  ``round(ORDINAL_BINS_PER_STD * y / std(y))`` (float32, about -25..25), same 80/20 split
  and feature standardisation as the other tabular sets.

Every function returns ``{split: (x float32 [N, *shape], y int32 | float32 [N])}``, plus a
dict of extra integer labels as a third element where the catalog lists ``extra_labels``, and
is deterministic (same arrays in every process and on every call).

Example:
  >>> from jaxcl.data import embedded
  >>> embedded.generate("wine")["train"][0].shape
  (142, 13)
"""
from __future__ import annotations

import numpy as np

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8
SUBSET_FRACTION = 0.25


def _split(x, y, seed=SPLIT_SEED):
  perm = np.random.default_rng(seed).permutation(len(y))
  n_train = int(TRAIN_FRACTION * len(y))
  tr, te = perm[:n_train], perm[n_train:]
  return (x[tr], y[tr]), (x[te], y[te])


def _standardise(train, test):
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)  # a constant feature stays 0 instead of NaN
  return (train - mean) / std, (test - mean) / std


def _mnist1d():
  from mnist1d.data import get_dataset_args, make_dataset  # pylint: disable=g-import-not-at-top
  # make_dataset seeds numpy's global RNG; restore it so generating has no side effect.
  saved = np.random.get_state()
  try:
    d = make_dataset(get_dataset_args())
  finally:
    np.random.set_state(saved)
  as_x = lambda a: np.asarray(a, np.float32)[..., None]  # [N, 40] -> [N, 40, 1]
  return {"train": (as_x(d["x"]), np.asarray(d["y"], np.int32)),
          "test": (as_x(d["x_test"]), np.asarray(d["y_test"], np.int32))}


def _digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  (xtr, ytr), (xte, yte) = _split(x, d.target.astype(np.int32))
  return {"train": (xtr, ytr), "test": (xte, yte)}


EASY_SEED = 1
EASY_LEVELS = 5


def _digits_easy():
  out = {}
  for i, (split, (x, y)) in enumerate(_digits().items()):
    e = np.random.default_rng([EASY_SEED, i]).integers(0, EASY_LEVELS, len(y)).astype(np.int32)
    level = ((e + 0.5) / EASY_LEVELS).astype(np.float32)
    easy = np.broadcast_to(level[:, None, None, None], x.shape)
    out[split] = (np.concatenate([x, easy], axis=-1), y, {"easy": e})
  return out


def _with_subset(out):
  """Adds ``train25``: the first quarter of the (already shuffled) train split."""
  x, y = out["train"]
  n = int(SUBSET_FRACTION * len(y))
  return {**out, "train25": (x[:n], y[:n])}


def _tabular(loader, regression=False):
  d = loader()
  y = d.target.astype(np.float32 if regression else np.int32)
  (xtr, ytr), (xte, yte) = _split(d.data.astype(np.float64), y)
  xtr, xte = _standardise(xtr, xte)
  out = {"train": (xtr.astype(np.float32), ytr), "test": (xte.astype(np.float32), yte)}
  return _with_subset(out) if regression else out


def _sk(fn_name, regression=False):
  def gen():
    import sklearn.datasets  # pylint: disable=g-import-not-at-top
    return _tabular(getattr(sklearn.datasets, fn_name), regression)
  return gen


ORDINAL_SEED = 0
ORDINAL_BINS_PER_STD = 8


def _ordinal():
  from sklearn.datasets import make_regression  # pylint: disable=g-import-not-at-top
  x, y = make_regression(n_samples=600, n_features=16, n_informative=8, noise=10.0,
                         random_state=ORDINAL_SEED)
  y = np.round(ORDINAL_BINS_PER_STD * y / y.std()).astype(np.float32)
  (xtr, ytr), (xte, yte) = _split(x, y)
  xtr, xte = _standardise(xtr, xte)
  return _with_subset({"train": (xtr.astype(np.float32), ytr),
                       "test": (xte.astype(np.float32), yte)})


GENERATORS = {
    "mnist1d": _mnist1d,
    "digits": _digits,
    "digits_easy": _digits_easy,
    "wine": _sk("load_wine"),
    "breast_cancer": _sk("load_breast_cancer"),
    "diabetes": _sk("load_diabetes", regression=True),
    "ordinal": _ordinal,
}


def generate(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """All splits of the embedded dataset ``name`` as numpy arrays (see module docstring)."""
  if name not in GENERATORS:
    raise ValueError(f"{name!r} is not an embedded dataset; embedded: {', '.join(GENERATORS)}")
  return GENERATORS[name]()
