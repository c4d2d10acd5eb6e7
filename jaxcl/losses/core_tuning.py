"""Core-tuning: contrast-regularised fine-tuning (focal SupCon + hard-pair mixup + soft-label CE).

Zhang, Hooi, Hu, Liang, Feng, "Unleashing the Power of Contrastive Self-Supervised Visual Models
via Contrast-Regularized Fine-Tuning", NeurIPS 2021, arXiv 2102.06605. Reference code:
Vanint/Core-tuning, ``Core-tuning.py`` (``feature_mixup``, ``focal_SupConLoss``, ``train``);
the paper's formulas were not read (methods.md section 22), so the equations below restate the
released code with the intended-math fixes listed under "Paper vs code".

Inputs: backbone features ``F [B, D]`` of the (pretrained) encoder, integer labels ``y``, a
linear classifier ``W [C, D]`` (no bias) and a contrastive head ``g`` (reference:
``Linear(D, D) - ReLU - Linear(D, 256)``, then L2-normalised; :func:`init_contrast_head`,
:func:`contrast_head`). With one-hot ``e_y`` and ``Beta(alpha, alpha)`` draws
(:func:`core_tuning_pairs`)::

    hard negatives:  lam_i = max(Beta, lam_min),  o = random permutation of the batch
                     f~_i = (1 - lam_i) F_i + lam_i F_o(i),        y~_i = (1 - lam_i) e_y_i + lam_i e_y_o(i)
    hard positives:  n(i) = argmax_{j : y_j != y_i} cos(F_i, F_j)   (hardest negative)
                     p(i) = argmin_{j != i : y_j = y_i} cos(F_i, F_j)  (hardest positive; i if none)
                     f^_i = mu_i F_p(i) + (1 - mu_i) F_n(i),        y^_i = mu_i e_y_p(i) + (1 - mu_i) e_y_n(i)
    X = [F; f~; f^]  (3B rows),  Y* = [e_y; y~; y^]  (soft labels)

    L_ce  = 1/(3B) sum_r  -sum_c Y*_rc log softmax(X_r W.T)_c                ("boundary smoothing")
    z_r   = normalize(g(X_r)),  s_rk = z_r . z_k / T,  p_rk = exp s_rk / sum_{k' != r} exp s_rk'
    P(r)  = {k != r : Y*_k = Y*_r}   (equal soft labels: a mixture's positives are equal mixtures)
    L_r   = -1/|P(r)| sum_{k in P(r)} (1 - p_rk) log p_rk                    (focal SupCon)
    L_con = sum_r L_r / #{r : |P(r)| > 0}
    L     = L_ce + eta * L_con

``mixup=False`` drops the two mixture blocks (X = F); ``focal=False`` drops the focal weight
``(1 - p_rk)`` (plain SupCon). So ``eta=0, mixup=False`` is CE fine-tuning with the same
classifier and ``eta>0, mixup=False, focal=False`` is CE + SupCon: the baselines of the paper
run through the same function, head and parameters.

Paper vs code (``reproduce_code=False``, the default, is the intended math):
  * hardest positive: the reference takes ``argmin`` of ``cos * positive_mask`` over *all*
    columns, so the zeros of non-positives compete (with post-ReLU features every cosine is
    >= 0 and the zero wins: ``p(i)`` is often not a positive), then replaces an index of 0 by
    ``i``; here the arg-min runs over true positives only (``i`` when there is none). The hardest
    negative likewise: reference ``argmax(cos * negative_mask)``, here the arg-max over true
    negatives (``i`` when there is none);
  * normaliser: the reference averages each anchor's focal terms over all ``3B`` columns
    (``.mean(1)``), not over its ``|P(r)|`` positives as SupCon does; here ``1/|P(r)|``;
  * soft-label equality: the reference encodes ``Y*`` as ``sum_c Y*_c 10^c`` in float32 and
    label-encodes the values (``10^c`` overflows to ``inf`` for ``c >= 39``, ``0 * inf`` makes every
    row's code NaN and all rows merge into one label when ``C >= 39``; and a
    same-class mixture ``(1 - lam) e_y + lam e_y`` matches ``e_y`` only when float rounding
    happens to give exactly 1); here a row's label ``(1 - w) e_a + w e_b`` is keyed by
    ``(min(a, b), max(a, b), round(2^20 * weight of the larger class))`` with pure labels
    (``a = b`` or a weight that rounds to 0 / 1) keyed as their class, so equality is the soft
    labels' up to float rounding, for any ``C``. Equal mixtures are frequent: ``lam`` is clamped
    to exactly ``lam_min`` whenever the draw is below it (80% of rows for ``Beta(1, 1)``), so two
    hard-negative rows of the same ordered class pair are positives of each other (as in the
    reference);
  * detached originals: the reference builds ``X``'s first ``B`` rows from
    ``features.clone().detach()``, so the original rows train only the classifier and the head,
    and the backbone's gradient comes from the mixtures alone (methods.md does not list this);
    here every row is differentiable.
  ``reproduce_code=True`` restores all four quirks. The focal weight ``1 - p_rk`` is
  differentiated in both modes (the reference does not detach it); ``T = 0.07`` with the
  reference's ``T / T_base = 1``; ``lam`` is clamped as ``max(lam, 0.8)`` (the reference's
  ``if lam <= 0.8: lam = 0.8``) and ``mu`` is not clamped.

Per-example values: ``L_ce`` and the count of anchors with positives run over the *global*
batch, so the loss does not decompose into independent per-example terms. Sample ``i`` owns its
original row and its two mixture rows; the value returned for it is
``1/R sum_{rows r of i} ce_r + eta * N * sum_{rows r of i} L_r / #{r : |P(r)| > 0}``
(``R = 3``, or 1 without mixup; ``N`` the global batch), whose global mean is ``L``.

Distributed semantics (``axis_name``): everything runs over the global batch, so value and
gradient equal the single-device call on the full batch: the permutation ``o`` is drawn over the
global batch's valid rows and ``lam``, ``mu`` for every global row from the one ``rng`` (each
device takes its rows' draws); the hard pairs are mined over the gathered features (a local
``B x N`` cosine matrix, arg-max / arg-min only) and the mixtures are formed from gathered rows
(the gradient flows back to the device that owns each row); the focal SupCon term contrasts every
local row against the gathered ``3N`` rows. Its log-sum-exp is :func:`jaxcl.kernels.
contrastive_lse` (``impl=`` honoured); the focal weight needs every positive's ``p_rk`` on its
own, which the kernel does not return (only their sum), so with ``focal=True`` the positive
logits are formed densely against the gathered head outputs (``[3B_local, 3N]``, as Hydra's
per-positive terms); ``focal=False`` uses the kernel's positive sums only.

Padding (``valid``): padded rows are neither anchors, candidates, permutation partners nor
mined pairs; their value and gradient are 0.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> f = jax.nn.relu(jax.random.normal(jax.random.key(0), (8, 16)))
  >>> y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
  >>> w = jax.random.normal(jax.random.key(1), (3, 16)) / 4
  >>> g = jaxcl.losses.contrib.init_contrast_head(jax.random.key(2), 16, hidden=16, out=8)
  >>> head = lambda x: jaxcl.losses.contrib.contrast_head(g, x)
  >>> loss = jax.jit(lambda f: jaxcl.losses.contrib.core_tuning(f, y, w, head, rng=jax.random.key(3)))
  >>> loss(f).shape
  (8,)
"""
from __future__ import annotations

