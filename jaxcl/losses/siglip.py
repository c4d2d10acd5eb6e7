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


from jaxcl.kernels import sigmoid_row_sum
from jaxcl.losses import _common as c


def siglip_loss(a, b, *, temperature=0.1, bias=-10.0, axis_name=None, normalize=True,
                sample_ids=None, valid=None, impl="dense", block_size=1024, precision=None):
  """Per-row sum over all global candidates of the sigmoid pair loss. ``[B_local]``.

  Args:
    a, b: ``[B, D]`` paired embeddings (image / text towers).
    temperature: ``T``; Python float > 0 or traced (e.g. ``jnp.exp(-t_prime)``).
    bias: logit bias (Python float or traced scalar).
    sample_ids: optional ``[B]`` ints; equal ids are positives.
    valid: ``[B]`` bool padding mask: padded rows give 0 and are nobody's candidate.
    precision: ``precision`` of the similarity product (:func:`jaxcl.losses.info_nce`).
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
