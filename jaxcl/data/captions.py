"""``digits_captions``: 8x8 digits paired with generated captions (an offline image-text set).

Each example is an image and a caption of up to ``MAX_TOKENS`` words that names the digit and,
usually, attributes *measured from the pixels*, so a caption carries more than the label:

* thickness: mean ink relative to the digit's class (tertiles of that class in the train split:
  ``thin`` / ``medium`` / ``thick``);
* slant: the ink's shear moment ``cov(col, row) / var(row)`` (train tertiles: ``slanted left``
  / ``upright`` / ``slanted right``);
* width: the number of inked columns (train median: ``narrow`` / ``wide``);
* position: the vertical ink centroid (train tertiles: ``near the top`` / ``in the middle`` /
  ``near the bottom``).

Train rows are ``JITTER_COPIES`` copies of every ``digits`` train image (copy 0 unchanged, the
others shifted by up to one pixel, scaled in intensity and thickened or thinned by blending with
a 3x3 max / min filter), test rows one such jittered copy of every ``digits`` test image; attributes are measured
on the image as stored. A caption is one of ``TEMPLATES`` (paraphrases) with each attribute
phrase dropped with probability ``DROP_PROB`` and replaced by a wrong value with probability
``NOISE_PROB`` (caption noise); the digit is always named correctly (one of three forms: ``seven``,
``digit seven``, ``number seven``). Everything is drawn from ``default_rng([CAPTION_SEED,
split index])``.

Storage (the multimodal convention of :mod:`jaxcl.data.catalog`): ``x = [64 pixels in [0, 1] |
16 token ids as float32]``, ``0 = PAD``; ``y`` = the digit; extra labels ``thickness`` (3),
``slant`` (3), ``width`` (2), ``position`` (3), the measured (noise-free) attribute classes.

``prompts()`` are the zero-shot class prompts ``[10, P, 80]`` (text block only, image block 0);
``decode(tokens)`` turns ids back into words.

Example:
  >>> from jaxcl.data import captions
  >>> captions.decode(captions.encode("a narrow seven near the top"))
  'a narrow seven near the top'
"""
from __future__ import annotations

import numpy as np

CAPTION_SEED = 3
JITTER_COPIES = 8
MAX_TOKENS = 16
DROP_PROB = 0.3
NOISE_PROB = 0.05
IMAGE_SIZE = 64

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS = ("thin", "medium", "thick")
SLANT = ("slanted left", "upright", "slanted right")
SIZE = ("narrow", "wide")
POSITION = ("near the top", "in the middle", "near the bottom")
# {d}: the digit; {t} thickness, {s} slant, {z} width, {p} position ("" when dropped).
TEMPLATES = ("a {z} {t} {d} {s} {p}",
             "the handwritten {d} {s} with {t} strokes {p}",
             "a picture of a {z} {d} written {s} {p}",
             "{t} {z} {d} {p}",
             "an image of the {d} {s} drawn {t} {p}")
DIGIT_FORMS = ("{w}", "digit {w}", "number {w}")
PROMPT_TEMPLATES = ("a {d}", "a picture of a {d}", "the handwritten {d}", "an image of the {d}")

_EXTRA = " ".join(TEMPLATES + PROMPT_TEMPLATES + DIGIT_FORMS + THICKNESS + SLANT + SIZE
                  + POSITION + DIGIT_WORDS + ("with strokes drawn",))
VOCAB = ("<pad>", "<mask>") + tuple(sorted({w for w in _EXTRA.replace("{", " {").split()
                                             if not w.startswith("{")}))
MASK_ID = 1
_IDS = {w: i for i, w in enumerate(VOCAB)}


def encode(text: str) -> np.ndarray:
  """Word ids of ``text``, padded with 0 to ``MAX_TOKENS`` (``ValueError`` if too long)."""
  words = text.split()
  if len(words) > MAX_TOKENS:
    raise ValueError(f"caption has {len(words)} words > MAX_TOKENS = {MAX_TOKENS}: {text!r}")
  unknown = [w for w in words if w not in _IDS]
  if unknown:
    raise ValueError(f"words {unknown} are not in the caption vocabulary")
  out = np.zeros(MAX_TOKENS, np.int32)
  out[:len(words)] = [_IDS[w] for w in words]
  return out


def decode(tokens) -> str:
  return " ".join(VOCAB[int(t)] for t in np.asarray(tokens).reshape(-1) if int(t) > 0)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
  """Raw attribute values of ``[N, 8, 8(, 1)]`` images: ink, slant, width, centroid row."""
  im = images.reshape(len(images), 8, 8).astype(np.float64)
  mass = im.sum(axis=(1, 2)) + 1e-9
  row, col = np.mgrid[0:8, 0:8].astype(np.float64)
  r = (im * row).sum(axis=(1, 2)) / mass
  c = (im * col).sum(axis=(1, 2)) / mass
  dr, dc = row[None] - r[:, None, None], col[None] - c[:, None, None]
  var_r = (im * dr * dr).sum(axis=(1, 2)) / mass
  shear = (im * dr * dc).sum(axis=(1, 2)) / mass / (var_r + 1e-9)
  inked = im.max(axis=1) > 0.3  # per column
  first = np.argmax(inked, axis=1)
  last = 7 - np.argmax(inked[:, ::-1], axis=1)
  # Rows run downwards, so a top-right to bottom-left stroke (right slant) has shear < 0.
  return {"ink": im.mean(axis=(1, 2)), "slant": -shear, "width": (last - first + 1.0),
          "centroid": r}