import functools
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c

KEY_LEVELS = 1 << 20   # soft-label weights are compared to 2^-20


def _check_unit(name, value, fn, lo, hi):
  if isinstance(value, jax.core.Tracer):
    return
  v = float(value)
  if not lo <= v <= hi:
    raise ValueError(f"{fn}: '{name}' must be in [{lo}, {hi}], got {value}")


def _permutation(rng, ok):
  """A uniformly random permutation of the valid rows (``[N]`` int32; invalid rows map to
  themselves): the r-th valid row in index order takes the r-th row of a random order."""
  n = ok.shape[0]
  order = jnp.argsort(jnp.where(ok, jax.random.uniform(rng, (n,)), 2.0)).astype(jnp.int32)
  rank = jnp.clip(jnp.cumsum(ok.astype(jnp.int32)) - 1, 0, n - 1)
  return jnp.where(ok, order[rank], jnp.arange(n, dtype=jnp.int32))


def core_tuning_pairs(features, labels, *, rng, alpha=1.0, lam_min=0.8, reproduce_code=False,
                      axis_name=None, valid=None):
  """Core-tuning's mixture rows of the local features (module docstring, steps 1-2).

  Args:
    features: ``[B, D]`` backbone features (any float dtype; mixed in float32).
    labels: ``[B]`` int labels.
    rng: PRNG key (the same on every device): the permutation, ``lam`` and ``mu``.
    alpha: ``Beta(alpha, alpha)`` of both mixing weights (reference 1).
    lam_min: the hard-negative weight is clamped to ``lam >= lam_min`` (reference 0.8).
    reproduce_code: mine the hard pairs as the reference code does (arg-min / arg-max of
      ``cos * mask`` over all columns, index 0 replaced by ``i``).
    axis_name: mesh axis name(s): permutation, draws and mining over the global batch.
    valid: ``[B]`` bool padding mask.

  Returns:
    ``(mixed [2, B, D] float32, a [2, B], b [2, B], w [2, B])``: block 0 the hard negatives,
    block 1 the hard positives; row ``r``'s soft label is ``(1 - w) e_a + w e_b``.
  """
  fn = "core_tuning_pairs"
  f = c.embeddings("features", features, fn)
  b = f.shape[0]
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  if rng is None:
    raise ValueError(f"{fn}: the mixtures are random and need an explicit 'rng' key")
  c.check_positive("alpha", alpha, fn)
  _check_unit("lam_min", lam_min, fn, 0.0, 1.0)
  f = f.astype(jnp.float32)
  f_all = collectives.all_gather(f, axis_name)
  y_all = collectives.all_gather(labels, axis_name)
  ok_all = collectives.all_gather(valid, axis_name)
  n = f_all.shape[0]
  gidx = collectives.global_row_index(b, axis_name)
  k_perm, k_mix = jax.random.split(rng)
  mine = lambda x: x[gidx]
  # lam and mu of every global row: Beta(alpha, alpha) = sigmoid(log G1 - log G2) with
  # G ~ Gamma(alpha) (one sampler for both, stable for small alpha); Beta(1, 1) = U(0, 1) (the
  # reference's alpha, and far cheaper to compile than the gamma sampler).
  if not isinstance(alpha, jax.core.Tracer) and float(alpha) == 1.0:
    lam_mu = jax.random.uniform(k_mix, (2, n), jnp.float32)
  else:
    log_g = jax.random.loggamma(k_mix, jnp.float32(alpha), (2, 2, n), jnp.float32)
    lam_mu = jax.nn.sigmoid(log_g[:, 0] - log_g[:, 1])

  # Hard negatives: mostly (>= lam_min) a random partner, the rest the anchor.
  partner = mine(_permutation(k_perm, ok_all))
  lam = jnp.maximum(mine(lam_mu[0]), lam_min)
  f_neg = (1.0 - lam)[:, None] * f + lam[:, None] * f_all[partner]

  # Hard pairs, mined on cosines over the global batch (no gradient through the choice).
  u = jax.lax.stop_gradient(c.l2_normalize(f))
  cos = logits(u, jax.lax.stop_gradient(c.l2_normalize(f_all)), 1.0)        # [B, N]
  cols = jnp.arange(n, dtype=jnp.int32)[None, :]
  same = labels[:, None] == y_all[None, :]
  not_self = cols != gidx[:, None]
  ok = ok_all[None, :]
  if reproduce_code:
    pos_m = jnp.where(same & not_self, cos, 0.0)
    neg_m = jnp.where(~same, cos, 0.0)
    hp = jnp.argmin(jnp.where(ok, pos_m, jnp.inf), axis=1).astype(jnp.int32)
    hp = jnp.where(hp == 0, gidx, hp)
    hn = jnp.argmax(jnp.where(ok, neg_m, -jnp.inf), axis=1).astype(jnp.int32)
  else:
    pos_mask, neg_mask = same & not_self & ok, ~same & ok
    hp = jnp.argmin(jnp.where(pos_mask, cos, jnp.inf), axis=1).astype(jnp.int32)
    hp = jnp.where(jnp.any(pos_mask, axis=1), hp, gidx)
    hn = jnp.argmax(jnp.where(neg_mask, cos, -jnp.inf), axis=1).astype(jnp.int32)
    hn = jnp.where(jnp.any(neg_mask, axis=1), hn, gidx)
  mu = mine(lam_mu[1])
  f_pos = mu[:, None] * f_all[hp] + (1.0 - mu)[:, None] * f_all[hn]

  mixed = jnp.stack([f_neg, f_pos])
  a = jnp.stack([labels, y_all[hn]])
  bb = jnp.stack([y_all[partner], y_all[hp]])
  w = jnp.stack([lam, mu])
  return mixed, a, bb, w


