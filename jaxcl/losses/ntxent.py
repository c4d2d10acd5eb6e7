"""Two-view objectives: NT-Xent (SimCLR), DCL and DCLW.

With ``u = [z1; z2]`` (2N L2-normalised rows of the global batch), anchor ``a = (i, v)`` and its
positive ``p(a) = (i, 1 - v)``, ``s(a, b) = <u_a, u_b> / T``::

    nt_xent_a = -s(a, p(a)) + log sum_{b != a}              exp s(a, b)       (SimCLR)
    dcl_a     = -w_i s(a, p(a)) + log sum_{b : sample(b) != i} exp s(a, b)   (DCL, w_i = 1)
    dclw: w_i = 2 - N * softmax_i( <z1_i, z2_i> / sigma )                     (DCLW)

With ``group_ids`` (Zhang et al., "Learning the Unlearned: Mitigating Feature Suppression in
Contrastive Learning", ECCV 2024, arXiv 2402.11816: MCL's negatives from the anchor's
pseudo-cluster), every sum over ``b`` is further restricted to ``group(b) = group(a)``.

The per-example value returned for sample ``i`` is the mean of its two anchor losses, so the
mean over the global batch is SimCLR's loss (``2N`` anchors averaged) and lightly's DCL
reduction ``(mean L^(1) + mean L^(2)) / 2``; multiply by ``2N`` for the paper's sum.

References: Chen et al., "A Simple Framework for Contrastive Learning of Visual
Representations", arXiv 2002.05709. Yeh et al., "Decoupled Contrastive Learning", arXiv
2110.06848.

Distributed semantics: both views' rows and their tags are gathered along ``axis_name``; each
device computes its local anchors against all ``2N`` global rows. DCLW's weights use the
softmax over the *global* batch of positive similarities (lightly uses the local batch under
DDP; the global choice is what makes sharded equal single-device) and are constants for the
gradient (stop-gradient), as in the reference implementations. Padded rows (``valid``) are
excluded from the softmax and ``N`` counts valid rows only.

Example:
  >>> import jax, jaxcl
  >>> z1 = jax.random.normal(jax.random.key(0), (8, 16)); z2 = z1 + 0.1
  >>> float(jaxcl.losses.nt_xent(z1, z2).mean()) > 0
  True
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def _other_view(qt, kt):
  return (qt["sample"] == kt["sample"]) & (qt["view"] != kt["view"])


def _two_view(fn, z1, z2, temperature, axis_name, normalize, sample_ids, valid, impl,
              block_size, exclude_same_sample, group_ids=None, precision=None):
  """Both anchors' log-sum-exp ``[2, B]`` and positive logit ``[2, B]`` (taken from the same
  similarity product, the kernel's positive sum: consistent at any ``precision``)."""
  z1, z2 = c.paired(fn, "z1", z1, "z2", z2, temperature)
  c.check_precision(precision, fn)
  b = z1.shape[0]
  valid = c.valid_mask(valid, b, fn)
  ids = c.sample_ids_array(sample_ids, b, fn)
  groups = c.group_ids_array(group_ids, b, fn)
  scale = c.inv_temperature(temperature)
  u1, u2 = c.prepare(z1, normalize), c.prepare(z2, normalize)
  u = jnp.concatenate([u1, u2], axis=0)
  tags = c.concat_tags(
      c.row_tags(b, axis_name, view=0, valid=valid, sample_ids=ids, group_ids=groups),
      c.row_tags(b, axis_name, view=1, valid=valid, sample_ids=ids, group_ids=groups))
  res = contrastive_lse(u, u, scale, q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=True,
                                                 exclude_same_sample=exclude_same_sample),
                        pos_fn=_other_view, axis_name=axis_name, impl=impl,
                        block_size=block_size, precision=precision)
  lse = res.lse.reshape(2, b)
  keep = valid & jnp.all(jnp.isfinite(lse), axis=0)
  return lse, res.pos_sum.reshape(2, b), (u1, u2), valid, keep


