"""Sparse matrices as edge lists and message passing with ``jax.ops.segment_sum``.

An :class:`Edges` is the COO form of a ``[n, m]`` matrix ``A`` (``A[rows[e], cols[e]] +=
weights[e]``; duplicates add up). Message passing is a sparse-dense product::

    (A @ x)_r = sum_{e : rows[e] = r} weights[e] * x[cols[e]]      (one segment_sum)

Normalisations (``d_r = sum_c A_rc`` row sums, ``d'_c = sum_r A_rc`` column sums; a zero
degree gives a zero row / column, never a NaN)::

    "sym": D^-1/2 A D'^-1/2   (LightGCN / GCN; = D^-1/2 A D^-1/2 for a symmetric A)
    "row": D^-1 A             (random walk, MMHCL's user-user hypergraph)

``shape`` is static (a pytree aux field), so :class:`Edges` pass through ``jax.jit``; the edge
count fixes the compiled shape. Padding edges carry weight 0. Building edges from a dense
matrix (:func:`from_dense`) is host-side NumPy (the nonzero count is data-dependent).

Example:
  >>> import numpy as np
  >>> a = np.array([[0., 1.], [1., 0.]], np.float32)
  >>> e = from_dense(a)
  >>> spmm(e, np.eye(2, dtype=np.float32)).tolist()
  [[0.0, 1.0], [1.0, 0.0]]
"""
from __future__ import annotations

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Edges:
  """COO matrix: ``rows``, ``cols`` ``[E]`` int32, ``weights`` ``[E]`` float32, static
  ``shape = (n, m)``."""
  rows: jax.Array
  cols: jax.Array
  weights: jax.Array
  shape: Tuple[int, int] = struct.field(pytree_node=False)


def _traced(*xs):
  return any(isinstance(x, jax.core.Tracer) for x in xs)


def _xp(*xs):
  """NumPy for concrete inputs (host-side construction: no per-op compiles), else jnp."""
  return jnp if _traced(*xs) else np


def _check_index(name, x, fn):
  x = jnp.asarray(x) if _traced(x) else np.asarray(x)
  if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{fn}: '{name}' must be a rank-1 integer array, got shape "
                     f"{tuple(x.shape)} dtype {x.dtype}")
  return x.astype(np.int32)


def edges(rows, cols, shape, weights=None) -> Edges:
  """An :class:`Edges` of ``shape`` from index arrays (``weights`` default 1); concrete
  indices are range-checked."""
  fn = "edges"
  rows, cols = _check_index("rows", rows, fn), _check_index("cols", cols, fn)
  if rows.shape != cols.shape:
    raise ValueError(f"{fn}: 'rows' and 'cols' must have the same length, got "
                     f"{rows.shape[0]} and {cols.shape[0]}")
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"{fn}: 'shape' must be (n, m) with n, m >= 1, got {shape}")
  xp = _xp(rows, cols, weights)
  weights = xp.ones(rows.shape, np.float32) if weights is None else xp.asarray(weights,
                                                                               np.float32)
  if weights.shape != rows.shape:
    raise ValueError(f"{fn}: 'weights' must have shape {tuple(rows.shape)}, got "
                     f"{tuple(weights.shape)}")
  for name, idx, n in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
    if not _traced(idx) and idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
      raise ValueError(f"{fn}: '{name}' must lie in [0, {n}), got range "
                       f"[{int(idx.min())}, {int(idx.max())}]")
  return Edges(jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(weights), shape)


def from_dense(a) -> Edges:
  """The nonzeros of a dense ``[n, m]`` matrix (host-side: NumPy ``nonzero``)."""
  a = np.asarray(a, np.float32)
  if a.ndim != 2:
    raise ValueError(f"from_dense: 'a' must be a [n, m] matrix, got shape {a.shape}")
  r, c = np.nonzero(a)
  return edges(r.astype(np.int32), c.astype(np.int32), a.shape, a[r, c])


def to_dense(e: Edges) -> jax.Array:
  """The dense ``[n, m]`` float32 matrix (duplicates summed)."""
  return jnp.zeros(e.shape, jnp.float32).at[e.rows, e.cols].add(e.weights)


def transpose(e: Edges) -> Edges:
  return Edges(e.cols, e.rows, e.weights, (e.shape[1], e.shape[0]))


