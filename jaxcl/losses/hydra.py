"""Hydra (v1) / SimLAP (v2): arbitrary class pairs as positives, in a class-pair gated subspace.

Wu, Atito, Feng, Mo, Kittler, Awais, "Rethinking Positive Pairs in Contrastive Learning",
arXiv 2410.18200 (v1 calls the method Hydra, v2 SimLAP). Reference code: erow/FastSSL,
``model/simlap.py`` (``SimLAP.disparate_loss``, ``BasicGate``, ``multipos_ce_loss``).

Every anchor ``a`` (row ``i`` of an anchor view) has its class ``y1_a = labels[i]``, a partner
class ``y2_a = partner_labels[i]`` (:func:`hydra_partners`) and a gate ``g_a = gates[i]`` in
``(0, 1)^D`` for that class pair (:func:`hydra_gates`: ``sigmoid(MLP((E[y1] + E[y2]) / 2))``
with learned label embeddings ``E``). Keys ``k_j`` are the rows of the *other* views of every
sample of the global batch. With ``s = 1 / temperature``::

    fastssl (default):  l_aj = s * < u_a * g_a * g_a, k_j >        (u, k L2-normalised rows)
    vitookit:           l_aj = s * cos(g_a * z_a, g_a * k_j)       (gate on both sides, re-normalised)

    P_a = {j : y_j = y2_a}                   positives: every key of the partner class
    N_a = {j : y_j not in {y1_a, y2_a}}      negatives: keys of neither class

    L = 1 / (sum_a |P_a|) * sum_a sum_{p in P_a} [ log(exp l_ap + sum_{n in N_a} exp l_an) - l_ap ]

Each positive competes only with the negatives (a per-positive denominator, as in DCL). When
``y2_a != y1_a`` the keys of the anchor's own class, its own other view included, are neither
positives nor negatives. A positive with no negative contributes 0 (its term is
``log exp l_ap - l_ap``).

Per-example values: the normaliser ``sum_a |P_a|`` runs over the *global* batch (as in the
reference, which divides by the number of positives), so the loss does not decompose into
independent per-example terms. The value returned for sample ``i`` is
``B_global * sum_{anchors a of i} sum_{p in P_a} [...] / sum_a |P_a|``; its mean over the global
batch is ``L`` (0 when there is no positive at all).

Partner modes (:func:`hydra_partners`): ``identical`` ``y2 = y1``; ``distinct``
``y2 = (y1 + U{1..C-1}) mod C``; ``arbitrary`` (the paper's default) the labels of a random
permutation of the batch.

``identical`` is SupCon with decoupled denominators: each positive of the anchor's class
competes with the keys of the other classes only, not with the other positives. When every
class occurs once in the batch and ``gates`` is ``None`` (all ones) it is exactly InfoNCE from
view 0 to view 1 (``info_nce(z[:, 0], z[:, 1])``; ``P_a`` is the anchor's own other view, every
other key a negative, ``sum_a |P_a| = B``), and with ``symmetric=True`` exactly ``clip_loss``.
A constant gate ``g = c`` in the fastssl form is the temperature ``T / c**2``.

Kernel: in the fastssl form the gate only rescales the query, ``l_aj = s <u_a * g_a**2, k_j>``,
so the negatives' log-sum-exp is :func:`jaxcl.kernels.contrastive_lse` with tag masks (label,
partner, view, validity; ``impl=`` honoured). The per-positive denominator needs every positive
logit on its own, which the kernel does not return (only their sum), so the positive logits are
formed densely against the gathered keys (``[B_local * anchor views, N]`` whatever ``impl``). In
the vitookit form the key's norm ``||g_a * k_j||`` depends on the anchor *and* the key, so the
similarity is not a product of per-row vectors and the whole computation is dense over the
gathered keys (two float32 products: ``<g^2 z_a, k_j>`` and ``<g_a^2, k_j^2>``).

Choices where the paper / code left it open (methods.md section 7):
  * anchors are view 0 and keys views ``1..V-1`` (the reference: ``z1`` against all-gathered
    ``k2``); ``symmetric=True`` makes every view an anchor view against the keys of the others;
  * ``arbitrary`` permutes the valid rows of the *global* batch and ``distinct`` draws its
    offsets for the global batch from the one ``rng`` (the reference draws per device), so the
    draw does not depend on the device count;
  * the vitookit form uses the two-view keys (the reference script is single-view) and no
    online classifier; ``normalize`` has no effect on it (the cosine re-normalises);
  * the gate MLP uses LayerNorm where the reference has BatchNorm (no batch statistics to
    carry or synchronise); the reference's ``alpha`` term (off by default) is not implemented;
  * the reference's learnable scale ``exp(theta)`` is the caller's: pass a traced
    ``temperature`` (the trainer adapter learns ``log(1 / temperature)``).

Distributed semantics: keys, their labels, views and validity are gathered along
``axis_name``; anchors, their partners and gates stay local; the positive count is
``psum``-ed. Value and gradient equal the single-device call on the full batch.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (6, 2, 8))
  >>> y = jnp.array([0, 1, 2, 0, 1, 2])
  >>> y2 = jaxcl.losses.contrib.hydra_partners(y, "arbitrary", rng=jax.random.key(1))
  >>> params = jaxcl.losses.contrib.init_hydra_gates(jax.random.key(2), 3, 8, embed_dim=4, hidden=8)
  >>> g = jaxcl.losses.contrib.hydra_gates(params, y, y2)
  >>> jaxcl.losses.contrib.hydra(z, y, y2, g, temperature=0.1).shape
  (6,)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.kernels.lse import masked_logsumexp
from jaxcl.losses import _common as c

VARIANTS = ("fastssl", "vitookit")
PARTNER_MODES = ("identical", "distinct", "arbitrary")


def _views(features, fn):
  """``[B, V, D]`` from a rank-3 array or a list / tuple of ``[B, D]`` views."""
  if isinstance(features, (tuple, list)):
    views = [c.embeddings(f"features[{v}]", x, fn) for v, x in enumerate(features)]
    for v, x in enumerate(views[1:], 1):
      c.check_same("features[0]", views[0], f"features[{v}]", x, 0, fn, "batch size")
      c.check_same("features[0]", views[0], f"features[{v}]", x, 1, fn, "feature size")
    features = jnp.stack(views, axis=1) if views else jnp.zeros((0, 0, 0))
  else:
    features = c.embeddings("features", features, fn, rank=3, what="[batch, views, dim]")
  if features.shape[1] < 2:
    raise ValueError(f"{fn}: 'features' must have at least 2 views (anchors and keys), got "
                     f"shape {tuple(features.shape)}")
  return features


def _negative(qt, kt):
  return (kt["valid"] & (kt["view"] != qt["view"]) & (kt["label"] != qt["label"])
          & (kt["label"] != qt["partner"]))


def _positive(qt, kt):
  return kt["valid"] & (kt["view"] != qt["view"]) & (kt["label"] == qt["partner"])


def _gated_cosine(z, g, k, scale):
  """``scale * cos(g_a * z_a, g_a * k_j)`` for every anchor ``a`` and key ``j``, float32."""
  g2 = g * g
  num = logits(z * g2, k, 1.0)                               # <g z_a, g k_j>
  k_sq = logits(g2, k * k, 1.0)                              # ||g_a * k_j||^2
  z_sq = jnp.sum(g2 * z * z, axis=-1, keepdims=True)         # ||g_a * z_a||^2
  inv = jax.lax.rsqrt(jnp.maximum(z_sq, c.EPS * c.EPS)) * jax.lax.rsqrt(
      jnp.maximum(k_sq, c.EPS * c.EPS))
  return num * inv * jnp.asarray(scale, jnp.float32)


def hydra(features, labels, partner_labels, gates=None, *, temperature=0.1, variant="fastssl",
          symmetric=False, axis_name=None, normalize=True, valid=None, impl="dense",
          block_size=1024):
  """Hydra / SimLAP loss (see the module docstring for the equation). Returns ``[B_local]``.

  Args:
    features: ``[B, V, D]`` embeddings of ``V >= 2`` views (or a list of ``V`` ``[B, D]``
      views). Anchors are view 0 (every view with ``symmetric``); keys the other views.
    labels: ``[B]`` int class labels ``y1``.
    partner_labels: ``[B]`` int partner classes ``y2`` (:func:`hydra_partners`); the
      positives of sample ``i``'s anchors are the keys of class ``partner_labels[i]``.
    gates: ``[B, D]`` float gate of each sample's class pair (:func:`hydra_gates`); ``None``
      means all ones (no subspace).
    temperature: ``T`` (Python float > 0 or a traced scalar, e.g. a learnable
      ``exp(-theta)``); the reference initialises ``1 / T = 10``.
    variant: ``"fastssl"`` (gate squared on the anchor, no re-normalisation) or
      ``"vitookit"`` (gate on both sides, cosine).
    symmetric: every view is an anchor view (the per-example value sums over them and the
      normaliser counts all their positives).
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise the rows first (fastssl form).
    valid: ``[B]`` bool padding mask: padded rows are neither anchors nor keys.
    impl, block_size: kernel implementation of the negatives' log-sum-exp (fastssl form).

  Returns:
    ``[B_local]`` float32; the global mean is the loss ``L`` (see "Per-example values").
  """
  fn = "hydra"
  features = _views(features, fn)
  b, v, d = features.shape
  labels = c.labels_array(labels, b, fn)
  partners = c.labels_array(partner_labels, b, fn, "partner_labels")
  valid = c.valid_mask(valid, b, fn)
  c.check_temperature(temperature, fn)
  if variant not in VARIANTS:
    raise ValueError(f"{fn}: 'variant' must be one of {VARIANTS}, got {variant!r}")
  if gates is None:
    gates = jnp.ones((b, d), jnp.float32)
  else:
    gates = c.embeddings("gates", gates, fn, what="[batch, dim]")
    if gates.shape != (b, d):
      raise ValueError(f"{fn}: 'gates' must have shape ({b}, {d}) (one gate per sample over "
                       f"the feature dimension of 'features'), got {tuple(gates.shape)}")
  gates = gates.astype(jnp.float32)
  scale = c.inv_temperature(temperature)
  anchor_views = tuple(range(v)) if symmetric else (0,)
  na = len(anchor_views)

  u = c.prepare(features, normalize)
  keys = jnp.swapaxes(u, 0, 1).reshape(v * b, d)       # view-major rows (view w, sample i)
  k_tags = c.concat_tags(*[c.row_tags(b, axis_name, view=w, valid=valid, label=labels)
                           for w in range(v)])
  q_tags = c.concat_tags(*[c.row_tags(b, axis_name, view=w, valid=valid, label=labels,
                                      partner=partners) for w in anchor_views])
  anchors = jnp.concatenate([u[:, w] for w in anchor_views])
  g = jnp.concatenate([gates] * na)

  k_all = collectives.all_gather(keys, axis_name)
  kt_all = {n: collectives.all_gather(t, axis_name)[None, :] for n, t in k_tags.items()}
  qt = {n: t[:, None] for n, t in q_tags.items()}
  if variant == "fastssl":
    q = anchors * g * g
    lse_neg = contrastive_lse(q, keys, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=_negative,
                              axis_name=axis_name, impl=impl, block_size=block_size).lse
    s = logits(q, k_all, scale)
  else:
    s = _gated_cosine(anchors, g, k_all, scale)
    lse_neg = masked_logsumexp(s, jnp.broadcast_to(_negative(qt, kt_all), s.shape))
  pos = jnp.broadcast_to(_positive(qt, kt_all), s.shape)

  has_neg = jnp.isfinite(lse_neg)
  lse_safe = jnp.where(has_neg, lse_neg, 0.0)
  # log(exp l_ap + exp lse_neg) - l_ap = softplus(lse_neg - l_ap); 0 without negatives.
  terms = jnp.where(pos & has_neg[:, None], jax.nn.softplus(lse_safe[:, None] - s), 0.0)
  anchor_ok = jnp.concatenate([valid] * na)
  per_anchor = jnp.where(anchor_ok, jnp.sum(terms, axis=1), 0.0)
  count = jnp.sum(jnp.where(anchor_ok, jnp.sum(pos, axis=1), 0)).astype(jnp.float32)
  total = collectives.psum(count, axis_name)
  n_global = b * collectives.axis_size(axis_name)
  per_sample = jnp.sum(per_anchor.reshape(na, b), axis=0)
  return c.finalize(n_global * per_sample / jnp.maximum(total, 1.0), valid)


def hydra_partners(labels, mode="arbitrary", *, rng=None, num_classes=None, valid=None,
                   axis_name=None):
  """Partner classes ``y2`` of every local sample. Returns ``[B_local]`` int32.

  Args:
    labels: ``[B]`` int class labels (in ``[0, num_classes)`` for ``distinct``).
    mode: ``"identical"`` (``y2 = y1``), ``"distinct"`` (``y2 = (y1 + U{1..C-1}) mod C``, never
      the own class) or ``"arbitrary"`` (the labels of a uniformly random permutation of the
      valid rows of the global batch; a row may draw its own class).
    rng: PRNG key for ``distinct`` / ``arbitrary`` (required there; the same on every device).
    num_classes: ``C`` for ``distinct``.
    valid: ``[B]`` bool; padded rows are not drawn as partners and keep ``y2 = y1``.
    axis_name: mesh axis name(s): the draw is over the global batch, so sharded equals single
      device.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([0, 1, 2, 3])
    >>> y2 = hydra_partners(y, "distinct", rng=jax.random.key(0), num_classes=4)
    >>> bool(jnp.all(y2 != y))
    True
  """
  fn = "hydra_partners"
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{fn}: 'labels' must have rank 1 ([batch]), got shape {labels.shape}")
  b = labels.shape[0]
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  if mode not in PARTNER_MODES:
    raise ValueError(f"{fn}: 'mode' must be one of {PARTNER_MODES}, got {mode!r}")
  if mode == "identical":
    return labels
  if rng is None:
    raise ValueError(f"{fn}: mode {mode!r} draws at random and needs an explicit 'rng' key")
  n = b * collectives.axis_size(axis_name)
  local = lambda x: jax.lax.dynamic_slice_in_dim(x, collectives.axis_index(axis_name) * b, b)
  if mode == "distinct":
    if num_classes is None or int(num_classes) < 2:
      raise ValueError(f"{fn}: mode 'distinct' needs 'num_classes' >= 2, got {num_classes}")
    offset = local(jax.random.randint(rng, (n,), 1, int(num_classes), dtype=jnp.int32))
    out = (labels + offset) % int(num_classes)
  else:
    y = collectives.all_gather(labels, axis_name)
    ok = collectives.all_gather(valid, axis_name)
    # Valid rows in a random order; the r-th valid row (in index order) takes the label of the
    # r-th row of that order: a uniform random permutation of the valid rows.
    order = jnp.argsort(jnp.where(ok, jax.random.uniform(rng, (n,)), 2.0))
    rank = jnp.clip(jnp.cumsum(ok.astype(jnp.int32)) - 1, 0, n - 1)
    out = local(y[order[rank]])
  return jnp.where(valid, out, labels)


def init_hydra_gates(rng, num_classes, dim, *, embed_dim=512, hidden=1024):
  """Parameters of the gate: label embeddings ``E [C, embed_dim]`` (unit Gaussian, as
  ``nn.Embedding``) and the MLP ``ReLU-LN-Linear(embed_dim, hidden)-ReLU-LN-Linear(hidden,
  dim)`` (PyTorch's default ``U(+-1/sqrt(fan_in))`` initialisation; LayerNorm in place of the
  reference's BatchNorm). Defaults: the reference's 512 / 1024."""
  fn = "init_hydra_gates"
  for name, value in (("num_classes", num_classes), ("dim", dim), ("embed_dim", embed_dim),
                      ("hidden", hidden)):
    if int(value) < 1:
      raise ValueError(f"{fn}: '{name}' must be >= 1, got {value}")
  ke, k1, k2, k3, k4 = jax.random.split(rng, 5)
  uniform = lambda k, shape, fan_in: jax.random.uniform(
      k, shape, jnp.float32, -1.0, 1.0) / math.sqrt(fan_in)
  norm = lambda n: {"scale": jnp.ones((n,), jnp.float32), "bias": jnp.zeros((n,), jnp.float32)}
  return {"label_embedding": jax.random.normal(ke, (num_classes, embed_dim), jnp.float32),
          "norm1": norm(embed_dim),
          "dense1": {"kernel": uniform(k1, (embed_dim, hidden), embed_dim),
                     "bias": uniform(k2, (hidden,), embed_dim)},
          "norm2": norm(hidden),
          "dense2": {"kernel": uniform(k3, (hidden, dim), hidden),
                     "bias": uniform(k4, (dim,), hidden)}}


def _layer_norm(x, p, eps=1e-5):
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def hydra_gates(params, labels, partner_labels):
  """``g = sigmoid(MLP((E[y1] + E[y2]) / 2))`` ``[B, dim]`` float32 for the class pairs
  ``(labels, partner_labels)`` (``params`` from :func:`init_hydra_gates`)."""
  fn = "hydra_gates"
  labels = jnp.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{fn}: 'labels' must have rank 1 ([batch]), got shape {labels.shape}")
  y1 = c.labels_array(labels, labels.shape[0], fn)
  y2 = c.labels_array(partner_labels, labels.shape[0], fn, "partner_labels")
  e = params["label_embedding"].astype(jnp.float32)
  h = 0.5 * (e[y1] + e[y2])
  h = _layer_norm(jax.nn.relu(h), params["norm1"])
  h = h @ params["dense1"]["kernel"] + params["dense1"]["bias"]
  h = _layer_norm(jax.nn.relu(h), params["norm2"])
  return jax.nn.sigmoid(h @ params["dense2"]["kernel"] + params["dense2"]["bias"])
