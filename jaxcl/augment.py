"""Random views on device: pure JAX augmentations with explicit keys, vmapped per example.

``make_view_fn(kind, **params)`` returns ``view(key, x[B, *shape]) -> x'[B, *shape]``; every
example gets its own key (``jax.random.split(key, B)``) so one call draws ``B`` independent
views. Everything is ``jit``-able and meant to run inside the jitted train step.

* ``"signal1d"`` (``x[B, L, C]``): a resampling warp ``x'(t) = a * x(c + (t - c) / s - d)``
  (random fractional shift ``d``, time stretch ``s`` about the centre ``c``, amplitude ``a``;
  linear interpolation, circular or zero boundary), plus a random linear ramp ``r * (t/L -
  1/2)``, Gaussian noise and a zeroed contiguous segment. These mirror how MNIST-1D is made
  from its ten templates (Greydanus & Hsu 2024: scale, circular translation, correlated and
  i.i.d. noise, a linear "shear" ramp), so views of one example differ only by the nuisances
  the label is invariant to.
* ``"image"`` (``x[B, H, W, C]`` in ``[0, 1]``): SimCLR's views (Chen et al. 2020, arXiv
  2002.05709, App. A): random resized crop (area ``U[scale]``, log-uniform aspect ratio,
  bilinear resize back to ``H x W``), horizontal flip, colour jitter with probability ``p``
  (brightness, contrast, and for ``C = 3`` saturation and hue), random grayscale
  (``C = 3``), Gaussian blur with random ``sigma``; optionally (off by default) an integer
  shift, random erasing and Gaussian noise (the cheap digit views of methods.md section 7);
  values clipped to ``[0, 1]``.
* ``"tabular"`` (``x[B, F]``, standardised): Gaussian feature noise and feature dropout
  (a dropped feature is set to ``mask_value``, the train mean ``0`` after standardisation).

* ``"tokens"`` (``x[B, L]`` token ids as float32, ``0`` = padding): token masking / dropping,
  off by default; ``make_multimodal_view_fn`` applies the view of each modality's kind to its
  block of a multimodal example.

``multi_crop`` draws SwAV's 2 global + k local crops (Caron et al. 2020, arXiv 2006.09882) of
images or 1-D signals.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl import augment
  >>> view = augment.make_view_fn("signal1d")
  >>> x = jnp.ones((4, 40, 1))
  >>> v1, v2 = augment.two_views(jax.jit(view), jax.random.key(0), x)
  >>> v1.shape
  (4, 40, 1)
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("signal1d", "image", "tabular", "tokens")

SIGNAL1D_DEFAULTS = dict(
    max_shift=0.5,         # |d| <= max_shift * L (MNIST-1D translates by up to ~0.65 L)
    boundary="circular",   # "circular" (MNIST-1D rolls its padded signal) | "zero"
    stretch=(0.8, 1.25),   # time-stretch factor s
    scale=(0.7, 1.3),      # amplitude factor a
    ramp=0.6,              # ramp slope r ~ U[-ramp/2, ramp/2]
    noise_std=0.15,        # i.i.d. Gaussian noise
    mask_prob=0.5,         # probability of zeroing one segment ...
    mask_frac=(0.05, 0.25),  # ... of this fraction of the length
    crop=None,             # (lo, hi): first take a random window of U[lo, hi] * L (multi-crop)
)
IMAGE_DEFAULTS = dict(
    crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
    jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
    gray_prob=0.2, blur_prob=0.5, blur_sigma=(0.1, 2.0),
    # Off by default (and then drawn from nothing, so the views above are unchanged): integer
    # translation by up to ``shift`` pixels (edges clamped), random erasing of a square of
    # ``erase_scale`` of the area (set to 0) with probability ``erase_prob``, Gaussian noise.
    shift=0, erase_prob=0.0, erase_scale=(0.02, 0.2), noise_std=0.0,
)
TABULAR_DEFAULTS = dict(noise_std=0.1, drop_prob=0.2, mask_value=0.0)
TOKENS_DEFAULTS = dict(mask_prob=0.0, drop_prob=0.0, mask_id=1)  # identity by default
_DEFAULTS = {"signal1d": SIGNAL1D_DEFAULTS, "image": IMAGE_DEFAULTS,
             "tabular": TABULAR_DEFAULTS, "tokens": TOKENS_DEFAULTS}
_RANK = {"signal1d": 2, "image": 3, "tabular": 1, "tokens": 1}  # per-example rank


# Each view draws all its scalars with one ``uniform`` call: every random-bits call is a
# threefry hash that XLA compiles separately, and one call per scalar tripled compile time.
def _lerp(u, bounds):
  lo, hi = bounds
  return lo + (hi - lo) * u


def _coin(u, p):
  return u < p


# ---------------------------------------------------------------------------------------------
# 1-D signals


def _interp1d(x, pos, boundary):
  """``x[L, C]`` sampled at float positions ``pos[M]`` (linear; circular or zero outside)."""
  n = x.shape[0]
  i0 = jnp.floor(pos)
  w = (pos - i0)[:, None]
  i0 = i0.astype(jnp.int32)
  i1 = i0 + 1
  if boundary == "circular":
    a, b = x[i0 % n], x[i1 % n]
  elif boundary == "zero":
    take = lambda i: jnp.where(((i >= 0) & (i < n))[:, None], x[jnp.clip(i, 0, n - 1)], 0)
    a, b = take(i0), take(i1)
  else:
    raise ValueError(f"signal1d view: 'boundary' must be 'circular' or 'zero', got {boundary!r}")
  return (1 - w) * a + w * b


def _signal_view(key, x, *, max_shift, boundary, stretch, scale, ramp, noise_std, mask_prob,
                 mask_frac, out_len=None, crop=None):
  """One example ``x[L, C]``; ``crop=(lo, hi)`` first picks a random window of that length
  fraction (multi-crop), ``out_len`` resamples to a different length."""
  n = x.shape[0]
  m = out_len or n
  ku, kn = jax.random.split(key)
  u = jax.random.uniform(ku, (9,))
  t = jnp.arange(m, dtype=jnp.float32)
  width = jnp.float32(n)
  start = jnp.float32(0)
  if crop is not None:
    width = n * _lerp(u[0], crop)
    start = u[1] * (n - width)
  s = _lerp(u[2], stretch)
  d = max_shift * n * (2 * u[3] - 1)
  centre = (m - 1) / 2
  pos = start + (centre + (t - centre) / s) * (width / m) - d
  y = _interp1d(x.astype(jnp.float32), pos, boundary)
  y = y * _lerp(u[4], scale)
  y = y + ramp * (u[5] - 0.5) * (t / m - 0.5)[:, None]
  if noise_std:
    y = y + noise_std * jax.random.normal(kn, y.shape)
  seg = jnp.round(m * _lerp(u[6], mask_frac))
  seg_start = jnp.floor(u[7] * (m - seg))
  in_seg = (t >= seg_start) & (t < seg_start + seg)
  y = jnp.where((in_seg & _coin(u[8], mask_prob))[:, None], 0.0, y)
  return y.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# images


def _resize_rows(x, coords):
  """Bilinear sample of ``x`` along axis 0 at float ``coords`` (edges clamped)."""
  n = x.shape[0]
  c = jnp.clip(coords, 0, n - 1)
  i0 = jnp.floor(c).astype(jnp.int32)
  i1 = jnp.minimum(i0 + 1, n - 1)
  w = (c - i0).reshape((-1,) + (1,) * (x.ndim - 1))
  return (1 - w) * x[i0] + w * x[i1]


def crop_and_resize(img, top, left, height, width, out_h, out_w):
  """Bilinear resize of the window ``[top, top+height) x [left, left+width)`` of ``img[H,W,C]``
  to ``[out_h, out_w, C]`` (half-pixel centres, as ``jax.image.resize``). Separable, so two
  gathers instead of a 2-D one."""
  ys = top + (jnp.arange(out_h) + 0.5) * (height / out_h) - 0.5
  xs = left + (jnp.arange(out_w) + 0.5) * (width / out_w) - 0.5
  rows = _resize_rows(img, ys)
  return jnp.swapaxes(_resize_rows(jnp.swapaxes(rows, 0, 1), xs), 0, 1)


def _random_crop_box(u, h, w, scale, ratio):
  """Inception-style box from 4 uniforms: area fraction ``U[scale]``, aspect
  ``exp U[log ratio]``, sides clipped to the image, uniform position."""
  area = h * w * _lerp(u[0], scale)
  aspect = jnp.exp(_lerp(u[1], (math.log(ratio[0]), math.log(ratio[1]))))
  ch = jnp.clip(jnp.sqrt(area / aspect), 1.0, h)
  cw = jnp.clip(jnp.sqrt(area * aspect), 1.0, w)
  return u[2] * (h - ch), u[3] * (w - cw), ch, cw


def _gray(img):
  if img.shape[-1] != 3:
    return img
  luma = img @ jnp.array([0.299, 0.587, 0.114], img.dtype)
  return jnp.broadcast_to(luma[..., None], img.shape)


_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                    [0.211, -0.523, 0.312]], np.float32)
_FROM_YIQ = np.linalg.inv(_TO_YIQ).astype(np.float32)


def _hue_rotate(img, angle):
  # Rotation of the chroma plane of YIQ by ``angle`` (radians): a linear approximation of
  # an HSV hue shift that needs no branches.
  c, s = jnp.cos(angle), jnp.sin(angle)
  rot = jnp.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
  return img @ (_FROM_YIQ @ rot @ _TO_YIQ).T


def _color_jitter(u, img, brightness, contrast, saturation, hue):
  img = img * _lerp(u[0], (1 - brightness, 1 + brightness))
  mean = jnp.mean(_gray(img))
  img = mean + (img - mean) * _lerp(u[1], (1 - contrast, 1 + contrast))
  if img.shape[-1] == 3:
    g = _gray(img)
    img = g + (img - g) * _lerp(u[2], (1 - saturation, 1 + saturation))
    img = _hue_rotate(img, 2 * jnp.pi * _lerp(u[3], (-hue, hue)))
  return jnp.clip(img, 0.0, 1.0)


def _gaussian_blur(img, sigma, radius):
  if radius < 1:
    return img
  t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / k.sum()
  pad = [(radius, radius), (radius, radius), (0, 0)]
  p = jnp.pad(img, pad, mode="edge")
  h, w = img.shape[:2]
  p = sum(k[i] * p[i:i + h] for i in range(2 * radius + 1))          # rows
  return sum(k[i] * p[:, i:i + w] for i in range(2 * radius + 1))    # columns


def _image_view(key, x, *, crop_scale, crop_ratio, flip_prob, jitter_prob, brightness,
                contrast, saturation, hue, gray_prob, blur_prob, blur_sigma, shift=0,
                erase_prob=0.0, erase_scale=(0.02, 0.2), noise_std=0.0, out_size=None):
  h, w = x.shape[:2]
  oh, ow = out_size or (h, w)
  u = jax.random.uniform(key, (13,))
  img = x.astype(jnp.float32)
  if crop_scale is not None:
    img = crop_and_resize(img, *_random_crop_box(u[:4], h, w, crop_scale, crop_ratio), oh, ow)
  elif (oh, ow) != (h, w):
    img = crop_and_resize(img, 0.0, 0.0, h, w, oh, ow)
  img = jnp.where(_coin(u[4], flip_prob), img[:, ::-1], img)
  img = jnp.where(_coin(u[5], jitter_prob),
                  _color_jitter(u[6:10], img, brightness, contrast, saturation, hue), img)
  if img.shape[-1] == 3:
    img = jnp.where(_coin(u[10], gray_prob), _gray(img), img)
  radius = int(0.05 * max(oh, ow))  # SimCLR: kernel ~10% of the side
  img = jnp.where(_coin(u[11], blur_prob),
                  _gaussian_blur(img, _lerp(u[12], blur_sigma), radius), img)
  if shift or erase_prob or noise_std:  # a separate key: the draws above stay as they were
    ke, kn = jax.random.split(jax.random.fold_in(key, 1))
    e = jax.random.uniform(ke, (6,))
    if shift:
      dy, dx = (jnp.floor(e[i] * (2 * shift + 1)) - shift for i in (0, 1))
      img = crop_and_resize(img, dy, dx, oh, ow, oh, ow)  # integer offsets: an exact shift
    if erase_prob:
      side = jnp.sqrt(_lerp(e[2], erase_scale) * oh * ow)
      top, left = e[3] * (oh - jnp.minimum(side, oh)), e[4] * (ow - jnp.minimum(side, ow))
      rows = (jnp.arange(oh) + 0.5)[:, None, None]
      cols = (jnp.arange(ow) + 0.5)[None, :, None]
      box = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
      img = jnp.where(_coin(e[5], erase_prob) & box, 0.0, img)
    if noise_std:
      img = img + noise_std * jax.random.normal(kn, img.shape)
  return jnp.clip(img, 0.0, 1.0).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# tabular


def _tabular_view(key, x, *, noise_std, drop_prob, mask_value):
  kn, kd = jax.random.split(key)
  y = x.astype(jnp.float32) + noise_std * jax.random.normal(kn, x.shape)
  y = jnp.where(jax.random.uniform(kd, x.shape) < drop_prob, mask_value, y)
  return y.astype(x.dtype)


def _tokens_view(key, x, *, mask_prob, drop_prob, mask_id):
  """Token ids (float32, 0 = padding): each real token replaced by ``mask_id`` with
  probability ``mask_prob`` or dropped to padding with ``drop_prob`` (positions stay)."""
  u = jax.random.uniform(key, (2,) + x.shape)
  real = x > 0
  y = jnp.where(real & (u[0] < mask_prob), jnp.asarray(mask_id, x.dtype), x)
  return jnp.where(real & (u[1] < drop_prob), jnp.zeros_like(x), y)


_VIEWS = {"signal1d": _signal_view, "image": _image_view, "tabular": _tabular_view,
          "tokens": _tokens_view}


def _per_example(fn, rank, name):
  def view(key, x):
    x = jnp.asarray(x)
    if x.ndim != rank + 1:
      raise ValueError(f"{name} view: 'x' must be [B, ...] with {rank} per-example dims, "
                       f"got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(fn)(keys, x)
  return view


def make_view_fn(kind: str, **params) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``view(key, x[B, *shape]) -> x'[B, *shape]`` for ``kind`` with defaults overridden by
  ``params`` (see ``SIGNAL1D_DEFAULTS``, ``IMAGE_DEFAULTS``, ``TABULAR_DEFAULTS``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> view = make_view_fn("image", flip_prob=0.0, blur_prob=0.0)
    >>> view(jax.random.key(0), jnp.zeros((2, 8, 8, 1))).shape
    (2, 8, 8, 1)
  """
  if kind not in _DEFAULTS:
    raise ValueError(f"make_view_fn: unknown 'kind' {kind!r}; kinds: {', '.join(KINDS)}")
  unknown = set(params) - set(_DEFAULTS[kind])
  if unknown:
    raise ValueError(f"make_view_fn: unknown {kind} parameter(s) {sorted(unknown)}; "
                     f"known: {sorted(_DEFAULTS[kind])}")
  cfg = {**_DEFAULTS[kind], **params}
  return _per_example(functools.partial(_VIEWS[kind], **cfg), _RANK[kind], kind)


