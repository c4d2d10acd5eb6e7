"""Supervised softmax cross-entropy of class logits (the CE baseline of SupCon).

Equation (Khosla et al., "Supervised Contrastive Learning", arXiv 2004.11362, the cross-entropy
baseline), for row ``i`` with logits ``l_i [C]`` and label ``y_i``::

    ce_i = -log softmax(l_i)_{y_i} = log sum_c exp(l_ic) - l_{i, y_i}

The logits are usually a linear classifier ``l = z W.T + b`` on an embedding ``z``; in the
trainer that classifier is the learnable parameters of the ``classifier`` objective
(:func:`jaxcl.train.objectives.classifier_objective`), so the CE baseline runs through the same
trainer, views, encoder and optimiser as the contrastive objectives.

Every row is independent (no negatives), so ``axis_name`` is accepted for the common calling
convention and needs no communication: sharded equals single-device trivially.

Labels must lie in ``[0, C)``: concrete labels out of range are an error naming ``'labels'``;
traced ones (inside ``jit``) give a NaN value on their (valid) row, so the trainer's NaN guard
stops the run instead of training on a silently wrong target. Padded rows (``valid=False``)
get 0 and no gradient whatever their label.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> logits = jax.random.normal(jax.random.key(0), (4, 3))
  >>> jaxcl.losses.contrib.softmax_cross_entropy(logits, jnp.array([0, 2, 1, 0])).shape
  (4,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.losses import _common as c


def softmax_cross_entropy(logits, labels, *, valid=None, axis_name=None):
  """Per-example cross-entropy ``[B_local]`` of ``logits [B, C]`` (any float dtype; computed
  in float32) against integer ``labels [B]`` (see the module docstring)."""
  fn = "softmax_cross_entropy"
  del axis_name  # per-row loss: nothing to gather
  logits = c.embeddings("logits", logits, fn, what="[batch, classes]")
  b, k = logits.shape
  if k < 2:
    raise ValueError(f"{fn}: 'logits' needs at least 2 classes, got shape {tuple(logits.shape)}")
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  in_range = c.check_label_range(fn, labels, valid, k, "the number of classes of 'logits'")
  lg = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(lg, axis=-1)
  picked = jnp.take_along_axis(lg, jnp.clip(labels, 0, k - 1)[:, None], axis=-1)[:, 0]
  return c.finalize(jnp.where(in_range, lse - picked, jnp.nan), valid)
