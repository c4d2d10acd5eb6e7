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
from jax.typing import ArrayLike

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


def nt_xent(z1: ArrayLike, z2: ArrayLike, *, temperature: float | jax.Array = 0.5,
            axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
            sample_ids: ArrayLike | None = None, valid: ArrayLike | None = None,
            impl: str = "dense", block_size: int = 1024, group_ids: ArrayLike | None = None,
            precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """SimCLR's NT-Xent over the ``2N`` rows of both views: self excluded, other view positive.

  For each local sample ``i``, with temperature ``T``::

      l_i     = ( l_(i,0) + l_(i,1) ) / 2
      l_a     = -s(a, p(a)) / T + log sum_{b != a} exp(s(a, b) / T)
      s(a, b) = <u_a, u_b> / (|u_a| |u_b|)        (normalize=False: <u_a, u_b>)

  ``u = [z1; z2]`` are the ``2N`` rows of the global batch (every device along ``axis_name``);
  anchor ``a = (i, v)`` is view ``v`` of sample ``i`` and its positive is ``p(a) = (i, 1 - v)``.
  Padded rows, rows of other samples sharing the anchor's ``sample_ids`` entry and, with
  ``group_ids``, rows of other groups are no candidates ``b``.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i``, the mean of
  sample ``i``'s two anchor losses (0 for a padded sample); the mean over the global batch
  is SimCLR's loss, the ``2N`` anchor losses averaged (under padding, reduce with
  :func:`jaxcl.losses.global_mean`).

  Args:
    z1: ``[B, D]`` first view's embeddings (any float dtype).
    z2: ``[B, D]`` second view's embeddings; row ``i`` of ``z1`` and of ``z2`` are the same
      sample.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; both views' rows are gathered
      along it, so the candidates are the ``2N`` rows of the global batch. ``None``: single
      device.
    normalize: L2-normalise ``z1`` and ``z2`` first (cosine similarity).
    sample_ids: ``[B]`` ints; rows of *other* samples with the same id are removed from
      every denominator (both views).
    valid: ``[B]`` bool; a padded sample gives loss 0 and neither of its rows is a candidate
      (``N`` counts valid samples). ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    group_ids: ``[B]`` ints; only rows of the anchor's group are in its denominator (MCL's
      same-pseudo-cluster negatives).
    precision: ``precision`` of the similarity product (as in :func:`jaxcl.losses.info_nce`);
      the positive logit comes from the same product as the candidates.

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    With ``z1 = z2 = I_2`` and ``T = 1`` every anchor has similarity 1 with its positive and
    0 with the other sample's two rows: ``-1 + log(e^1 + 2 e^0) = log(1 + 2/e) = 0.5514``.

    >>> import jax.numpy as jnp, jaxcl
    >>> z = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.nt_xent(z, z, temperature=1.0)]
    [0.5514, 0.5514]
  """
  lse, pos, _, _, keep = _two_view("nt_xent", z1, z2, temperature, axis_name, normalize,
                                   sample_ids, valid, impl, block_size, exclude_same_sample=False,
                                   group_ids=group_ids, precision=precision)
  per = 0.5 * ((lse[0] - pos[0]) + (lse[1] - pos[1]))
  return c.finalize(per, keep)


def dcl(z1: ArrayLike, z2: ArrayLike, *, temperature: float | jax.Array = 0.1,
        axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
        sample_ids: ArrayLike | None = None, valid: ArrayLike | None = None,
        impl: str = "dense", block_size: int = 1024, group_ids: ArrayLike | None = None,
        precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """Decoupled contrastive loss: NT-Xent without the positive pair in the denominator.

  For each local sample ``i``, with temperature ``T``::

      l_i     = ( l_(i,0) + l_(i,1) ) / 2
      l_a     = -s(a, p(a)) / T + log sum_{b : sample(b) != i} exp(s(a, b) / T)
      s(a, b) = <u_a, u_b> / (|u_a| |u_b|)        (normalize=False: <u_a, u_b>)

  Both views of the anchor's own sample leave the denominator, so the value can be negative.
  ``u = [z1; z2]`` are the ``2N`` rows of the global batch (every device along ``axis_name``);
  anchor ``a = (i, v)`` is view ``v`` of sample ``i`` and its positive is ``p(a) = (i, 1 - v)``.
  Padded rows, rows of other samples sharing the anchor's ``sample_ids`` entry and, with
  ``group_ids``, rows of other groups are no candidates ``b``.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i``, the mean of
  sample ``i``'s two anchor losses (0 for a padded sample); the mean over the global batch
  is lightly's DCL reduction ``(mean L^(1) + mean L^(2)) / 2``; multiply by ``2N`` for the
  paper's sum (under padding, reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    z1: ``[B, D]`` first view's embeddings (any float dtype).
    z2: ``[B, D]`` second view's embeddings; row ``i`` of ``z1`` and of ``z2`` are the same
      sample.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; both views' rows are gathered
      along it, so the candidates are the ``2N`` rows of the global batch. ``None``: single
      device.
    normalize: L2-normalise ``z1`` and ``z2`` first (cosine similarity).
    sample_ids: ``[B]`` ints; rows of *other* samples with the same id are removed from
      every denominator (both views).
    valid: ``[B]`` bool; a padded sample gives loss 0 and neither of its rows is a candidate
      (``N`` counts valid samples). ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    group_ids: ``[B]`` ints; only rows of the anchor's group are in its denominator (MCL's
      same-pseudo-cluster negatives).
    precision: ``precision`` of the similarity product (as in :func:`jaxcl.losses.info_nce`);
      the positive logit comes from the same product as the candidates.

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    With ``z1 = z2 = I_2`` and ``T = 1`` each anchor's denominator keeps only the other
    sample's two rows (similarity 0): ``-1 + log(2 e^0) = log 2 - 1 = -0.3069``.

    >>> import jax.numpy as jnp, jaxcl
    >>> z = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.dcl(z, z, temperature=1.0)]
    [-0.3069, -0.3069]
  """
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


def dclw(z1: ArrayLike, z2: ArrayLike, *, temperature: float | jax.Array = 0.1,
         sigma: float = 0.5, axis_name: str | tuple[str, ...] | None = None,
         normalize: bool = True, sample_ids: ArrayLike | None = None,
         valid: ArrayLike | None = None,
         impl: str = "dense", block_size: int = 1024, group_ids: ArrayLike | None = None,
         precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """DCL with von Mises-Fisher weights on the positive term (DCLW).

  For each local sample ``i``, with temperature ``T``::

      l_i     = ( l_(i,0) + l_(i,1) ) / 2
      l_a     = -w_i s(a, p(a)) / T + log sum_{b : sample(b) != i} exp(s(a, b) / T)
      w_i     = 2 - N exp(c_i / sigma) / sum_j exp(c_j / sigma),   c_i = s((i, 0), (i, 1))
      s(a, b) = <u_a, u_b> / (|u_a| |u_b|)        (normalize=False: <u_a, u_b>)

  The weights are constants for the gradient (stop-gradient); the softmax and ``N`` run over
  the valid samples of the *global* batch (lightly uses the local batch under DDP; the global
  choice makes sharded equal single-device); ``N`` is the number of valid samples.
  ``u = [z1; z2]`` are the ``2N`` rows of the global batch (every device along ``axis_name``);
  anchor ``a = (i, v)`` is view ``v`` of sample ``i`` and its positive is ``p(a) = (i, 1 - v)``.
  Padded rows, rows of other samples sharing the anchor's ``sample_ids`` entry and, with
  ``group_ids``, rows of other groups are no candidates ``b``.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i``, the mean of
  sample ``i``'s two anchor losses (0 for a padded sample); the mean over the global batch
  is lightly's DCLW reduction ``(mean L^(1) + mean L^(2)) / 2`` (under padding, reduce with
  :func:`jaxcl.losses.global_mean`).

  Args:
    z1: ``[B, D]`` first view's embeddings (any float dtype).
    z2: ``[B, D]`` second view's embeddings; row ``i`` of ``z1`` and of ``z2`` are the same
      sample.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    sigma: von Mises-Fisher concentration ``sigma`` of the weights (> 0; the paper uses
      0.5).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; both views' rows are gathered
      along it, so the candidates are the ``2N`` rows of the global batch. ``None``: single
      device.
    normalize: L2-normalise ``z1`` and ``z2`` first (cosine similarity).
    sample_ids: ``[B]`` ints; rows of *other* samples with the same id are removed from
      every denominator (both views).
    valid: ``[B]`` bool; a padded sample gives loss 0 and neither of its rows is a candidate
      (``N`` counts valid samples). ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    group_ids: ``[B]`` ints; only rows of the anchor's group are in its denominator (MCL's
      same-pseudo-cluster negatives).
    precision: ``precision`` of the similarity product (as in :func:`jaxcl.losses.info_nce`);
      the positive logit comes from the same product as the candidates.

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    With ``z1 = z2 = I_2`` and ``T = 1`` every ``c_i = 1``, so the softmax is uniform and
    ``w_i = 2 - 2 * 1/2 = 1``: DCLW equals DCL, ``-1 + log(2 e^0) = log 2 - 1 = -0.3069``.

    >>> import jax.numpy as jnp, jaxcl
    >>> z = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.dclw(z, z, temperature=1.0)]
    [-0.3069, -0.3069]
  """
  c.check_positive("sigma", sigma, "dclw")
  lse, pos, (u1, u2), valid, keep = _two_view("dclw", z1, z2, temperature, axis_name,
                                              normalize, sample_ids, valid, impl, block_size,
                                              exclude_same_sample=True, group_ids=group_ids,
                                              precision=precision)
  # The weights are constants (stop-gradient) of the cosine similarity, not logits.
  w = jax.lax.stop_gradient(dclw_weights(jnp.sum(u1 * u2, axis=-1), valid, sigma, axis_name))
  per = 0.5 * ((lse[0] - w * pos[0]) + (lse[1] - w * pos[1]))
  return c.finalize(per, keep)
