"""CoDiEmb joint IR + STS training on multi-column text batches, and the naive one-InfoNCE baseline.

One batch ``z [B, M, D]`` (``M`` even; the ``M`` texts of a row encoded by one shared tower) mixes
two kinds of rows, told apart by ``task [B]`` (``0`` = IR, ``1`` = STS)::

    IR row  i: [query_i, positive_{i,1..P}, hard_negative_{i,1..M-1-P}]
    STS row i: S = M / 2 graded pairs [a_{i,1}, b_{i,1}, ..., a_{i,S}, b_{i,S}], gold scores[i, :S]

``form="codiemb"`` (Zhang et al., arXiv 2508.11442; code TencentCloudADP/youtu-embedding)::

    L_i = ir_weight  * codiemb_ir(query, positives, hard negatives; IR rows)_i       (IR row)
        + sts_weight * codiemb_sts(every pair of every STS row of the global batch)  (STS row)

:func:`~jaxcl.losses.contrib.codiemb_ir` (multi-positive InfoNCE, T = 0.02, in-batch and hard
negatives of the IR rows only) and :func:`~jaxcl.losses.contrib.codiemb_sts` (2 (1 - Pearson) + 0.5 PRO
+ 5 RankKL on the cosines, T = 0.05) are the code's losses; STS is one value over the global
batch, returned on every STS row. The mean over the global batch is therefore
``(n_IR / B) mean L_IR + (n_STS / B) L_STS``: the loss of a single-task batch (the code's
sampler) is that task's loss.

``form="info_nce"`` (the naive baseline: every text pair of the batch in one InfoNCE)::

    anchors (i, s), s < S:  IR row: (query_i, positive_{i,s}) for s < P;
                            STS row: (a_{i,s}, b_{i,s}) when scores[i, s] >= threshold
    l_{i,s} = -<u, v>/T + log( sum_{(j,t) valid, not (j = i, t != s)} e^{<u, v_{j,t}>/T}
                               + sum_{hard negatives n of IR rows} e^{<u, n>/T} )
    L_i     = mean over row i's valid anchors (0 without one; IR rows use their first
              min(P, S) positives)

i.e. the query's other positives (and the other pair of an STS row) are not its negatives;
everything else in the global batch is. Low-score STS pairs are not used (InfoNCE has no
place for a graded target), which is how one contrastive loss is usually applied to STS data.

Labels: the trainer hands an objective only ``z`` and integer ``labels``, so the task and the
STS scores ride in the labels: :func:`codiemb_labels` packs them (IR row: ``label >= 0``; STS
row: ``-1 - sum_k q_k L^k`` with ``q_k = round(score_k (L - 1))``, ``L = 2^(30 // S)`` levels
per score, scores in ``[0, 1]``) and :func:`codiemb_unpack_labels` inverts it (jit-able).

Example:
  >>> import jax, numpy as np, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (4, 4, 8))
  >>> task = np.array([0, 0, 1, 1]); scores = np.array([[0, 0], [0, 0], [.9, .1], [.5, .3]])
  >>> jaxcl.losses.contrib.codiemb_joint(z, task, scores, positives=2).shape
  (4,)
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c
from jaxcl.losses.codiemb import codiemb_ir, codiemb_sts

FORMS = ("codiemb", "info_nce")


def _levels(pairs):
  if not 1 <= pairs <= 30:
    raise ValueError(f"codiemb_labels: 'pairs' must be in [1, 30], got {pairs}")
  return 2 ** (30 // pairs)


def codiemb_labels(task, scores, pairs):
  """``int32 [B]`` labels carrying ``task [B]`` (0 IR / 1 STS) and ``scores [B, pairs]`` (STS
  rows; in ``[0, 1]``, quantised to ``1 / (L - 1)``, ``L = 2^(30 // pairs)``). NumPy."""
  task = np.asarray(task)
  scores = np.asarray(scores, np.float64).reshape(len(task), pairs)
  levels = _levels(pairs)
  sts = task == 1
  if np.any(~np.isin(task, (0, 1))):
    raise ValueError("codiemb_labels: 'task' must hold 0 (IR) or 1 (STS)")
  if np.any(sts[:, None] & ((scores < 0) | (scores > 1) | ~np.isfinite(scores))):
    raise ValueError("codiemb_labels: STS 'scores' must lie in [0, 1]")
  q = np.round(np.where(sts[:, None], scores, 0.0) * (levels - 1)).astype(np.int64)
  packed = (q * levels ** np.arange(pairs, dtype=np.int64)).sum(1)
  return np.where(sts, -1 - packed, 0).astype(np.int32)


def codiemb_unpack_labels(labels, pairs):
  """``(task int32 [B], scores float32 [B, pairs])`` from :func:`codiemb_labels`' labels."""
  labels = jnp.asarray(labels, jnp.int32)
  levels = _levels(pairs)
  u = jnp.where(labels < 0, -labels - 1, 0)
  q = jnp.stack([(u // levels ** k) % levels for k in range(pairs)], axis=1)
  return (labels < 0).astype(jnp.int32), q.astype(jnp.float32) / (levels - 1)


def codiemb_joint(z, task, scores, *, positives=1, form="codiemb", temperature=0.02,
                  sts_temperature=0.05, pearson_weight=2.0, pro_weight=0.5, rank_kl_weight=5.0,
                  spearman_weight=0.0, ir_weight=1.0, sts_weight=1.0, threshold=0.75,
                  valid=None, axis_name=None, normalize=True, impl="dense", block_size=1024):
  """Joint IR + STS loss per row ``[B_local]`` (module docstring).

  Args:
    z: ``[B, M, D]`` embeddings, ``M`` even (the row layouts above).
    task: ``[B]`` ints, 0 = IR row, 1 = STS row. scores: ``[B, M // 2]`` gold scores (STS rows).
    positives: ``P``, the IR row's positives (``1 <= P < M``; the rest are hard negatives).
    form: ``"codiemb"`` (IR + STS losses) or ``"info_nce"`` (the naive baseline).
    temperature: IR / InfoNCE ``T``; sts_temperature: PRO / RankKL ``T``; ``*_weight``: the
      STS terms (:func:`~jaxcl.losses.contrib.codiemb_sts`) and the two tasks.
    threshold: ``info_nce`` only: STS pairs with ``score >= threshold`` are positives.
    valid: ``[B]`` bool (padded rows: loss 0, nobody's candidate).
  """
  fn = "codiemb_joint"
  z = c.embeddings("z", z, fn, 3, "[batch, texts, dim]")
  b, m, _ = z.shape
  if form not in FORMS:
    raise ValueError(f"{fn}: 'form' must be one of {FORMS}, got {form!r}")
  if m < 2 or m % 2:
    raise ValueError(f"{fn}: 'z' needs an even number M >= 2 of texts per row, got {m}")
  p = c.as_int(positives)
  if p is None or not 1 <= p < m:
    raise ValueError(f"{fn}: 'positives' must be an int in [1, {m - 1}], got {positives!r}")
  c.check_temperature(temperature, fn)
  c.check_temperature(sts_temperature, fn, "sts_temperature")
  task = jnp.asarray(task)
  if task.shape != (b,):
    raise ValueError(f"{fn}: 'task' must have shape ({b},), got {tuple(task.shape)}")
  c.check_float("scores", scores, fn)
  scores = jnp.asarray(scores, jnp.float32)
  pairs = m // 2
  if scores.shape != (b, pairs):
    raise ValueError(f"{fn}: 'scores' must have shape ({b}, {pairs}), got "
                     f"{tuple(scores.shape)}")
  valid = c.valid_mask(valid, b, fn)
  ir, sts = valid & (task == 0), valid & (task == 1)
  if form == "info_nce":
    return _mixed_info_nce(z, ir, sts, scores, p, temperature, threshold, axis_name, normalize,
                           impl, block_size)
  negatives = z[:, p + 1:] if p + 1 < m else None
  l_ir = codiemb_ir(z[:, 0], z[:, 1:p + 1], negatives, temperature=temperature, valid=ir,
                    axis_name=axis_name, normalize=normalize, impl=impl, block_size=block_size)
  a, bb = z[:, 0::2].reshape(b * pairs, -1), z[:, 1::2].reshape(b * pairs, -1)
  l_sts = codiemb_sts(a, bb, scores.reshape(-1), temperature=sts_temperature,
                      pearson_weight=pearson_weight, pro_weight=pro_weight,
                      rank_kl_weight=rank_kl_weight, spearman_weight=spearman_weight,
                      valid=jnp.repeat(sts, pairs), axis_name=axis_name, normalize=normalize)
  l_sts = l_sts.reshape(b, pairs)[:, 0]  # the global value on every STS row
  return jnp.where(ir, ir_weight * l_ir, 0.0) + jnp.where(sts, sts_weight * l_sts, 0.0)


def _mixed_info_nce(z, ir, sts, scores, p, temperature, threshold, axis_name, normalize, impl,
                    block_size):
  b, m, _ = z.shape
  pairs = m // 2
  slot = jnp.arange(pairs)
  # anchors / keys per (row, slot): IR (query, positive_s), STS (a_s, b_s)
  ir_key = jnp.minimum(1 + slot, p)                       # slots >= P are invalid for IR rows
  u = jnp.where(ir[:, None, None], z[:, :1], z[:, 0::2])
  v = jnp.where(ir[:, None, None], z[:, ir_key], z[:, 1::2])
  ok = (ir[:, None] & (slot < p)[None]) | (sts[:, None] & (scores >= threshold))
  u = c.prepare(u.reshape(b * pairs, -1), normalize)
  v = c.prepare(v.reshape(b * pairs, -1), normalize)
  row = jnp.repeat(collectives.global_row_index(b, axis_name), pairs)
  slots = jnp.tile(slot.astype(jnp.int32), b)
  keys, k_tags = v, {"row": row, "slot": slots, "valid": ok.reshape(-1)}
  if p + 1 < m:
    n = m - 1 - p
    keys = jnp.concatenate([keys, c.prepare(z[:, p + 1:].reshape(b * n, -1), normalize)])
    k_tags = c.concat_tags(k_tags, {"row": jnp.full((b * n,), -1, row.dtype),
                                    "slot": jnp.full((b * n,), -1, jnp.int32),
                                    "valid": jnp.repeat(ir, n)})
  mask_fn = lambda qt, kt: kt["valid"] & ((kt["row"] != qt["row"]) | (kt["slot"] == qt["slot"]))
  scale = c.inv_temperature(temperature)
  res = contrastive_lse(u, keys, scale, q_tags={"row": row, "slot": slots}, k_tags=k_tags,
                        mask_fn=mask_fn, axis_name=axis_name, impl=impl, block_size=block_size)
  own = jnp.sum(u * v, axis=-1) * scale
  terms = jnp.where(ok.reshape(-1), res.lse - own, 0.0).reshape(b, pairs)
  count = jnp.sum(ok, axis=1)
  return c.finalize(jnp.sum(terms, axis=1) / jnp.maximum(count, 1), count > 0)
