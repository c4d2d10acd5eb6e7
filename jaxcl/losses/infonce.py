"""InfoNCE (one direction, with hard negatives) and the symmetric CLIP loss.

Equation (row ``i`` of the local batch, ``s(a, b) = <a, b> / T`` on L2-normalised rows)::

    info_nce_i = -s(q_i, k_i) + log( sum_{j in K_i} exp s(q_i, k_j) + sum_{n in H} exp s(q_i, n) )

``K_i``: all keys of the global batch (gathered along ``axis_name``) that are valid and do not
share the anchor's ``sample_ids`` entry (except its own positive ``k_i``). ``H``: the hard
negatives of every valid row of the global batch (``negatives`` ``[B, M, D]``, gathered like the
keys, so each anchor sees ``B_global * M`` of them, as in sentence-transformers' MNRL) and/or
shared negatives (``negatives`` ``[M, D]``, identical on every device, added once). With
``group_ids`` (MCL, Zhang et al. ECCV 2024, arXiv 2402.11816) ``K_i`` and ``H`` keep only rows
of the anchor's group (a pseudo-cluster), so all negatives share the anchor's cluster.

References:
  van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
  arXiv 1807.03748 (InfoNCE). Henderson et al., "Efficient Natural Language Response
  Suggestion for Smart Reply", arXiv 1705.00652 (multiple negatives ranking). Radford et al.,
  "Learning Transferable Visual Models From Natural Language Supervision", arXiv 2103.00020 (CLIP).

Distributed semantics: inside ``shard_map`` each device passes its local rows; keys, their
ids/validity and the per-row hard negatives are all-gathered (gradients flow back through the
gather's transpose, ``psum_scatter``); queries and the returned per-example losses stay local.
``mean`` over the global batch of the returned values is the single-device loss.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> q = jax.random.normal(jax.random.key(0), (8, 16))
  >>> k = q + 0.1 * jax.random.normal(jax.random.key(1), (8, 16))
  >>> jaxcl.losses.info_nce(q, k, temperature=0.1).shape
  (8,)
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


def info_nce(query, key, *, temperature=0.1, negatives=None, axis_name=None, normalize=True,
             sample_ids=None, valid=None, impl="dense", block_size=1024, group_ids=None,
             precision=None):
  """One-direction InfoNCE; row ``i``'s positive is ``key[i]``. Returns ``[B_local]``.

  Args:
    query: ``[B, D]`` anchors.
    key: ``[B, D]`` positives; every other global key is a negative.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    negatives: optional ``[B, M, D]`` per-row hard negatives (gathered, seen by all anchors)
      or ``[M, D]`` shared negatives.
    axis_name: mesh axis name(s) for global negatives inside ``shard_map``.
    normalize: L2-normalise ``query``, ``key`` and ``negatives`` first.
    sample_ids: ``[B]`` ints; keys with the anchor's id (other than its positive) are not
      negatives. Ids do not apply to hard negatives.
    valid: ``[B]`` bool; padded rows give loss 0 and are nobody's candidate (their key and
      their hard negatives are dropped).
    impl, block_size: kernel implementation (see :func:`jaxcl.kernels.contrastive_lse`).
    group_ids: ``[B]`` ints; keys (and per-row hard negatives) of other groups are not
      negatives (MCL). Not combinable with shared ``[M, D]`` negatives (they have no group).
    precision: ``precision`` of the one similarity product (``None``: JAX's default, bfloat16
      operands on TPU; ``"highest"``: float32). The positive logit is taken from the same
      product as the candidates, so the value stays >= 0 at any precision.

  Recommendations: ``temperature=0.05`` with one mined hard negative per row is the
  Multiple-Negatives-Ranking loss; use ``sample_ids`` when the same item can appear twice in a
  global batch (duplicate captions, several crops of one image).
  """
  fn = "info_nce"
  query, key = c.paired(fn, "query", query, "key", key, temperature)
  c.check_precision(precision, fn)
  b = query.shape[0]
  valid = c.valid_mask(valid, b, fn)
  ids = c.sample_ids_array(sample_ids, b, fn)
  groups = c.group_ids_array(group_ids, b, fn)
  scale = c.inv_temperature(temperature)
  q = c.prepare(query, normalize)
  k = c.prepare(key, normalize)

  q_tags = c.row_tags(b, axis_name, view=0, valid=valid, sample_ids=ids, group_ids=groups)
  k_tags = c.row_tags(b, axis_name, view=1, valid=valid, sample_ids=ids, group_ids=groups)
  if ids is not None:
    k_tags["is_key"] = jnp.ones((b,), bool)
  keys = k
  extra = None
  if negatives is not None:
    c.check_float("negatives", negatives, fn)
    negatives = jnp.asarray(negatives)
    if negatives.ndim == 3:
      c.check_same("query", query, "negatives", negatives, 0, fn, "batch size")
      c.check_same("query", query, "negatives", negatives, 1, fn, "feature size", axis_b=2)
      m = negatives.shape[1]
      n = c.prepare(negatives, normalize).reshape(b * m, -1)
      keys = jnp.concatenate([k, n], axis=0)
      n_tags = {
          "sample": jnp.full((b * m,), -1, jnp.int32),
          "view": jnp.full((b * m,), 2, jnp.int32),
          "valid": jnp.repeat(valid, m),
      }
      if ids is not None:
        n_tags["id"] = jnp.zeros((b * m,), jnp.int32)
        n_tags["is_key"] = jnp.zeros((b * m,), bool)
      if groups is not None:
        n_tags["group"] = jnp.repeat(groups, m)
      k_tags = c.concat_tags(k_tags, n_tags)
    elif negatives.ndim == 2:
      if groups is not None:
        raise ValueError(f"{fn}: 'group_ids' cannot restrict shared [M, D] 'negatives' (they "
                         "belong to no group); pass per-row [B, M, D] negatives instead")
      c.check_same("query", query, "negatives", negatives, 1, fn, "feature size")
      extra = logits(q, c.prepare(negatives, normalize), scale, precision)
    else:
      raise ValueError(f"{fn}: 'negatives' must have rank 3 [B, M, D] or rank 2 [M, D], "
                       f"got shape {tuple(negatives.shape)}")

  # The positive logit s(q_i, k_i) is an entry of the same product as the candidates (the
  # kernel's positive sum), not a separate float32 dot: at bfloat16 / TF32 precision the two
  # would differ and the loss could go negative.
  res = contrastive_lse(q, keys, scale, q_tags=q_tags, k_tags=k_tags,
                        mask_fn=c.candidate_mask(exclude_self=False), pos_fn=_own_key,
                        extra_logits=extra, axis_name=axis_name, impl=impl,
                        block_size=block_size, precision=precision)
  return c.finalize(res.lse - res.pos_sum, valid & jnp.isfinite(res.lse))


def _own_key(qt, kt):
  """Query ``i``'s positive: key ``i`` (view 1; hard negatives are view 2)."""
  return (qt["sample"] == kt["sample"]) & (kt["view"] == 1)


