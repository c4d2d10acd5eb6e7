"""Argument checks, normalisation and mask builders shared by the loss modules."""
from __future__ import annotations

import numbers
import operator

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import collectives

EPS = 1e-12
# Norm floor of l2_normalize: its gradient is bounded by 1 / NORM_EPS.
NORM_EPS = 1e-6


def check_float(name: str, x, fn: str):
  dtype = jnp.asarray(x).dtype if not hasattr(x, "dtype") else x.dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{fn}: '{name}' must be a floating-point array, got dtype {dtype}")


def as_int(value):
  """``value`` as a Python int if it is an integer (NumPy integers too), else ``None``; a bool
  is not an int here (``True`` as a count is a config slip, not 1)."""
  if isinstance(value, bool):
    return None
  try:
    return operator.index(value)
  except TypeError:
    return None


def check_int(value, lo, hi=None, *, message: str) -> int:
  """``value`` as an int in ``[lo, hi]``; else ``ValueError(f"{message}, got {value!r}")``
  (``message`` names the function and the argument)."""
  n = as_int(value)
  if n is None or n < lo or (hi is not None and n > hi):
    raise ValueError(f"{message}, got {value!r}")
  return n


def check_rank(name: str, x, rank: int, fn: str, what: str):
  if x.ndim != rank:
    raise ValueError(f"{fn}: '{name}' must have rank {rank} ({what}), got shape {tuple(x.shape)}")


def check_same(name_a, a, name_b, b, axis: int, fn: str, what: str, axis_b=None):
  axis_b = axis if axis_b is None else axis_b
  if a.shape[axis] != b.shape[axis_b]:
    raise ValueError(f"{fn}: '{name_a}' and '{name_b}' must have the same {what}, got "
                     f"{a.shape[axis]} and {b.shape[axis_b]} (shapes {tuple(a.shape)} and "
                     f"{tuple(b.shape)})")


def check_positive(name: str, value, fn: str):
  """Checks a concrete value is > 0; traced values (learnable temperatures) pass through."""
  if isinstance(value, jax.core.Tracer):
    return
  if isinstance(value, (numbers.Number, np.ndarray, np.generic, jax.Array)):
    if not np.all(np.asarray(value) > 0):
      raise ValueError(f"{fn}: '{name}' must be > 0, got {value}")


def check_temperature(value, fn: str, name: str = "temperature"):
  """The one check of a temperature-like argument: a scalar (Python float, 0-d array, or a
  traced 0-d value: a learnable temperature) and, when concrete, > 0. A per-row or ``[1]``
  temperature is an error here: it would broadcast differently in a loss's log-sum-exp and its
  positive, and the tiled kernels take a scalar scale."""
  ndim = np.ndim(value) if not hasattr(value, "ndim") else value.ndim
  if ndim != 0:
    shape = tuple(np.shape(value)) if not hasattr(value, "shape") else tuple(value.shape)
    raise ValueError(f"{fn}: '{name}' must be a scalar (rank 0), got shape {shape}")
  check_positive(name, value, fn)


def check_precision(precision, fn: str):
  """``precision`` of the similarity product, as ``jnp.einsum`` takes it: ``None`` (JAX's
  default: bfloat16 operands on TPU, TF32 on GPU), a ``jax.lax.Precision`` or its name
  (``"highest"`` = float32), a ``(lhs, rhs)`` pair of those, or a ``jax.lax.DotAlgorithmPreset``
  (or its name). Checked by JAX's own rules, at trace time."""
  try:
    jax.eval_shape(lambda a: jnp.einsum("i,i->", a, a, precision=precision),
                   jax.ShapeDtypeStruct((1,), jnp.float32))
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f"{fn}: 'precision' must be None, a jax.lax.Precision or its name "
                     f"('default', 'high', 'highest'), a pair of those or a "
                     f"jax.lax.DotAlgorithmPreset, got {precision!r}") from e
  return precision


def embeddings(name: str, x, fn: str, rank: int = 2, what: str = "[batch, dim]"):
  check_float(name, x, fn)
  x = jnp.asarray(x)
  check_rank(name, x, rank, fn, what)
  return x


def paired(fn: str, name_a: str, a, name_b: str, b, temperature):
  """Checks two ``[B, D]`` float embeddings of equal shape and a positive temperature."""
  a = embeddings(name_a, a, fn)
  b = embeddings(name_b, b, fn)
  check_same(name_a, a, name_b, b, 0, fn, "batch size")
  check_same(name_a, a, name_b, b, 1, fn, "feature size")
  check_temperature(temperature, fn)
  return a, b