def _soft_label_key(a, b, w, num_classes, reproduce_code):
  """Integer tags whose equality is the equality of the soft labels ``(1 - w) e_a + w e_b``."""
  if reproduce_code:
    # The reference: the dense soft labels times 10^c in float32 (inf for c >= 39, and then
    # 0 * inf = NaN in every row, which the label encoder treats as one value), exact equality.
    with np.errstate(over="ignore"):
      p = jnp.asarray(np.array([10.0 ** k for k in range(num_classes)]).astype(np.float32))
    y = ((1.0 - w)[:, None] * jax.nn.one_hot(a, num_classes, dtype=jnp.float32)
         + w[:, None] * jax.nn.one_hot(b, num_classes, dtype=jnp.float32))
    v = jnp.sum(y * p, axis=1)
    v = jnp.where(jnp.isnan(v), jnp.float32(jnp.nan), v)
    return {"key": jax.lax.bitcast_convert_type(v, jnp.int32)}
  lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
  w_hi = jnp.where(b > a, w, 1.0 - w)
  q = jnp.round(w_hi * KEY_LEVELS).astype(jnp.int32)
  pure = (a == b) | (q <= 0) | (q >= KEY_LEVELS)
  cls = jnp.where(q >= KEY_LEVELS, hi, lo)
  return {"key_lo": jnp.where(pure, cls, lo), "key_hi": jnp.where(pure, cls, hi),
          "key_w": jnp.where(pure, 0, q)}


