"""SigLIP's pairwise sigmoid loss.

Equation (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", arXiv 2303.15343), with
``l_ij = <a_i, b_j> / T + bias`` on L2-normalised rows and ``z_ij = +1`` if ``i == j`` else
``-1``::

    siglip_i = sum_{j in global batch} -log sigmoid(z_ij * l_ij)

The paper's loss is ``(1/N) sum_i siglip_i``, i.e. the mean of the returned values. The paper
parameterises ``1/T = exp(t')`` with ``t' = log 10`` and ``bias = -10`` at initialisation;
both may be traced and receive gradients.

Distributed semantics: ``b`` (and its ids / validity) is gathered along ``axis_name``; rows of
``a`` stay local. The ``impl="ring"`` variant passes ``b`` blocks around the ring instead,
recomputing in the backward pass so memory does not grow with the device count.
With ``sample_ids``, pairs of *different* rows that share an id count as positives (+1).

Example:
  >>> import jax, jaxcl
  >>> a = jax.random.normal(jax.random.key(0), (4, 8))
  >>> jaxcl.losses.siglip_loss(a, a, temperature=0.1, bias=-10.0).shape
  (4,)
"""
from __future__ import annotations

import jax
from jax.typing import ArrayLike

from jaxcl.kernels import sigmoid_row_sum
from jaxcl.losses import _common as c


def siglip_loss(a: ArrayLike, b: ArrayLike, *, temperature: float | jax.Array = 0.1,
                bias: float | jax.Array = -10.0, axis_name: str | tuple[str, ...] | None = None,
                normalize: bool = True, sample_ids: ArrayLike | None = None,
                valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
                precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """SigLIP's pairwise sigmoid loss: each row's sum over every global candidate pair.

  For each local row ``i`` of ``a``, with temperature ``T``::

      l_i  = sum_j -log sigmoid(z_ij * x_ij) = sum_j log(1 + exp(-z_ij * x_ij))
      x_ij = <a_i, b_j> / (|a_i| |b_j| T) + bias     (normalize=False: <a_i, b_j> / T + bias)
      z_ij = +1 if j == i (or sample_ids[j] == sample_ids[i]), else -1

  ``j`` runs over the valid rows of ``b`` in the global batch (every device along
  ``axis_name``); a padded row of ``b`` is nobody's candidate. Pairs of *different* rows
  that share a ``sample_ids`` entry count as positives (``z = +1``).

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` (0 for a padded
  row); the mean over the global batch is the paper's loss ``(1/N) sum_i l_i`` (under
  padding, reduce with :func:`jaxcl.losses.global_mean`). The paper initialises
  ``1/T = exp(t')`` with ``t' = log 10`` and ``bias = -10``; both may be traced and then get
  their gradients.

  Args:
    a: ``[B, D]`` embeddings of the first tower (e.g. images); anchors are its local rows.
    b: ``[B, D]`` embeddings of the second tower (e.g. texts); ``(a[i], b[i])`` is pair ``i``.
    temperature: ``T``; Python float > 0 or traced (e.g. ``jnp.exp(-t_prime)``).
    bias: logit bias added to every pair's logit (Python float or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; ``b`` (and its ids / validity) is
      gathered along it (``impl="ring"`` passes its blocks around the ring instead). ``None``:
      single device.
    normalize: L2-normalise ``a`` and ``b`` first (cosine similarity).
    sample_ids: optional ``[B]`` ints; pairs with equal ids are positives.
    valid: ``[B]`` bool padding mask: padded rows give 0 and are nobody's candidate.
      ``None``: every row is valid.
    impl: pair-sum kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"``
      (:func:`jaxcl.kernels.sigmoid_row_sum`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity product (as in :func:`jaxcl.losses.info_nce`).

  Returns:
    ``[B_local]`` float32 per-row losses ``l_i`` (0 on padded rows).

  Example:
    With ``a = b = I_2``, ``T = 1`` and ``bias = 0``: the positive pair has logit 1,
    ``-log sigmoid(1) = log(1 + e^-1) = 0.3133``, and the negative pair logit 0,
    ``-log sigmoid(0) = log 2 = 0.6931``; each row is ``0.3133 + 0.6931 = 1.0064``.

    >>> import jax.numpy as jnp, jaxcl
    >>> a = jnp.eye(2)
    >>> per = jaxcl.losses.siglip_loss(a, a, temperature=1.0, bias=0.0)
    >>> [round(float(x), 4) for x in per]
    [1.0064, 1.0064]
  """
  fn = "siglip_loss"
  a, b = c.paired(fn, "a", a, "b", b, temperature)
  c.check_precision(precision, fn)
  n = a.shape[0]
  valid = c.valid_mask(valid, n, fn)
  ids = c.sample_ids_array(sample_ids, n, fn)
  tags_a = c.row_tags(n, axis_name, view=0, valid=valid, sample_ids=ids)
  tags_b = c.row_tags(n, axis_name, view=1, valid=valid, sample_ids=ids)

  def pos_fn(qt, kt):
    p = qt["sample"] == kt["sample"]
    if "id" in qt:
      p = p | (qt["id"] == kt["id"])
    return p

  per = sigmoid_row_sum(c.prepare(a, normalize), c.prepare(b, normalize),
                        c.inv_temperature(temperature), bias, q_tags=tags_a, k_tags=tags_b,
                        pos_fn=pos_fn, valid_fn=lambda qt, kt: kt["valid"],
                        axis_name=axis_name, impl=impl, block_size=block_size,
                        precision=precision)
  return c.finalize(per, valid)