@jax.jit
def spmm(e: Edges, x) -> jax.Array:
  """``A @ x`` for ``x`` ``[m]`` or ``[m, D]`` (float32 accumulation, one segment_sum)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"spmm: 'x' must be a floating-point array, got dtype {x.dtype}")
  if x.ndim not in (1, 2) or x.shape[0] != e.shape[1]:
    raise ValueError(f"spmm: 'x' must have {e.shape[1]} rows (the matrix is {e.shape}), got "
                     f"shape {tuple(x.shape)}")
  w = e.weights if x.ndim == 1 else e.weights[:, None]
  msg = w * x[e.cols].astype(jnp.float32)
  return jax.ops.segment_sum(msg, e.rows, num_segments=e.shape[0])


@functools.partial(jax.jit, static_argnames=("axis",))
def degrees(e: Edges, axis: int = 1) -> jax.Array:
  """Row sums (``axis=1``, ``[n]``) or column sums (``axis=0``, ``[m]``) of the weights."""
  if axis == 1:
    return jax.ops.segment_sum(e.weights, e.rows, num_segments=e.shape[0])
  if axis == 0:
    return jax.ops.segment_sum(e.weights, e.cols, num_segments=e.shape[1])
  raise ValueError(f"degrees: 'axis' must be 0 (column sums) or 1 (row sums), got {axis!r}")


def inv_power(d, p):
  """``d ** -p`` where ``d > 0``, else 0 (isolated nodes)."""
  safe = jnp.where(d > 0, d, 1.0)
  return jnp.where(d > 0, safe ** (-p), 0.0)


@functools.partial(jax.jit, static_argnames=("mode",))
def normalize(e: Edges, mode: str = "sym") -> Edges:
  """``"sym"``: ``D^-1/2 A D'^-1/2``; ``"row"``: ``D^-1 A`` (module docstring)."""
  if mode == "sym":
    w = e.weights * inv_power(degrees(e, 1), 0.5)[e.rows] * inv_power(degrees(e, 0), 0.5)[e.cols]
  elif mode == "row":
    w = e.weights * inv_power(degrees(e, 1), 1.0)[e.rows]
  else:
    raise ValueError(f"normalize: 'mode' must be 'sym' or 'row', got {mode!r}")
  return e.replace(weights=w)


@jax.jit
def remove_self_loops(e: Edges) -> Edges:
  """Weights of diagonal entries set to 0 (the edge count, hence the compiled shape, stays)."""
  return e.replace(weights=jnp.where(e.rows == e.cols, 0.0, e.weights))


def bipartite(users, items, num_users: int, num_items: int) -> Edges:
  """The symmetric ``(U + I) x (U + I)`` adjacency of user-item interactions: user ``u`` is
  node ``u``, item ``i`` node ``U + i``; one edge each way per interaction (weight 1)."""
  fn = "bipartite"
  users, items = _check_index("users", users, fn), _check_index("items", items, fn)
  if users.shape != items.shape:
    raise ValueError(f"{fn}: 'users' and 'items' must have the same length, got "
                     f"{users.shape[0]} and {items.shape[0]}")
  n = num_users + num_items
  if not _traced(users, items) and users.size and (
      int(users.max()) >= num_users or int(items.max()) >= num_items):
    raise ValueError(f"{fn}: 'users' must lie in [0, {num_users}) and 'items' in "
                     f"[0, {num_items})")
  xp = _xp(users, items)
  rows = xp.concatenate([users, items + num_users])
  cols = xp.concatenate([items + num_users, users])
  return edges(rows, cols, (n, n))


def pad(e: Edges, multiple: int) -> Edges:
  """``e`` with weight-0 edges at ``(0, 0)`` appended up to a multiple of ``multiple`` edges:
  the same matrix, and one compiled shape for graphs of similar size (e.g. across seeds)."""
  extra = -e.rows.shape[0] % int(multiple)
  xp = _xp(e.rows, e.cols, e.weights)
  z = xp.zeros((extra,), np.int32)
  cat = lambda a, b: jnp.asarray(xp.concatenate([xp.asarray(a), b]))
  return Edges(cat(e.rows, z), cat(e.cols, z), cat(e.weights, z.astype(np.float32)), e.shape)


def hstack(*blocks: Edges) -> Edges:
  """``[A_1 | A_2 | ...]``: column concatenation of matrices with the same row count."""
  n = blocks[0].shape[0]
  if any(b.shape[0] != n for b in blocks):
    raise ValueError(f"hstack: every block must have {n} rows, got "
                     f"{[b.shape for b in blocks]}")
  offsets = np.cumsum([0] + [b.shape[1] for b in blocks])
  xp = _xp(*[a for b in blocks for a in (b.rows, b.cols, b.weights)])
  cat = lambda xs: jnp.asarray(xp.concatenate([xp.asarray(x) for x in xs]))
  return Edges(cat([b.rows for b in blocks]),
               cat([xp.asarray(b.cols) + int(o) for b, o in zip(blocks, offsets)]),
               cat([b.weights for b in blocks]), (n, int(offsets[-1])))
