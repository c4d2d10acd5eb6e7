"""Blockwise and ring implementations of the similarity kernels, memory independent of the batch.

For local queries ``q`` ``[Bq, D]`` and keys ``k`` (``[Bk, D]`` per device, ``N`` in all) the
kernels compute the row reductions of ``s_ij = scale * <q_i, k_j>`` tile by tile:

* :func:`contrastive_lse_tiled` -- ``lse_i = log sum_{j: mask} exp(s_ij)`` with an online
  (running max ``m``, running sum ``l``) log-sum-exp::

      m' = max(m, max_j s_ij),   l' = l * exp(m - m') + sum_j exp(s_ij - m')

  plus the positive sums ``sum_{j: pos} s_ij`` / counts, and per-row extra logits folded in
  at the end;
* :func:`sigmoid_row_sum_tiled` -- SigLIP's ``sum_j -log sigmoid(z_ij (s_ij + bias))``.

Both are ``jax.custom_vjp`` functions (so reverse-mode autodiff only: ``jax.jvp`` /
``jax.jacfwd`` through them is a ``TypeError`` naming ``impl``, use ``impl="dense"`` there;
``jax.hessian``, forward over reverse, works) whose backward pass recomputes every
``[bq, bk]`` tile of logits from the saved ``(q, k, scale)`` and per-row statistics (``lse``),
as in Inf-CL
(Cheng et al., "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive
Loss", arXiv 2410.17243) and FlashAttention. With ``w_ij = dL/ds_ij`` (for the lse:
``w_ij = g_i exp(s_ij - lse_i) [mask] + h_i [pos]``)::

    dq_i = scale sum_j w_ij k_j,   dk_j = scale sum_i w_ij q_i,   dscale = sum_i <q_i, sum_j w_ij k_j>

Only one tile of logits is alive at a time: memory is ``O(B (D + block))``.

Keys come from the whole mesh axis in one of two ways. ``ring=False``: keys and their tags are
all-gathered first (the gradient of the gathered keys flows back through the gather's
transpose). ``ring=True`` (inside ``shard_map``): each device keeps its own keys and passes them,
with their tags, to the next device ``W - 1`` times, folding each visiting shard into its
running statistics; the backward pass runs the ring again with the key-gradient accumulator
travelling with the keys, one more hop bringing it home. Nothing scales with the device count.

Masks are rebuilt per tile from the row tags (``mask_fn(qt, kt)`` with ``[bq, 1]`` / ``[1, bk]``
arrays); padding rows added to reach a multiple of the block are removed by a validity flag
that is ANDed with the caller's mask.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.kernels import contrastive_lse
  >>> q = jax.random.normal(jax.random.key(0), (10, 8))
  >>> a = contrastive_lse(q, q, 2.0, impl="dense").lse
  >>> b = contrastive_lse(q, q, 2.0, impl="blockwise", block_size=4).lse
  >>> bool(jnp.allclose(a, b, rtol=1e-5))
  True
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels.lse import LSEResult, product, rounds_to_bfloat16

# Default tile edge (rows of queries and of keys), the losses' default too. A 1024 x 1024 float32
# tile (4 MiB) stays in a CPU's L3 and amortises the per-tile loop overhead.
DEFAULT_BLOCK = 1024

BlockSize = Union[int, Tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Layout helpers.


def _block_sizes(block_size: BlockSize, bq: int, bk: int) -> Tuple[int, int]:
  if isinstance(block_size, (tuple, list)):
    tq, tk = (int(b) for b in block_size)
  else:
    tq = tk = int(block_size)
  if tq < 1 or tk < 1:
    raise ValueError(f"block_size must be >= 1, got {block_size!r}")
  return min(tq, bq), min(tk, bk)


def _pad_to(x, n: int):
  extra = n - x.shape[0]
  if extra == 0:
    return x
  return jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1))


def _to_blocks(x, nb: int, b: int):
  """``[n, ...]`` -> zero-padded ``[nb, b, ...]``."""
  return _pad_to(x, nb * b).reshape((nb, b) + x.shape[1:])


def _vma(x):
  """Mesh axes ``x`` varies over inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, "vma", frozenset()))