def core_tuning(features, labels, classifier, head=None, *, rng=None, eta=0.1,
                temperature=0.07, alpha=1.0, lam_min=0.8, mixup=True, focal=True,
                reproduce_code=False, axis_name=None, valid=None, impl="dense",
                block_size=1024):
  """Core-tuning loss (module docstring). Returns ``[B_local]`` float32.

  Args:
    features: ``[B, D]`` backbone features (any float dtype; computed in float32).
    labels: ``[B]`` int labels in ``[0, C)``.
    classifier: ``[C, D]`` float weights of the linear classifier (no bias).
    head: the contrastive head, ``[R, D] -> [R, P]`` (e.g. ``lambda x: contrast_head(params,
      x)``); ``None`` contrasts the features themselves. Its output is L2-normalised here.
    rng: PRNG key (required with ``mixup``), the same on every device.
    eta: weight of the focal SupCon term (reference README 0.1; 0 skips the term).
    temperature: ``T`` of the contrastive term (reference 0.07).
    alpha, lam_min: mixing weights (:func:`core_tuning_pairs`).
    mixup: add the hard-negative and hard-positive mixture rows.
    focal: weight each positive's log-probability by ``1 - p_rk`` (``False``: SupCon).
    reproduce_code: the reference code's quirks (module docstring).
    axis_name: mesh axis name(s) inside ``shard_map``.
    valid: ``[B]`` bool padding mask.
    impl, block_size: kernel implementation of the contrastive log-sum-exp.
  """
  fn = "core_tuning"
  f = c.embeddings("features", features, fn)
  b, d = f.shape
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  w_cls = c.embeddings("classifier", classifier, fn, what="[num_classes, dim]")
  if w_cls.shape[1] != d:
    raise ValueError(f"{fn}: 'classifier' must have shape [num_classes, {d}] (the feature size "
                     f"of 'features'), got {tuple(w_cls.shape)}")
  num_classes = w_cls.shape[0]
  if num_classes < 2:
    raise ValueError(f"{fn}: 'classifier' needs at least 2 classes, got {tuple(w_cls.shape)}")
  if head is not None and not callable(head):
    raise TypeError(f"{fn}: 'head' must be a callable [rows, dim] -> [rows, out] or None, got "
                    f"{type(head).__name__}")
  c.check_temperature(temperature, fn)
  if not isinstance(eta, jax.core.Tracer) and not float(eta) >= 0:
    raise ValueError(f"{fn}: 'eta' must be >= 0, got {eta}")
  if mixup and rng is None:
    raise ValueError(f"{fn}: mixup=True draws the mixtures at random and needs an explicit "
                     f"'rng' key")
  in_range = c.check_label_range(fn, labels, valid, num_classes,
                                 "the rows of 'classifier'")
  f = f.astype(jnp.float32)
  n_global = b * collectives.axis_size(axis_name)

  rows, a, bb, w = [jax.lax.stop_gradient(f) if reproduce_code else f], [labels], [labels], [
      jnp.zeros((b,), jnp.float32)]
  if mixup:
    mixed, ma, mb, mw = core_tuning_pairs(f, labels, rng=rng, alpha=alpha, lam_min=lam_min,
                                          reproduce_code=reproduce_code, axis_name=axis_name,
                                          valid=valid)
    rows += [mixed[0], mixed[1]]
    a += [ma[0], ma[1]]
    bb += [mb[0], mb[1]]
    w += [mw[0], mw[1]]
  r = len(rows)
  x = jnp.concatenate(rows)                          # [R*B, D], block-major
  a, bb, w = jnp.concatenate(a), jnp.concatenate(bb), jnp.concatenate(w)
  a_ok = jnp.clip(a, 0, num_classes - 1)
  b_ok = jnp.clip(bb, 0, num_classes - 1)
  row_ok = jnp.concatenate([valid] * r)

  # Boundary smoothing: soft-label cross-entropy of every row.
  lg = jnp.einsum("rd,cd->rc", x, w_cls.astype(jnp.float32),
                  preferred_element_type=jnp.float32)
  logp = jax.nn.log_softmax(lg, axis=-1)
  pick = lambda k: jnp.take_along_axis(logp, k[:, None], axis=-1)[:, 0]
  ce = -((1.0 - w) * pick(a_ok) + w * pick(b_ok))
  ce = jnp.where(row_ok, ce, 0.0)
  per_sample = jnp.sum(ce.reshape(r, b), axis=0) / r

  if isinstance(eta, jax.core.Tracer) or float(eta) != 0.0:
    z = x if head is None else head(x)
    z = c.embeddings("head(x)", z, fn, what="[rows, out]")
    if z.shape[0] != r * b:
      raise ValueError(f"{fn}: 'head' must keep the rows: {r * b} in, {z.shape[0]} out")
    z = c.l2_normalize(z)
    scale = c.inv_temperature(temperature)
    tags = c.concat_tags(*[c.row_tags(b, axis_name, view=k, valid=valid) for k in range(r)])
    tags.update(_soft_label_key(a_ok, b_ok, w, num_classes, reproduce_code))
    names = [k for k in tags if k.startswith("key")]
    candidate = c.candidate_mask(exclude_self=True)

    def positive(qt, kt):
      same = functools.reduce(operator.and_, [qt[k] == kt[k] for k in names])
      return candidate(qt, kt) & same

    res = contrastive_lse(z, z, scale, q_tags=tags, k_tags=tags, mask_fn=candidate,
                          pos_fn=None if focal else positive, axis_name=axis_name, impl=impl,
                          block_size=block_size)
    lse = res.lse
    has_cand = jnp.isfinite(lse)
    lse_safe = jnp.where(has_cand, lse, 0.0)
    if focal:
      z_all = collectives.all_gather(z, axis_name)
      kt = {k: collectives.all_gather(t, axis_name)[None, :] for k, t in tags.items()}
      qt = {k: t[:, None] for k, t in tags.items()}
      s = logits(z, z_all, scale)
      pos = jnp.broadcast_to(positive(qt, kt), s.shape)
      log_p = jnp.where(pos, s - lse_safe[:, None], 0.0)
      total = jnp.sum(jnp.where(pos, (1.0 - jnp.exp(log_p)) * log_p, 0.0), axis=1)
      npos = jnp.sum(pos, axis=1).astype(jnp.float32)
    else:
      npos = res.pos_count
      total = res.pos_sum - npos * lse_safe
    has = row_ok & has_cand & (npos > 0)
    denom = float(r * n_global) if reproduce_code else jnp.maximum(npos, 1.0)
    l_con = jnp.where(has, -total / denom, 0.0)
    count = collectives.psum(jnp.sum(has.astype(jnp.float32)), axis_name)
    con = jnp.sum(l_con.reshape(r, b), axis=0)
    per_sample = per_sample + jnp.asarray(eta, jnp.float32) * n_global * con / jnp.maximum(
        count, 1.0)
  return c.finalize(jnp.where(in_range, per_sample, jnp.nan), valid)