def make_multimodal_view_fn(modalities, params=None):
  """``view(key, x[B, F]) -> x'[B, F]`` for a multimodal dataset: each
  :class:`jaxcl.data.catalog.Modality` block gets the view of its kind with ``params[name]``
  (``fold_in(key, m)`` for modality ``m``); token blocks are left as they are unless
  ``params`` masks or drops tokens.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxcl.data.catalog import Modality
    >>> view = make_multimodal_view_fn((Modality("a", "tabular", (3,)),
    ...                                 Modality("t", "tokens", (2,), vocab=5)))
    >>> view(jax.random.key(0), jnp.ones((2, 5))).shape
    (2, 5)
  """
  params = dict(params or {})
  unknown = set(params) - {m.name for m in modalities}
  if unknown:
    raise ValueError(f"make_multimodal_view_fn: {sorted(unknown)} are not modalities "
                     f"({[m.name for m in modalities]})")
  fns = []
  for m in modalities:
    try:
      fns.append(make_view_fn(m.kind, **dict(params.get(m.name) or {})))
    except ValueError as e:
      raise ValueError(f"modality {m.name!r}: {e}") from e

  def view(key, x):
    out, start = [], 0
    for i, (m, fn) in enumerate(zip(modalities, fns)):
      block = x[:, start:start + m.size].reshape((x.shape[0],) + tuple(m.shape))
      out.append(fn(jax.random.fold_in(key, i), block).reshape(x.shape[0], -1).astype(x.dtype))
      start += m.size
    return jnp.concatenate(out, axis=-1)

  return view


