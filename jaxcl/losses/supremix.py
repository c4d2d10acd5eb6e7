"""SupReMix: supervised contrastive regression with mixture hard negatives and positives.

"Mixup Your Own Pairs" / SupReMix (arXiv 2309.16633), as its released code computes it
(methods.md section 6). Anchors are the ``N = V * B`` rows of the global batch (every view of
every sample), ``z`` L2-normalised, ``s_ia = <z_i, z_a> / T``, labels ``y`` (exact equality
is "same label"). For anchor ``i``:

* real candidates ``A_i = {a != i}``, real positives ``P_i = {a != i : y_a = y_i}``;
* mix-neg (anchor-inclusive), one per ``k`` with ``y_k != y_i``:
  ``m_ik = a_ik z_i + (1 - a_ik) z_k``, ``a_ik ~ Beta(beta)``, label ``a_ik y_i + (1 - a_ik) y_k``;
* mix-pos (anchor-exclusive), one per pair ``(j, k)`` with ``y_j < y_i < y_k``,
  ``y_i - y_j < window`` and ``y_k - y_i < window``: ``m_ijk = a z_j + (1 - a) z_k`` with
  ``a = (y_k - y_i) / (y_k - y_j)``, so its label is exactly ``y_i``;
* mixtures are detached (no gradient through ``z_j``, ``z_k`` or the anchor's own copy inside
  ``m_ik``) and not re-normalised; their logit is linear in the mixture, so it is computed from
  dot products, ``<z_i, m_ijk> / T = a s_ij + (1 - a) s_ik``: no ``D`` factor in the
  ``O(N^3)`` part;
* distance magnifying (``weighting="l1_inv"``): every denominator term is multiplied by
  ``w = |y_i - y_c| + 1`` for the label ``y_c`` of candidate ``c`` (mixtures: their mixed
  label; so real positives and mix-positives get ``w = 1``)::

    supremix_i = -1/|P~_i| sum_{p in P~_i} [ l_ip - log sum_{c in A_i u M_i} w_ic exp(l_ic) ]

  with ``P~_i = P_i u {mix-pos of i}`` and ``M_i`` all mixtures of ``i``; ``base_temperature
  = T`` in the code, so there is no extra factor. The value returned for sample ``b`` is the
  mean over its ``V`` anchors (the global mean is the code's ``loss.view(V, B).mean()``). An
  anchor with no positive at all contributes 0 (the code returns NaN).

Paper-vs-code notes. ``weighting="l2_inv"`` uses ``(y_i - y_c)^2 + 1``; ``"none"``
``w = 1``. ``block_max_shift=True`` reproduces a quirk of the code: the real logits and the
mixture logits are each shifted by their own detached row maximum (real: over all rows,
the anchor's self-similarity included; mixtures: over the anchor's mixtures) before one
softmax, which multiplies every mixture term by ``exp(m_real - m_mix)``; the default is the
clean single log-sum-exp above. ``a_ik`` is drawn per (anchor, candidate) pair from ``rng``
folded with the anchor's global row id (view-major, ``view * B_global + sample``), so a
sharded call draws exactly what one device draws. The code's ``Beta(2, 8)`` is the default
(its help text says ``Beta(5, 5)``).

Continuous targets: "same label" is exact equality, so pass integer labels or set
``bin_width``: labels then become ``floor(y / bin_width)`` (bin units are used for equality,
the window, the weights and the mix-pos interpolation alike).

Memory: the mix-pos term is evaluated anchor by anchor (``jax.lax.map`` over
``chunk_size`` anchors at a time, rematerialised in the backward pass), so the peak is
``O(chunk_size * N^2)`` floats besides the ``O(B_local * N)`` logits; the ``O(N^3 D)``
mixture tensor is never formed.

Distributed semantics: features, labels and validity are gathered along ``axis_name``
(:mod:`jaxcl.collectives`); anchors are the local rows; value and gradient equal the
single-device call.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> f = jax.random.normal(jax.random.key(0), (6, 2, 8))
  >>> y = jnp.array([0., 1., 2., 3., 1., 2.])
  >>> jaxcl.losses.contrib.supremix(f, y, rng=jax.random.key(1)).shape
  (6,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels.lse import logits, masked_logsumexp
from jaxcl.losses import _common as c

WEIGHTINGS = ("l1_inv", "l2_inv", "none")
# Auto chunk: about this many mix-pos logits (chunk * N^2) in flight.
AUTO_CHUNK_LOGITS = 1 << 22


def _weight(dy, weighting):
  if weighting == "l1_inv":
    return dy + 1.0
  if weighting == "l2_inv":
    return dy * dy + 1.0
  return jnp.ones_like(dy)


def mix_neg_alphas(rng, anchor_ids, num_rows, beta=(2.0, 8.0)):
  """``[len(anchor_ids), num_rows]`` mixing weights ``a ~ Beta(*beta)``: row ``r`` is drawn from
  ``fold_in(rng, anchor_ids[r])`` and indexed by the candidate's global row id."""
  draw = lambda g: jax.random.beta(jax.random.fold_in(rng, g), beta[0], beta[1], (num_rows,))
  return jax.vmap(draw)(anchor_ids).astype(jnp.float32)