def nt_xent(z1, z2, *, temperature=0.5, axis_name=None, normalize=True, sample_ids=None,
            valid=None, impl="dense", block_size=1024, group_ids=None, precision=None):
  """SimCLR's NT-Xent over ``2N`` anchors (self excluded, other view positive). ``[B_local]``.

  Args:
    z1, z2: ``[B, D]`` the two views' embeddings (row ``i`` of each is the same sample).
    temperature: ``T`` (SimCLR uses 0.5 at batch 256..4096, 0.1-0.2 at larger batch).
    sample_ids: ``[B]`` ints; rows of *other* samples with the same id are removed from
      every denominator (both views).
    valid: ``[B]`` bool padding mask.
    group_ids: ``[B]`` ints; only rows of the anchor's group are in its denominator (MCL's
      same-pseudo-cluster negatives, see the module docstring).
    precision: ``precision`` of the similarity product (:func:`jaxcl.losses.info_nce`).
  """
  lse, pos, _, _, keep = _two_view("nt_xent", z1, z2, temperature, axis_name, normalize,
                                   sample_ids, valid, impl, block_size, exclude_same_sample=False,
                                   group_ids=group_ids, precision=precision)
  per = 0.5 * ((lse[0] - pos[0]) + (lse[1] - pos[1]))
  return c.finalize(per, keep)


def dcl(z1, z2, *, temperature=0.1, axis_name=None, normalize=True, sample_ids=None,
        valid=None, impl="dense", block_size=1024, group_ids=None, precision=None):
  """Decoupled contrastive loss: NT-Xent with both views of the anchor's sample removed
  from the denominator. ``[B_local]``; see the module docstring for the equation."""
  lse, pos, _, _, keep = _two_view("dcl", z1, z2, temperature, axis_name, normalize,
                                   sample_ids, valid, impl, block_size, exclude_same_sample=True,
                                   group_ids=group_ids, precision=precision)
  per = 0.5 * ((lse[0] - pos[0]) + (lse[1] - pos[1]))
  return c.finalize(per, keep)


def dclw_weights(pos_sim, valid, sigma, axis_name=None):
  """``w_i = 2 - N softmax_i(pos_sim / sigma)`` over the valid rows of the global batch."""
  x = jnp.where(valid, jax.lax.stop_gradient(pos_sim) / sigma, -jnp.inf)
  m = collectives.pmax(jnp.max(x), axis_name)
  # No valid row in the global batch: m = -inf and total = 0 would make every weight
  # 0 * nan / 0 = NaN, and NaN * 0 in the masked rows' gradient. Then the weights are 2 (unused).
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  e = jnp.where(valid, jnp.exp(x - m), 0.0)
  total = collectives.psum(jnp.sum(e), axis_name)
  n = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
  return 2.0 - n * e / jnp.where(total > 0, total, 1.0)


def dclw(z1, z2, *, temperature=0.1, sigma=0.5, axis_name=None, normalize=True,
         sample_ids=None, valid=None, impl="dense", block_size=1024, group_ids=None,
         precision=None):
  """DCL with the von Mises-Fisher positive weight ``w_i = 2 - N softmax(<z1_i, z2_i>/sigma)``
  (stop-gradient; softmax over the global batch). ``[B_local]``."""
  c.check_positive("sigma", sigma, "dclw")
  lse, pos, (u1, u2), valid, keep = _two_view("dclw", z1, z2, temperature, axis_name,
                                              normalize, sample_ids, valid, impl, block_size,
                                              exclude_same_sample=True, group_ids=group_ids,
                                              precision=precision)
  # The weights are constants (stop-gradient) of the cosine similarity, not logits.
  w = jax.lax.stop_gradient(dclw_weights(jnp.sum(u1 * u2, axis=-1), valid, sigma, axis_name))
  per = 0.5 * ((lse[0] - w * pos[0]) + (lse[1] - w * pos[1]))
  return c.finalize(per, keep)
