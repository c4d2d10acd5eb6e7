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

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def supcon(features: ArrayLike, labels: ArrayLike, *, temperature: float | jax.Array = 0.1,
           base_temperature: float | jax.Array | None = None,
           axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
           valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
           precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """Supervised contrastive loss (SupCon, L_out): every same-label row is a positive.

  Over the ``N * V`` anchors ``a = (i, v)`` of the global batch (every view of every sample),
  with temperature ``T``::

      l_i     = (1/V) sum_v l_(i,v)
      l_a     = -(T / T_base) (1/|P(a)|) sum_{p in P(a)} [ s(a, p) / T - lse_a ]
      lse_a   = log sum_{b != a} exp(s(a, b) / T)
      s(a, b) = <u_a, u_b> / (|u_a| |u_b|)        (normalize=False: <u_a, u_b>)

  ``b`` runs over every other valid row (any view) of the global batch (every device along
  ``axis_name``); ``P(a)`` is the set of those with the anchor's label. An anchor with no
  positive (a label that occurs once with ``V = 1``) contributes 0, where the reference
  implementation returns NaN. ``base_temperature=None`` makes ``T / T_base = 1``.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i``, the mean of
  sample ``i``'s ``V`` anchor losses (0 for a padded sample); the mean over the global batch
  is the reference's ``loss.view(V, N).mean()`` (under padding, reduce with
  :func:`jaxcl.losses.global_mean`).

  Args:
    features: ``[B, V, D]`` embeddings, ``V`` views per sample (any float dtype).
    labels: ``[B]`` int class labels.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    base_temperature: ``T_base`` of the factor ``T / T_base`` (the reference's 0.07), or
      ``None`` for a factor of 1.
    axis_name: mesh axis name(s) inside ``jax.shard_map``; features, labels and validity
      are gathered along it. ``None``: single device.
    normalize: L2-normalise every row of ``features`` first (cosine similarity).
    valid: ``[B]`` bool; a padded sample gives loss 0 and none of its rows is a candidate or
      a positive. ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity product (as in :func:`jaxcl.losses.info_nce`).

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    Two samples, both views of sample ``i`` equal to ``e_i``, ``T = 1``. With labels
    ``[0, 1]`` each anchor's one positive is its other view (similarity 1) and the
    denominator is ``e^1 + 2 e^0``: ``-1 + log(e + 2) = log(1 + 2/e) = 0.5514`` (NT-Xent).
    With labels ``[0, 0]`` all three other rows are positives (mean similarity 1/3):
    ``log(e + 2) - 1/3 = 1.2181``.

    >>> import jax.numpy as jnp, jaxcl
    >>> f = jnp.stack([jnp.eye(2), jnp.eye(2)], axis=1)           # [B=2, V=2, D=2]
    >>> [round(float(x), 4) for x in jaxcl.losses.supcon(f, jnp.array([0, 1]), temperature=1.0)]
    [0.5514, 0.5514]
    >>> [round(float(x), 4) for x in jaxcl.losses.supcon(f, jnp.array([0, 0]), temperature=1.0)]
    [1.2181, 1.2181]
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