def l2_normalize(x, axis=-1):
  """``x / max(||x||, NORM_EPS)`` in float32; an all-zero row stays zero.

  The Jacobian is ``(I - u u^T) / ||x||`` above ``NORM_EPS`` and ``I / NORM_EPS`` below, so its
  norm is at most ``1 / NORM_EPS = 1e6`` for every row (the clamp is on the squared norm, so the
  square root is never differentiated at 0). A clamp at ``1e-12`` gave an all-zero row a
  gradient ``1e12`` times its cotangent, which one optimiser step turns into a ruined encoder.
  Rows with ``||x|| >= 1e-6`` (every row that is not numerically zero) are unit vectors.
  """
  x = x.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, NORM_EPS * NORM_EPS))


def prepare(x, normalize: bool):
  return l2_normalize(x) if normalize else x.astype(jnp.float32)


def inv_temperature(temperature):
  return 1.0 / jnp.asarray(temperature, jnp.float32)


def valid_mask(valid, batch: int, fn: str):
  if valid is None:
    return jnp.ones((batch,), bool)
  valid = jnp.asarray(valid)
  if valid.shape != (batch,):
    raise ValueError(f"{fn}: 'valid' must have shape ({batch},), got {tuple(valid.shape)}")
  return valid.astype(bool)


def sample_ids_array(sample_ids, batch: int, fn: str):
  if sample_ids is None:
    return None
  sample_ids = jnp.asarray(sample_ids)
  if sample_ids.shape != (batch,):
    raise ValueError(f"{fn}: 'sample_ids' must have shape ({batch},), got {tuple(sample_ids.shape)}")
  if not jnp.issubdtype(sample_ids.dtype, jnp.integer):
    raise TypeError(f"{fn}: 'sample_ids' must be integers, got dtype {sample_ids.dtype}")
  return sample_ids.astype(jnp.int32)


def labels_array(labels, batch: int, fn: str, name: str = "labels"):
  labels = jnp.asarray(labels)
  if labels.shape != (batch,):
    raise ValueError(f"{fn}: '{name}' must have shape ({batch},), got {tuple(labels.shape)}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"{fn}: '{name}' must be integers, got dtype {labels.dtype}")
  return labels.astype(jnp.int32)


def group_ids_array(group_ids, batch: int, fn: str):
  return None if group_ids is None else labels_array(group_ids, batch, fn, "group_ids")


def row_tags(batch: int, axis_name, *, view: int, valid, sample_ids=None, group_ids=None,
             **extra):
  """Tags of ``batch`` local rows: global sample index, view index, validity, optional ids
  and groups."""
  tags = {
      "sample": collectives.global_row_index(batch, axis_name),
      "view": jnp.full((batch,), view, jnp.int32),
      "valid": valid,
  }
  if sample_ids is not None:
    tags["id"] = sample_ids
  if group_ids is not None:
    tags["group"] = group_ids
  tags.update(extra)
  return tags


def concat_tags(*tag_dicts):
  return {n: jnp.concatenate([t[n] for t in tag_dicts]) for n in tag_dicts[0]}


def candidate_mask(exclude_self=True, exclude_same_sample=False):
  """Builds the standard candidate mask over tags.

  A key is a candidate for a query when it is valid, is not the query itself (same sample
  and view; only meaningful when queries and keys are the same embeddings), is not another
  view of the same sample when ``exclude_same_sample`` (DCL), -- when sample ids are
  tagged -- is not a *different* sample carrying the query's id (duplicate / false negative),
  and -- when groups are tagged (``group_ids``, MCL's pseudo-clusters) -- is in the query's
  group.
  """

  def mask_fn(qt, kt):
    same_sample = qt["sample"] == kt["sample"]
    m = kt["valid"]
    if exclude_self:
      m = m & ~(same_sample & (qt["view"] == kt["view"]))
    if exclude_same_sample:
      m = m & ~same_sample
    if "id" in qt and "id" in kt:
      dup = (qt["id"] == kt["id"]) & ~same_sample
      if "is_key" in kt:
        dup = dup & kt["is_key"]
      m = m & ~dup
    if "group" in qt and "group" in kt:
      m = m & (qt["group"] == kt["group"])
    return m

  return mask_fn


def check_label_range(fn, labels, valid, k, of):
  """``labels`` of valid rows must lie in ``[0, k)``: an error naming ``'labels'`` when they are
  concrete; traced ones cannot be checked (callers give out-of-range rows a NaN value so the
  trainer's NaN guard stops the run). Returns the in-range mask ``[B]``."""
  in_range = (labels >= 0) & (labels < k)
  if not isinstance(labels, jax.core.Tracer) and not isinstance(valid, jax.core.Tracer):
    bad = np.asarray(valid & ~in_range)
    if bad.any():
      raise ValueError(f"{fn}: 'labels' must be in [0, {k}) ({of}), got "
                       f"{np.asarray(labels)[bad][:5].tolist()}")
  return in_range


def finalize(loss, keep):
  """Zeroes rows not in ``keep`` (padding, rows without any candidate): value and gradient 0."""
  return jnp.where(keep, loss, 0.0)
