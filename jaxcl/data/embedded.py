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

* ``multilabel_protos`` (the synthetic multi-label proxy of LaSO, Alfassy et al. CVPR 2019,
  arXiv 1902.09811, methods.md section 28): ``MULTILABEL_LABELS = 20`` label prototypes
  ``mu_l ~ N(0, I_64)`` drawn from ``default_rng(MULTILABEL_SEED)``; each example draws a label
  set ``L`` of ``|L| ~ U{1..4}`` distinct labels and ``x = relu(sum_{l in L} mu_l + eps)``,
  ``eps ~ N(0, MULTILABEL_NOISE**2 I)`` (post-ReLU, like a backbone's features; not
  standardised); ``y`` is the multi-hot ``[20]`` int32 row of ``L``. Labels ``0..14`` are the
  "seen" ones: ``train`` (4000) draws its sets from them only, ``val`` (1000, for fitting
  evaluation classifiers on real features) and ``test`` (2000) from all 20, so labels
  ``15..19`` never occur in training. Each split has its own stream
  ``default_rng([MULTILABEL_SEED, split index])``.

* ``digits_grating`` (the contrastive-analysis proxy of SepCLR, Louiset et al. ICLR 2024,
  arXiv 2402.11928, methods.md section 15): for each image of a ``digits`` split (same split)
  one *background* image ``b = 0.5 g`` and one *target* image ``0.5 g' + 0.5 digit`` (in
  [0, 1]), ``g`` / ``g'`` two independent sinusoidal gratings
  ``0.5 + 0.5 a sin(2 pi f (col cos theta + row sin theta) + phi)`` with one of
  ``GRATING_ORIENTATIONS = 4`` orientations ``theta = o pi / 4``, frequency ``f ~ U[0.2, 0.3]``
  cycles per pixel, phase ``phi ~ U[0, 2 pi)``, amplitude ``a ~ U[0.7, 1]``, all drawn from
  ``default_rng([GRATING_SEED, split index])``; rows then shuffled by the same stream (2874
  train / 720 test, half background). ``y = o`` for background rows and ``o + 4 (1 + digit)``
  for target rows (44 classes: ``y < 4`` is background, SepCLR's ``background_classes = 4``);
  the factors are also stored as extra labels ``orientation`` (4), ``digit`` (11: 10 = none,
  the background rows) and ``target`` (2).

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


MULTILABEL_SEED = 0
MULTILABEL_LABELS = 20
MULTILABEL_SEEN = 15
MULTILABEL_DIM = 64
MULTILABEL_NOISE = 1.0
MULTILABEL_MAX_SET = 4


def _multilabel_protos():
  protos = np.random.default_rng(MULTILABEL_SEED).normal(
      size=(MULTILABEL_LABELS, MULTILABEL_DIM))
  out = {}
  for i, (split, n, pool) in enumerate((("train", 4000, MULTILABEL_SEEN),
                                        ("val", 1000, MULTILABEL_LABELS),
                                        ("test", 2000, MULTILABEL_LABELS))):
    rng = np.random.default_rng([MULTILABEL_SEED, i])
    y = np.zeros((n, MULTILABEL_LABELS), np.int32)
    for r, k in enumerate(rng.integers(1, MULTILABEL_MAX_SET + 1, n)):
      y[r, rng.choice(pool, size=k, replace=False)] = 1
    x = y @ protos + MULTILABEL_NOISE * rng.normal(size=(n, MULTILABEL_DIM))
    out[split] = (np.maximum(x, 0.0).astype(np.float32), y)
  return out


GRATING_SEED = 2
GRATING_ORIENTATIONS = 4


def _gratings(rng, n):
  """``n`` 8x8 gratings in [0, 0.5] (``0.5 g``) and their orientation classes."""
  o = rng.integers(0, GRATING_ORIENTATIONS, n)
  theta = (o * np.pi / GRATING_ORIENTATIONS)[:, None, None]
  f = rng.uniform(0.2, 0.3, n)[:, None, None]
  phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
  amp = rng.uniform(0.7, 1.0, n)[:, None, None]
  row, col = np.mgrid[0:8, 0:8].astype(np.float64)
  g = 0.5 + 0.5 * amp * np.sin(2 * np.pi * f * (col * np.cos(theta) + row * np.sin(theta))
                               + phase)
  return 0.5 * g[..., None], o.astype(np.int32)


def _digits_grating():
  out = {}
  for i, (split, (x, y)) in enumerate(_digits().items()):
    rng = np.random.default_rng([GRATING_SEED, i])
    n = len(y)
    bg, o_bg = _gratings(rng, n)
    tg, o_tg = _gratings(rng, n)
    xs = np.concatenate([bg, tg + 0.5 * x])
    target = np.r_[np.zeros(n, np.int32), np.ones(n, np.int32)]
    orientation = np.r_[o_bg, o_tg]
    digit = np.r_[np.full(n, 10, np.int32), y.astype(np.int32)]
    label = orientation + GRATING_ORIENTATIONS * np.where(target == 1, 1 + digit, 0)
    perm = rng.permutation(2 * n)
    out[split] = (xs[perm].astype(np.float32), label[perm].astype(np.int32),
                  {"orientation": orientation[perm], "digit": digit[perm],
                   "target": target[perm]})
  return out


def _digits_captions():
  from jaxcl.data import captions  # pylint: disable=g-import-not-at-top
  return captions.generate(_digits())


# Symile's binary-XOR synthetic (Saporta et al., arXiv 2411.01053, methods.md section 3) as
# three "tabular" modalities a, b, c of XOR_BLOCK features each (see _symile_xor).
XOR_SEED = 3
XOR_BITS = 1        # bits per modality: 2**XOR_BITS candidate values (chance 1 / 2)
XOR_EMBED = 8       # each bit value is embedded as a fixed random XOR_EMBED-d code
XOR_NOISE = 0.5     # per-coordinate Gaussian noise on every observed code
XOR_MISSING = 0.5   # symile_xor_missing: P(a modality of a train row is missing), independent
XOR_BLOCK = XOR_BITS * XOR_EMBED + 1  # + the missingness indicator (last feature)
XOR_SPLITS = (("train", 10000), ("test", 2000))


def _xor_codes():
  """``E [3 modalities, XOR_BITS, 2 values, XOR_EMBED]``, fixed: per (modality, bit) a random
  direction ``u`` of norm ``sqrt(XOR_EMBED)``, ``E[..., 0, :] = u``, ``E[..., 1, :] = -u``
  (antipodal: the two values are ``2 sqrt(XOR_EMBED)`` apart, so the noise almost never
  flips a bit: ``P = Phi(-sqrt(XOR_EMBED) / XOR_NOISE)``, about 1e-8)."""
  u = np.random.default_rng(XOR_SEED).normal(size=(3, XOR_BITS, XOR_EMBED))
  u *= np.sqrt(XOR_EMBED) / np.linalg.norm(u, axis=-1, keepdims=True)
  return np.stack([u, -u], axis=2)


def _xor_block(codes, bits, noise):
  """``[N, XOR_BLOCK]``: the codes of ``bits [N, XOR_BITS]`` (+ noise), indicator 0."""
  n = bits.shape[0]
  emb = codes[np.arange(XOR_BITS)[None, :], bits] + noise  # [N, XOR_BITS, XOR_EMBED]
  return np.concatenate([emb.reshape(n, -1), np.zeros((n, 1))], axis=1)


def symile_xor_candidates(modality):
  """The noise-free, observed ``[2**XOR_BITS, XOR_BLOCK]`` blocks of every value ``v`` of
  modality ``modality`` (0 = a, 1 = b, 2 = c; bit ``j`` of ``v`` is ``(v >> j) & 1``): the
  zero-shot candidates (row ``v`` = value code ``v``, the label convention of ``y``)."""
  values = np.arange(2 ** XOR_BITS)
  bits = (values[:, None] >> np.arange(XOR_BITS)[None, :]) & 1
  return _xor_block(_xor_codes()[modality], bits, 0.0).astype(np.float32)


def _symile_xor(missing=False):
  """``symile_xor`` / ``symile_xor_missing``: ``a, b ~ U{0,1}^XOR_BITS``, ``c = a XOR b``
  (bitwise: the paper's ``p_hat = 1``, every pair of modalities independent). Each modality's
  block is ``[E[m, j, bit_j] + eps_j for j < XOR_BITS] + [missing]`` (``XOR_BLOCK = 9``
  features; antipodal codes from ``default_rng(XOR_SEED)``, ``eps ~ N(0, XOR_NOISE^2 I)``), the
  three blocks concatenated ``a | b | c`` (``x [N, 27]``). ``y`` = the value code of ``c``
  (``sum_j c_j 2^j``, 2 classes); extra labels ``a``, ``b`` (value codes) and ``missing``
  (``sum_m missing_m 2^m``). Split ``i`` draws from ``default_rng([XOR_SEED, i])`` (train
  10,000, test 2,000).

  Missing-modality convention (``symile_xor_missing``): the same rows, and in *train* each
  modality is missing independently with probability ``XOR_MISSING`` (stream
  ``default_rng([XOR_SEED, 100 + i])``); a missing block is all zeros except its indicator
  (last feature) = 1 — the zero-block + indicator analogue of the reference's "mean value +
  missingness indicator" inputs (examples/binary_xor_missing.py); the encoder learns a
  representation for "missing" and the loss is unchanged. The test split is fully observed,
  as the reference draws missingness for train / val only.
  """
  codes = _xor_codes()
  out = {}
  for i, (split, n) in enumerate(XOR_SPLITS):
    rng = np.random.default_rng([XOR_SEED, i])
    a = rng.integers(0, 2, (n, XOR_BITS))
    b = rng.integers(0, 2, (n, XOR_BITS))
    c = a ^ b
    blocks = [_xor_block(codes[m], bits, XOR_NOISE * rng.normal(size=(n, XOR_BITS, XOR_EMBED)))
              for m, bits in enumerate((a, b, c))]
    miss = np.zeros((n, 3), bool)
    if missing and split == "train":
      miss = np.random.default_rng([XOR_SEED, 100 + i]).random((n, 3)) < XOR_MISSING
      for m in range(3):
        blocks[m][miss[:, m]] = 0.0
        blocks[m][miss[:, m], -1] = 1.0
    code = lambda bits: (bits << np.arange(bits.shape[1])[None, :]).sum(1).astype(np.int32)
    out[split] = (np.concatenate(blocks, axis=1).astype(np.float32), code(c),
                  {"a": code(a), "b": code(b), "missing": code(miss.astype(np.int64))})
  return out


GENERATORS = {
    "digits_captions": _digits_captions,
    "mnist1d": _mnist1d,
    "digits": _digits,
    "digits_easy": _digits_easy,
    "digits_grating": _digits_grating,
    "wine": _sk("load_wine"),
    "breast_cancer": _sk("load_breast_cancer"),
    # M3CoL's proxy: the same arrays, read as 3 tabular modalities of 10 features (catalog).
    "breast_cancer_blocks": _sk("load_breast_cancer"),
    "diabetes": _sk("load_diabetes", regression=True),
    "ordinal": _ordinal,
    "multilabel_protos": _multilabel_protos,
    "symile_xor": _symile_xor,
    "symile_xor_missing": lambda: _symile_xor(missing=True),
}


# Zero-shot class prompts of multimodal datasets: ``[C, P, F]`` rows (only the text block set).
def _caption_prompts():
  from jaxcl.data import captions  # pylint: disable=g-import-not-at-top
  return captions.prompts()


PROMPTS = {"digits_captions": _caption_prompts}


def prompts(name: str):
  """The dataset's zero-shot prompts ``[C, P, F]`` (float32), or ``None`` if it has none."""
  return PROMPTS[name]() if name in PROMPTS else None


def generate(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """All splits of the embedded dataset ``name`` as numpy arrays (see module docstring)."""
  if name not in GENERATORS:
    raise ValueError(f"{name!r} is not an embedded dataset; embedded: {', '.join(GENERATORS)}")
  return GENERATORS[name]()
