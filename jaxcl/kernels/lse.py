"""Masked row log-sum-exp over a (globally gathered) set of keys.

This is the single kernel behind every InfoNCE-family objective in :mod:`jaxcl.losses`.
For local queries ``q`` (``[Bq, D]``) and keys ``k`` (``[Bk, D]`` per device, ``N`` rows once
gathered along ``axis_name``) it computes, for every query row ``i``::

    s_ij    = scale * <q_i, k_j>
    lse_i   = log sum_{j : mask(i, j)} exp(s_ij)  [+ the row's ``extra_logits``]
    pos_i   = sum_{j : pos(i, j)} s_ij             (only when ``pos_fn`` is given)
    npos_i  = #{j : pos(i, j)}

Masks are not arrays: they are elementwise functions of per-row integer/bool *tags*
(global sample index, view index, sample id, label, validity, ...). The tags of the keys
travel with the keys (gathered, or passed around the ring), so a blockwise or ring
implementation can rebuild the mask of any block without ever forming the ``Bq x N``
matrix. ``mask_fn(qt, kt)`` receives dicts whose arrays are shaped ``[bq, 1]`` and
``[1, bk]`` and returns a boolean ``[bq, bk]`` array.

Implementations (``impl=``): ``"dense"`` gathers all keys and forms the logits at once.
``"blockwise"`` and ``"ring"`` compute the same numbers with memory independent of ``N``
(see :mod:`jaxcl.kernels.blockwise`); ``"auto"`` picks by size. The tiled ones are
``jax.custom_vjp`` functions, so they support reverse mode only (``grad`` / ``vjp``;
``hessian``, forward-over-reverse, works too): forward mode (``jvp``, ``jacfwd``,
``linearize``) needs ``impl="dense"`` and is a ``TypeError`` naming ``impl`` otherwise. The
ring runs over ``jax.shard_map`` mesh axes only (not a named ``vmap`` axis). A row with no
candidate has ``lse = -inf``; callers mask such rows out.

Precision (``precision=``): every similarity product in jaxcl is one ``einsum``,
:func:`product`, with ``preferred_element_type=float32`` and the caller's ``precision`` (a
``jax.lax.Precision``, its name, or a pair; ``None`` = JAX's default). On TPU the default rounds
the operands to bfloat16, on GPU to TF32; pass ``"highest"`` for float32 products. The losses
take every logit they combine -- candidates *and* positives -- from this one product (the
kernel's ``pos_fn`` sums), so a loss that is >= 0 in exact arithmetic stays >= 0 whatever the
precision. :func:`bfloat16_products` is a testing hook that emulates TPU's default precision on
any backend.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxcl import collectives

Tags = Dict[str, jax.Array]
MaskFn = Callable[[Tags, Tags], jax.Array]

IMPLS = ("dense", "blockwise", "ring", "auto")
# Above this many logits per device "auto" stops materialising the dense matrix.
AUTO_DENSE_MAX_LOGITS = 1 << 24


class LSEResult(NamedTuple):
  lse: jax.Array
  pos_sum: Optional[jax.Array] = None
  pos_count: Optional[jax.Array] = None


_BF16_PRODUCTS = contextvars.ContextVar("jaxcl_bfloat16_products", default=False)


@contextlib.contextmanager
def bfloat16_products():
  """Testing hook: inside this context, :func:`product` rounds its operands to bfloat16 (and
  accumulates in float32) wherever the product runs at default precision, as TPUs do by default;
  products with ``precision`` HIGH / HIGHEST (``"highest"``, ``"float32"``, ...) are left alone,
  per operand for a ``(lhs, rhs)`` pair.

  For tests only: it lets a CPU run show what a loss does to default-precision matmuls. The
  switch is read when a loss is *traced* (and the blockwise kernels fix it for their backward
  pass at the same moment), so jit a fresh function inside the context: a function jitted and
  traced outside it keeps its exact products (jit's cache does not know about the hook), and
  one traced inside keeps the rounding. Nothing outlives the ``with`` block otherwise.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxcl.kernels import bfloat16_products, product
    >>> a = jnp.float32([[1.0 + 2.0 ** -10]])
    >>> with bfloat16_products():
    ...   rounded = product("id,jd->ij", a, a)
    ...   exact = product("id,jd->ij", a, a, precision="highest")
    >>> float(rounded[0, 0]), float(exact[0, 0]) == float((1.0 + 2.0 ** -10) ** 2)
    (1.0, True)
  """
  token = _BF16_PRODUCTS.set(True)
  try:
    yield
  finally:
    _BF16_PRODUCTS.reset(token)


def _is_default(p) -> bool:
  """Whether TPU would round an operand at precision ``p`` to bfloat16."""
  if p is None:
    p = jax.config.jax_default_matmul_precision
    if p is None:
      return True
  if isinstance(p, str):
    try:
      p = jax.lax.Precision(p)
    except ValueError:   # an algorithm preset's name
      p = getattr(jax.lax.DotAlgorithmPreset, p, None)
  presets = jax.lax.DotAlgorithmPreset
  return p in (jax.lax.Precision.DEFAULT, presets.DEFAULT, presets.BF16_BF16_F32)


def rounds_to_bfloat16(precision):
  """``(lhs, rhs)``: whether :func:`product` rounds each operand under :func:`bfloat16_products`
  (``(False, False)`` outside it)."""
  if not _BF16_PRODUCTS.get():
    return False, False
  if isinstance(precision, (tuple, list)):
    return _is_default(precision[0]), _is_default(precision[1])
  return (_is_default(precision),) * 2


def product(spec: str, a, b, precision=None, rounding=None):
  """The one similarity ``einsum`` of jaxcl: ``jnp.einsum(spec, a, b)`` accumulated in float32
  at ``precision``. ``rounding`` (a ``(lhs, rhs)`` pair of bools) overrides the
  :func:`bfloat16_products` hook's decision (the blockwise backward pass replays the forward's)."""
  ra, rb = rounds_to_bfloat16(precision) if rounding is None else rounding
  a = a.astype(jnp.bfloat16) if ra else a
  b = b.astype(jnp.bfloat16) if rb else b
  return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=jnp.float32)


def logits(q, k, scale, precision=None):
  """``scale * q @ k.T`` accumulated in float32 (:func:`product`, at ``precision``)."""
  return product("id,jd->ij", q, k, precision) * jnp.asarray(scale, jnp.float32)


def masked_logsumexp(s, mask, axis=-1):
  """log-sum-exp of ``s`` over ``mask``; ``-inf`` where the mask is empty, NaN-free gradients."""
  s_masked = jnp.where(mask, s, -jnp.inf)
  m = jnp.max(s_masked, axis=axis, keepdims=True)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  # exp of the masked logits only: an excluded entry far above the row's max (a small
  # temperature) would overflow to inf and turn the gradient of the where into 0 * inf = NaN.
  d = s_masked - m
  # d <= 0 and the sum >= 1 (the max's own term) in exact arithmetic; XLA:CPU may contract
  # the logits' scale multiply with this subtraction into an FMA in one fusion but not in the
  # max's, so d is off by up to an ulp of the logits: hundreds at 1e9-sized logits
  # (normalize=False), which made exp overflow or every term underflow. Both clamps act on
  # the value only (straight-through), so gradients are unchanged.
  d = d - jax.lax.stop_gradient(jnp.maximum(d, 0.0))
  total = jnp.sum(jnp.exp(d), axis=axis)
  nonempty = jnp.any(mask, axis=axis)
  total = total + jax.lax.stop_gradient(jnp.where(nonempty, jnp.maximum(1.0 - total, 0.0), 0.0))
  m = jnp.squeeze(m, axis)
  safe = jnp.where(nonempty, total, 1.0)
  return jnp.where(nonempty, jnp.log(safe) + m, -jnp.inf)


def _expand(tags: Tags, where: int) -> Tags:
  return {name: (v[:, None] if where == 0 else v[None, :]) for name, v in tags.items()}


def _dense(q, k, scale, q_tags, k_tags, mask_fn, pos_fn, extra_logits, axis_name, precision):
  k = collectives.all_gather(k, axis_name)
  k_tags = {n: collectives.all_gather(v, axis_name) for n, v in k_tags.items()}
  s = logits(q, k, scale, precision)
  qt, kt = _expand(q_tags, 0), _expand(k_tags, 1)
  mask = jnp.broadcast_to(mask_fn(qt, kt), s.shape)
  if extra_logits is not None:
    extra = extra_logits.astype(jnp.float32)
    s_all = jnp.concatenate([s, extra], axis=1)
    mask_all = jnp.concatenate([mask, jnp.isfinite(extra)], axis=1)
    lse = masked_logsumexp(s_all, mask_all)
  else:
    lse = masked_logsumexp(s, mask)
  if pos_fn is None:
    return LSEResult(lse)
  pos = jnp.broadcast_to(pos_fn(qt, kt), s.shape)
  pos_sum = jnp.sum(jnp.where(pos, s, 0.0), axis=1)
  pos_count = jnp.sum(pos, axis=1).astype(jnp.float32)
  return LSEResult(lse, pos_sum, pos_count)


def _non_mesh_axes(axis_name):
  """The names in ``axis_name`` that are not ``jax.shard_map`` (manual) mesh axes: named
  ``jax.vmap`` (or ``pmap``) axes."""
  if axis_name is None:
    return ()
  names = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)
  manual = frozenset(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()))
  return tuple(n for n in names if n not in manual)


def resolve_impl(impl: str, bq: int, bk: int, axis_name) -> str:
  """The implementation ``impl`` stands for. ``"auto"``: dense up to
  ``AUTO_DENSE_MAX_LOGITS`` logits per device, then blockwise, or the ring over ``shard_map``
  mesh axes. The ring needs mesh axes (its custom VJP types per-device values by them, and its
  backward pass cannot see a ``vmap`` axis): over a named ``vmap`` axis ``"auto"`` stays
  blockwise (keys all-gathered) and ``impl="ring"`` is an error."""
  if impl not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
  if impl == "ring" and _non_mesh_axes(axis_name):
    raise ValueError(
        f"impl='ring' passes keys round the devices of jax.shard_map mesh axes, but axis_name "
        f"{_non_mesh_axes(axis_name)!r} is not one (a named jax.vmap or pmap axis?); use "
        f"impl='blockwise' (keys all-gathered along it, then tiled: the same numbers, memory "
        f"independent of the batch per tile) or impl='dense' there, or run under jax.shard_map")
  if impl != "auto":
    return impl
  n_keys = bk * (collectives.axis_size(axis_name) if axis_name is not None else 1)
  if bq * n_keys <= AUTO_DENSE_MAX_LOGITS:
    return "dense"
  return "blockwise" if axis_name is None or _non_mesh_axes(axis_name) else "ring"


def _forward_mode(xs) -> bool:
  """Whether forward-mode autodiff (``jax.jvp`` / ``jacfwd``) is the innermost transformation
  differentiating any of ``xs`` (looking through ``vmap``). Reverse mode traces with
  ``LinearizeTracer`` s, which pass (``jax.hessian``'s outer jvp differentiates the custom
  backward pass, which is fine)."""
  try:
    from jax._src.interpreters import ad, batching  # pylint: disable=g-import-not-at-top
  except ImportError:   # JAX's internals moved: keep JAX's own (generic) error
    return False
  for x in jax.tree.leaves(xs):
    while isinstance(x, batching.BatchTracer):
      x = x.val
    if isinstance(x, ad.JVPTracer):
      return True
  return False


def check_reverse_mode(impl: str, resolved: str, *xs):
  """``impl="blockwise"`` / ``"ring"`` are ``jax.custom_vjp`` functions: reverse mode only.
  Forward mode applied directly to them is an error naming ``impl`` (through a ``jit`` /
  ``shard_map`` boundary JAX raises its own "can't apply forward-mode autodiff (jvp) to a
  custom_vjp function" at lowering instead; ``jax.linearize`` fails when its linear function
  is evaluated)."""
  if resolved == "dense" or not _forward_mode(xs):
    return
  what = f"impl={impl!r}" + (f" (which picked {resolved!r} at this size)" if impl != resolved
                             else "")
  raise TypeError(
      f"{what}: the blockwise / ring kernels are jax.custom_vjp functions (reverse mode only), "
      f"so forward-mode autodiff (jax.jvp, jax.jacfwd, jax.linearize) cannot go through them; "
      f"use impl='dense' for forward mode (jax.grad and jax.hessian work with every impl)")


def contrastive_lse(q, k, scale, *, q_tags: Optional[Tags] = None, k_tags: Optional[Tags] = None,
                    mask_fn: Optional[MaskFn] = None, pos_fn: Optional[MaskFn] = None,
                    extra_logits=None, axis_name=None, impl: str = "dense",
                    block_size: int = 1024, precision=None) -> LSEResult:
  """Row-wise masked log-sum-exp of ``scale * q @ gather(k).T`` (see the module docstring).

  Args:
    q: ``[Bq, D]`` local queries (any float dtype; products accumulate in float32).
    k: ``[Bk, D]`` local keys; gathered along ``axis_name`` when given.
    scale: inverse temperature, Python float or traced scalar (it receives a gradient).
    q_tags, k_tags: dicts of ``[Bq]`` / ``[Bk]`` arrays handed to ``mask_fn`` / ``pos_fn``.
    mask_fn: ``(qt, kt) -> bool`` candidate mask; ``None`` means every key is a candidate.
    pos_fn: ``(qt, kt) -> bool`` positive set whose logits are summed and counted.
    extra_logits: ``[Bq, E]`` already-scaled logits of per-row extra candidates
      (``-inf`` entries are ignored); folded into the log-sum-exp.
    axis_name: mesh axis name(s) to gather keys over, inside ``shard_map``.
    impl: ``"dense" | "blockwise" | "ring" | "auto"``. ``"blockwise"`` / ``"ring"`` are
      ``jax.custom_vjp`` functions: reverse mode (``jax.grad``, ``jax.vjp``, ``jax.hessian``)
      only; forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) needs ``"dense"``
      (:func:`check_reverse_mode` raises a ``TypeError`` naming ``impl``).
    block_size: key-block size for the blockwise / ring implementations.
    precision: ``precision`` of the similarity product (:func:`product`; ``None`` = JAX's
      default, bfloat16 operands on TPU; ``"highest"`` = float32).

  Returns:
    :class:`LSEResult` with ``lse`` ``[Bq]`` float32 and, if ``pos_fn`` is given,
    ``pos_sum`` and ``pos_count``.
  """
  q_tags = dict(q_tags or {})
  k_tags = dict(k_tags or {})
  if mask_fn is None:
    mask_fn = lambda qt, kt: jnp.ones((), bool)
  resolved = resolve_impl(impl, q.shape[0], k.shape[0], axis_name)
  check_reverse_mode(impl, resolved, q, k, scale, extra_logits)
  impl = resolved
  if impl == "dense":
    return _dense(q, k, scale, q_tags, k_tags, mask_fn, pos_fn, extra_logits, axis_name,
                  precision)
  from jaxcl.kernels import blockwise  # pylint: disable=g-import-not-at-top
  return blockwise.contrastive_lse_tiled(
      q, k, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=mask_fn, pos_fn=pos_fn,
      extra_logits=extra_logits, axis_name=axis_name, ring=(impl == "ring"),
      block_size=block_size, precision=precision)