def init_contrast_head(rng, dim, *, hidden=0, out=256):
  """Parameters of the contrastive head ``g = Linear(dim, hidden) - ReLU - Linear(hidden,
  out)`` (reference: ``hidden = dim``, ``out = 256``; ``hidden=0`` means ``dim``), PyTorch's
  default ``U(+-1/sqrt(fan_in))`` initialisation."""
  fn = "init_contrast_head"
  hidden = int(hidden) or int(dim)
  for name, value in (("dim", dim), ("hidden", hidden), ("out", out)):
    if int(value) < 1:
      raise ValueError(f"{fn}: '{name}' must be >= 1, got {value}")
  k1, k2, k3, k4 = jax.random.split(rng, 4)
  uniform = lambda k, shape, fan_in: jax.random.uniform(
      k, shape, jnp.float32, -1.0, 1.0) / math.sqrt(fan_in)
  return {"w1": uniform(k1, (dim, hidden), dim), "b1": uniform(k2, (hidden,), dim),
          "w2": uniform(k3, (hidden, out), hidden), "b2": uniform(k4, (out,), hidden)}


def contrast_head(params, x):
  """``g(x) = relu(x W1 + b1) W2 + b2`` in float32 (normalised by :func:`core_tuning`)."""
  h = jax.nn.relu(jnp.asarray(x, jnp.float32) @ params["w1"] + params["b1"])
  return h @ params["w2"] + params["b2"]
