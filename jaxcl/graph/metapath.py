"""Meta-path adjacencies of a heterogeneous graph: products of typed adjacency matrices.

A meta-path ``T_0 -r_1-> T_1 -r_2-> ... -r_L-> T_L`` (e.g. author-paper-author, APA, or
paper-venue-paper) has the path-count matrix ``C = A_{r_1} A_{r_2} ... A_{r_L}``
(``[n_{T_0}, n_{T_L}]``; ``C_uv`` = number of such paths from ``u`` to ``v``). The view used by
meta-path methods (MEOW, HAN) is then optionally binarised (``C > 0``), stripped of self-loops
(square ``C`` only) and normalised (``"row"``: ``D^-1 C``; ``"sym"``: ``D^-1/2 C D'^-1/2``).

Dense, jit-compiled; fine for the few-thousand-node graphs of the proxies. Convert the result
with :func:`jaxcl.graph.sparse.from_dense` to propagate it sparsely.

Example:
  >>> import numpy as np
  >>> ap = np.array([[1., 1., 0.], [0., 1., 1.]], np.float32)   # 2 authors x 3 papers
  >>> metapath_adjacency([ap, ap.T]).tolist()                     # APA path counts
  [[2.0, 1.0], [1.0, 2.0]]
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcl.graph.sparse import inv_power


@functools.partial(jax.jit, static_argnames=("binarize", "drop_self", "normalize"))
def _compose(adjs, binarize, drop_self, normalize):
  c = adjs[0].astype(jnp.float32)
  for a in adjs[1:]:
    c = c @ a.astype(jnp.float32)
  if binarize:
    c = (c > 0).astype(jnp.float32)
  if drop_self:
    c = c * (1.0 - jnp.eye(c.shape[0], dtype=c.dtype))
  if normalize == "row":
    c = c * inv_power(c.sum(1), 1.0)[:, None]
  elif normalize == "sym":
    c = c * inv_power(c.sum(1), 0.5)[:, None] * inv_power(c.sum(0), 0.5)[None, :]
  return c


def metapath_adjacency(adjs, *, binarize=False, drop_self=False, normalize=None):
  """``A_1 @ A_2 @ ... @ A_L`` over the typed adjacencies ``adjs`` (module docstring).

  Args:
    adjs: a non-empty sequence of float ``[n_{t-1}, n_t]`` matrices with chained shapes.
    binarize: ``C > 0`` instead of path counts.
    drop_self: zero the diagonal (square results only).
    normalize: ``None``, ``"row"`` or ``"sym"``.
  """
  fn = "metapath_adjacency"
  if not isinstance(adjs, (list, tuple)) or not adjs:
    raise ValueError(f"{fn}: 'adjs' must be a non-empty list of [n, m] matrices")
  adjs = [jnp.asarray(a) for a in adjs]
  for t, a in enumerate(adjs):
    if a.ndim != 2 or not jnp.issubdtype(a.dtype, jnp.floating):
      raise ValueError(f"{fn}: 'adjs[{t}]' must be a float [n, m] matrix, got shape "
                       f"{tuple(a.shape)} dtype {a.dtype}")
    if t and adjs[t - 1].shape[1] != a.shape[0]:
      raise ValueError(f"{fn}: 'adjs[{t - 1}]' {tuple(adjs[t - 1].shape)} and 'adjs[{t}]' "
                       f"{tuple(a.shape)} do not chain (columns != rows)")
  if drop_self and adjs[0].shape[0] != adjs[-1].shape[1]:
    raise ValueError(f"{fn}: 'drop_self' needs a square path matrix, got "
                     f"{adjs[0].shape[0]} x {adjs[-1].shape[1]}")
  if normalize not in (None, "row", "sym"):
    raise ValueError(f"{fn}: 'normalize' must be None, 'row' or 'sym', got {normalize!r}")
  return _compose(tuple(adjs), binarize, drop_self, normalize)
