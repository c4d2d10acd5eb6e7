"""Improved CLIP baselines (CLIP🚀 / CL2L): label-smoothed multi-view image-text contrast.

Fini, Astolfi, Romero-Soriano, Verbeek, Drozdzal, "Improved baselines for vision-language
pre-training", TMLR 2023, arXiv 2305.08675. Reference code: facebookresearch/clip-rocket,
``losses.py`` (``CLIPLoss``, ``CL2LLoss``; ``BarLIPLoss`` / ``SiamLIPLoss`` / ``SwALIPLoss``
are the paper's SSL add-ons, not implemented here: the SSL add-on of this module's trainer
adapter is SLIP-style SimCLR on two image views, :func:`jaxcl.losses.nt_xent`).

Label-smoothed cross-entropy (``CE_eps``, PyTorch's ``label_smoothing``: targets
``(1 - eps) onehot + eps / N`` over the ``N`` candidates) of the row ``i`` of
``s_ij = scale <q_i, k_j>`` (L2-normalised rows, ``j`` over the valid keys of the global
batch)::

    CE_eps_i = lse_j s_ij - (1 - eps) s_ii - eps * (1/N) sum_j s_ij

The smoothing term is the *mean logit over the candidates*; it needs nothing but the row's
own logits, so the loss decomposes per row (and per device: no statistic of the batch other
than the kernel's). Both the log-sum-exp and the sum of the candidates' logits come from the
one kernel (:func:`jaxcl.kernels.contrastive_lse`: ``mask_fn`` = the candidates, ``pos_fn`` =
the same set, so ``pos_sum / pos_count`` is the mean logit), hence ``impl="blockwise"`` /
``"ring"`` work unchanged. ``eps = 0`` is :func:`jaxcl.losses.info_nce`.

CL2L (:func:`cl2l_loss`). A weakly augmented global pair ``(u_i, v_i)`` (image, text; the
model's projection, scale ``lambda = 1 / temperature``) and ``m`` augmented views of each
modality ``h^I_a, h^T_b`` (the reference's separate projector, scale
``lambda_h = 1 / local_temperature``)::

    L^I_i = ( CE(lambda u_i V^T)_i + m * 1/m^2 sum_{a,b} CE_eps(lambda_h h^I_{a,i} (H^T_b)^T)_i ) / (1 + m)
    L^T_i = the same with the modalities swapped
    L_i   = (L^I_i + L^T_i) / 2          x 2 with reduction="sum" (the reference's repro runs)

``V``, ``H^T_b`` are the gathered global batches; the positive of row ``i`` is row ``i`` of the
key view. Label smoothing is applied only to the local (augmented) terms, as in the code.
``m = 0`` (no local views) is the plain CLIP loss (:func:`jaxcl.losses.clip_loss`, x 2 with
``sum``).

Per-example values: every term is a row mean of cross-entropies over the global batch (the
reference's per-rank ``mean`` averaged by DDP), so the mean over the global batch of the
returned ``[B_local]`` values is the loss.

Distributed semantics: keys and their validity are gathered along ``axis_name`` (inside the
kernel); queries stay local; value and gradient equal the single-device computation on the
full batch.

Paper vs code: the code's local loop recomputes the mean over all ``m^2`` pairs after every
outer iteration; its final value (used here) is the mean over all pairs. ``valid`` (padding)
rows are neither anchors nor candidates, so ``N`` counts valid keys only (PyTorch's ``eps / C``
over every class when nothing is padded).

Example:
  >>> import jax, jaxcl
  >>> k = jax.random.split(jax.random.key(0), 4)
  >>> u, v = jax.random.normal(k[0], (8, 16)), jax.random.normal(k[1], (8, 16))
  >>> hi, ht = jax.random.normal(k[2], (8, 2, 16)), jax.random.normal(k[3], (8, 2, 16))
  >>> jax.jit(jaxcl.losses.contrib.cl2l_loss)(u, v, hi, ht).shape
  (8,)
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c
from jaxcl.losses.infonce import info_nce

REDUCTIONS = ("sum", "avg")


def _check_smoothing(value, fn):
  if isinstance(value, jax.core.Tracer):
    return
  if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value < 1.0:
    raise ValueError(f"{fn}: 'label_smoothing' must be a float in [0, 1), got {value!r}")


def _smoothed(q, k, scale, eps, valid, axis_name, impl, block_size):
  """``CE_eps`` rows of already-prepared ``q [Bq, D]`` (``len(valid_q) = Bq``) against the
  gathered keys ``k [Bk, D]``; row ``r`` of ``q`` has positive ``k[r % Bk]``."""
  bk = k.shape[0]
  nq = q.shape[0] // bk
  cand = c.candidate_mask(exclude_self=False)
  q_tags = c.concat_tags(*[c.row_tags(bk, axis_name, view=0, valid=valid)] * nq)
  k_tags = c.row_tags(bk, axis_name, view=1, valid=valid)
  smooth = not (isinstance(eps, numbers.Real) and eps == 0)
  res = contrastive_lse(q, k, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=cand,
                        pos_fn=cand if smooth else None, axis_name=axis_name, impl=impl,
                        block_size=block_size)
  pos = jnp.sum(q * jnp.concatenate([k] * nq), axis=-1) * scale
  ok = jnp.isfinite(res.lse)
  if smooth:
    eps = jnp.asarray(eps, jnp.float32)
    mean = res.pos_sum / jnp.maximum(res.pos_count, 1.0)
    out = res.lse - (1.0 - eps) * pos - eps * mean
  else:
    out = res.lse - pos
  return jnp.where(ok & jnp.concatenate([valid] * nq), out, 0.0)


def smoothed_info_nce(query, key, *, temperature=0.1, label_smoothing=0.1, axis_name=None,
                      normalize=True, valid=None, impl="dense", block_size=1024):
  """One-direction InfoNCE with label smoothing ``eps`` (see the module docstring).

  Row ``i``'s positive is ``key[i]``; the candidates are every valid key of the global batch.
  Returns ``[B_local]`` float32: ``lse_i - (1 - eps) s_ii - eps * mean_j s_ij``.

  Args:
    query, key: ``[B, D]`` float embeddings.
    temperature: ``T > 0`` (Python float or a traced scalar, e.g. a learnable
      ``exp(-theta)``).
    label_smoothing: ``eps`` in ``[0, 1)`` (the reference's CL2L default 0.1).
    axis_name, normalize, valid, impl, block_size: as :func:`jaxcl.losses.info_nce`.
  """
  fn = "smoothed_info_nce"
  query, key = c.paired(fn, "query", query, "key", key, temperature)
  _check_smoothing(label_smoothing, fn)
  valid = c.valid_mask(valid, query.shape[0], fn)
  scale = c.inv_temperature(temperature)
  return _smoothed(c.prepare(query, normalize), c.prepare(key, normalize), scale,
                   label_smoothing, valid, axis_name, impl, block_size)


def _local_views(name, x, b, fn):
  x = c.embeddings(name, x, fn, rank=3, what="[batch, views, dim]")
  if x.shape[0] != b:
    raise ValueError(f"{fn}: '{name}' must have the batch size of 'image' ({b}), got shape "
                     f"{tuple(x.shape)}")
  return x


def cl2l_loss(image, text, image_local=None, text_local=None, *, temperature=0.07,
              local_temperature=0.1, label_smoothing=0.1, reduction="sum", axis_name=None,
              normalize=True, valid=None, impl="dense", block_size=1024):
  """CL2L: global CLIP + label-smoothed CLIP on all ``m x m`` local view pairs. ``[B_local]``.

  Args:
    image, text: ``[B, D]`` the global (weakly augmented) pair, the model's projection.
    image_local, text_local: ``[B, m, D_h]`` the ``m`` augmented views of each modality
      through the separate projector (``D_h`` may differ from ``D``); both ``None`` for
      ``m = 0`` (plain CLIP).
    temperature: the global term's ``T`` (CLIP's ``1 / logit_scale``; traced allowed).
    local_temperature: the local terms' ``T_h`` (reference: learnable, init ``1 / 10``).
    label_smoothing: ``eps`` of the local terms (reference default 0.1; 0 for SwALIP).
    reduction: ``"sum"`` (the reference's ``--loss-avg-or-sum sum``: ``L^I + L^T``) or
      ``"avg"`` (``(L^I + L^T) / 2``).
    axis_name, normalize, valid, impl, block_size: as :func:`jaxcl.losses.info_nce`.

  Returns:
    ``[B_local]`` float32 whose global mean is the CL2L loss.
  """
  fn = "cl2l_loss"
  image, text = c.paired(fn, "image", image, "text", text, temperature)
  b = image.shape[0]
  c.check_temperature(local_temperature, fn, "local_temperature")
  _check_smoothing(label_smoothing, fn)
  if reduction not in REDUCTIONS:
    raise ValueError(f"{fn}: 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
  if (image_local is None) != (text_local is None):
    raise ValueError(f"{fn}: pass both 'image_local' and 'text_local' (the m local views of "
                     "each modality) or neither")
  valid = c.valid_mask(valid, b, fn)
  m = 0
  if image_local is not None:
    hi = _local_views("image_local", image_local, b, fn)
    ht = _local_views("text_local", text_local, b, fn)
    c.check_same("image_local", hi, "text_local", ht, 1, fn, "number of views m")
    c.check_same("image_local", hi, "text_local", ht, 2, fn, "feature size")
    if hi.shape[1] < 1:
      raise ValueError(f"{fn}: 'image_local' must have at least 1 view, got shape "
                       f"{tuple(hi.shape)}")
    m = hi.shape[1]
  kw = dict(temperature=temperature, axis_name=axis_name, normalize=normalize, valid=valid,
            impl=impl, block_size=block_size)
  glob_i, glob_t = info_nce(image, text, **kw), info_nce(text, image, **kw)
  if m == 0:
    loc_i, loc_t = 0.0, 0.0
  else:
    scale = c.inv_temperature(local_temperature)
    hi, ht = c.prepare(hi, normalize), c.prepare(ht, normalize)

    def direction(q_views, k_views):
      # All m query views stacked against one key view at a time: m kernel calls.
      q = jnp.concatenate([q_views[:, a] for a in range(m)])
      tot = 0.0
      for w in range(m):
        per = _smoothed(q, k_views[:, w], scale, label_smoothing, valid, axis_name, impl,
                        block_size)
        tot = tot + jnp.sum(per.reshape(m, b), axis=0)
      return tot / (m * m)

    loc_i, loc_t = direction(hi, ht), direction(ht, hi)
  li = (glob_i + m * loc_i) / (1 + m)
  lt = (glob_t + m * loc_t) / (1 + m)
  out = (li + lt) * (1.0 if reduction == "sum" else 0.5)
  return c.finalize(out, valid)
