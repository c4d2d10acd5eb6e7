"""CoDiEmb training losses: multi-positive IR InfoNCE and the order-aware STS losses.

IR (query ``q_i``, positives ``p_{i,1..P}``, hard negatives ``n_{i,1..N}``, ``s = <.,.> / T``)::

    l_{i,p} = -s(q_i, p_{i,p}) + log sum_{c in C_p} exp s(q_i, c)
    C_p     = {p_{j,p}, n_{j,m} : all j, m}
    L_IR    = (1/P) sum_p mean_i l_{i,p}          (T = 0.02; the query's other positives are
                                                   not in C_p; j over the global batch)

STS (cosine ``s_i = <a_i, b_i>`` of unit rows, gold ``y_i``)::

    L_STS = 2 (1 - Pearson(s, y)) + 0.5 PRO(s, y; T) + 5 RankKL(s, y; T),   T = 0.05
    PRO    = mean_k -log softmax([s_k maxD_k, s_j D_kj for y_j < y_k] / T)[0],  D_kj = y_k - y_j
             (k over rows with a strictly lower y somewhere)
    RankKL = (1/n) KL(q || softmax(s / T)),  q = softmax(((n-1-r)/(n-1)) / T)

with ``r`` the average-tie ranks of ``y`` (descending, 0-based; :func:`average_rank`, a
sort-based jit-able replacement of scipy ``rankdata``). The ``1/n`` is PyTorch's ``batchmean``
on a 1-D vector, kept as in the code. Pearson uses population moments and is 0 when ``y`` is
constant (the term is then 2 with zero gradient). PRO's per-position Python loop of the code is
a masked ``B x B`` log-sum-exp here (no sort needed: "later items with strictly lower y" are
all ``j`` with ``y_j < y_k``). :func:`soft_rank` (pairwise sigmoids) gives an optional
differentiable Spearman term ``spearman_weight * (1 - Pearson(soft_rank(s), rank(y)))``
(not in the reference; weight 0 by default).

Reference: Zhang et al., "CoDiEmb: A Collaborative yet Distinct Framework for Unified
Representation Learning in Information Retrieval and Semantic Textual Similarity",
arXiv 2508.11442; code TencentCloudADP/youtu-embedding ``training/CoDiEmb/train/loss.py``
(``_loss_ir`` ir_mode "all", ``PearsonCorrelationLoss``, ``PROLoss``, ``RankKLDivergenceLoss``)
and ``model.py`` (weights).

Distributed semantics: IR gathers positives and hard negatives with their tags (the one kernel,
:func:`jaxcl.kernels.contrastive_lse`), queries stay local, per-example ``[B_local]``. The STS
losses do not decompose: scores and gold values are all-gathered (with gradient) and the global
value is returned on every valid row (0 on padded rows), so the mean over the valid rows of the
global batch is the loss.

Example:
  >>> import jax, jaxcl
  >>> r = jax.random.split(jax.random.key(0), 3)
  >>> q = jax.random.normal(r[0], (4, 8))
  >>> pos, neg = jax.random.normal(r[1], (4, 3, 8)), jax.random.normal(r[2], (4, 8, 8))
  >>> jaxcl.losses.contrib.codiemb_ir(q, pos, neg).shape
  (4,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.kernels.lse import masked_logsumexp
from jaxcl.losses import _common as c


def codiemb_ir(query, positives, negatives=None, *, temperature=0.02, axis_name=None,
               normalize=True, valid=None, positive_valid=None, negative_valid=None,
               impl="dense", block_size=1024):
  """IR loss ``(1/P) sum_p l_{i,p}`` per query ``[B_local]`` (module docstring).

  Args:
    query: ``[B, D]``; positives: ``[B, P, D]``; negatives: optional ``[B, N, D]`` hard negatives.
    temperature: ``T`` (the code's default 0.02). valid: ``[B]`` bool (padded queries: loss 0,
      and their positives / negatives are nobody's candidates).
    positive_valid, negative_valid: optional ``[B, P]`` / ``[B, N]`` bool masks for queries
      with fewer positives / negatives (padding slots are nobody's candidates; a query's loss
      is the mean over its valid positive slots, 0 with none). The code has fixed P and N.
  """
  fn = "codiemb_ir"
  query = c.embeddings("query", query, fn)
  positives = c.embeddings("positives", positives, fn, 3, "[batch, positives, dim]")
  c.check_same("query", query, "positives", positives, 0, fn, "batch size")
  c.check_same("query", query, "positives", positives, 1, fn, "feature size", axis_b=2)
  c.check_temperature(temperature, fn)
  if negatives is not None:
    negatives = c.embeddings("negatives", negatives, fn, 3, "[batch, negatives, dim]")
    c.check_same("query", query, "negatives", negatives, 0, fn, "batch size")
    c.check_same("query", query, "negatives", negatives, 1, fn, "feature size", axis_b=2)
  b, p, _ = positives.shape
  valid = c.valid_mask(valid, b, fn)
  pv = _slot_mask(positive_valid, (b, p), "positive_valid", fn) & valid[:, None]
  scale = c.inv_temperature(temperature)
  q = c.prepare(query, normalize)
  pos = c.prepare(positives, normalize)
  sample = collectives.global_row_index(b, axis_name)
  keys = pos.reshape(b * p, -1)
  k_tags = {"slot": jnp.tile(jnp.arange(p, dtype=jnp.int32), b), "valid": pv.reshape(-1)}
  if negatives is not None:
    m = negatives.shape[1]
    nv = _slot_mask(negative_valid, (b, m), "negative_valid", fn) & valid[:, None]
    keys = jnp.concatenate([keys, c.prepare(negatives, normalize).reshape(b * m, -1)])
    k_tags = c.concat_tags(k_tags, {"slot": jnp.full((b * m,), -1, jnp.int32),
                                    "valid": nv.reshape(-1)})
  # one kernel call: the query repeated once per positive slot p, candidates = slot p or -1.
  qs = jnp.broadcast_to(q[:, None], (b, p, q.shape[-1])).reshape(b * p, -1)
  q_tags = {"slot": jnp.tile(jnp.arange(p, dtype=jnp.int32), b), "sample": jnp.repeat(sample, p)}
  mask_fn = lambda qt, kt: kt["valid"] & ((kt["slot"] == qt["slot"]) | (kt["slot"] < 0))
  res = contrastive_lse(qs, keys, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=mask_fn,
                        axis_name=axis_name, impl=impl, block_size=block_size)
  own = jnp.einsum("bd,bpd->bp", q, pos) * scale
  terms = jnp.where(pv, res.lse.reshape(b, p) - own, 0.0)
  npos = jnp.sum(pv, axis=1)
  per = jnp.sum(terms, axis=1) / jnp.maximum(npos, 1)
  return c.finalize(per, valid & (npos > 0))


def _slot_mask(mask, shape, name, fn):
  if mask is None:
    return jnp.ones(shape, bool)
  mask = jnp.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"{fn}: '{name}' must have shape {shape}, got {tuple(mask.shape)}")
  return mask.astype(bool)


def average_rank(x, valid=None, *, descending=False):
  """0-based ranks of ``x`` ``[n]`` with ties averaged (scipy ``rankdata(x) - 1``), by sorting.
  Rows outside ``valid`` are ranked after every valid row and get rank -1. No gradient."""
  x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  v = jnp.ones(x.shape, bool) if valid is None else jnp.asarray(valid, bool)
  key = jnp.where(v, -x if descending else x, jnp.inf)
  srt = jnp.sort(key)
  lo = jnp.searchsorted(srt, key, side="left", method="sort")
  hi = jnp.searchsorted(srt, key, side="right", method="sort") - 1
  return jnp.where(v, 0.5 * (lo + hi).astype(jnp.float32), -1.0)


def soft_rank(x, *, temperature=0.1, valid=None):
  """Differentiable 0-based ascending ranks ``r_i = sum_{j != i} sigmoid((x_i - x_j) / t)``;
  tends to :func:`average_rank` as ``t -> 0`` (ties -> 0.5 each). O(n^2)."""
  c.check_temperature(temperature, "soft_rank")
  x = jnp.asarray(x, jnp.float32)
  v = jnp.ones(x.shape, bool) if valid is None else jnp.asarray(valid, bool)
  pair = jax.nn.sigmoid((x[:, None] - x[None, :]) / temperature)
  keep = v[None, :] & ~jnp.eye(x.shape[0], dtype=bool)
  return jnp.where(v, jnp.sum(jnp.where(keep, pair, 0.0), axis=1), -1.0)


def _pearson(s, y, v):
  n = jnp.maximum(jnp.sum(v), 1.0)
  sc = jnp.where(v, s - jnp.sum(jnp.where(v, s, 0.0)) / n, 0.0)
  yc = jnp.where(v, y - jnp.sum(jnp.where(v, y, 0.0)) / n, 0.0)
  vs, vy = jnp.sum(sc * sc), jnp.sum(yc * yc)
  ok = (vy > 0) & (vs > 0)
  return jnp.where(ok, jnp.sum(sc * yc) * jax.lax.rsqrt(jnp.where(ok, vs * vy, 1.0)), 0.0)


def _pro(s, y, v, t):
  d = y[:, None] - y[None, :]                                     # D_kj
  lower = (d > 0) & v[:, None] & v[None, :]
  dmax = jnp.max(jnp.where(lower, d, 0.0), axis=1)
  first = s * dmax / t
  logit = s[None, :] * d / t
  allm = jnp.concatenate([jnp.ones_like(first, bool)[:, None], lower], axis=1)
  lse = masked_logsumexp(jnp.concatenate([first[:, None], logit], axis=1), allm)
  rows = jnp.any(lower, axis=1)
  return jnp.sum(jnp.where(rows, lse - first, 0.0)) / jnp.maximum(jnp.sum(rows), 1.0)


def _rank_kl(s, y, v, t):
  n = jnp.sum(v)
  r = average_rank(y, v, descending=True)
  tgt = jnp.where(v, (n - 1 - r) / jnp.maximum(n - 1, 1.0) / t, -jnp.inf)
  logq = jnp.where(v, jax.nn.log_softmax(tgt), 0.0)
  logp = jnp.where(v, jax.nn.log_softmax(jnp.where(v, s / t, -jnp.inf)), 0.0)
  kl = jnp.sum(jnp.where(v, jnp.exp(logq) * (logq - logp), 0.0))
  return kl / jnp.maximum(n, 1.0)


def codiemb_sts_terms(a, b, scores, *, temperature=0.05, rank_temperature=0.1, valid=None,
                      axis_name=None, normalize=True, spearman=True):
  """The STS terms over the global batch as a dict of float32 scalars: ``pearson``
  (``1 - Pearson``), ``pro``, ``rank_kl``, ``spearman`` (soft-rank ``1 - Pearson``).

  Args:
    a, b: ``[B, D]`` pair embeddings (cosine after normalisation); scores: ``[B]`` gold values.
    temperature: PRO / RankKL temperature (0.05). rank_temperature: :func:`soft_rank`'s ``t``.
  """
  fn = "codiemb_sts"
  a, b = c.paired(fn, "a", a, "b", b, temperature)
  c.check_temperature(rank_temperature, fn, "rank_temperature")
  c.check_float("scores", scores, fn)
  y = jnp.asarray(scores, jnp.float32)
  if y.shape != (a.shape[0],):
    raise ValueError(f"{fn}: 'scores' must have shape ({a.shape[0]},), got {tuple(y.shape)}")
  valid = c.valid_mask(valid, a.shape[0], fn)
  s = jnp.sum(c.prepare(a, normalize) * c.prepare(b, normalize), axis=-1)
  s, y, v = (collectives.all_gather(z, axis_name) for z in (s, y, valid))
  t = jnp.asarray(temperature, jnp.float32)
  out = {"pearson": 1.0 - _pearson(s, y, v), "pro": _pro(s, y, v, t),
         "rank_kl": _rank_kl(s, y, v, t)}
  if spearman:   # spearman=False skips it (a zero weight in codiemb_sts)
    soft = soft_rank(s, temperature=rank_temperature, valid=v)
    out["spearman"] = 1.0 - _pearson(soft, average_rank(y, v), v)
  return out


def _is_zero(w):
  return isinstance(w, (int, float)) and w == 0


def codiemb_sts(a, b, scores, *, temperature=0.05, pearson_weight=2.0, pro_weight=0.5,
                rank_kl_weight=5.0, spearman_weight=0.0, rank_temperature=0.1, valid=None,
                axis_name=None, normalize=True):
  """``L_STS`` (module docstring; the code's weights 2 / 0.5 / 5, Spearman term off) on every
  valid row ``[B_local]`` (0 on padded rows)."""
  c.check_temperature(temperature, "codiemb_sts")
  terms = codiemb_sts_terms(a, b, scores, temperature=temperature, valid=valid,
                            rank_temperature=rank_temperature, axis_name=axis_name,
                            normalize=normalize, spearman=not _is_zero(spearman_weight))
  total = (pearson_weight * terms["pearson"] + pro_weight * terms["pro"] +
           rank_kl_weight * terms["rank_kl"] + spearman_weight * terms.get("spearman", 0.0))
  valid = c.valid_mask(valid, jnp.shape(a)[0], "codiemb_sts")
  return jnp.where(valid, total, 0.0)
