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

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


def info_nce(query: ArrayLike, key: ArrayLike, *, temperature: float | jax.Array = 0.1,
             negatives: ArrayLike | None = None, axis_name: str | tuple[str, ...] | None = None,
             normalize: bool = True, sample_ids: ArrayLike | None = None,
             valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
             group_ids: ArrayLike | None = None,
             precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """One-direction InfoNCE: row ``i`` of ``query`` is scored against its positive ``key[i]``.

  For each local row ``i``, with temperature ``T``::

      l_i  = -s_ii / T + log( sum_{j in K_i} exp(s_ij / T) + sum_{n in H} exp(s_in / T) )
      s_ij = <q_i, k_j> / (|q_i| |k_j|)        (normalize=False: s_ij = <q_i, k_j>)

  ``j`` runs over the keys of the global batch (every device along ``axis_name``). ``K_i``
  holds every valid key except those whose ``sample_ids`` entry equals the anchor's (its own
  key ``k_i`` always stays), and with ``group_ids`` only keys of the anchor's group. ``H`` is
  the set of hard negatives: with per-row ``negatives`` ``[B, M, D]`` the ``M`` negatives of
  every valid row of the global batch (each anchor sees ``B_global * M`` of them; with
  ``group_ids`` only its group's), with shared ``negatives`` ``[M, D]`` those ``M`` rows.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` for local row
  ``i`` (0 for a padded row, which is also nobody's candidate); the mean of the entries over
  the global batch is the InfoNCE loss (under padding, reduce with :func:`global_mean`). With
  ``temperature=0.05`` and one mined hard negative per row this is the multiple-negatives
  ranking loss; pass ``sample_ids`` when an item can occur twice in a global batch.

  Args:
    query: ``[B, D]`` anchors (any float dtype).
    key: ``[B, D]`` positives; ``key[i]`` is row ``i``'s positive, every other key of the
      global batch a negative.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar, which then
      gets its gradient).
    negatives: optional ``[B, M, D]`` per-row hard negatives (gathered, seen by all anchors)
      or ``[M, D]`` shared negatives (the same on every device).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; keys, ids, validity and per-row
      negatives are gathered along it, so the candidates are the global batch. ``None``:
      single device.
    normalize: L2-normalise ``query``, ``key`` and ``negatives`` first (cosine similarity).
    sample_ids: ``[B]`` ints; keys with the anchor's id (other than its positive) are not
      negatives. Ids do not apply to hard negatives.
    valid: ``[B]`` bool; padded rows give loss 0 and are nobody's candidate (their key and
      their hard negatives are dropped). ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`; ``"blockwise"`` / ``"ring"`` are reverse-mode
      only).
    block_size: key-block size of the blockwise / ring kernels.
    group_ids: ``[B]`` ints; keys (and per-row hard negatives) of other groups are not
      negatives (MCL). Not combinable with shared ``[M, D]`` negatives (they have no group).
    precision: ``precision`` of the one similarity product (``None``: JAX's default, bfloat16
      operands on TPU; ``"highest"``: float32). The positive logit is taken from the same
      product as the candidates, so the value stays >= 0 at any precision.

  Returns:
    ``[B_local]`` float32 per-example losses ``l_i`` (0 on padded rows).

  Example:
    With ``q = k = I_2`` and ``T = 1``: ``s_ii = 1``, ``s_ij = 0``, so each row is
    ``-1 + log(e^1 + e^0) = log(1 + e^-1) = 0.3133``. A shared hard negative ``n = [1, 0]``
    adds ``e^1`` to row 0 (``log(2 + e^-1) = 0.8620``) and ``e^0`` to row 1
    (``-1 + log(e + 2) = log(1 + 2/e) = 0.5514``). With row 1 padded, row 0's only candidate
    is its own key: ``-1 + log e^1 = 0``.

    >>> import jax.numpy as jnp, jaxcl
    >>> q = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.info_nce(q, q, temperature=1.0)]
    [0.3133, 0.3133]
    >>> n = jnp.array([[1.0, 0.0]])
    >>> [round(float(x), 4) for x in jaxcl.losses.info_nce(q, q, temperature=1.0, negatives=n)]
    [0.862, 0.5514]
    >>> v = jnp.array([True, False])
    >>> [round(float(x), 4) for x in jaxcl.losses.info_nce(q, q, temperature=1.0, valid=v)]
    [0.0, 0.0]
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


def clip_loss(a: ArrayLike, b: ArrayLike, *, temperature: float | jax.Array = 0.07,
              axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
              sample_ids: ArrayLike | None = None, valid: ArrayLike | None = None,
              impl: str = "dense", block_size: int = 1024, group_ids: ArrayLike | None = None,
              precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """Symmetric CLIP loss: the mean of InfoNCE from ``a`` to ``b`` and from ``b`` to ``a``.

  For each local pair ``i``, with temperature ``T``::

      l_i  = ( info_nce(a, b)_i + info_nce(b, a)_i ) / 2
           = -s_ii / T + ( log sum_j exp(s_ij / T) + log sum_j exp(s_ji / T) ) / 2
      s_ij = <a_i, b_j> / (|a_i| |b_j|)        (normalize=False: s_ij = <a_i, b_j>)

  ``j`` runs over the valid pairs of the global batch (every device along ``axis_name``),
  minus other pairs sharing the anchor's ``sample_ids`` entry and, with ``group_ids``, pairs
  of other groups (the masking rules of :func:`info_nce`, applied in both directions).

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i`` for local pair
  ``i`` (0 for a padded pair); the mean over the global batch is the CLIP objective
  ``(CE(logits, I) + CE(logits.T, I)) / 2`` with ``logits = a @ b.T / T`` over the global
  batch (under padding, reduce with :func:`global_mean`). ``temperature`` may be traced, e.g.
  ``jnp.exp(-log_scale)`` for CLIP's learnable logit scale (clamp the scale at 100 as CLIP
  does, in the caller).

  Args:
    a: ``[B, D]`` embeddings of the first tower (e.g. images).
    b: ``[B, D]`` embeddings of the second tower (e.g. texts); ``(a[i], b[i])`` is pair ``i``.
    temperature: softmax temperature ``T`` (Python float > 0 or traced scalar).
    axis_name: mesh axis name(s) inside ``jax.shard_map``: both directions' candidates are
      the global batch. ``None``: single device.
    normalize: L2-normalise ``a`` and ``b`` first (cosine similarity).
    sample_ids: ``[B]`` ints; other pairs with the anchor's id are not negatives (duplicate
      captions or images).
    valid: ``[B]`` bool; padded pairs give loss 0 and are nobody's candidate.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    group_ids: ``[B]`` ints; negatives only from the anchor's group (MCL).
    precision: ``precision`` of the similarity product (as in :func:`info_nce`).

  Returns:
    ``[B_local]`` float32 per-pair losses ``l_i`` (0 on padded pairs).

  Example:
    With ``a = b = I_2`` and ``T = 1`` both directions give ``-1 + log(e^1 + e^0)``, so
    each pair is ``log(1 + e^-1) = 0.3133``:

    >>> import jax.numpy as jnp, jaxcl
    >>> a = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.clip_loss(a, a, temperature=1.0)]
    [0.3133, 0.3133]
  """
  fn = "clip_loss"
  a, b = c.paired(fn, "a", a, "b", b, temperature)
  c.check_precision(precision, fn)
  kw = dict(temperature=temperature, axis_name=axis_name, normalize=normalize,
            sample_ids=sample_ids, valid=valid, impl=impl, block_size=block_size,
            group_ids=group_ids, precision=precision)
  return 0.5 * (info_nce(a, b, **kw) + info_nce(b, a, **kw))
