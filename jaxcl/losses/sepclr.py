"""SepCLR: separating common from salient patterns (Louiset, Duchesnay, Grigis, Gori, ICLR 2024,
arXiv 2402.11928; reference code neurospin-projects/2024_rlouiset_sep_clr, ``losses.py`` and
``cifar_mnist/sep_clr_k-jem.py``).

Contrastive analysis: a *background* dataset X (e.g. healthy subjects) and a *target* dataset
Y (e.g. patients) share common factors; Y also has salient ones. Two encoders map an image to
a common code ``c`` and a salient code ``s``; ``features [B, 2, D]`` holds two augmented views
of each image with ``z = [c | s]`` split at ``common_dim``. With ``gamma = 1 / (2 T)``
(``T = 0.5`` in the reference, so ``gamma = 1``) the reference's primitives are::

    align(a, b)  = gamma mean_i ||a_i - b_i||^2
    unif(a)      = log mean_{i != j} exp(-gamma ||a_i - a_j||^2)          (= mean over i < j)
    kjem(c, s)   = mean_i log mean_j exp(-gamma ||c_i - c_j||^2 - gamma ||s_i - s_j||^2)
                   (j = i included: a Gaussian-KDE estimate of -H(c, s))

and, with ``c^v = normalize(c)`` (common codes on the sphere), ``s^v`` Euclidean (not
normalised) and ``s~^v = s^v`` for target rows, ``0`` (the information-less vector ``s'``)
for background rows, so background rows give ``s~`` no gradient::

    L_common   = align(c^1, c^2) + unif(c^1) + unif(c^2)                    (all rows)
    L_salient  = align(s^1_Y, s^2_Y) + unif(s~^1) + unif(s~^2)   (alignment over target rows)
    L_infoless = 1/2 [ align(0, s^1_X) + align(0, s^2_X) ]        (mean over background rows)
    L_MI       = 1/2 [ kjem(c^1, s~^1) + kjem(c^2, s~^2) ]     (max H(c, s): I(c; s) -> 0)
    L = L_common + 1000 L_salient + 1000 L_infoless + 10 L_MI

(the reference's weights ``salient_term_beta``, ``salient_reg_beta``, ``jem_lambda``; it writes
the uniformity pairs as ``2 * (unif^1 + unif^2) / 2``). The paper's framing: InfoMax of
``I(x; c) + I(y; c) + I(y; s)`` with background salient codes constrained to ``delta(s')`` and
``I(c; s) = 0``; no paper-vs-code difference is known and this is the code.

Background / target flag: ``labels`` are integers; a row is *background* when
``labels < background_classes`` and *target* otherwise (default 1: the reference's 0 =
background, 1 = target). A dataset may so keep other factors in its labels (the
``digits_grating`` proxy stores ``orientation + 4 (1 + digit)`` for targets and the
orientation for background images, with ``background_classes = 4``).

Per-example decomposition: ``sepclr`` returns ``[B_local]`` values whose mean over the valid
rows of the global batch is ``L``: alignment terms are per row (target-only / background-only
means are rescaled by ``n_valid / n_target`` / ``n_valid / n_background``), ``kjem`` is a mean
of per-row log-means, and the two uniformities (a log of a batch mean, which does not
decompose) are computed once over the global batch and added to every valid row. A term whose
rows are absent from the global batch (no target row, no background row) is 0 (the reference
returns NaN).

Every pairwise log-mean-exp goes through the shared kernel
(:func:`jaxcl.kernels.contrastive_lse`): ``-gamma ||u_i - u_j||^2 = 2 gamma <[u_i, 1],
[u_j, -||u_j||^2 / 2]> - gamma ||u_i||^2`` (rows centred on the global mean first, which
changes no distance and keeps the expansion's float32 cancellation error at
``~eps gamma ||u - mean||^2``), and ``kjem`` is the same row reduction on the concatenation
``u = [c | s~]`` (the product of the two Gaussian kernels is the kernel of the concatenation).
For L2-normalised rows :func:`sepclr_uniformity` equals :func:`jaxcl.metrics.uniformity` at
``t = gamma``.

Distributed semantics: inside ``jax.shard_map`` each device passes its local rows; keys, their
tags and the counts come from the global batch (:mod:`jaxcl.collectives`), so value and
gradient equal the single-device call on the full batch.

Trainer: ``config.loss.name = "sepclr"`` (``labels`` kind: ``z [B, 2, D]`` and the batch
labels), with ``config.model.towers = 2`` (two separate encoder + head towers on the same
input, ``z = [c | s]``, :class:`jaxcl.models.MultiTower`) and ``common_dim`` = the common
tower's head width. Recommendation: the reference's weights; ``mi_weight = 0`` is the ablation
without the k-JEM term.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.losses.contrib import sepclr
  >>> z = jax.random.normal(jax.random.key(0), (6, 2, 8))
  >>> y = jnp.array([0, 1, 0, 1, 1, 0])  # 0 = background, 1 = target
  >>> jax.jit(lambda z: sepclr(z, y, common_dim=4))(z).shape
  (6,)
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c
# The global log-mean-exp over rows (max-subtracted, psum'd), shared with BECLR's L_neg.
from jaxcl.losses.beclr import _global_log_mean_exp

TERMS = ("common", "salient", "infoless", "mi")


def _gamma(temperature, fn):
  c.check_temperature(temperature, fn)
  return 0.5 / jnp.asarray(temperature, jnp.float32)


def _count(mask, axis_name):
  return collectives.psum(jnp.sum(mask.astype(jnp.float32)), axis_name)


def _rbf_lse(u, gamma, valid, axis_name, *, include_self, impl, block_size):
  """``[B_local]``: ``log sum_j exp(-gamma ||u_i - u_j||^2)`` over the valid rows ``j`` of the
  global batch (``j = i`` included or not), through the shared kernel."""
  b = u.shape[0]
  u = u.astype(jnp.float32)
  n = jnp.maximum(_count(valid, axis_name), 1.0)
  mean = collectives.psum(jnp.sum(jnp.where(valid[:, None], u, 0.0), axis=0), axis_name) / n
  u = u - jax.lax.stop_gradient(mean)  # exact: distances do not depend on the origin
  sq = jnp.sum(u * u, axis=-1)
  q = jnp.concatenate([u, jnp.ones((b, 1), jnp.float32)], axis=1)
  k = jnp.concatenate([u, -0.5 * sq[:, None]], axis=1)
  tags = c.row_tags(b, axis_name, view=0, valid=valid)
  res = contrastive_lse(q, k, 2.0 * gamma, q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=not include_self),
                        axis_name=axis_name, impl=impl, block_size=block_size)
  return res.lse - gamma * sq


def sepclr_align(a, b, *, where=None, temperature=0.5, valid=None, axis_name=None):
  """``align(a, b) = gamma mean_{i in where} ||a_i - b_i||^2`` (the reference's ``align_loss``,
  ``alpha = 2``), no normalisation. ``[B_local]`` whose mean over the valid rows of the global
  batch is the term (rows outside ``where`` are 0, the others rescaled by ``n_valid / n_where``;
  all 0 when no row of the global batch is in ``where``)."""
  fn = "sepclr_align"
  a, b = c.paired(fn, "a", a, "b", b, temperature)
  gamma = _gamma(temperature, fn)
  valid = c.valid_mask(valid, a.shape[0], fn)
  if where is not None and jnp.shape(where) != (a.shape[0],):
    raise ValueError(f"{fn}: 'where' must have shape ({a.shape[0]},), got {jnp.shape(where)}")
  sel = valid if where is None else jnp.asarray(where).astype(bool) & valid
  d = gamma * jnp.sum((a.astype(jnp.float32) - b.astype(jnp.float32)) ** 2, axis=-1)
  n_sel = _count(sel, axis_name)
  scale = _count(valid, axis_name) / jnp.maximum(n_sel, 1.0)
  return jnp.where(sel, d * scale, 0.0)


def sepclr_uniformity(x, *, temperature=0.5, valid=None, axis_name=None, impl="dense",
                      block_size=1024):
  """``unif(x) = log mean_{i != j} exp(-gamma ||x_i - x_j||^2)`` over the valid rows of the
  global batch (the reference's ``uniform_loss``), Euclidean, no normalisation. It does not
  decompose over rows: the global value on every valid row (0 on padded rows, and 0 everywhere
  with fewer than two valid rows)."""
  fn = "sepclr_uniformity"
  x = c.embeddings("x", x, fn)
  gamma = _gamma(temperature, fn)
  valid = c.valid_mask(valid, x.shape[0], fn)
  lse = _rbf_lse(x, gamma, valid, axis_name, include_self=False, impl=impl,
                 block_size=block_size)
  n = _count(valid, axis_name)
  ok = valid & jnp.isfinite(lse)
  # mean_{i != j} = (1/n) sum_i exp(lse_i) / (n - 1).
  u = _global_log_mean_exp(lse, ok, axis_name) - jnp.log(jnp.maximum(n - 1.0, 1.0))
  return jnp.where(valid & (n >= 2), u, 0.0)


def sepclr_kjem(common, salient, *, temperature=0.5, valid=None, axis_name=None, impl="dense",
                block_size=1024):
  """``kjem(c, s) = mean_i log mean_j exp(-gamma ||c_i - c_j||^2 - gamma ||s_i - s_j||^2)``
  (the reference's ``joint_entropy_loss``; ``j`` over the valid rows of the global batch,
  ``j = i`` included) of ``common`` = ``c`` and ``salient`` = ``s``, no normalisation.
  ``[B_local]``: row ``i``'s log-mean (0 on padded rows)."""
  fn = "sepclr_kjem"
  common = c.embeddings("common", common, fn)
  salient = c.embeddings("salient", salient, fn)
  c.check_same("common", common, "salient", salient, 0, fn, "batch size")
  gamma = _gamma(temperature, fn)
  valid = c.valid_mask(valid, common.shape[0], fn)
  u = jnp.concatenate([common.astype(jnp.float32), salient.astype(jnp.float32)], axis=1)
  lse = _rbf_lse(u, gamma, valid, axis_name, include_self=True, impl=impl,
                 block_size=block_size)
  n = jnp.maximum(_count(valid, axis_name), 1.0)
  return jnp.where(valid, lse - jnp.log(n), 0.0)


def _split(features, labels, common_dim, background_classes, valid, fn):
  features = c.embeddings("features", features, fn, rank=3, what="[batch, views, dim]")
  b, v, d = features.shape
  if v != 2:
    raise ValueError(f"{fn}: 'features' must hold 2 views ([batch, 2, dim]), got shape "
                     f"{tuple(features.shape)}")
  cd = c.check_int(common_dim, 1, d - 1, message=f"{fn}: 'common_dim' must be an int in "
                   f"[1, {d - 1}] (features are [common | salient] of width {d})")
  bc = c.check_int(background_classes, 1, message=f"{fn}: 'background_classes' must be an int "
                   ">= 1 (labels below it are background rows)")
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  target = (labels >= bc) & valid
  background = (labels < bc) & valid
  return features, cd, valid, target, background


def sepclr_terms(features, labels, *, common_dim, background_classes=1, temperature=0.5,
                 valid=None, axis_name=None, impl="dense", block_size=1024):
  """The four SepCLR terms (module docstring), unweighted: ``{"common", "salient",
  "infoless", "mi"}``, each ``[B_local]`` with its mean over the valid rows of the global
  batch equal to the term."""
  fn = "sepclr"
  features, cd, valid, target, background = _split(features, labels, common_dim,
                                                   background_classes, valid, fn)
  c.check_temperature(temperature, fn)
  kw = dict(temperature=temperature, valid=valid, axis_name=axis_name)
  lse_kw = dict(kw, impl=impl, block_size=block_size)
  c1, c2 = (c.l2_normalize(features[:, v, :cd]) for v in (0, 1))
  s1, s2 = (features[:, v, cd:].astype(jnp.float32) for v in (0, 1))
  # s~: the background rows hard-coded to s' = 0 (no gradient reaches them through s~).
  st1, st2 = (jnp.where(target[:, None], s, 0.0) for s in (s1, s2))
  common = (sepclr_align(c1, c2, **kw) + sepclr_uniformity(c1, **lse_kw)
            + sepclr_uniformity(c2, **lse_kw))
  salient = (sepclr_align(s1, s2, where=target, **kw) + sepclr_uniformity(st1, **lse_kw)
             + sepclr_uniformity(st2, **lse_kw))
  zero = jnp.zeros_like(s1)
  infoless = 0.5 * (sepclr_align(zero, s1, where=background, **kw)
                    + sepclr_align(zero, s2, where=background, **kw))
  mi = 0.5 * (sepclr_kjem(c1, st1, **lse_kw) + sepclr_kjem(c2, st2, **lse_kw))
  return {"common": common, "salient": salient, "infoless": infoless, "mi": mi}


def sepclr(features, labels, *, common_dim, background_classes=1, salient_weight=1000.0,
           infoless_weight=1000.0, mi_weight=10.0, temperature=0.5, valid=None, axis_name=None,
           impl="dense", block_size=1024):
  """SepCLR's objective ``L_common + 1000 L_salient + 1000 L_infoless + 10 L_MI``. ``[B_local]``.

  Args:
    features: ``[B, 2, D]`` two views of ``z = [c | s]`` (any float dtype; float32 compute).
    labels: ``[B]`` ints; rows with ``labels < background_classes`` are background, the
      others target.
    common_dim: width of the common code ``c`` (the first ``common_dim`` columns).
    background_classes: labels below it are background (default 1: 0 = background).
    salient_weight, infoless_weight, mi_weight: the reference's 1000, 1000, 10 (``mi_weight =
      0``: the ablation without k-JEM).
    temperature: ``T`` of every term, ``gamma = 1 / (2 T)`` (reference 0.5).
    valid: ``[B]`` bool; padded rows get 0 and join no term.
    axis_name: mesh axis name(s); uniformity and k-JEM run over the global batch.
    impl, block_size: the kernel implementation (``"dense"``, ``"blockwise"``, ``"ring"``,
      ``"auto"``).

  Returns:
    ``[B_local]`` float32 whose mean over the valid rows of the global batch is ``L``.
  """
  fn = "sepclr"
  for name, w in (("salient_weight", salient_weight), ("infoless_weight", infoless_weight),
                  ("mi_weight", mi_weight)):
    if not isinstance(w, jax.core.Tracer) and not float(w) >= 0:
      raise ValueError(f"{fn}: '{name}' must be >= 0, got {w}")
  c.check_temperature(temperature, fn)
  t = sepclr_terms(features, labels, common_dim=common_dim,
                   background_classes=background_classes, temperature=temperature,
                   valid=valid, axis_name=axis_name, impl=impl, block_size=block_size)
  return (t["common"] + salient_weight * t["salient"] + infoless_weight * t["infoless"]
          + mi_weight * t["mi"])
