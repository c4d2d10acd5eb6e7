"""Graph / recommendation objectives: GRACE's full-node InfoNCE (MMHCL's contrast) and BPR.

GRACE form (Zhu et al., "Deep Graph Contrastive Representation Learning", arXiv 2006.04131;
the contrast of MMHCL, Xu107/MMHCL ``Models.py`` ``batched_contrastive_loss``): for node views
``z1, z2`` ``[N, D]`` of the same ``N`` nodes, L2-normalised, ``s(a, b) = <a, b> / T``::

    grace_n = -s(z1_n, z2_n) + log( sum_m exp s(z1_n, z2_m) + sum_{m != n} exp s(z1_n, z1_m) )

over **all** ``N`` nodes (inter-view negatives ``z2_m`` and intra-view negatives ``z1_m``, the
self pair ``z1_n, z1_n`` removed: the reference subtracts ``exp(1/T)``, the same on unit rows).
Anchors are ``z1`` only, as in MMHCL (``symmetric=True``: GRACE's mean of both directions).
``intra_view=False`` drops the ``z1_m`` terms (plain one-direction InfoNCE). The row
log-sum-exp is the one kernel (:func:`jaxcl.kernels.contrastive_lse`): ``impl="blockwise"``
keeps memory ``O(N (D + block))`` for ``N`` up to ~1e5 on a CPU (the reference chunks rows by
4096). Inside ``shard_map`` each device passes its node rows, the keys of both views are
gathered; the mean over the global nodes is the single-device loss.

BPR (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009)::

    bpr_b = -log sigmoid(<u_b, i+_b> - <u_b, i-_b>) = softplus(<u_b, i-_b> - <u_b, i+_b>)

per sampled (user, positive item, negative item) triple, raw dot products (no normalisation).

Example:
  >>> import jax, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (6, 4))
  >>> jaxcl.losses.contrib.grace_loss(z, z + 0.1).shape
  (6,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def _one_way(z1, z2, scale, valid, axis_name, intra_view, impl, block_size, normalize):
  n = z1.shape[0]
  u1, u2 = c.prepare(z1, normalize), c.prepare(z2, normalize)
  q_tags = c.row_tags(n, axis_name, view=0, valid=valid)
  k_tags = c.row_tags(n, axis_name, view=1, valid=valid)
  keys = u2
  if intra_view:
    keys = jnp.concatenate([u2, u1])
    k_tags = c.concat_tags(k_tags, q_tags)
  res = contrastive_lse(u1, keys, scale, q_tags=q_tags, k_tags=k_tags,
                        mask_fn=c.candidate_mask(exclude_self=True), axis_name=axis_name,
                        impl=impl, block_size=block_size)
  pos = jnp.sum(u1 * u2, axis=-1) * scale
  return c.finalize(res.lse - pos, valid & jnp.isfinite(res.lse))


def grace_loss(z1, z2, *, temperature=0.6, intra_view=True, symmetric=False, valid=None,
               axis_name=None, normalize=True, impl="auto", block_size=1024):
  """Full-node GRACE InfoNCE (module docstring); returns ``[N_local]``.

  Args:
    z1, z2: ``[N, D]`` two views of the same nodes (row ``n`` of each is node ``n``).
    temperature: ``T`` (MMHCL's default 0.6).
    intra_view: include the same-view negatives ``z1_m, m != n`` (GRACE / MMHCL).
    symmetric: mean of the ``z1``- and ``z2``-anchored losses (GRACE) instead of ``z1`` only
      (MMHCL's code).
    valid: ``[N]`` bool; invalid nodes are neither anchors (loss 0) nor candidates.
    axis_name, normalize, impl, block_size: as :func:`jaxcl.losses.info_nce`.
  """
  fn = "grace_loss"
  z1, z2 = c.paired(fn, "z1", z1, "z2", z2, temperature)
  valid = c.valid_mask(valid, z1.shape[0], fn)
  scale = c.inv_temperature(temperature)
  kw = dict(valid=valid, axis_name=axis_name, intra_view=intra_view, impl=impl,
            block_size=block_size, normalize=normalize)
  out = _one_way(z1, z2, scale, **kw)
  if symmetric:
    out = 0.5 * (out + _one_way(z2, z1, scale, **kw))
  return out


def bpr_loss(user, pos, neg):
  """BPR per triple ``[B]``: ``softplus(<u, i-> - <u, i+>)`` in float32 (module docstring)."""
  fn = "bpr_loss"
  user = c.embeddings("user", user, fn)
  pos = c.embeddings("pos", pos, fn)
  neg = c.embeddings("neg", neg, fn)
  for name, x in (("pos", pos), ("neg", neg)):
    if x.shape != user.shape:
      raise ValueError(f"{fn}: 'user' and '{name}' must have the same shape, got "
                       f"{tuple(user.shape)} and {tuple(x.shape)}")
  u = user.astype(jnp.float32)
  margin = jnp.sum(u * pos.astype(jnp.float32), -1) - jnp.sum(u * neg.astype(jnp.float32), -1)
  return jax.nn.softplus(-margin)