def _bins(values, edges):
  return np.searchsorted(np.asarray(edges), values, side="right").astype(np.int32)


def thresholds(train_images, train_labels) -> dict:
  """Bin edges from the (stored) train split: per-class ink tertiles, global tertiles else."""
  m = measure(train_images)
  q3 = lambda v: np.quantile(v, [1 / 3, 2 / 3])
  return {"ink": {int(k): q3(m["ink"][train_labels == k]) for k in np.unique(train_labels)},
          "slant": q3(m["slant"]), "width": [np.median(m["width"]) - 0.5],  # integer widths: below / at-or-above
          "centroid": q3(m["centroid"])}


def attributes(images, labels, edges) -> dict[str, np.ndarray]:
  m = measure(images)
  thick = np.array([_bins(v, edges["ink"][int(k)]) for v, k in zip(m["ink"], labels)], np.int32)
  return {"thickness": thick, "slant": _bins(m["slant"], edges["slant"]),
          "width": _bins(m["width"], edges["width"]),
          "position": _bins(m["centroid"], edges["centroid"])}


def _jitter(rng, images):
  """Shift by up to 1 pixel, scale intensity, blend with a 3x3 max or min filter."""
  n = len(images)
  im = images.reshape(n, 8, 8)
  pad = np.pad(im, ((0, 0), (1, 1), (1, 1)))
  win = np.stack([pad[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)])
  dil, ero = win.max(axis=0), win.min(axis=0)
  a = rng.uniform(0.0, 0.5, n)[:, None, None]
  thicker = rng.random(n)[:, None, None] < 0.5
  out = np.where(thicker, (1 - a) * im + a * dil, (1 - a) * im + a * ero)
  out = np.clip(out * rng.uniform(0.8, 1.2, n)[:, None, None], 0.0, 1.0)
  shifted = np.zeros_like(out)
  dy, dx = rng.integers(-1, 2, n), rng.integers(-1, 2, n)
  for i in range(n):
    shifted[i] = np.roll(np.roll(out[i], dy[i], axis=0), dx[i], axis=1)
    if dy[i] == 1:
      shifted[i, 0] = 0
    elif dy[i] == -1:
      shifted[i, -1] = 0
    if dx[i] == 1:
      shifted[i, :, 0] = 0
    elif dx[i] == -1:
      shifted[i, :, -1] = 0
  return shifted[..., None].astype(np.float32)


def caption(rng, label, attrs) -> str:
  """One noisy paraphrase for a digit ``label`` with attribute classes ``attrs``."""
  def phrase(values, k):
    if rng.random() < DROP_PROB:
      return ""
    if rng.random() < NOISE_PROB:
      k = int(rng.integers(len(values)))
    return values[k]
  words = dict(d=DIGIT_FORMS[rng.integers(len(DIGIT_FORMS))].format(w=DIGIT_WORDS[label]),
               t=phrase(THICKNESS, attrs["thickness"]), s=phrase(SLANT, attrs["slant"]),
               z=phrase(SIZE, attrs["width"]), p=phrase(POSITION, attrs["position"]))
  text = TEMPLATES[rng.integers(len(TEMPLATES))].format(**words)
  return " ".join(text.replace("with  strokes", "").replace("drawn  ", "").split())


def prompts() -> np.ndarray:
  """Zero-shot prompts ``[10, P, 80]``: the text block holds the prompt, the image block 0."""
  out = np.zeros((len(DIGIT_WORDS), len(PROMPT_TEMPLATES), IMAGE_SIZE + MAX_TOKENS), np.float32)
  for k, w in enumerate(DIGIT_WORDS):
    for p, t in enumerate(PROMPT_TEMPLATES):
      out[k, p, IMAGE_SIZE:] = encode(t.format(d=f"digit {w}" if p % 2 else w))
  return out


def generate(digits_splits) -> dict:
  """``{split: (x [N, 80], y [N], extra)}`` from the ``digits`` splits (see module doc)."""
  splits, rngs = {}, {}
  for i, (split, (x, y)) in enumerate(digits_splits.items()):
    rngs[split] = rng = np.random.default_rng([CAPTION_SEED, i])
    if split == "train":
      x = np.concatenate([x] + [_jitter(rng, x) for _ in range(JITTER_COPIES - 1)])
      y = np.tile(y, JITTER_COPIES)
    else:  # the same image distribution as training (attribute bins are train quantiles)
      x = _jitter(rng, x)
    splits[split] = (x, y)
  edges = thresholds(*splits["train"])  # of the stored (jittered) train images
  out = {}
  for split, (x, y) in splits.items():
    rng = rngs[split]
    attrs = attributes(x, y, edges)
    tokens = np.stack([encode(caption(rng, int(y[r]), {k: int(v[r]) for k, v in attrs.items()}))
                       for r in range(len(y))])
    xs = np.concatenate([x.reshape(len(x), -1), tokens.astype(np.float32)], axis=1)
    out[split] = (xs.astype(np.float32), y.astype(np.int32), attrs)
  return out
