"""kNN hypergraphs from feature similarity, and hypergraph adjacencies applied in factored form.

kNN (MMHCL's item-item construction, Xu107/MMHCL ``load_data.py``): ``S_ij = cos(f_i, f_j)``,
keep each row's top ``k`` (the node itself included: its similarity is 1) and binarise. As an
incidence matrix ``H`` (nodes x hyperedges) row ``i`` is node ``i`` and the hyperedges are the
columns; several modalities are stacked column-wise, ``H = [S_1 | S_2 | ...]``.

A hypergraph's node adjacency is ``A = H H^T - s diag(H H^T)`` (``s = 1`` drops self-loops),
``d = A 1``, normalised ``"sym"`` (``D^-1/2 A D^-1/2``) or ``"row"`` (``D^-1 A``). It is never
formed: :class:`Hypergraph` keeps ``H`` as :class:`~jaxcl.graph.sparse.Edges` and applies::

    A_hat x = l * ( H (H^T (r * x)) - s diag(H H^T) * r * x )

(``l``, ``r`` the per-node scales of the normalisation), two segment_sums over ``nnz(H)``
edges: memory and time ``O(nnz(H) D)`` instead of ``O(N^2)``.

* MMHCL u2u: ``H = R`` (users x items, the training interactions), ``s = 1``, ``"row"``.
* MMHCL i2i: ``H = [kNN_1 | kNN_2]`` over the item modality features, ``s = 0``, ``"sym"``.

:func:`knn_indices` works through row chunks (``lax.map``), so the ``N x N`` similarity is
never materialised either.

Example:
  >>> import numpy as np
  >>> f = np.array([[1., 0.], [0.9, 0.1], [0., 1.]], np.float32)
  >>> knn_indices(f, 2).tolist()
  [[0, 1], [1, 0], [2, 1]]
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxcl.graph import sparse


@functools.partial(jax.jit, static_argnames=("k", "chunk"))
def _knn(features, k, chunk):
  x = features.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))
  n = x.shape[0]
  nc = -(-n // chunk)
  pad = jnp.zeros((nc * chunk - n, x.shape[1]), x.dtype)
  blocks = jnp.concatenate([x, pad]).reshape(nc, chunk, -1)
  idx = jax.lax.map(lambda q: jax.lax.top_k(q @ x.T, k)[1], blocks)
  return idx.reshape(nc * chunk, k)[:n].astype(jnp.int32)


def knn_indices(features, k: int, chunk: int = 1024) -> jax.Array:
  """``[N, k]`` indices of each row's ``k`` most cosine-similar rows (itself included),
  most similar first; ties go to the lower index (``lax.top_k``)."""
  features = jnp.asarray(features)
  if features.ndim != 2 or not jnp.issubdtype(features.dtype, jnp.floating):
    raise ValueError(f"knn_indices: 'features' must be a float [N, F] array, got shape "
                     f"{tuple(features.shape)} dtype {features.dtype}")
  n = features.shape[0]
  if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
    raise ValueError(f"knn_indices: 'k' must be an int in [1, {n}], got {k!r}")
  return _knn(features, k, min(int(chunk), n))


def knn_incidence(features, k: int, chunk: int = 1024) -> sparse.Edges:
  """The binarised top-``k`` similarity ``S`` (``S_ij = 1`` iff ``j`` is among ``i``'s ``k``
  nearest) as ``[N, N]`` edges, ``N k`` of them."""
  idx = knn_indices(features, k, chunk)
  n = idx.shape[0]
  rows = np.repeat(np.arange(n, dtype=np.int32), k)
  return sparse.Edges(jnp.asarray(rows), idx.reshape(-1), jnp.ones((n * k,), jnp.float32),
                      (n, n))


@struct.dataclass
class Hypergraph:
  """The normalised node adjacency of incidence ``H``, applied as
  ``left * (H (H^T (right * x)) - self_weight * right * x)`` (module docstring)."""
  incidence: sparse.Edges
  left: jax.Array
  right: jax.Array
  self_weight: jax.Array


def _hh_t(h, x):
  return sparse.spmm(h, sparse.spmm(sparse.transpose(h), x))


def hypergraph_adjacency(incidence: sparse.Edges, norm: str = "sym",
                         drop_self: bool = False) -> Hypergraph:
  """The operator of ``A = H H^T`` (minus its diagonal with ``drop_self``), normalised
  ``"sym"`` or ``"row"``. The nonzero entries of ``incidence`` must be unique ``(row, col)``
  pairs (``diag(H H^T)`` is summed per edge); weight-0 padding edges are fine. Concrete
  incidences are checked."""
  if norm not in ("sym", "row"):
    raise ValueError(f"hypergraph_adjacency: 'norm' must be 'sym' or 'row', got {norm!r}")
  h = incidence
  if not any(isinstance(a, jax.core.Tracer) for a in (h.rows, h.cols, h.weights)):
    w = np.asarray(h.weights) != 0
    key = np.asarray(h.rows, np.int64)[w] * h.shape[1] + np.asarray(h.cols, np.int64)[w]
    if len(np.unique(key)) != len(key):
      raise ValueError("hypergraph_adjacency: 'incidence' has duplicate (row, col) entries; "
                       "sum them first (e.g. graph.from_dense(graph.to_dense(h)))")
  return _operator(h, norm, drop_self)


@functools.partial(jax.jit, static_argnames=("norm", "drop_self"))
def _operator(h, norm, drop_self):
  diag = jax.ops.segment_sum(h.weights * h.weights, h.rows, num_segments=h.shape[0])
  self_weight = diag if drop_self else jnp.zeros_like(diag)
  d = _hh_t(h, jnp.ones((h.shape[0],), jnp.float32)) - self_weight
  d = jnp.where(d > 1e-6 * jnp.maximum(diag, 1.0), d, 0.0)  # cancellation of dropped self
  if norm == "sym":
    left = right = sparse.inv_power(d, 0.5)
  else:
    left, right = sparse.inv_power(d, 1.0), jnp.ones_like(d)
  return Hypergraph(h, left, right, self_weight)


@jax.jit
def hyper_matmul(g: Hypergraph, x) -> jax.Array:
  """``A_hat @ x`` for ``x`` ``[N]`` or ``[N, D]``."""
  x = jnp.asarray(x, jnp.float32)
  r = g.right if x.ndim == 1 else g.right[:, None]
  l = g.left if x.ndim == 1 else g.left[:, None]
  s = g.self_weight if x.ndim == 1 else g.self_weight[:, None]
  xr = r * x
  return l * (_hh_t(g.incidence, xr) - s * xr)


@jax.jit
def hyper_dense(g: Hypergraph) -> jax.Array:
  """The dense ``[N, N]`` normalised adjacency (tests, small graphs)."""
  return hyper_matmul(g, jnp.eye(g.incidence.shape[0], dtype=jnp.float32))


def u2u_hypergraph(users, items, num_users: int, num_items: int) -> Hypergraph:
  """MMHCL's user-user hypergraph: ``D^-1 (R R^T - diag)``, items as hyperedges."""
  h = sparse.edges(users, items, (num_users, num_items))
  return hypergraph_adjacency(h, norm="row", drop_self=True)


def i2i_hypergraph(features, k: int, chunk: int = 1024) -> Hypergraph:
  """MMHCL's item-item hypergraph: ``H = [kNN_k(f_1) | kNN_k(f_2) | ...]`` over the item
  modality features ``features`` (a sequence of ``[I, F_m]``), ``D^-1/2 H H^T D^-1/2`` with
  self-loops kept."""
  if not isinstance(features, (list, tuple)) or not features:
    raise ValueError("i2i_hypergraph: 'features' must be a non-empty list of [I, F_m] arrays")
  n = {jnp.shape(f)[0] for f in features}
  if len(n) != 1:
    raise ValueError(f"i2i_hypergraph: every modality in 'features' needs the same item "
                     f"count, got {sorted(n)}")
  h = sparse.hstack(*[knn_incidence(f, k, chunk) for f in features])
  return hypergraph_adjacency(h, norm="sym", drop_self=False)