def _pvary(x, axis_name):
  """Marks ``x`` as varying over ``axis_name`` (so a custom_vjp may return a per-device
  cotangent for it; the transpose of this cast is the ``psum`` the gradient needs)."""
  if axis_name is None:
    return x
  names = tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)
  missing = tuple(n for n in names if n not in _vma(x))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def _vary_like(tree, *refs):
  """Casts the leaves of ``tree`` (fresh loop carries) to vary over every mesh axis that the
  ``refs`` vary over, so ``scan`` carries keep one type inside ``shard_map``."""
  names = frozenset().union(*(_vma(r) for r in jax.tree.leaves(refs)))
  if not names:
    return tree
  return jax.tree.map(lambda x: _pvary(x, tuple(sorted(names, key=str))), tree)


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Static layout: ``nq`` x ``tq`` query rows, ``nk`` x ``tk`` key rows per shard, ring axis."""
  nq: int
  tq: int
  nk: int
  tk: int
  ring_axis: Any  # axis name(s) the keys travel round, or None
  n_dev: int
  precision: Any = None  # of every product (tile logits and the backward pass's sums)
  # The bfloat16_products testing hook's (lhs, rhs) decision, fixed when the forward pass is
  # traced so that the backward pass recomputes the very same tiles.
  rounding: Tuple[bool, bool] = (False, False)


def _plan(bq: int, bk: int, block_size, ring_axis, precision=None) -> _Plan:
  tq, tk = _block_sizes(block_size, bq, bk)
  n_dev = collectives.axis_size(ring_axis) if ring_axis is not None else 1
  return _Plan(math.ceil(bq / tq), tq, math.ceil(bk / tk), tk, ring_axis, n_dev, precision,
               rounds_to_bfloat16(precision))


def _key_side(k, k_tags, plan: _Plan):
  """Keys and tags as ``[nk, tk, ...]`` blocks plus the padding flag ``__ok``."""
  n = k.shape[0]
  tags = {name: _to_blocks(v, plan.nk, plan.tk) for name, v in k_tags.items()}
  tags["__ok"] = _to_blocks(jnp.ones((n,), bool), plan.nk, plan.tk)
  return _to_blocks(k, plan.nk, plan.tk), tags


def _rows(x, plan: _Plan):
  return _to_blocks(x, plan.nq, plan.tq)


def _unrows(x, n: int):
  return x.reshape((-1,) + x.shape[2:])[:n]


# ---------------------------------------------------------------------------------------------
# The sweep: every (query tile, key tile) pair, keys from every device of the ring.
#
# ``fold(state, s, qt, kt, ok) -> state`` consumes one tile of logits ``s`` ``[tq, tk]``
# (float32, already scaled) for per-row ``state`` arrays ``[tq]``. ``weights(res, s, qt, kt, ok)
# -> w`` returns ``dL/ds`` for one tile from the per-row residuals ``res``.


def _tile_logits(qb, kb, scale, plan: _Plan):
  return product("id,jd->ij", qb, kb, plan.precision, plan.rounding) * scale


def _expand_q(tags):
  return {n: v[:, None] for n, v in tags.items()}


def _expand_k(tags):
  return {n: v[None, :] for n, v in tags.items() if n != "__ok"}, tags["__ok"][None, :]


def _fold_shard(fold, state, q_blk, qt_blk, k_blk, kt_blk, scale, plan):
  """Folds one shard of keys (all its tiles) into the state of every query tile."""

  def per_query_tile(_, xs):
    qb, qt, st = xs
    qt = _expand_q(qt)

    def per_key_tile(st, ys):
      kb, kt = ys
      kt, ok = _expand_k(kt)
      return fold(st, _tile_logits(qb, kb, scale, plan), qt, kt, ok), None

    st, _ = jax.lax.scan(per_key_tile, st, (k_blk, kt_blk))
    return None, st

  _, state = jax.lax.scan(per_query_tile, None, (q_blk, qt_blk, state))
  return state


def _grad_shard(weights, res, a0, q_blk, qt_blk, k_blk, kt_blk, scale, with_wsum, plan):
  """For one shard of keys: ``A_i = a0_i + sum_j w_ij k_j`` per query row, ``sum_i w_ij q_i``
  per key row (both unscaled, float32) and, if asked, ``sum_ij w_ij``. ``a0`` is added in
  place so a ring keeps one query-sized accumulator, not one per visit."""

  def per_query_tile(dk, xs):
    qb, qt, rs, ab = xs
    qt = _expand_q(qt)

    def per_key_tile(carry, ys):
      a, wsum = carry
      kb, kt = ys
      kt, ok = _expand_k(kt)
      w = weights(rs, _tile_logits(qb, kb, scale, plan), qt, kt, ok)
      a = a + product("ij,jd->id", w.astype(kb.dtype), kb, plan.precision, plan.rounding)
      dkb = product("ij,id->jd", w.astype(qb.dtype), qb, plan.precision, plan.rounding)
      if with_wsum:
        wsum = wsum + jnp.sum(w)
      return (a, wsum), dkb

    init = _vary_like((ab, jnp.zeros((), jnp.float32)), qb, k_blk, scale, rs)
    (a, wsum), dk_part = jax.lax.scan(per_key_tile, init, (k_blk, kt_blk))
    return dk + dk_part, (a, wsum)

  dk0 = _vary_like(jnp.zeros(k_blk.shape, jnp.float32), q_blk, k_blk, scale, res)
  dk, (a, wsum) = jax.lax.scan(per_query_tile, dk0, (q_blk, qt_blk, res, a0))
  return a, dk, jnp.sum(wsum)


def _on_ring(k_blk, kt_blk, plan):
  """What travels must vary over the ring axis (a replicated tag would change type on a hop)."""
  return jax.tree.map(lambda x: _pvary(x, plan.ring_axis), (k_blk, kt_blk))


def _one_tile(x):
  return jax.tree.map(lambda v: v[None], x)


def _sweep_fwd(fold, state, q_blk, qt_blk, k_blk, kt_blk, scale, plan: _Plan):
  """Folds the keys of every device on the ring (just the local ones when not a ring).

  The ring is chunk-major: one key tile at a time travels all the way round (``n_dev - 1``
  hops, every device folding it as it passes) before the next tile leaves home, so what is in
  flight is one ``[tk, D]`` tile, not a whole ``[B_local, D]`` shard, and per-device memory
  does not depend on the device count.
  """
  if plan.n_dev == 1:
    return _fold_shard(fold, state, q_blk, qt_blk, k_blk, kt_blk, scale, plan)

  def per_tile(state, ys):
    def hop(carry, _):
      state, kb, kt = carry
      state = _fold_shard(fold, state, q_blk, qt_blk, kb[None], _one_tile(kt), scale, plan)
      kb, kt = collectives.ppermute_next((kb, kt), plan.ring_axis)
      return (state, kb, kt), None

    (state, kb, kt), _ = jax.lax.scan(hop, (state,) + ys, None, length=plan.n_dev - 1)
    return _fold_shard(fold, state, q_blk, qt_blk, kb[None], _one_tile(kt), scale, plan), None

  state, _ = jax.lax.scan(per_tile, state, _on_ring(k_blk, kt_blk, plan))
  return state


def _sweep_bwd(weights, res, q_blk, qt_blk, k_blk, kt_blk, scale, plan: _Plan, with_wsum):
  """Backward sweep, chunk-major like :func:`_sweep_fwd`: each key tile's gradient
  accumulator rides the ring with the tile and is home after one last hop."""
  a0 = _vary_like(jnp.zeros(q_blk.shape, jnp.float32), q_blk, k_blk, scale, res)
  if plan.n_dev == 1:
    return _grad_shard(weights, res, a0, q_blk, qt_blk, k_blk, kt_blk, scale, with_wsum, plan)

  def visit(a, wsum, kb, kt):
    a, dk_s, w_s = _grad_shard(weights, res, a, q_blk, qt_blk, kb[None], _one_tile(kt), scale,
                               with_wsum, plan)
    return a, wsum + w_s, dk_s[0]

  def per_tile(carry, ys):
    a, wsum = carry
    kb, kt = ys

    def hop(c, _):
      a, wsum, kb, kt, dk = c
      a, wsum, dk_s = visit(a, wsum, kb, kt)
      kb, kt, dk = collectives.ppermute_next((kb, kt, dk + dk_s), plan.ring_axis)
      return (a, wsum, kb, kt, dk), None

    dk0 = _vary_like(jnp.zeros(kb.shape, jnp.float32), q_blk, kb, scale, res)
    (a, wsum, kb, kt, dk), _ = jax.lax.scan(hop, (a, wsum, kb, kt, dk0), None,
                                            length=plan.n_dev - 1)
    a, wsum, dk_s = visit(a, wsum, kb, kt)
    return (a, wsum), collectives.ppermute_next(dk + dk_s, plan.ring_axis)

  w0 = _vary_like(jnp.zeros((), jnp.float32), q_blk, k_blk, scale, res)
  (a, wsum), dk = jax.lax.scan(per_tile, (a0, w0), _on_ring(k_blk, kt_blk, plan))
  return a, dk, wsum


def _input_grads(q, k, scale, a, dk, plan):
  """``(dq, dk, dscale)`` from the unscaled sweep sums."""
  a = _unrows(a, q.shape[0])
  dk = _unrows(dk, k.shape[0])
  dscale = jnp.sum(a * q.astype(jnp.float32))
  return (scale * a).astype(q.dtype), (scale * dk).astype(k.dtype), dscale


def _zero_like_tags(tags):
  return jax.tree.map(lambda _: None, tags)


# ---------------------------------------------------------------------------------------------
# Masked log-sum-exp.


def _finite_lse(m, l):
  """``m + log l`` with ``-inf`` for empty rows."""
  return jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), -jnp.inf)


def _row_lse(m, l):
  """:func:`_finite_lse` of the online statistics, with ``l >= 1``: the row's max contributes
  ``exp(0) = 1`` in exact arithmetic, but XLA may contract the tile's scale multiply into the
  ``s - m`` of the exponent (an FMA), putting ``l`` an ulp under 1 and the lse under the max
  logit (a loss that is >= 0 would go -1 ulp negative). Forward value only (custom VJP)."""
  return _finite_lse(m, jnp.where(l > 0, jnp.maximum(l, 1.0), l))


def _logaddexp(a, b):
  m = jnp.maximum(a, b)
  m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
  return jnp.where(jnp.isfinite(m), m_safe + jnp.log(jnp.exp(a - m_safe) + jnp.exp(b - m_safe)),
                   -jnp.inf)


def _extra_lse(extra):
  finite = jnp.isfinite(extra)
  m = jnp.max(jnp.where(finite, extra, -jnp.inf), axis=1)
  m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
  total = jnp.sum(jnp.where(finite, jnp.exp(extra - m_safe[:, None]), 0.0), axis=1)
  return _finite_lse(m_safe, total)


def _make_lse(mask_fn, pos_fn, plan: _Plan):
  with_pos = pos_fn is not None

  def fold(st, s, qt, kt, ok):
    m, l, ps, pc = st
    cand = jnp.broadcast_to(mask_fn(qt, kt) & ok, s.shape)
    m_new = jnp.maximum(m, jnp.max(jnp.where(cand, s, -jnp.inf), axis=1))
    m_use = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    l = l * jnp.exp(m - m_use) + jnp.sum(jnp.where(cand, jnp.exp(s - m_use[:, None]), 0.0), 1)
    if with_pos:
      pos = jnp.broadcast_to(pos_fn(qt, kt) & ok, s.shape)
      ps = ps + jnp.sum(jnp.where(pos, s, 0.0), axis=1)
      pc = pc + jnp.sum(pos.astype(jnp.float32), axis=1)
    return m_new, l, ps, pc

  def weights(rs, s, qt, kt, ok):
    lse, g, h = rs
    cand = mask_fn(qt, kt) & ok & jnp.isfinite(lse)[:, None]
    lse_safe = jnp.where(jnp.isfinite(lse), lse, 0.0)
    w = jnp.where(cand, jnp.exp(s - lse_safe[:, None]), 0.0) * g[:, None]
    if with_pos:
      w = w + jnp.where(pos_fn(qt, kt) & ok, h[:, None], 0.0)
    return w

  def forward(q, k, scale, extra, q_tags, k_tags):
    q_blk, qt_blk = _rows(q, plan), {n: _rows(v, plan) for n, v in q_tags.items()}
    k_blk, kt_blk = _key_side(k, k_tags, plan)
    zeros = jnp.zeros((plan.nq, plan.tq), jnp.float32)
    state = _vary_like((zeros - jnp.inf, zeros, zeros, zeros), q, k, scale)
    m, l, ps, pc = _sweep_fwd(fold, state, q_blk, qt_blk, k_blk, kt_blk, scale, plan)
    n = q.shape[0]
    lse = _unrows(_row_lse(jnp.where(jnp.isfinite(m), m, 0.0), l), n)
    if extra is not None:
      lse = _logaddexp(lse, _extra_lse(extra.astype(jnp.float32)))
    return lse, _unrows(ps, n), _unrows(pc, n)

  def primal(q, k, scale, extra, q_tags, k_tags):
    lse, ps, pc = forward(q, k, scale, extra, q_tags, k_tags)
    return (lse, ps, pc) if with_pos else lse

  def primal_fwd(q, k, scale, extra, q_tags, k_tags):
    lse, ps, pc = forward(q, k, scale, extra, q_tags, k_tags)
    out = (lse, ps, pc) if with_pos else lse
    return out, (q, k, scale, extra, q_tags, k_tags, lse)

  def primal_bwd(saved, ct):
    q, k, scale, extra, q_tags, k_tags, lse = saved
    g, h = (ct[0], ct[1]) if with_pos else (ct, jnp.zeros_like(ct))
    g = g.astype(jnp.float32)
    finite = jnp.isfinite(lse)
    res = tuple(_rows(x, plan) for x in (lse, jnp.where(finite, g, 0.0), h.astype(jnp.float32)))
    q_blk, qt_blk = _rows(q, plan), {n: _rows(v, plan) for n, v in q_tags.items()}
    k_blk, kt_blk = _key_side(k, k_tags, plan)
    a, dk, _ = _sweep_bwd(weights, res, q_blk, qt_blk, k_blk, kt_blk, scale, plan, False)
    dq, dk, dscale = _input_grads(q, k, scale, a, dk, plan)
    dextra = None
    if extra is not None:
      x = extra.astype(jnp.float32)
      ok = jnp.isfinite(x) & finite[:, None]
      lse_safe = jnp.where(finite, lse, 0.0)
      dextra = (jnp.where(ok, jnp.exp(x - lse_safe[:, None]), 0.0) * g[:, None]).astype(extra.dtype)
    return (dq, dk, dscale.astype(scale.dtype), dextra, _zero_like_tags(q_tags),
            _zero_like_tags(k_tags))

  fn = jax.custom_vjp(primal)
  fn.defvjp(primal_fwd, primal_bwd)
  return fn


def contrastive_lse_tiled(q, k, scale, *, q_tags, k_tags, mask_fn, pos_fn=None, extra_logits=None,
                          axis_name=None, ring: bool = False,
                          block_size: BlockSize = DEFAULT_BLOCK, precision=None) -> LSEResult:
  """Blockwise / ring version of :func:`jaxcl.kernels.contrastive_lse` (same arguments, same
  :class:`~jaxcl.kernels.LSEResult`); ``block_size`` may be ``(query_rows, key_rows)``."""
  scale = jnp.asarray(scale, jnp.float32)
  ring_axis = axis_name if ring else None
  if axis_name is not None and not ring:
    k = collectives.all_gather(k, axis_name)
    k_tags = {n: collectives.all_gather(v, axis_name) for n, v in k_tags.items()}
  # Per-device cotangents for replicated scalars: cast them to varying (transpose: psum).
  scale = _vary_like(scale, q, k, _pvary(jnp.zeros(()), ring_axis))
  if extra_logits is not None:
    extra_logits = _vary_like(extra_logits, q, k, scale)
  plan = _plan(q.shape[0], k.shape[0], block_size, ring_axis, precision)
  fn = _make_lse(mask_fn, pos_fn, plan)
  out = fn(q, k, scale, extra_logits, dict(q_tags), dict(k_tags))
  if pos_fn is None:
    return LSEResult(out)
  return LSEResult(*out)


# ---------------------------------------------------------------------------------------------
# SigLIP sigmoid row sum.


def _make_sigmoid(pos_fn, valid_fn, plan: _Plan):

  def terms(s, qt, kt, ok):
    z = jnp.where(pos_fn(qt, kt), 1.0, -1.0)
    keep = ok if valid_fn is None else (valid_fn(qt, kt) & ok)
    return z, jnp.broadcast_to(keep, s.shape)

  def fold_with(bias):
    def fold(st, s, qt, kt, ok):
      (acc,) = st
      z, keep = terms(s, qt, kt, ok)
      per = -jax.nn.log_sigmoid(z * (s + bias))
      return (acc + jnp.sum(jnp.where(keep, per, 0.0), axis=1),)
    return fold

  def weights_with(bias):
    def weights(rs, s, qt, kt, ok):
      (g,) = rs
      z, keep = terms(s, qt, kt, ok)
      # d/dx -log sigmoid(z x) = -z sigmoid(-z x)
      return jnp.where(keep, -z * jax.nn.sigmoid(-z * (s + bias)), 0.0) * g[:, None]
    return weights

  def primal(q, k, scale, bias, q_tags, k_tags):
    q_blk, qt_blk = _rows(q, plan), {n: _rows(v, plan) for n, v in q_tags.items()}
    k_blk, kt_blk = _key_side(k, k_tags, plan)
    state = _vary_like((jnp.zeros((plan.nq, plan.tq), jnp.float32),), q, k, scale, bias)
    (acc,) = _sweep_fwd(fold_with(bias), state, q_blk, qt_blk, k_blk, kt_blk, scale, plan)
    return _unrows(acc, q.shape[0])

  def primal_fwd(q, k, scale, bias, q_tags, k_tags):
    return primal(q, k, scale, bias, q_tags, k_tags), (q, k, scale, bias, q_tags, k_tags)

  def primal_bwd(saved, g):
    q, k, scale, bias, q_tags, k_tags = saved
    q_blk, qt_blk = _rows(q, plan), {n: _rows(v, plan) for n, v in q_tags.items()}
    k_blk, kt_blk = _key_side(k, k_tags, plan)
    res = (_rows(g.astype(jnp.float32), plan),)
    a, dk, wsum = _sweep_bwd(weights_with(bias), res, q_blk, qt_blk, k_blk, kt_blk, scale, plan,
                             True)
    dq, dk, dscale = _input_grads(q, k, scale, a, dk, plan)
    return (dq, dk, dscale.astype(scale.dtype), wsum.astype(bias.dtype), _zero_like_tags(q_tags),
            _zero_like_tags(k_tags))

  fn = jax.custom_vjp(primal)
  fn.defvjp(primal_fwd, primal_bwd)
  return fn


def sigmoid_row_sum_tiled(q, k, scale, bias, *, q_tags, k_tags, pos_fn,
                          valid_fn: Optional[Callable] = None, axis_name=None, ring: bool = False,
                          block_size: BlockSize = DEFAULT_BLOCK, precision=None):
  """Blockwise / ring version of :func:`jaxcl.kernels.sigmoid_row_sum` (same arguments)."""
  scale = jnp.asarray(scale, jnp.float32)
  bias = jnp.asarray(bias, jnp.float32)
  ring_axis = axis_name if ring else None
  if axis_name is not None and not ring:
    k = collectives.all_gather(k, axis_name)
    k_tags = {n: collectives.all_gather(v, axis_name) for n, v in k_tags.items()}
  scale, bias = _vary_like((scale, bias), q, k, _pvary(jnp.zeros(()), ring_axis))
  plan = _plan(q.shape[0], k.shape[0], block_size, ring_axis, precision)
  fn = _make_sigmoid(pos_fn, valid_fn, plan)
  return fn(q, k, scale, bias, dict(q_tags or {}), dict(k_tags or {}))
