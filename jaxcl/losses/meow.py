"""MEOW's cluster-weighted InfoNCE and ProtoNCE; AdaMEOW's learned-weight InfoNCE.

Yu & Li, "Heterogeneous Graph Contrastive Learning with Meta-path Contexts and Weighted
Negative Samples", SDM 2023, arXiv 2212.13847 (MEOW); Yu, Ge, Li, Zhou, "... and Adaptively
Weighted Negative Samples", TKDE 2024 (AdaMEOW); code jianxiangyu/MEOW (``code/module/
contrast.py`` ``InfoNce`` / ``ProtoNCE``, ``code_adameow/module/adameow.py`` ``weight_InfoNce``).
Rows are L2-normalised (``normalize=True``), ``s(a, b) = <a, b> / T``.

**MEOW weighted InfoNCE** (:func:`meow_info_nce`). ``clusters [N, T]``: the assignments of every
node under ``T`` clusterings (k-means with ``K_1 .. K_T`` clusters). Weights
``w_ij = T - #{t : c_t(i) = c_t(j)}`` in ``{0, .., T}`` (the positive ``j = i`` has ``w = 0``)::

    meow_i = -s(a_i, p_i) + log sum_j w_ij exp s(a_i, p_j)

over all ``N`` nodes (anchor = coarse view, candidates = fine view in MEOW). An integer weight
is a sum of level sets, ``w_ij = sum_{m=1..T} 1[#co(i, j) <= T - m]``, so the weighted sum is
``T`` masked sums, each a tag mask of the one kernel (:func:`jaxcl.kernels.contrastive_lse`,
cluster ids as key tags): ``log sum_j w_ij e^s = logsumexp_m lse_m``. Memory stays that of the
kernel (``impl="blockwise"``: ``O(N (D + block))``); inside ``shard_map`` the candidates and
their cluster tags are gathered, the global mean equals the single-device loss. A row whose
every candidate has weight 0 has no denominator: loss 0 (and gradient 0).

**ProtoNCE** (:func:`proto_nce`, PCL, Li et al. arXiv 2005.04966, as in MEOW) for one
clustering with L2-normalised centroids ``mu_k`` and concentrations ``phi_k``::

    proto_i = -<z_i, mu_{c(i)}> / phi_{c(i)} + log sum_k exp(<z_i, mu_k> / phi_k)

through the kernel with keys ``mu_k / phi_k`` at scale 1 (the centroids are replicated: no
gather). MEOW averages it over the ``T`` clusterings and adds ``lambda_proto`` times it. The
code's denominator multiplies by ``N`` instead of ``K`` (a constant, no gradient): not copied.
:func:`concentration` is PCL's ``phi_k = mean_{i in k} ||z_i - mu_k|| / log(n_k + 5)``
(singletons get the largest phi), clipped to its 10-90 percentile range and rescaled to mean
``T``; computed on detached embeddings.

**AdaMEOW** (:func:`adameow_info_nce`): learned weights ``w_ij = sigmoid(MLP(a_i + c_j))``
(Linear(D, 16), tanh, Linear(16, 1)) on every pair, the positive included with weight ``w_ii``::

    ada_i = -s(a_i, c_i) + log sum_j w_ij exp s(a_i, c_j)           (normalize_weights=None)

Anchor = fine view, contrast = coarse view (the code). Trained jointly on the same loss, the
weights have a degenerate direction: ``w -> 0`` lowers every denominator (the loss goes to
``-inf`` as ``log w_ij``; methods.md's caveat, and the released code has no constraint).
``normalize_weights="mean"`` divides each row's weights by their mean over the candidates
(``sum_j w_ij = N``: only the *relative* weights can be learned, plain InfoNCE at uniform
weights), ``"sum"`` by their sum (the same up to the constant ``log N``). A per-pair MLP is not
a tag mask, so this loss forms ``[block, N]`` logit rows (the kernel's :func:`logits` product
and :func:`masked_logsumexp`), in row blocks of ``block_size`` (``lax.map``): memory
``O(block * N * hidden)``.

Example:
  >>> import jax, jaxcl
  >>> a = jax.random.normal(jax.random.key(0), (6, 4))
  >>> clusters = jax.numpy.array([[0, 0], [0, 1], [1, 1], [1, 2], [2, 2], [2, 0]])
  >>> jaxcl.losses.contrib.meow_info_nce(a, a + 0.1, clusters).shape
  (6,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.kernels.lse import masked_logsumexp
from jaxcl.losses import _common as c

WEIGHT_NORMS = (None, "mean", "sum")


def _clusters(clusters, n, fn):
  clusters = jnp.asarray(clusters)
  if clusters.ndim == 1:
    clusters = clusters[:, None]
  if clusters.ndim != 2 or clusters.shape[0] != n or clusters.shape[1] < 1:
    raise ValueError(f"{fn}: 'clusters' must have shape ({n}, T) with T >= 1 clusterings, got "
                     f"{tuple(clusters.shape)}")
  if not jnp.issubdtype(clusters.dtype, jnp.integer):
    raise TypeError(f"{fn}: 'clusters' must be integer cluster ids, got dtype {clusters.dtype}")
  return clusters.astype(jnp.int32)


def _co_count(qt, kt, num):
  return sum((qt[f"c{t}"] == kt[f"c{t}"]).astype(jnp.int32) for t in range(num))


def meow_info_nce(anchor, positive, clusters, *, temperature=0.4, valid=None, axis_name=None,
                  normalize=True, impl="auto", block_size=1024):
  """MEOW's cluster-weighted full-node InfoNCE (module docstring); returns ``[N_local]``.

  Args:
    anchor: ``[N, D]`` anchors (MEOW: the coarse view's projections).
    positive: ``[N, D]`` row ``i`` is anchor ``i``'s positive; all rows are weighted
      candidates (MEOW: the fine view).
    clusters: ``[N, T]`` (or ``[N]``) integer cluster ids of the node rows under ``T``
      clusterings; ``w_ij = T - #co-clusterings``.
    temperature: ``T`` (MEOW: 0.4 on ACM, 0.9 on DBLP / AMiner).
    valid: ``[N]`` bool; invalid rows are neither anchors nor candidates.
    axis_name, normalize, impl, block_size: as :func:`jaxcl.losses.info_nce`.
  """
  fn = "meow_info_nce"
  anchor, positive = c.paired(fn, "anchor", anchor, "positive", positive, temperature)
  n = anchor.shape[0]
  clusters = _clusters(clusters, n, fn)
  num = clusters.shape[1]
  valid = c.valid_mask(valid, n, fn)
  scale = c.inv_temperature(temperature)
  a, p = c.prepare(anchor, normalize), c.prepare(positive, normalize)
  ctags = {f"c{t}": clusters[:, t] for t in range(num)}
  q_tags = c.row_tags(n, axis_name, view=0, valid=valid, **ctags)
  k_tags = c.row_tags(n, axis_name, view=1, valid=valid, **ctags)
  lses = []
  for m in range(1, num + 1):
    mask = lambda qt, kt, m=m: kt["valid"] & (_co_count(qt, kt, num) <= num - m)
    lses.append(contrastive_lse(a, p, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=mask,
                                axis_name=axis_name, impl=impl, block_size=block_size).lse)
  lse = jax.nn.logsumexp(jnp.stack(lses), axis=0) if num > 1 else lses[0]
  lse_safe = jnp.where(jnp.isfinite(lse), lse, 0.0)
  pos = jnp.sum(a * p, axis=-1) * scale
  return c.finalize(lse_safe - pos, valid & jnp.isfinite(lse))


def concentration(z, centroids, assignments, *, temperature=0.4, num_clusters=None):
  """PCL / MEOW per-cluster concentration ``phi [K]`` (module docstring), no gradient.

  Args:
    z: ``[N, D]`` embeddings (normalised here, as the clustered rows).
    centroids: ``[K, D]`` centroids (normalised here).
    assignments: ``[N]`` int cluster of each row (``-1`` = ignored).
    temperature: the mean of the returned ``phi``.
  """
  fn = "concentration"
  c.check_temperature(temperature, fn)
  z = c.l2_normalize(jax.lax.stop_gradient(c.embeddings("z", z, fn)))
  mu = c.l2_normalize(jax.lax.stop_gradient(
      c.embeddings("centroids", centroids, fn, what="[k, dim]")))
  c.check_same("z", z, "centroids", mu, 1, fn, "feature size")
  assignments = c.labels_array(assignments, z.shape[0], fn, "assignments")
  k = mu.shape[0]
  ok = assignments >= 0
  idx = jnp.where(ok, assignments, 0)
  dist = jnp.linalg.norm(z - mu[idx], axis=-1) * ok
  counts = jax.ops.segment_sum(ok.astype(jnp.float32), idx, num_segments=k)
  sums = jax.ops.segment_sum(dist, idx, num_segments=k)
  phi = sums / jnp.maximum(counts, 1.0) / jnp.log(counts + 5.0)
  big = counts > 1
  dmax = jnp.max(jnp.where(big, phi, -jnp.inf))
  dmax = jnp.where(jnp.isfinite(dmax), dmax, 1.0)
  phi = jnp.where(big, phi, dmax)
  lo, hi = jnp.percentile(phi, 10.0), jnp.percentile(phi, 90.0)
  phi = jnp.clip(phi, lo, hi)
  return jnp.asarray(temperature, jnp.float32) * phi / jnp.maximum(jnp.mean(phi), 1e-12)


def proto_nce(z, centroids, assignments, concentrations, *, valid=None, normalize=True,
              impl="dense"):
  """ProtoNCE for one clustering (module docstring); returns ``[N_local]``.

  Args:
    z: ``[N, D]`` anchors (MEOW: the coarse view).
    centroids: ``[K, D]`` prototypes (L2-normalised here), replicated across devices.
    assignments: ``[N]`` int, each row's prototype (``-1`` rows: loss 0).
    concentrations: ``[K]`` positive per-prototype temperatures ``phi_k``.
    valid, normalize, impl: as :func:`meow_info_nce` (no ``axis_name``: nothing to gather).
  """
  fn = "proto_nce"
  z = c.embeddings("z", z, fn)
  centroids = c.embeddings("centroids", centroids, fn, what="[k, dim]")
  c.check_same("z", z, "centroids", centroids, 1, fn, "feature size")
  n, k = z.shape[0], centroids.shape[0]
  assignments = c.labels_array(assignments, n, fn, "assignments")
  phi = jnp.asarray(concentrations, jnp.float32)
  if phi.shape != (k,):
    raise ValueError(f"{fn}: 'concentrations' must have shape ({k},), got {tuple(phi.shape)}")
  if not isinstance(phi, jax.core.Tracer):
    c.check_positive("concentrations", phi, fn)
  valid = c.valid_mask(valid, n, fn) & (assignments >= 0) & (assignments < k)
  u = c.prepare(z, normalize)
  keys = c.l2_normalize(centroids) / phi[:, None]
  lse = contrastive_lse(u, keys, 1.0, impl=impl).lse
  pos = jnp.sum(u * keys[jnp.clip(assignments, 0, k - 1)], axis=-1)
  return c.finalize(lse - pos, valid)


def init_weight_mlp(rng, dim, hidden=16):
  """AdaMEOW's weight MLP ``{"w1" [D, H], "b1" [H], "w2" [H], "b2" []}`` (PyTorch Linear's
  uniform init)."""
  k1, k2, k3, k4 = jax.random.split(rng, 4)
  u = lambda k, shape, fan: jax.random.uniform(k, shape, jnp.float32, -1, 1) / jnp.sqrt(fan)
  return {"w1": u(k1, (dim, hidden), dim), "b1": u(k2, (hidden,), dim),
          "w2": u(k3, (hidden,), hidden), "b2": u(k4, (), hidden)}


def weight_logits(mlp, a, b):
  """``MLP(a_i + b_j)`` ``[Na, Nb]`` (pre-sigmoid): ``tanh(a W1 + b W1 + b1) . w2 + b2``."""
  ha, hb = a @ mlp["w1"], b @ mlp["w1"]
  h = jnp.tanh(ha[:, None, :] + hb[None, :, :] + mlp["b1"])
  return h @ mlp["w2"] + mlp["b2"]


def adameow_info_nce(anchor, contrast, mlp, *, temperature=0.4, normalize_weights="mean",
                     valid=None, axis_name=None, normalize=True, block_size=256,
                     return_weights=False):
  """AdaMEOW's learned-weight InfoNCE (module docstring); returns ``[N_local]`` (and, with
  ``return_weights``, the mean raw weight ``sigmoid`` per row, ``[N_local]``: the collapse
  diagnostic).

  Args:
    anchor: ``[N, D]`` anchors (AdaMEOW: the fine view).
    contrast: ``[N, D]`` row ``i`` is the positive, every row a weighted candidate.
    mlp: the weight MLP (:func:`init_weight_mlp`); it receives gradients.
    temperature: ``T``.
    normalize_weights: ``None`` (the code: raw sigmoid weights, can collapse to 0),
      ``"mean"`` (each row's weights rescaled to mean 1) or ``"sum"`` (to sum 1).
    valid: ``[N]`` bool. axis_name: candidates gathered inside ``shard_map``.
    normalize: L2-normalise the rows first (the MLP sees the normalised rows).
    block_size: anchor rows per ``lax.map`` block.
  """
  fn = "adameow_info_nce"
  anchor, contrast = c.paired(fn, "anchor", anchor, "contrast", contrast, temperature)
  if normalize_weights not in WEIGHT_NORMS:
    raise ValueError(f"{fn}: 'normalize_weights' must be one of {WEIGHT_NORMS}, got "
                     f"{normalize_weights!r}")
  if not isinstance(mlp, dict) or set(mlp) != {"w1", "b1", "w2", "b2"}:
    raise ValueError(f"{fn}: 'mlp' must be a dict with keys w1, b1, w2, b2 (init_weight_mlp)")
  if mlp["w1"].shape[0] != anchor.shape[1]:
    raise ValueError(f"{fn}: 'mlp' w1 has {mlp['w1'].shape[0]} inputs, the embeddings "
                     f"{anchor.shape[1]} features")
  n = anchor.shape[0]
  valid = c.valid_mask(valid, n, fn)
  scale = c.inv_temperature(temperature)
  a, k = c.prepare(anchor, normalize), c.prepare(contrast, normalize)
  keys = collectives.all_gather(k, axis_name)
  kvalid = collectives.all_gather(valid, axis_name)
  count = jnp.maximum(jnp.sum(kvalid), 1).astype(jnp.float32)

  def rows(a_blk):
    s = logits(a_blk, keys, scale)
    logw = jax.nn.log_sigmoid(weight_logits(mlp, a_blk, keys))
    mask = jnp.broadcast_to(kvalid[None, :], s.shape)
    lse = masked_logsumexp(s + logw, mask)
    wmean = jnp.sum(jnp.exp(logw) * kvalid, axis=1) / count
    if normalize_weights is not None:
      norm = masked_logsumexp(logw, mask)
      lse = lse - norm + (jnp.log(count) if normalize_weights == "mean" else 0.0)
    return lse, wmean

  lse, wmean = jax.lax.map(rows, a[:, None, :], batch_size=min(block_size, n))
  lse, wmean = lse[:, 0], wmean[:, 0]
  pos = jnp.sum(a * k, axis=-1) * scale
  out = c.finalize(lse - pos, valid)
  return (out, wmean) if return_weights else out
