"""Hard-negative truncated InfoNCE (Wang & Liu, "Understanding the Behaviour of Contrastive
Loss", CVPR 2021, arXiv 2012.09740).

Wang & Liu show that InfoNCE penalises negative ``j`` of anchor ``i`` with the Boltzmann weight
``exp(s_ij / T) / sum_{k != i} exp(s_ik / T)``: a small ``T`` concentrates the penalty on the
hardest negatives (uniform but intolerant embeddings), a large ``T`` spreads it (tolerant but
less uniform). Their explicit hard-negative variant keeps, per anchor, only the negatives above
an anchor-specific similarity threshold, which lets a large ``T`` work well::

    trunc_i = -s_ii / T + log( e^{s_ii / T} + sum_{j in H_i} e^{s_ij / T} )
    H_i = the ``num_negatives`` negatives of anchor i with the largest s_ij
          (or the top ``ceil(quantile * (N - 1))``: the upper ``quantile`` of its negatives)

``s_ij = <q_i, k_j>`` on L2-normalised rows; negatives are the other valid keys of the global
batch. The paper's exact threshold (``alpha`` quantile or ``K``) is not pinned down in the
reference notes (methods.md §29, open item); both parametrisations are offered and the set is
chosen per anchor by rank (the threshold is the ``|H_i|``-th largest negative similarity).
Selection is piecewise constant, so the gradient flows only through the selected logits (and
the positive).

Distributed semantics: keys are gathered (with gradient: the gather's transpose returns the
cotangents of the selected keys to their devices); each device mines its local anchors
against the ``B_global`` keys with ``lax.top_k`` (a ``B_local x B_global`` matrix), and the
selected negatives enter :func:`jaxcl.kernels.contrastive_lse` as per-row extra logits.
Sharded equals single-device.

Example:
  >>> import jax, jaxcl
  >>> q = jax.random.normal(jax.random.key(0), (8, 16)); k = q + 0.1
  >>> jaxcl.losses.contrib.truncated_info_nce(q, k, temperature=0.5, num_negatives=3).shape
  (8,)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


def truncated_info_nce(query, key, *, temperature=0.5, num_negatives=None, quantile=None,
                       axis_name=None, normalize=True, valid=None, impl="dense",
                       block_size=1024):
  """InfoNCE restricted to each anchor's hardest negatives, per example ``[B_local]``.

  Args:
    query, key: ``[B, D]``; ``key[i]`` is the positive of ``query[i]``.
    temperature: ``T``.
    num_negatives: keep the ``K`` hardest negatives per anchor (``1 <= K <= B_global - 1``).
    quantile: alternatively keep the upper ``quantile`` in ``(0, 1]`` of each anchor's
      ``B_global - 1`` negatives (``quantile=1`` is plain InfoNCE). Exactly one of the two.
    axis_name, normalize, valid, impl, block_size: as in :func:`jaxcl.losses.info_nce`.
  """
  fn = "truncated_info_nce"
  query, key = c.paired(fn, "query", query, "key", key, temperature)
  b = query.shape[0]
  n_neg = b * collectives.axis_size(axis_name) - 1
  if (num_negatives is None) == (quantile is None):
    raise ValueError(f"{fn}: give exactly one of 'num_negatives' and 'quantile'")
  if quantile is not None:
    if not 0 < quantile <= 1:
      raise ValueError(f"{fn}: 'quantile' must be in (0, 1], got {quantile}")
    num_negatives = max(1, math.ceil(quantile * n_neg))
  if not isinstance(num_negatives, int) or not 1 <= num_negatives <= n_neg:
    raise ValueError(f"{fn}: 'num_negatives' must be an int in [1, {n_neg}] (global batch - 1), "
                     f"got {num_negatives!r}")
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  q, k = c.prepare(query, normalize), c.prepare(key, normalize)
  q_tags = c.row_tags(b, axis_name, view=0, valid=valid)
  k_tags = c.row_tags(b, axis_name, view=1, valid=valid)

  keys_all = collectives.all_gather(k, axis_name)
  key_sample = collectives.all_gather(k_tags["sample"], axis_name)
  key_valid = collectives.all_gather(valid, axis_name)
  is_neg = key_valid[None, :] & (key_sample[None, :] != q_tags["sample"][:, None])
  sims = jnp.where(is_neg, logits(jax.lax.stop_gradient(q), jax.lax.stop_gradient(keys_all), 1.0),
                   -jnp.inf)
  top, idx = jax.lax.top_k(sims, num_negatives)
  hard = keys_all[idx]                                              # [B, K, D], with gradient
  extra = jnp.einsum("bd,bkd->bk", q, hard, preferred_element_type=jnp.float32) * scale
  extra = jnp.where(jnp.isfinite(top), extra, -jnp.inf)

  # Only the positive comes from the kernel's key set; the kept negatives are extra logits.
  positive_only = lambda qt, kt: (qt["sample"] == kt["sample"]) & kt["valid"]
  res = contrastive_lse(q, k, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=positive_only,
                        extra_logits=extra, axis_name=axis_name, impl=impl,
                        block_size=block_size)
  pos = jnp.sum(q * k, axis=-1) * scale
  return c.finalize(res.lse - pos, valid & jnp.isfinite(res.lse))
