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

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

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


def mv_info_nce(views: ArrayLike, *, temperature: float | jax.Array = 0.2,
                axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
                valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
                precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """MV-InfoNCE: one softmax per sample over all its views, every cross-view pair positive.

  For each local sample ``i`` with views ``z^1_i .. z^K_i`` and temperature ``T``::

      l_i = -log sum_{k != l} exp(s(z^k_i, z^l_i) / T)
            + log sum_k sum_{(j, m) != (i, k)} exp(s(z^k_i, z^m_j) / T)
      s(x, y) = <x, y> / (|x| |y|)        (normalize=False: <x, y>)

  The numerator holds all ordered cross-view pairs of sample ``i``; the denominator every
  other embedding ``z^m_j`` of the valid rows of the global batch (every device along
  ``axis_name``), for every view ``k`` of ``i`` (positives included, self excluded). From
  Koromilas et al., "A Principled Framework for Multi-View Contrastive Learning", arXiv
  2507.06979.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` for local
  sample ``i`` (0 for a padded sample); the mean over the global batch is the paper's ``L`` (under
  padding, reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    views: ``[B, K, D]`` embeddings, ``K >= 2`` views per sample (any float dtype).
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; all ``K`` views of every row are
      gathered along it, so the candidates are the global batch. ``None``: single device.
    normalize: L2-normalise every view's rows first (cosine similarity).
    valid: ``[B]`` bool; a padded sample gives loss 0 and none of its views is a candidate.
      ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity products (as in
      :func:`jaxcl.losses.info_nce`).

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    Two samples, both views of sample ``i`` equal to ``e_i``, ``T = 1``: the numerator is
    ``2 e^1`` (pairs (1, 2) and (2, 1)), the denominator ``2 (e^1 + 2 e^0)`` (per view: the
    other view, and the other sample's two views), so each row is
    ``log((e + 2) / e) = log(1 + 2/e) = 0.5514``.

    >>> import jax.numpy as jnp, jaxcl
    >>> v = jnp.stack([jnp.eye(2), jnp.eye(2)], axis=1)           # [B=2, K=2, D=2]
    >>> [round(float(x), 4) for x in jaxcl.losses.mv_info_nce(v, temperature=1.0)]
    [0.5514, 0.5514]
  """
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


def mv_dhel(views: ArrayLike, *, temperature: float | jax.Array = 0.2,
            axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
            valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
            precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """MV-DHEL: alignment over a sample's view pairs, uniformity within each view.

  For each local sample ``i`` with views ``z^1_i .. z^K_i`` and temperature ``T``::

      l_i = -log sum_{k < l} exp(s(z^k_i, z^l_i) / T)
            + sum_k log sum_{j != i} exp(s(z^k_i, z^k_j) / T)
      s(x, y) = <x, y> / (|x| |y|)        (normalize=False: <x, y>)

  ``j`` runs over the other valid samples of the global batch (every device along
  ``axis_name``): each view is contrasted only with the same view of the other samples, and
  the alignment pairs are no candidates. With ``K = 2`` this is DHEL. From Koromilas et al.,
  "A Principled Framework for Multi-View Contrastive Learning", arXiv 2507.06979.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` for local
  sample ``i`` (0 for a padded sample); the mean over the global batch is the paper's ``L`` (under
  padding, reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    views: ``[B, K, D]`` embeddings, ``K >= 2`` views per sample (any float dtype).
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; all ``K`` views of every row are
      gathered along it, so the candidates are the global batch. ``None``: single device.
    normalize: L2-normalise every view's rows first (cosine similarity).
    valid: ``[B]`` bool; a padded sample gives loss 0 and none of its views is a candidate.
      ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity products (as in
      :func:`jaxcl.losses.info_nce`).

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    Three samples, both views of sample ``i`` equal to ``e_i``, ``T = 1``: the one view pair
    has similarity 1, and each view sees the other two samples at similarity 0, so each row
    is ``-1 + 2 log(e^0 + e^0) = 2 log 2 - 1 = 0.3863``.

    >>> import jax.numpy as jnp, jaxcl
    >>> v = jnp.stack([jnp.eye(3), jnp.eye(3)], axis=1)           # [B=3, K=2, D=3]
    >>> [round(float(x), 4) for x in jaxcl.losses.mv_dhel(v, temperature=1.0)]
    [0.3863, 0.3863, 0.3863]
  """
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


def mv_average(views: ArrayLike, *, temperature: float | jax.Array = 0.2,
               axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
               valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
               precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """The "average" multi-view baseline: NT-Xent of each view against the mean of the others.

  For each local sample ``i``, with ``u^k`` view ``k`` (L2-normalised unless
  ``normalize=False``) and temperature ``T``::

      l_i = (1/K) sum_k nt_xent(u^k, m^k)_i,     m^k = 1/(K-1) sum_{l != k} u^l

  where ``nt_xent`` is :func:`jaxcl.losses.nt_xent` at the same ``T`` (and ``axis_name``,
  ``valid``, ``impl``) on the pair (view ``k``, mean of the other views), the mean *not*
  re-normalised (as the reference ``NTXent(average=True)``, whose rows are normalised before
  the mean); the gradient flows through the mean into the other views.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` for local
  sample ``i`` (0 for a padded sample); the mean over the global batch is the reference's
  loss (under padding, reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    views: ``[B, K, D]`` embeddings, ``K >= 2`` views per sample (any float dtype).
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; all ``K`` views of every row are
      gathered along it, so the candidates are the global batch. ``None``: single device.
    normalize: L2-normalise every view's rows first (cosine similarity).
    valid: ``[B]`` bool; a padded sample gives loss 0 and none of its views is a candidate.
      ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity products (as in
      :func:`jaxcl.losses.info_nce`).

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    Two samples with both views equal to ``e_i`` and ``T = 1``: the mean of the other view is
    ``e_i``, so each term is NT-Xent on ``I_2`` vs ``I_2``,
    ``-1 + log(e^1 + 2 e^0) = log(1 + 2/e) = 0.5514``.

    >>> import jax.numpy as jnp, jaxcl
    >>> v = jnp.stack([jnp.eye(2), jnp.eye(2)], axis=1)           # [B=2, K=2, D=2]
    >>> [round(float(x), 4) for x in jaxcl.losses.mv_average(v, temperature=1.0)]
    [0.5514, 0.5514]
  """
  u, _, k, valid, _ = _views("mv_average", views, temperature, normalize, valid, precision)
  total = jnp.sum(u, axis=1)
  per = [nt_xent(u[:, v], (total - u[:, v]) / (k - 1), temperature=temperature,
                 axis_name=axis_name, normalize=False, valid=valid, impl=impl,
                 block_size=block_size, precision=precision) for v in range(k)]
  return jnp.mean(jnp.stack(per), axis=0)
