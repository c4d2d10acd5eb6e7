"""SimCTG token-level contrastive margin loss (Su et al., "A Contrastive Framework for Neural
Text Generation", NeurIPS 2022, arXiv 2202.06417; reference ``simctg/lossfunction.py``).

Within each sequence, with ``s_ij = cos(h_i, h_j)`` over the valid (non-padding) tokens::

    L_CL = sum_b sum_{i != j valid} max(0, rho - (s_ii - s_ij)) / (number of valid (i, j != i))

``s_ii`` is computed (= 1 up to rounding), as the reference code does (``gold_score``). The
full SimCTG objective is ``L_MLE + L_CL``; this function is ``L_CL`` only. Padding (``valid``
False) is neither anchor nor candidate.

Reduction: ``"mean"`` (default) is the reference code's normalisation, a scalar: the sum over
the batch divided by the batch's number of valid pairs -- it does not decompose into a mean of
per-sequence terms. ``"sequence"`` returns ``[B]``: each sequence's own pair mean (0 for fewer
than 2 valid tokens). Computation in float32 whatever the input float dtype.

``axis_name`` (inside ``jax.shard_map``, sequences split over devices): the contrast is within
each sequence, so nothing is gathered; ``"mean"`` divides the ``psum`` of the pair-loss sums by
the ``psum`` of the pair counts, so every device returns the same global scalar, equal (value
and gradient) to the single-device call on the full batch -- a mean of per-device means would
weight devices by their (padding-dependent) pair counts. ``"sequence"`` needs no collective.

Example:
  >>> import jax, jax.numpy as jnp
  >>> h = jnp.sin(jnp.arange(80.0)).reshape(2, 5, 8)
  >>> valid = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  >>> jax.jit(simctg_loss)(h, valid).shape
  ()
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcl import collectives


def simctg_loss(hidden, valid=None, *, margin: float = 0.5, reduction: str = "mean",
                axis_name=None):
  """SimCTG contrastive margin loss of token states ``hidden [B, L, D]`` (see module doc)."""
  if hidden.ndim != 3:
    raise ValueError(f"simctg_loss: 'hidden' must be [B, L, D], got shape {tuple(hidden.shape)}")
  if not jnp.issubdtype(hidden.dtype, jnp.floating):
    raise ValueError(f"simctg_loss: 'hidden' must be floating, got dtype {hidden.dtype}")
  b, n, _ = hidden.shape
  if valid is None:
    valid = jnp.ones((b, n), bool)
  if valid.shape != (b, n):
    raise ValueError(f"simctg_loss: 'valid' must have shape {(b, n)}, got {tuple(valid.shape)}")
  if reduction not in ("mean", "sequence"):
    raise ValueError(f"simctg_loss: 'reduction' must be 'mean' or 'sequence', got {reduction!r}")
  h = hidden.astype(jnp.float32)
  h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
  s = jnp.einsum("bid,bjd->bij", h, h)
  gold = jnp.diagonal(s, axis1=1, axis2=2)[..., None]
  v = valid.astype(bool)
  mask = v[:, :, None] & v[:, None, :] & ~jnp.eye(n, dtype=bool)
  loss = jnp.where(mask, jnp.maximum(margin - (gold - s), 0.0), 0.0)
  pairs = jnp.sum(mask, axis=(1, 2)).astype(jnp.float32)
  if reduction == "sequence":
    return jnp.sum(loss, axis=(1, 2)) / jnp.maximum(pairs, 1.0)
  total = collectives.psum(jnp.sum(loss), axis_name)
  return total / jnp.maximum(collectives.psum(jnp.sum(pairs), axis_name), 1.0)