def _mix_pos(y_rows, s_det, y_all, valid_all, window, chunk_size):
  """Per anchor: log-sum-exp, sum, count and max of its mix-pos logits (``O(N^2)`` each)."""

  def one(args):
    y_i, sd_i = args
    lower = valid_all & (y_all < y_i) & (y_i - y_all < window)
    upper = valid_all & (y_all > y_i) & (y_all - y_i < window)
    pair = lower[:, None] & upper[None, :]                      # (j, k)
    gap = jnp.where(pair, y_all[None, :] - y_all[:, None], 1.0)
    a = (y_all[None, :] - y_i) / gap
    l = a * sd_i[:, None] + (1.0 - a) * sd_i[None, :]
    lse = masked_logsumexp(l.reshape(-1), pair.reshape(-1))
    total = jnp.sum(jnp.where(pair, l, 0.0))
    count = jnp.sum(pair).astype(jnp.float32)
    top = jnp.max(jnp.where(pair, l, -jnp.inf))
    return lse, total, count, top

  # Rematerialised so the backward pass keeps one chunk of [N, N] residuals, not all of them.
  return jax.lax.map(jax.checkpoint(one), (y_rows, s_det), batch_size=chunk_size)


def _check_args(fn, temperature, window, beta, weighting, bin_width, chunk_size, rng):
  c.check_temperature(temperature, fn)
  c.check_positive("window", window, fn)
  if not (isinstance(beta, (tuple, list)) and len(beta) == 2):
    raise ValueError(f"{fn}: 'beta' must be a pair (a, b) of Beta parameters, got {beta!r}")
  c.check_positive("beta", jnp.asarray(beta, jnp.float32), fn)
  if weighting not in WEIGHTINGS:
    raise ValueError(f"{fn}: 'weighting' must be one of {WEIGHTINGS}, got {weighting!r}")
  if bin_width is not None:
    c.check_positive("bin_width", bin_width, fn)
  if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
    raise ValueError(f"{fn}: 'chunk_size' must be a positive int or None, got {chunk_size!r}")
  if rng is None:
    raise ValueError(f"{fn}: 'rng' (a PRNG key for the mix-neg Beta weights) is required")


