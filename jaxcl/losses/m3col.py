"""M3CoL: the M3Co mixup contrastive loss and SoftCLIP, over the global batch.

Kumar, Singhal, Kulkarni, Mehta, Jadhav, "Harnessing Shared Relations via Multimodal Mixup
Contrastive Learning for Multimodal Classification", arXiv 2409.17777. Reference code:
RaghavSinghal10/M3CoL, ``model/utils.py`` (``mixco_text`` / ``mixco_image``, ``mixco_nce``,
``soft_clip_loss``, adapted from MindEye), ``model/model_med.py`` (three omics modalities).

**Mixing** (:func:`m3co_mixing`, :func:`m3co_mix`). Every row ``i`` of the global batch gets a
partner ``pi(i)`` and a weight ``lam_i``: with probability ``prob`` (reference ``s_thresh``
0.5) ``lam_i ~ Beta(beta, beta)`` (``beta`` 0.15), otherwise ``lam_i = 1`` (unmixed); the
mixed row is ``x~_i = lam_i x_i + (1 - lam_i) x_{pi(i)}`` (inputs of one modality, or its
embeddings). ``Beta`` is drawn by a fixed-trip sampler (:func:`beta_sample`: Marsaglia-Tsang
gamma variates, 8 proposals per draw; ``jax.random.beta``'s rejection loop took seconds to
compile in every train step).

**M3Co** (:func:`m3co_loss`, the reference's ``mixco_nce``): ``A`` = the L2-normalised
embeddings of the mixed rows of modality ``a``, ``F`` = those of the (unmixed) rows of modality
``b``, ``S = A F^T / T`` (``T`` 0.1) and the soft targets ``P_ii = lam_i``,
``P_{i, pi(i)} = 1 - lam_i`` (0 elsewhere)::

    L = 1/2 [ -1/N sum_i sum_j P_ij log softmax_j(S_i.)  -  1/N sum_j sum_i P_ij log softmax_i(S_.j) ]

The transposed direction uses the columns of ``P`` as targets *un-normalised*, as the code:
column ``j`` sums to ``c_j = lam_j + sum_{i: pi(i) = j} (1 - lam_i)``. When ``pi(i) = i`` the
code's second assignment overwrites ``P_ii`` with ``1 - lam_i`` (an unmixed row then has an
all-zero target row); that is reproduced for a caller's partners, but :func:`m3co_mixing`
draws partners without fixed points (a uniformly random single cycle over the valid rows), so
it never arises in training. The per-example value is row ``i``'s and column ``i``'s terms
(its global mean is ``L``)::

    L_i = 1/2 [ sum_j P_ij (lse_k S_ik - S_ij) + sum_k P_ki (lse_l S_li - S_ki) ]

With no mixing at all (every ``lam = 1``) it is ``clip_loss(A, F, temperature=T)``.

**SoftCLIP** (:func:`soft_clip_loss`, the reference's ``soft_clip_loss``; M3CoL's term after
the first third of training), on the unmixed ``p`` (modality ``a``) and ``t`` (modality
``b``), L2-normalised, ``S = p t^T / T'`` and the targets ``Q = softmax_rows(t t^T / T')``
(``T'`` 0.125; the self-similarity of the target modality, row ``i`` includes ``j = i``)::

    L_i = 1/2 [ lse_j S_ij + lse_j S_ji ] - 1/2 sum_j Q_ij (S_ij + S_ji)

(the reference's ``loss2`` applies the *rows* of ``Q`` to ``S^T``). The targets carry a
gradient, as in the code (``stop_target_gradient=True`` detaches them).

Kernel: every log-sum-exp over the batch goes through :func:`jaxcl.kernels.contrastive_lse`
(M3Co: both directions; SoftCLIP: both directions and the normaliser of ``Q``; ``impl=``
honoured). The soft-target sums need each row's weights on its own: M3Co's are two entries per
row (the partner's key is gathered, ``O(N D)``), SoftCLIP's are the dense ``[B_local, N]``
row of ``Q`` against the gathered rows (``exp(t_i t_j / T' - lse_i)``, the ``lse`` from the
kernel), whatever ``impl``.

Distributed semantics: the rows of the other side, the weights, partners and validity are
gathered along ``axis_name``; queries stay local; :func:`m3co_mixing` draws for the global
batch from one ``rng``. Value and gradient equal the single-device call on the full batch.
``valid=False`` rows are neither anchors nor candidates (value 0, no gradient) and are never
drawn as partners.

Paper vs code: the README and paper mix raw inputs for non-text modalities; the released
code mixes encoder outputs (and the medical model mixes the "fixed" modality's embeddings in
place too, so every M3Co pair there compares two mixed batches). These functions work on any
rows: the trainer adapter mixes each modality's *inputs* by default (tabular blocks) and
compares with the unmixed embeddings of the next modality.

Recommendation: the reference's defaults (``beta = 0.15``, ``prob = 0.5``, ``T = 0.1``,
``T' = 0.125``, weight 0.1 next to the classification losses, M3Co for the first third of
training, then SoftCLIP); both terms are auxiliary losses for a supervised multimodal
classifier, not standalone pretraining objectives.

Example:
  >>> import jax, jaxcl
  >>> k = jax.random.split(jax.random.key(0), 3)
  >>> x, fixed = jax.random.normal(k[0], (8, 5)), jax.random.normal(k[1], (8, 5))
  >>> lam, partner = jaxcl.losses.contrib.m3co_mixing(k[2], 8)
  >>> mixed = jaxcl.losses.contrib.m3co_mix(x, lam, partner)        # then encode, here the identity
  >>> jaxcl.losses.contrib.m3co_loss(mixed, fixed, lam, partner).shape
  (8,)
  >>> jaxcl.losses.contrib.soft_clip_loss(x, fixed).shape
  (8,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


def _candidate(qt, kt):
  return kt["valid"]


def _local(x, b, axis_name):
  return jax.lax.dynamic_slice_in_dim(x, collectives.axis_index(axis_name) * b, b)


def _partner_array(partner, b, fn):
  partner = jnp.asarray(partner)
  if partner.shape != (b,):
    raise ValueError(f"{fn}: 'partner' must have shape ({b},) (the global row index of each "
                     f"local row's mixing partner), got {tuple(partner.shape)}")
  if not jnp.issubdtype(partner.dtype, jnp.integer):
    raise TypeError(f"{fn}: 'partner' must be integers, got dtype {partner.dtype}")
  return partner.astype(jnp.int32)


def _lam_array(lam, b, fn):
  c.check_float("lam", lam, fn)
  lam = jnp.asarray(lam)
  if lam.shape != (b,):
    raise ValueError(f"{fn}: 'lam' must have shape ({b},) (one mixing weight per row), got "
                     f"{tuple(lam.shape)}")
  return jax.lax.stop_gradient(lam.astype(jnp.float32))


BETA_PROPOSALS = 8


def _log_gamma(key, alpha, shape):
  """``log G``, ``G ~ Gamma(alpha)``: Marsaglia-Tsang with a fixed ``BETA_PROPOSALS`` proposals
  per draw, the first accepted one kept (acceptance >= 0.95 per proposal for shape >= 1, so
  all rejected has probability < 1e-10; then the mode is used), and ``G(a) = G(a + 1)
  U^(1 / a)`` for ``a < 1``. No while loop: ``jax.random.beta``'s rejection loop compiled for
  seconds, in every train step and test."""
  boost = alpha < 1.0
  a = alpha + 1.0 if boost else alpha
  d = a - 1.0 / 3.0
  cst = 1.0 / (9.0 * d) ** 0.5
  kx, ku, kb = jax.random.split(key, 3)
  tiny = jnp.finfo(jnp.float32).tiny
  x = jax.random.normal(kx, (BETA_PROPOSALS,) + shape, jnp.float32)
  log_u = jnp.log(jax.random.uniform(ku, (BETA_PROPOSALS,) + shape, jnp.float32, tiny, 1.0))
  v = (1.0 + cst * x) ** 3
  log_v = jnp.log(jnp.maximum(v, tiny))
  ok = (v > 0) & (log_u < 0.5 * x * x + d - d * v + d * log_v)
  first = jnp.argmax(ok, axis=0)
  picked = jnp.take_along_axis(log_v, first[None], axis=0)[0]
  out = jnp.log(d) + jnp.where(jnp.any(ok, axis=0), picked, 0.0)
  if boost:
    out = out + jnp.log(jax.random.uniform(kb, shape, jnp.float32, tiny, 1.0)) / alpha
  return out


def beta_sample(key, a, b, shape):
  """``Beta(a, b)`` float32 samples (Python floats ``a, b > 0``) as ``G_a / (G_a + G_b)`` in
  log space (:func:`_log_gamma`)."""
  ka, kb = jax.random.split(key)
  return jax.nn.sigmoid(_log_gamma(ka, float(a), shape) - _log_gamma(kb, float(b), shape))


def m3co_mixing(rng, batch, *, beta=0.15, prob=0.5, axis_name=None, valid=None):
  """Mixing weights and partners of the local rows: ``(lam [B_local] float32, partner
  [B_local] int32)``, drawn for the global batch from ``rng`` (the same key on every device).

  ``partner`` holds *global* row indices (device-major, as ``all_gather`` lays rows out): a
  uniformly random single cycle through the valid rows, so no row is its own partner (the
  reference's ``randperm`` may draw fixed points; see the module docstring). Each valid row is
  mixed with probability ``prob``, with ``lam ~ Beta(beta, beta)``; otherwise ``lam = 1``.
  Padded rows (``valid=False``) get ``lam = 1``, themselves as partner, and are nobody's
  partner. With fewer than two valid rows nothing is mixed.

  Args:
    rng: PRNG key.
    batch: local batch size ``B_local`` (static int).
    beta: Beta concentration (a Python float > 0), reference 0.15; sampled by
      :func:`beta_sample` (a fixed-trip sampler, not ``jax.random.beta``'s loop).
    prob: probability of mixing a row, in ``[0, 1]``, reference 0.5.
    axis_name: mesh axis name(s) inside ``shard_map``.
    valid: ``[B_local]`` bool padding mask.
  """
  fn = "m3co_mixing"
  if rng is None:
    raise ValueError(f"{fn}: 'rng' is required (an explicit PRNG key)")
  batch = c.check_int(batch, 1, message=f"{fn}: 'batch' must be an int >= 1 (the local batch "
                      "size)")
  c.check_positive("beta", beta, fn)
  if not isinstance(prob, jax.core.Tracer) and not 0.0 <= float(prob) <= 1.0:
    raise ValueError(f"{fn}: 'prob' must be in [0, 1], got {prob}")
  valid = c.valid_mask(valid, batch, fn)
  n = batch * collectives.axis_size(axis_name)
  ok = collectives.all_gather(valid, axis_name)
  k_perm, k_beta, k_sel = jax.random.split(rng, 3)
  # Valid rows in a random order; each one's partner is the next valid row of that order.
  order = jnp.argsort(jnp.where(ok, jax.random.uniform(k_perm, (n,)), 2.0))
  n_valid = jnp.sum(ok.astype(jnp.int32))
  position = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  nxt = order[(position + 1) % jnp.maximum(n_valid, 1)]
  mixable = ok & (n_valid >= 2)
  partner = jnp.where(mixable, nxt, jnp.arange(n, dtype=jnp.int32))
  lam = beta_sample(k_beta, beta, beta, (n,))
  select = jax.random.uniform(k_sel, (n,)) < prob
  lam = jnp.where(select & mixable, lam, 1.0)
  return _local(lam, batch, axis_name), _local(partner, batch, axis_name)


def m3co_mix(x, lam, partner, *, axis_name=None):
  """``lam_i x_i + (1 - lam_i) x_{partner(i)}`` for the local rows of ``x [B_local, ...]``
  (partners from the global batch, gathered along ``axis_name``; gradients flow to both).
  Computed in float32, returned in ``x``'s dtype."""
  fn = "m3co_mix"
  c.check_float("x", x, fn)
  x = jnp.asarray(x)
  if x.ndim < 1:
    raise ValueError(f"{fn}: 'x' must have a batch axis, got shape {tuple(x.shape)}")
  b = x.shape[0]
  lam = _lam_array(lam, b, fn)
  partner = _partner_array(partner, b, fn)
  other = collectives.all_gather(x, axis_name)[partner]
  w = lam.reshape((b,) + (1,) * (x.ndim - 1))
  out = w * x.astype(jnp.float32) + (1.0 - w) * other.astype(jnp.float32)
  return out.astype(x.dtype)


def m3co_loss(mixed, fixed, lam, partner, *, temperature=0.1, axis_name=None, normalize=True,
              valid=None, impl="dense", block_size=1024):
  """M3Co mixup contrastive loss (module docstring). Returns ``[B_local]`` float32.

  Args:
    mixed: ``[B, D]`` embeddings of the mixed rows of modality ``a`` (row ``i`` encodes
      ``lam_i x_i + (1 - lam_i) x_{partner(i)}``).
    fixed: ``[B, D]`` embeddings of the unmixed rows of modality ``b`` (row ``i`` = sample
      ``i``).
    lam: ``[B]`` float mixing weights (no gradient), from :func:`m3co_mixing`.
    partner: ``[B]`` int global row index of each row's partner, from :func:`m3co_mixing`.
    temperature: ``T`` (Python float > 0 or a traced scalar), reference 0.1.
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise both sides first (the reference does).
    valid: ``[B]`` bool padding mask.
    impl, block_size: kernel implementation of the log-sum-exps.

  Returns:
    ``[B_local]``; the global mean is ``L`` (the reference's bidirectional ``mixco_nce``).
  """
  fn = "m3co_loss"
  mixed, fixed = c.paired(fn, "mixed", mixed, "fixed", fixed, temperature)
  b = mixed.shape[0]
  lam = _lam_array(lam, b, fn)
  partner = _partner_array(partner, b, fn)
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  n = b * collectives.axis_size(axis_name)
  a = c.prepare(mixed, normalize)
  f = c.prepare(fixed, normalize)
  index = collectives.global_row_index(b, axis_name)
  fixed_point = partner == index
  # The reference: P = diag(lam); P[i, pi(i)] = 1 - lam (the second write wins when pi(i) = i).
  w_self = jnp.where(valid, jnp.where(fixed_point, 1.0 - lam, lam), 0.0)
  w_part = jnp.where(valid & ~fixed_point, 1.0 - lam, 0.0)
  # Column sums of P: own weight + what every row whose partner is j puts on it.
  col = collectives.all_gather(w_part, axis_name)
  into = jax.ops.segment_sum(col, collectives.all_gather(partner, axis_name), num_segments=n)
  c_col = w_self + _local(into, b, axis_name)

  tags = c.row_tags(b, axis_name, view=0, valid=valid)
  kw = dict(q_tags=tags, k_tags=tags, mask_fn=_candidate, axis_name=axis_name, impl=impl,
            block_size=block_size)
  lse_row = contrastive_lse(a, f, scale, **kw).lse        # softmax over j of S_ij
  lse_col = contrastive_lse(f, a, scale, **kw).lse        # softmax over k of S_ki
  s_self = jnp.sum(a * f, axis=-1) * scale
  f_partner = collectives.all_gather(f, axis_name)[partner]
  s_part = jnp.sum(a * f_partner, axis=-1) * scale
  # Column i's soft-target logit sum: its own diagonal entry + the rows whose partner is i.
  s_into = jax.ops.segment_sum(collectives.all_gather(w_part * s_part, axis_name),
                               collectives.all_gather(partner, axis_name), num_segments=n)
  ok = valid & jnp.isfinite(lse_row) & jnp.isfinite(lse_col)
  lse_row, lse_col = jnp.where(ok, lse_row, 0.0), jnp.where(ok, lse_col, 0.0)
  row = (w_self + w_part) * lse_row - (w_self * s_self + w_part * s_part)
  column = c_col * lse_col - (w_self * s_self + _local(s_into, b, axis_name))
  return c.finalize(0.5 * (row + column), ok)


def soft_clip_loss(preds, targets, *, temperature=0.125, axis_name=None, normalize=True,
                   valid=None, impl="dense", block_size=1024, stop_target_gradient=False):
  """SoftCLIP (module docstring): CLIP with the soft targets ``softmax(t t^T / T')``.
  Returns ``[B_local]`` float32.

  Args:
    preds: ``[B, D]`` embeddings of modality ``a``.
    targets: ``[B, D]`` embeddings of modality ``b``; their self-similarity gives the targets.
    temperature: ``T'`` (Python float > 0 or a traced scalar), reference 0.125.
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise both sides first (the reference does).
    valid: ``[B]`` bool padding mask.
    impl, block_size: kernel implementation of the log-sum-exps.
    stop_target_gradient: detach the targets ``Q`` (the reference does not).

  Returns:
    ``[B_local]``; the global mean is the reference's ``soft_clip_loss``.
  """
  fn = "soft_clip_loss"
  preds, targets = c.paired(fn, "preds", preds, "targets", targets, temperature)
  b = preds.shape[0]
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  p = c.prepare(preds, normalize)
  t = c.prepare(targets, normalize)
  tags = c.row_tags(b, axis_name, view=0, valid=valid)
  kw = dict(q_tags=tags, k_tags=tags, mask_fn=_candidate, axis_name=axis_name, impl=impl,
            block_size=block_size)
  lse_row = contrastive_lse(p, t, scale, **kw).lse        # over j of S_ij = p_i t_j / T'
  lse_col = contrastive_lse(t, p, scale, **kw).lse        # over j of S_ji = p_j t_i / T'
  lse_tt = contrastive_lse(t, t, scale, **kw).lse         # normaliser of Q_i.
  ok = valid & jnp.isfinite(lse_row) & jnp.isfinite(lse_col) & jnp.isfinite(lse_tt)
  lse_row, lse_col = jnp.where(ok, lse_row, 0.0), jnp.where(ok, lse_col, 0.0)
  lse_tt = jnp.where(ok, lse_tt, 0.0)
  t_all = collectives.all_gather(t, axis_name)
  p_all = collectives.all_gather(p, axis_name)
  v_all = collectives.all_gather(valid, axis_name)
  g = logits(t, t_all, scale)
  d = jnp.where(v_all[None, :] & ok[:, None], g - lse_tt[:, None], -jnp.inf)
  # d <= 0 in exact arithmetic; clamp an ulp of rounding above it (value only, as the kernel).
  q = jnp.exp(d - jax.lax.stop_gradient(jnp.maximum(d, 0.0)))
  if stop_target_gradient:
    q = jax.lax.stop_gradient(q)
  # sum_j Q_ij S_ij = <p_i, sum_j Q_ij t_j> / T';  sum_j Q_ij S_ji = <t_i, sum_j Q_ij p_j> / T'.
  t_bar = jnp.einsum("ij,jd->id", q, t_all, preferred_element_type=jnp.float32)
  p_bar = jnp.einsum("ij,jd->id", q, p_all, preferred_element_type=jnp.float32)
  soft = (jnp.sum(p * t_bar, axis=-1) + jnp.sum(t * p_bar, axis=-1)) * scale
  return c.finalize(0.5 * (lse_row + lse_col) - 0.5 * soft, ok)


def init_m3col_heads(rng, num_modalities, dim, num_classes, *, hidden=64):
  """Parameters of M3CoL's classifiers (``model_med.py``'s ``Classifier``): a fusion head on
  the concatenated ``[B, M * dim]`` embeddings and one unimodal head per modality on
  ``[B, dim]``, each ``Linear(in, hidden) - ReLU - Linear(hidden, num_classes)`` with the
  reference's Xavier-normal weights and zero biases (its dropout is not used)."""
  fn = "init_m3col_heads"
  for name, value in (("num_modalities", num_modalities), ("dim", dim),
                      ("num_classes", num_classes), ("hidden", hidden)):
    c.check_int(value, 1, message=f"{fn}: '{name}' must be an int >= 1")

  def mlp(key, fan_in):
    k1, k2 = jax.random.split(key)
    xavier = lambda k, n, m: jax.random.normal(k, (n, m), jnp.float32) * jnp.sqrt(2.0 / (n + m))
    return {"w1": xavier(k1, fan_in, hidden), "b1": jnp.zeros((hidden,), jnp.float32),
            "w2": xavier(k2, hidden, num_classes), "b2": jnp.zeros((num_classes,), jnp.float32)}

  keys = jax.random.split(rng, num_modalities + 1)
  return {"fusion": mlp(keys[0], num_modalities * dim),
          "unimodal": [mlp(k, dim) for k in keys[1:]]}


def m3col_heads(params, z):
  """``(fused [B, C], unimodal [B, M, C])`` float32 logits of ``z [B, M, D]`` (one row per
  modality) under :func:`init_m3col_heads`' parameters."""
  fn = "m3col_heads"
  z = c.embeddings("z", z, fn, rank=3, what="[batch, modalities, dim]").astype(jnp.float32)
  b, m, d = z.shape
  if len(params["unimodal"]) != m or params["fusion"]["w1"].shape[0] != m * d:
    raise ValueError(f"{fn}: the heads are for {len(params['unimodal'])} modalities of "
                     f"{params['unimodal'][0]['w1'].shape[0]} features, 'z' has shape "
                     f"{tuple(z.shape)}")

  def mlp(p, x):
    h = jax.nn.relu(jnp.einsum("bi,ih->bh", x, p["w1"], preferred_element_type=jnp.float32)
                    + p["b1"])
    return jnp.einsum("bh,hc->bc", h, p["w2"], preferred_element_type=jnp.float32) + p["b2"]

  fused = mlp(params["fusion"], z.reshape(b, m * d))
  return fused, jnp.stack([mlp(p, z[:, i]) for i, p in enumerate(params["unimodal"])], axis=1)
