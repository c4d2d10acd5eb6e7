"""Supervised contrastive loss (SupCon).

Equation (Khosla et al., "Supervised Contrastive Learning", arXiv 2004.11362, L_out), over the
``N * V`` anchors ``a`` of the global batch (every view of every sample), ``s = <u_a, u_b>/T``::

    supcon_a = -(T / T_base) * (1 / |P(a)|) sum_{p in P(a)} [ s(a, p) - log sum_{b != a} exp s(a, b) ]

``P(a)``: every other row (any view) of the global batch with the anchor's label. The value
returned for sample ``i`` is the mean over its ``V`` anchors (so the global mean equals the
reference implementation's ``loss.view(V, N).mean()``). An anchor with no positive (a label
that occurs once with ``V = 1``) contributes 0, where the reference returns NaN.
``base_temperature=None`` makes the factor ``T / T_base`` equal to 1.

The sum over positives is computed inside the kernel from label tags (no ``B x B`` mask is
stored by the blockwise/ring implementations).

Distributed semantics: features, labels and validity are gathered along ``axis_name``;
anchors are the local rows.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> f = jax.random.normal(jax.random.key(0), (6, 2, 8))
  >>> jaxcl.losses.supcon(f, jnp.array([0, 1, 0, 1, 2, 2])).shape
  (6,)
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def supcon(features, labels, *, temperature=0.1, base_temperature=None, axis_name=None,
           normalize=True, valid=None, impl="dense", block_size=1024, precision=None):
  """Supervised contrastive loss. ``features`` ``[B, V, D]``, ``labels`` ``[B]`` ints.

  Returns ``[B_local]``: mean over each sample's ``V`` anchor losses. ``precision``: of the
  similarity product (:func:`jaxcl.losses.info_nce`).
  """
  fn = "supcon"
  features = c.embeddings("features", features, fn, rank=3, what="[batch, views, dim]")
  c.check_temperature(temperature, fn)
  if base_temperature is not None:
    c.check_temperature(base_temperature, fn, "base_temperature")
  c.check_precision(precision, fn)
  b, v, _ = features.shape
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  u = c.prepare(features, normalize)
  # View-major rows: row (view, i) so tags are per-view copies of the per-sample tags.
  u = jnp.swapaxes(u, 0, 1).reshape(v * b, -1)
  tags = c.concat_tags(*[c.row_tags(b, axis_name, view=k, valid=valid, label=labels)
                         for k in range(v)])

  def pos_fn(qt, kt):
    self_ = (qt["sample"] == kt["sample"]) & (qt["view"] == kt["view"])
    return (qt["label"] == kt["label"]) & kt["valid"] & ~self_

  res = contrastive_lse(u, u, scale, q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=True), pos_fn=pos_fn,
                        axis_name=axis_name, impl=impl, block_size=block_size,
                        precision=precision)
  has_pos = res.pos_count > 0
  mean_log_prob = jnp.where(has_pos, res.pos_sum / jnp.where(has_pos, res.pos_count, 1.0)
                            - res.lse, 0.0)
  factor = 1.0 if base_temperature is None else (
      jnp.asarray(temperature, jnp.float32) / base_temperature)
  per_anchor = (-factor * mean_log_prob).reshape(v, b)
  keep_anchor = (has_pos & jnp.isfinite(res.lse)).reshape(v, b)
  per_anchor = jnp.where(keep_anchor, per_anchor, 0.0)
  return c.finalize(jnp.mean(per_anchor, axis=0), valid)