def supremix(features, labels, *, temperature=0.5, window=5.0, beta=(2.0, 8.0), rng=None,
             weighting="l1_inv", bin_width=None, block_max_shift=False, mix_neg=True,
             mix_pos=True, axis_name=None, normalize=True, valid=None, chunk_size=None):
  """SupReMix loss (see the module docstring). ``features`` ``[B, V, D]``, ``labels`` ``[B]``
  (int or float), ``rng`` a PRNG key.

  ``mix_neg=False`` / ``mix_pos=False`` drop a mixture family (ablations); with both off and
  ``weighting="none"`` this is SupCon (``T_base = T``) on the (binned) labels.

  Returns ``[B_local]``: mean over each sample's ``V`` anchor losses.
  """
  fn = "supremix"
  features = c.embeddings("features", features, fn, rank=3, what="[batch, views, dim]")
  _check_args(fn, temperature, window, beta, weighting, bin_width, chunk_size,
              rng if mix_neg else jax.random.key(0))
  b, v, _ = features.shape
  labels = jnp.asarray(labels)
  if labels.shape != (b,):
    raise ValueError(f"{fn}: 'labels' must have shape ({b},), got {tuple(labels.shape)}")
  if labels.dtype == jnp.bool_ or not jnp.issubdtype(labels.dtype, jnp.number):
    raise TypeError(f"{fn}: 'labels' must be integers or floats, got dtype {labels.dtype}")
  valid = c.valid_mask(valid, b, fn)
  y = labels.astype(jnp.float32)
  if bin_width is not None:
    y = jnp.floor(y / jnp.float32(bin_width))
  scale = c.inv_temperature(temperature)

  u = c.prepare(features, normalize)
  u = jnp.swapaxes(u, 0, 1).reshape(v * b, -1)                  # view-major rows
  b_global = b * collectives.axis_size(axis_name)
  sample = collectives.global_row_index(b, axis_name)
  gid = jnp.concatenate([k * b_global + sample for k in range(v)])
  y_rows, valid_rows = jnp.tile(y, v), jnp.tile(valid, v)
  u_all = collectives.all_gather(u, axis_name)
  y_all, valid_all, gid_all = (collectives.all_gather(t, axis_name)
                               for t in (y_rows, valid_rows, gid))

  # Real pairs (gradient to both sides) and the same products with detached candidates,
  # from which every mixture logit is a linear combination.
  s = logits(u, u_all, scale)
  s_det = logits(u, jax.lax.stop_gradient(u_all), scale)
  s_self_det = jnp.sum(u * jax.lax.stop_gradient(u), -1) * scale
  self_ = gid[:, None] == gid_all[None, :]
  dy = jnp.abs(y_rows[:, None] - y_all[None, :])
  real_cand = valid_all[None, :] & ~self_
  real_pos = real_cand & (dy == 0)

  # Mix-neg: one mixture of the anchor with each differently-labelled row.
  alpha = (mix_neg_alphas(rng, gid, v * b_global, beta)[:, gid_all] if mix_neg
           else jnp.zeros_like(s))
  l_neg = alpha * s_self_det[:, None] + (1.0 - alpha) * s_det
  neg = valid_all[None, :] & (dy > 0) & mix_neg

  # Mix-pos: label-interpolating pairs around the anchor, reduced per anchor in chunks.
  n_all = u_all.shape[0]
  chunk = chunk_size or max(1, AUTO_CHUNK_LOGITS // (n_all * n_all))
  if mix_pos:
    lse_pos, sum_pos, cnt_pos, max_pos = _mix_pos(y_rows, s_det, y_all, valid_all,
                                                  jnp.float32(window), min(chunk, v * b))
  else:
    lse_pos = max_pos = jnp.full((v * b,), -jnp.inf)
    sum_pos = cnt_pos = jnp.zeros((v * b,))

  if block_max_shift:  # the released code's per-block shift (see the module docstring)
    m_real = jnp.max(jnp.where(valid_all[None, :] | self_, s, -jnp.inf), -1)
    m_mix = jnp.maximum(jnp.max(jnp.where(neg, l_neg, -jnp.inf), -1), max_pos)
    delta = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m_mix), m_real - m_mix, 0.0))
    l_neg = l_neg + delta[:, None]
    lse_pos, sum_pos = lse_pos + delta, sum_pos + delta * cnt_pos

  log_w = lambda d: jnp.log(_weight(d, weighting))
  all_logits = jnp.concatenate([s + log_w(dy), l_neg + log_w((1.0 - alpha) * dy),
                                lse_pos[:, None]], axis=1)
  all_mask = jnp.concatenate([real_cand, neg, jnp.isfinite(lse_pos)[:, None]], axis=1)
  lse = masked_logsumexp(all_logits, all_mask)
  pos_sum = jnp.sum(jnp.where(real_pos, s, 0.0), -1) + sum_pos
  pos_cnt = jnp.sum(real_pos, -1).astype(jnp.float32) + cnt_pos
  has_pos = pos_cnt > 0
  per_anchor = jnp.where(has_pos & jnp.isfinite(lse),
                         lse - pos_sum / jnp.where(has_pos, pos_cnt, 1.0), 0.0)
  return c.finalize(jnp.mean(per_anchor.reshape(v, b), axis=0), valid)