def clip_loss(a, b, *, temperature=0.07, axis_name=None, normalize=True, sample_ids=None,
              valid=None, impl="dense", block_size=1024, group_ids=None, precision=None):
  """Symmetric CLIP loss: per pair ``i``, ``(info_nce(a, b)_i + info_nce(b, a)_i) / 2``.

  The mean over the global batch equals the CLIP objective
  ``(CE(logits, I) + CE(logits.T, I)) / 2`` with ``logits = a @ b.T / T`` over the global
  batch. ``temperature`` may be a traced scalar, e.g. ``jnp.exp(-log_scale)`` for CLIP's
  learnable logit scale (clamp the scale at 100 as CLIP does, in the caller).

  Example:
    >>> import jax, jaxcl
    >>> a = jax.random.normal(jax.random.key(0), (4, 8))
    >>> jaxcl.losses.clip_loss(a, a).shape
    (4,)
  """
  fn = "clip_loss"
  a, b = c.paired(fn, "a", a, "b", b, temperature)
  c.check_precision(precision, fn)
  kw = dict(temperature=temperature, axis_name=axis_name, normalize=normalize,
            sample_ids=sample_ids, valid=valid, impl=impl, block_size=block_size,
            group_ids=group_ids, precision=precision)
  return 0.5 * (info_nce(a, b, **kw) + info_nce(b, a, **kw))
