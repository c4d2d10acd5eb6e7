"""Linear propagation on a graph operator: repeated products and LightGCN's layer mean.

For a normalised adjacency ``A_hat`` (an :class:`~jaxcl.graph.sparse.Edges` or a
:class:`~jaxcl.graph.hypergraph.Hypergraph`) and node embeddings ``x^(0)``::

    x^(l+1) = A_hat x^(l)                                  (no weights, no nonlinearity)
    propagate(A_hat, x, L) = x^(L)                         (MMHCL's second-order encoders)
    lightgcn(A_hat, x, L)  = (x^(0) + x^(1) + ... + x^(L)) / (L + 1)

LightGCN: He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020, arXiv 2002.02126 (``alpha_k = 1 / (K + 1)``), on the symmetric-
normalised user-item bipartite graph (:func:`jaxcl.graph.sparse.bipartite`, ``"sym"``).

Example:
  >>> import numpy as np
  >>> from jaxcl.graph import sparse
  >>> a = sparse.from_dense(np.array([[0., 1.], [1., 0.]], np.float32))
  >>> lightgcn(a, np.array([[1.], [0.]], np.float32), 1).tolist()
  [[0.5], [0.5]]
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcl.graph import hypergraph, sparse


def matmul(op, x):
  """``op @ x`` for an :class:`Edges` or a :class:`Hypergraph` (or a dense matrix)."""
  if isinstance(op, sparse.Edges):
    return sparse.spmm(op, x)
  if isinstance(op, hypergraph.Hypergraph):
    return hypergraph.hyper_matmul(op, x)
  return jnp.asarray(op, jnp.float32) @ jnp.asarray(x, jnp.float32)


def _layers(num_layers, fn):
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
    raise ValueError(f"{fn}: 'num_layers' must be an int >= 0, got {num_layers!r}")


@functools.partial(jax.jit, static_argnames=("num_layers",))
def propagate(op, x, num_layers: int):
  """``A_hat^L x`` (float32)."""
  _layers(num_layers, "propagate")
  x = jnp.asarray(x, jnp.float32)
  for _ in range(num_layers):
    x = matmul(op, x)
  return x


@functools.partial(jax.jit, static_argnames=("num_layers",))
def lightgcn(op, x, num_layers: int):
  """LightGCN's output: the mean of the layer-0..L embeddings (float32)."""
  _layers(num_layers, "lightgcn")
  x = jnp.asarray(x, jnp.float32)
  total = x
  for _ in range(num_layers):
    x = matmul(op, x)
    total = total + x
  return total / (num_layers + 1)