def two_views(view_fn, key, x):
  """Two independent views ``(view_fn(k1, x), view_fn(k2, x))`` of the batch ``x``."""
  k1, k2 = jax.random.split(key)
  return view_fn(k1, x), view_fn(k2, x)


def _size(s, rank):
  if rank == 2:  # 1-D signal: a length
    return (int(s),) if not isinstance(s, Sequence) else tuple(s)[:1]
  return (int(s), int(s)) if not isinstance(s, Sequence) else tuple(int(v) for v in s)


def multi_crop(key, x, *, global_size, local_size, num_local, global_scale=(0.4, 1.0),
               local_scale=(0.05, 0.4), num_global=2, kind=None, **params) -> list[jax.Array]:
  """SwAV multi-crop: ``num_global`` crops resized to ``global_size`` then ``num_local``
  crops resized to ``local_size``, each with the other augmentations of its ``kind``.

  Args:
    x: ``[B, H, W, C]`` images or ``[B, L, C]`` signals (``kind`` inferred from the rank).
    global_size, local_size: output side (int or ``(h, w)``) or signal length.
    global_scale, local_scale: crop area (images) or length (signals) fraction range.
    params: overrides of the kind's view parameters (crop parameters excluded).

  Returns:
    A list of ``num_global + num_local`` arrays ``[B, *size, C]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> crops = multi_crop(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), global_size=24,
    ...                    local_size=12, num_local=4)
    >>> [c.shape[1] for c in crops]
    [24, 24, 12, 12, 12, 12]
  """
  x = jnp.asarray(x)
  kind = kind or {3: "signal1d", 4: "image"}.get(x.ndim)
  if kind not in ("signal1d", "image"):
    raise ValueError(f"multi_crop: 'x' must be [B, H, W, C] images or [B, L, C] signals, "
                     f"got shape {x.shape}")
  rank = _RANK[kind]
  cfg = {**_DEFAULTS[kind], **params}
  keys = jax.random.split(key, num_global + num_local)
  out = []
  for i, k in enumerate(keys):
    is_global = i < num_global
    size = _size(global_size if is_global else local_size, rank)
    scale = global_scale if is_global else local_scale
    if kind == "image":
      fn = functools.partial(_image_view, **{**cfg, "crop_scale": scale}, out_size=size)
    else:
      fn = functools.partial(_signal_view, **{**cfg, "stretch": (1.0, 1.0), "crop": scale},
                             out_len=size[0])
    out.append(_per_example(fn, rank, "multi_crop")(k, x))
  return out
