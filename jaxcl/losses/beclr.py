"""BECLR's pretraining loss (Poulakakis-Daktylidis & Jamali-Rad, "BECLR: Batch Enhanced
Contrastive Few-Shot Learning", ICLR 2024, arXiv 2402.02444; reference code stypoumic/BECLR,
``BECLRLoss`` in ``models/beclr.py``).

Student predictions ``p``, teacher (EMA) projections ``z_t``, student projections ``z_s`` of
two views; ``cos`` on L2-normalised rows::

    L_pos = -1/2 [ mean_i cos(p1_i, sg z_t2_i) + mean_i cos(p2_i, sg z_t1_i) ]
    Z     = [z_s1; z_s2]                                   (2N rows of the global batch)
    L_neg = log( mean_a  sum_{b not in {a, pair(a)}} exp(Z_a . Z_b / T) / (2N - 2) )
    L     = L_pos + lambda L_neg,        T = 2, lambda = 0.1

``L_neg`` is the log of the batch *mean* (not a mean of logs), so it does not decompose over
rows: :func:`beclr_loss` returns ``[B_local]`` rows ``L_pos_i + lambda L_neg`` whose mean over
the global batch is ``L`` (``L_neg`` computed once over the gathered global batch through
:mod:`jaxcl.collectives`, so value and gradient equal the single-device ones).

The trainer runs it as ``config.loss.name = "beclr_loss"`` (EMA teacher on both views, a
predictor head and optionally the DyCE memory of :mod:`jaxcl.beclr`:
:func:`jaxcl.train.objectives.beclr_objective`).

Example:
  >>> import jax
  >>> from jaxcl.losses.contrib import beclr_loss
  >>> p1, p2, t1, t2, s1, s2 = jax.random.normal(jax.random.key(1), (6, 8, 4))
  >>> beclr_loss(p1, p2, t1, t2, s1, s2).shape
  (8,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def _global_log_mean_exp(x, valid, axis_name):
  """``log mean_{valid a} exp(x_a)`` over the global batch (max-subtracted)."""
  xm = jnp.where(valid, x, -jnp.inf)
  # The shift is a constant for the gradient (and pmax has no differentiation rule).
  m = collectives.pmax(jax.lax.stop_gradient(jnp.max(xm)), axis_name)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  total = collectives.psum(jnp.sum(jnp.where(valid, jnp.exp(x - m), 0.0)), axis_name)
  n = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
  return m + jnp.log(total) - jnp.log(n)


def uniformity_term(z1, z2, *, temperature=2.0, axis_name=None, valid=None, impl="dense",
                    block_size=1024):
  """BECLR's ``L_neg`` (a scalar): log of the batch mean of each anchor's mean
  ``exp(Z_a . Z_b / T)`` over the ``2N - 2`` rows that are neither itself nor its pair.

  ``N`` counts the valid rows of the global batch; ``z1``/``z2`` are ``[B_local, D]``
  (normalised inside). Same value on every device.
  """
  fn = "uniformity_term"
  z1, z2 = c.paired(fn, "z1", z1, "z2", z2, temperature)
  b = z1.shape[0]
  valid = c.valid_mask(valid, b, fn)
  u = jnp.concatenate([c.l2_normalize(z1), c.l2_normalize(z2)])
  tags = c.concat_tags(c.row_tags(b, axis_name, view=0, valid=valid),
                       c.row_tags(b, axis_name, view=1, valid=valid))
  lse = contrastive_lse(u, u, c.inv_temperature(temperature), q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=True, exclude_same_sample=True),
                        axis_name=axis_name, impl=impl, block_size=block_size).lse
  n = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
  both = jnp.concatenate([valid, valid])
  # Each anchor's candidate mean: exp(lse_a) / (2N - 2).
  return _global_log_mean_exp(lse, both & jnp.isfinite(lse), axis_name) - jnp.log(2 * n - 2)


def beclr_loss(p1, p2, zt1, zt2, zs1, zs2, *, temperature=2.0, neg_weight=0.1,
               axis_name=None, valid=None, impl="dense", block_size=1024):
  """BECLR's pretraining loss ``L_pos + lambda L_neg`` (module docstring). ``[B_local]``.

  Args:
    p1, p2: ``[B, D]`` student predictions of views 1 and 2.
    zt1, zt2: ``[B, D]`` teacher projections (stop-gradient is applied here).
    zs1, zs2: ``[B, D]`` student projections (the negatives, "SS" in the reference config).
    temperature: ``T`` of ``L_neg`` (BECLR 2.0).
    neg_weight: ``lambda`` (BECLR 0.1).
    axis_name: mesh axis name(s); ``L_neg`` runs over the global batch.
    valid: ``[B]`` bool; padded rows get 0 and are no negatives (the mean over the valid
      rows of the global batch is then the loss).

  """
  fn = "beclr_loss"
  p1, zt2 = c.paired(fn, "p1", p1, "zt2", zt2, temperature)
  p2, zt1 = c.paired(fn, "p2", p2, "zt1", zt1, temperature)
  c.check_same("p1", p1, "p2", p2, 0, fn, "batch size")
  if neg_weight:
    c.check_positive("neg_weight", neg_weight, fn)
  b = p1.shape[0]
  valid = c.valid_mask(valid, b, fn)
  sg = jax.lax.stop_gradient
  cos = lambda a, t: jnp.sum(c.l2_normalize(a) * c.l2_normalize(sg(t)), axis=-1)
  pos = -0.5 * (cos(p1, zt2) + cos(p2, zt1))
  per = pos
  if neg_weight:
    per = per + neg_weight * uniformity_term(zs1, zs2, temperature=temperature,
                                             axis_name=axis_name, valid=valid, impl=impl,
                                             block_size=block_size)
  return c.finalize(per, valid)
