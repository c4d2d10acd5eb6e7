"""Multi-view objectives: MV-InfoNCE, MV-DHEL and the "average" baseline.

Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", arXiv
2507.06979 (reference code: pakoromilas/Multi-View-CL, ``models/losses.py``). ``views`` is
``[B, K, D]``; ``e(a, b) = exp(<a, b> / T)`` on L2-normalised rows; ``N`` = global batch::

    mv_info_nce_i = -log sum_{k != l} e(z^k_i, z^l_i)
                    + log sum_k sum_{(j, m) != (i, k)} e(z^k_i, z^m_j)

    mv_dhel_i     = -log sum_{k < l} e(z^k_i, z^l_i)
                    + sum_k log sum_{j != i} e(z^k_i, z^k_j)

    mv_average_i  = 1/K sum_k nt_xent(u^k, m^k)_i,   m^k = 1/(K-1) sum_{l != k} u^l

where ``u^k`` is view ``k`` L2-normalised and ``nt_xent`` is :func:`jaxcl.losses.nt_xent` at
the same ``T`` on the pair (view ``k``, mean of the other views), without re-normalising the
mean (as the reference ``NTXent(average=True)``, whose rows are normalised before the mean);
its gradient flows through the mean into the other views.

MV-InfoNCE has one term per sample: the numerator holds all ordered cross-view positive pairs,
the denominator every other embedding of the global batch for every view of ``i`` (positives
included, self excluded). MV-DHEL decouples uniformity: each view is contrasted only with the
same view of the other samples. With ``K = 2`` MV-DHEL is DHEL. The mean over the global batch
of the returned values is the paper's ``L``.

Distributed semantics: all ``K`` views of every row are gathered along ``axis_name``; the
numerators are local (they only involve the sample's own views).

Example:
  >>> import jax, jaxcl
  >>> v = jax.random.normal(jax.random.key(0), (8, 3, 16))
  >>> jaxcl.losses.mv_dhel(v).shape
  (8,)
  >>> jaxcl.losses.mv_average(v).shape
  (8,)
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcl.kernels import contrastive_lse, product
from jaxcl.kernels.lse import masked_logsumexp
from jaxcl.losses import _common as c
from jaxcl.losses.ntxent import nt_xent


def _views(fn, views, temperature, normalize, valid, precision=None):
  views = c.embeddings("views", views, fn, rank=3, what="[batch, views, dim]")
  c.check_precision(precision, fn)
  if views.shape[1] < 2:
    raise ValueError(f"{fn}: 'views' needs at least 2 views (axis 1), got shape "
                     f"{tuple(views.shape)}")
  c.check_temperature(temperature, fn)
  b, k, _ = views.shape
  return c.prepare(views, normalize), b, k, c.valid_mask(valid, b, fn), c.inv_temperature(temperature)


def _positive_lse(u, scale, strict_upper, precision):
  """log sum over pairs of a sample's own views: ordered k != l, or k < l."""
  k = u.shape[1]
  s = product("bkd,bld->bkl", u, u, precision) * scale
  idx = jnp.arange(k)
  pair = (idx[:, None] < idx[None, :]) if strict_upper else (idx[:, None] != idx[None, :])
  return masked_logsumexp(s.reshape(u.shape[0], -1), pair.reshape(-1)[None, :])


def _own_views(qt, kt):
  return (qt["sample"] == kt["sample"]) & (qt["view"] != kt["view"])


def mv_info_nce(views, *, temperature=0.2, axis_name=None, normalize=True, valid=None,
                impl="dense", block_size=1024, precision=None):
  """MV-InfoNCE (one term per sample, all views in one softmax). Returns ``[B_local]``.
  ``precision``: of the similarity product (:func:`jaxcl.losses.info_nce`)."""
  u, b, k, valid, scale = _views("mv_info_nce", views, temperature, normalize, valid, precision)
  flat = jnp.swapaxes(u, 0, 1).reshape(k * b, -1)
  tags = c.concat_tags(*[c.row_tags(b, axis_name, view=v, valid=valid) for v in range(k)])
  kw = dict(q_tags=tags, k_tags=tags, axis_name=axis_name, impl=impl, block_size=block_size,
            precision=precision)
  res = contrastive_lse(flat, flat, scale, mask_fn=c.candidate_mask(exclude_self=True), **kw)
  # The numerator's pairs are candidates of the denominator: take them from the same product
  # (a second pass of the kernel over the positive pairs), so the value stays >= 0 at any
  # precision (a separate einsum of the pairs differs from the kernel's at bfloat16 / TF32).
  num = contrastive_lse(flat, flat, scale, mask_fn=_own_views, **kw).lse.reshape(k, b)
  lse = res.lse.reshape(k, b)
  denom = masked_logsumexp(lse.T, jnp.isfinite(lse.T))
  per = denom - masked_logsumexp(num.T, jnp.isfinite(num.T))
  return c.finalize(per, valid & jnp.isfinite(denom))


def mv_dhel(views, *, temperature=0.2, axis_name=None, normalize=True, valid=None,
            impl="dense", block_size=1024, precision=None):
  """MV-DHEL (alignment over view pairs, uniformity within each view). ``[B_local]``.
  ``precision``: of the similarity products (:func:`jaxcl.losses.info_nce`)."""
  u, b, k, valid, scale = _views("mv_dhel", views, temperature, normalize, valid, precision)
  tags = c.row_tags(b, axis_name, view=0, valid=valid)
  mask_fn = c.candidate_mask(exclude_self=True, exclude_same_sample=True)
  uniform = 0.0
  finite = valid
  for v in range(k):
    res = contrastive_lse(u[:, v], u[:, v], scale, q_tags=tags, k_tags=tags, mask_fn=mask_fn,
                          axis_name=axis_name, impl=impl, block_size=block_size,
                          precision=precision)
    finite = finite & jnp.isfinite(res.lse)
    uniform = uniform + res.lse
  # The alignment pairs (a sample's own views) are no candidate of the uniformity terms.
  per = uniform - _positive_lse(u, scale, strict_upper=True, precision=precision)
  return c.finalize(per, finite)


def mv_average(views, *, temperature=0.2, axis_name=None, normalize=True, valid=None,
               impl="dense", block_size=1024, precision=None):
  """The "average" baseline: NT-Xent of each view against the mean of the other views,
  averaged over the ``K`` views. ``[B_local]``; see the module docstring."""
  u, _, k, valid, _ = _views("mv_average", views, temperature, normalize, valid, precision)
  total = jnp.sum(u, axis=1)
  per = [nt_xent(u[:, v], (total - u[:, v]) / (k - 1), temperature=temperature,
                 axis_name=axis_name, normalize=False, valid=valid, impl=impl,
                 block_size=block_size, precision=precision) for v in range(k)]
  return jnp.mean(jnp.stack(per), axis=0)
