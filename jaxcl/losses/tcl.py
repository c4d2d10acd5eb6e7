"""TCL: Triple Contrastive Learning (cross-modal alignment, intra-modal contrast, local MI).

Yang et al., "Vision-Language Pre-Training with Triple Contrastive Learning", CVPR 2022,
arXiv 2202.10401. Reference code: uta-smile/TCL, ``models/model_pretrain.py`` (``ALBEF.forward``,
``in_batch_g2l_loss``, ``patch_pooling``), ``Pretrain.py`` (the alpha ramp).

Notation (rows L2-normalised, ``s(a, b) = <a, b> / T``): ``v_i``, ``t_i`` the online global
image / text embeddings; ``v'_i``, ``t'_i`` the momentum (EMA teacher) embeddings (image from
the other augmented view, text from the same text); ``V' = [v'_global batch ; image queue]``,
``T' = [t'_global batch ; text queue]``; ``l_ip`` the local embeddings (image patches / text
tokens) of sample ``i`` (momentum-projected in the reference)::

    distilled InfoNCE (one direction, query q, keys K, teacher query q'):
      y_ij  = alpha * softmax_j s(q'_i, K_j) + (1 - alpha) [j = i]          (soft targets)
      L_i   = -sum_j y_ij log softmax_j s(q_i, K_j)
            = lse_j s(q_i, K_j) - (1 - alpha) s(q_i, K_i) - alpha sum_j p'_ij s(q_i, K_j)

    CMA (tcl_cma) = 1/2 [ distilled(v, T', v') + distilled(t, V', t') ]  (ITC + distillation)
    IMC (tcl_imc) = 1/2 [ InfoNCE(v, V') + InfoNCE(t, T') ]               (hard targets)
    LMI (tcl_lmi), per modality, global g, locals l:
      L_i = 1/|P_i| sum_{p in P_i} -log( exp s(g_i, l_ip) / (exp s(g_i, l_ip)
                                         + sum_{j != i} sum_{p' in P_j} exp s(g_i, l_jp')) )
          = 1/|P_i| sum_{p in P_i} softplus( lse_{j != i, p' in P_j} s(g_i, l_jp')
                                             - s(g_i, l_ip) )
      (``P_i``: the valid locals of sample ``i``: every patch, or the non-padding tokens)

    tcl_loss = mean of the active directional terms: (CMA_i2t + CMA_t2i + IMC_i + IMC_t +
               LMI_img + LMI_txt) / 6 as the reference's ``loss_ita``; CMA alone is ALBEF's ITC
               (``(i2t + t2i) / 2``); ``imc=False`` / ``lmi=False`` drop terms (ablations).

The soft targets are constants (the reference computes them under ``no_grad``): no gradient
reaches the teacher query or the temperature through them; the keys get their gradient through
``s(q_i, K_j)``. With ``alpha = 0`` the distilled InfoNCE is :func:`jaxcl.losses.info_nce` with
the queue as shared negatives, and ``tcl_cma(v, t, v, t, alpha=0)`` is ``clip_loss(v, t)``.
The reference ramps ``alpha`` linearly from 0 to 0.4 over the first epoch (the trainer adapter's
``alpha_warmup_steps``); ``alpha`` may be a traced scalar.

Kernel: every log-sum-exp over the batch goes through :func:`jaxcl.kernels.contrastive_lse`
(``impl=`` honoured): the student's (via :func:`jaxcl.losses.info_nce`), the teacher's
normaliser, and LMI's negatives (queries ``g_i``, keys the ``B_global * L`` locals tagged with
their sample and validity). The soft term needs every teacher probability
``p'_ij = exp(s(q'_i, K_j) - lse'_i)`` with ``lse'`` from the kernel, so the teacher logits
are formed densely against the gathered keys (``[B_local, N]`` without gradient, whatever
``impl``); the student side only needs ``q_i . (sum_j p'_ij K_j)``. LMI's positives are the
``B_local x L`` products of each global with its own locals.

Paper / code vs jaxcl (methods.md section 23):
  * the queues (65,536 momentum features) are replaced by the gathered global batch; an
    optional shared ``queue`` ``[Q, D]`` per modality is still accepted (stale negatives,
    parity with the reference), but the trainer does not keep two queues;
  * LMI's locals in the reference are momentum-projected patch tokens average-pooled to 4 x 4,
    and momentum-projected non-CLS text tokens (padding masked); here the caller passes any
    ``[B, L, D]`` locals with an optional ``[B, L]`` validity (the trainer adapter passes the
    teacher's locals when the EMA teacher is on);
  * a sample with no valid local contributes 0 to LMI (the reference divides by 0);
  * ITM and MLM (the fusion encoder) are not part of this module.

Distributed semantics: keys (and locals) with their tags are gathered along ``axis_name``;
queries stay local. Value and gradient equal the single-device call on the full batch.

Example:
  >>> import jax, jaxcl
  >>> k = jax.random.split(jax.random.key(0), 6)
  >>> v, t, vm, tm = (jax.random.normal(x, (4, 8)) for x in k[:4])
  >>> vl, tl = jax.random.normal(k[4], (4, 3, 8)), jax.random.normal(k[5], (4, 5, 8))
  >>> jaxcl.losses.contrib.tcl_loss(v, t, vm, tm, image_locals=vl, text_locals=tl, alpha=0.4).shape
  (4,)
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c
from jaxcl.losses.infonce import info_nce

TERMS = ("cma_i2t", "cma_t2i", "imc_image", "imc_text", "lmi_image", "lmi_text")


def _check_alpha(alpha, fn):
  if isinstance(alpha, jax.core.Tracer):
    return
  if isinstance(alpha, (numbers.Number, np.ndarray, np.generic, jax.Array)):
    a = np.asarray(alpha)
    if a.shape != () or not 0.0 <= float(a) <= 1.0:
      raise ValueError(f"{fn}: 'alpha' must be a scalar in [0, 1], got {alpha}")


def _is_zero(alpha):
  return not isinstance(alpha, jax.core.Tracer) and float(np.asarray(alpha)) == 0.0


def _queue(queue, d, fn, name):
  if queue is None:
    return None
  queue = c.embeddings(name, queue, fn, what="[queue, dim]")
  if queue.shape[1] != d:
    raise ValueError(f"{fn}: '{name}' must have feature size {d} (as the embeddings), got "
                     f"shape {tuple(queue.shape)}")
  return queue


def distilled_info_nce(query, key, *, teacher_query=None, alpha=0.0, temperature=0.07,
                       queue=None, axis_name=None, normalize=True, valid=None, impl="dense",
                       block_size=1024):
  """InfoNCE with momentum-distilled soft targets (one direction). Returns ``[B_local]``.

  Args:
    query: ``[B, D]`` online queries ``q_i``.
    key: ``[B, D]`` keys ``K_i`` (momentum features in TCL); row ``i`` is the positive of
      query ``i``, every other global key (and the queue) a candidate.
    teacher_query: ``[B, D]`` momentum queries ``q'_i`` whose softmax over the same candidates
      is the soft target (no gradient). Required unless ``alpha`` is a concrete 0.
    alpha: weight of the soft targets in ``[0, 1]`` (TCL / ALBEF: 0.4); may be traced.
    temperature: ``T`` (Python float > 0 or a traced scalar).
    queue: optional ``[Q, D]`` shared extra candidates (identical on every device).
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise every input first.
    valid: ``[B]`` bool; padded rows are neither queries nor candidates.
    impl, block_size: kernel implementation of the log-sum-exps.
  """
  fn = "distilled_info_nce"
  query, key = c.paired(fn, "query", query, "key", key, temperature)
  b, d = query.shape
  _check_alpha(alpha, fn)
  queue = _queue(queue, d, fn, "queue")
  valid = c.valid_mask(valid, b, fn)
  if teacher_query is None:
    if not _is_zero(alpha):
      raise ValueError(f"{fn}: 'teacher_query' is required for soft targets (alpha = {alpha})")
  else:
    teacher_query = c.embeddings("teacher_query", teacher_query, fn)
    if teacher_query.shape != query.shape:
      raise ValueError(f"{fn}: 'teacher_query' must have the shape of 'query' "
                       f"{tuple(query.shape)}, got {tuple(teacher_query.shape)}")
  kw = dict(axis_name=axis_name, impl=impl, block_size=block_size)
  hard = info_nce(query, key, temperature=temperature, negatives=queue, normalize=normalize,
                  valid=valid, **kw)
  if teacher_query is None or _is_zero(alpha):
    return hard
  scale = c.inv_temperature(temperature)
  q, k = c.prepare(query, normalize), c.prepare(key, normalize)
  qn = None if queue is None else c.prepare(queue, normalize)
  sg = jax.lax.stop_gradient
  qt, scale_t = sg(c.prepare(teacher_query, normalize)), sg(scale)
  extra_t = None if qn is None else logits(qt, sg(qn), scale_t)
  tags = c.row_tags(b, axis_name, view=1, valid=valid)
  lse_t = contrastive_lse(qt, sg(k), scale_t, q_tags=c.row_tags(b, axis_name, view=0,
                                                                  valid=valid),
                          k_tags=tags, mask_fn=c.candidate_mask(exclude_self=False),
                          extra_logits=extra_t, **kw).lse
  ok = jnp.isfinite(lse_t)
  lse_t = jnp.where(ok, lse_t, 0.0)[:, None]
  k_all = collectives.all_gather(k, axis_name)
  valid_all = collectives.all_gather(valid, axis_name)
  prob = lambda s, m: jnp.where(m & ok[:, None], jnp.exp(jnp.minimum(s - lse_t, 0.0)), 0.0)
  p = prob(logits(qt, sg(k_all), scale_t), valid_all[None, :])
  # The teacher-weighted mean key: sum_j p'_ij s(q_i, K_j) = scale * <q_i, sum_j p'_ij K_j>.
  mean_key = jnp.einsum("ij,jd->id", p, k_all, preferred_element_type=jnp.float32)
  if qn is not None:
    pq = prob(extra_t, jnp.ones((1, qn.shape[0]), bool))
    mean_key = mean_key + jnp.einsum("ij,jd->id", pq, qn, preferred_element_type=jnp.float32)
  soft = jnp.sum(q * mean_key, axis=-1) * scale
  pos = jnp.sum(q * k, axis=-1) * scale
  alpha = jnp.asarray(alpha, jnp.float32)
  # lse - (1 - a) pos - a soft = (lse - pos) + a (pos - soft)
  return c.finalize(hard + alpha * (pos - soft), valid & ok)


def _four(fn, image, text, image_m, text_m):
  names = ("image", "text", "image_m", "text_m")
  arrs = [c.embeddings(n, x, fn) for n, x in zip(names, (image, text, image_m, text_m))]
  for n, x in zip(names[1:], arrs[1:]):
    if x.shape != arrs[0].shape:
      raise ValueError(f"{fn}: 'image' and {n!r} must have the same shape, got "
                       f"{tuple(arrs[0].shape)} and {tuple(x.shape)}")
  return arrs


def tcl_cma(image, text, image_m, text_m, *, alpha=0.4, temperature=0.07, image_queue=None,
            text_queue=None, axis_name=None, normalize=True, valid=None, impl="dense",
            block_size=1024):
  """Cross-modal alignment with momentum distillation, ``(i2t + t2i) / 2``. Returns ``[B_local]``.

  Args:
    image, text: ``[B, D]`` online global embeddings ``v``, ``t``.
    image_m, text_m: ``[B, D]`` momentum embeddings ``v'``, ``t'`` (the keys, and the teacher
      queries of the soft targets). Without a teacher pass the online ones (``alpha=0`` then
      gives ``clip_loss(image, text)``).
    alpha: soft-target weight (0.4 in the reference, ramped from 0 in the first epoch).
    image_queue, text_queue: optional ``[Q, D]`` extra keys of t2i / i2t.
    Others: as :func:`distilled_info_nce`.
  """
  fn = "tcl_cma"
  image, text, image_m, text_m = _four(fn, image, text, image_m, text_m)
  c.check_temperature(temperature, fn)
  kw = dict(alpha=alpha, temperature=temperature, axis_name=axis_name, normalize=normalize,
            valid=valid, impl=impl, block_size=block_size)
  i2t = distilled_info_nce(image, text_m, teacher_query=image_m, queue=text_queue, **kw)
  t2i = distilled_info_nce(text, image_m, teacher_query=text_m, queue=image_queue, **kw)
  return 0.5 * (i2t + t2i)


def tcl_imc(image, text, image_m, text_m, *, temperature=0.07, image_queue=None,
            text_queue=None, axis_name=None, normalize=True, valid=None, impl="dense",
            block_size=1024):
  """Intra-modal contrast ``(InfoNCE(v, V') + InfoNCE(t, T')) / 2`` (hard targets; the positive
  of ``v_i`` is the momentum embedding ``v'_i`` of the other image view, of ``t_i`` the momentum
  embedding of the same text). Returns ``[B_local]``. Arguments as :func:`tcl_cma`."""
  fn = "tcl_imc"
  image, text, image_m, text_m = _four(fn, image, text, image_m, text_m)
  c.check_temperature(temperature, fn)
  kw = dict(temperature=temperature, axis_name=axis_name, normalize=normalize, valid=valid,
            impl=impl, block_size=block_size)
  d = image.shape[1]
  i2i = info_nce(image, image_m, negatives=_queue(image_queue, d, fn, "image_queue"), **kw)
  t2t = info_nce(text, text_m, negatives=_queue(text_queue, d, fn, "text_queue"), **kw)
  return 0.5 * (i2i + t2t)


def _local_negative(qt, kt):
  return kt["valid"] & (kt["sample"] != qt["sample"])


def tcl_lmi(global_, locals_, *, local_valid=None, temperature=0.07, axis_name=None,
            normalize=True, valid=None, impl="dense", block_size=1024):
  """Local-global mutual information (InfoNCE over the locals of the global batch, one
  modality; the reference's ``in_batch_g2l_loss``). Returns ``[B_local]``.

  Args:
    global_: ``[B, D]`` online global embeddings ``g_i``.
    locals_: ``[B, L, D]`` local embeddings ``l_ip`` (patches / tokens; momentum-projected in
      the reference). The positives of ``g_i`` are its own valid locals, one term each; the
      negatives every valid local of every other valid sample of the global batch.
    local_valid: ``[B, L]`` bool (text padding); ``None`` = every local valid.
    temperature, axis_name, normalize, valid, impl, block_size: as :func:`distilled_info_nce`.
  """
  fn = "tcl_lmi"
  global_ = c.embeddings("global_", global_, fn)
  locals_ = c.embeddings("locals_", locals_, fn, rank=3, what="[batch, locals, dim]")
  c.check_same("global_", global_, "locals_", locals_, 0, fn, "batch size")
  c.check_same("global_", global_, "locals_", locals_, 1, fn, "feature size", axis_b=2)
  c.check_temperature(temperature, fn)
  b, n_loc, d = locals_.shape
  if n_loc < 1:
    raise ValueError(f"{fn}: 'locals_' must have at least one local, got shape "
                     f"{tuple(locals_.shape)}")
  valid = c.valid_mask(valid, b, fn)
  if local_valid is None:
    local_valid = jnp.ones((b, n_loc), bool)
  else:
    local_valid = jnp.asarray(local_valid)
    if local_valid.shape != (b, n_loc):
      raise ValueError(f"{fn}: 'local_valid' must have shape ({b}, {n_loc}) (one flag per "
                       f"local of 'locals_'), got {tuple(local_valid.shape)}")
    local_valid = local_valid.astype(bool)
  local_valid = local_valid & valid[:, None]
  scale = c.inv_temperature(temperature)
  g = c.prepare(global_, normalize)
  loc = c.prepare(locals_, normalize)
  sample = collectives.global_row_index(b, axis_name)
  neg = contrastive_lse(g, loc.reshape(b * n_loc, d), scale, q_tags={"sample": sample},
                        k_tags={"sample": jnp.repeat(sample, n_loc),
                                "valid": local_valid.reshape(-1)},
                        mask_fn=_local_negative, axis_name=axis_name, impl=impl,
                        block_size=block_size).lse
  has_neg = jnp.isfinite(neg)
  pos = jnp.einsum("bd,bld->bl", g, loc, preferred_element_type=jnp.float32) * scale
  # -log(e^pos / (e^pos + e^neg)) = softplus(neg - pos); 0 without any negative.
  terms = jnp.where(local_valid & has_neg[:, None],
                    jax.nn.softplus(jnp.where(has_neg, neg, 0.0)[:, None] - pos), 0.0)
  count = jnp.sum(local_valid, axis=1)
  per = jnp.sum(terms, axis=1) / jnp.maximum(count, 1).astype(jnp.float32)
  return c.finalize(per, valid & (count > 0))


def tcl_terms(image, text, image_m, text_m, *, image_locals=None, text_locals=None,
              image_local_valid=None, text_local_valid=None, alpha=0.4, imc=True, lmi=True,
              temperature=0.07, image_queue=None, text_queue=None, axis_name=None,
              normalize=True, valid=None, impl="dense", block_size=1024):
  """The active directional terms of :func:`tcl_loss` as ``{name: [B_local]}`` (names from
  :data:`TERMS`)."""
  fn = "tcl_loss"
  image, text, image_m, text_m = _four(fn, image, text, image_m, text_m)
  c.check_temperature(temperature, fn)
  d = image.shape[1]
  image_queue = _queue(image_queue, d, fn, "image_queue")
  text_queue = _queue(text_queue, d, fn, "text_queue")
  if lmi and image_locals is None and text_locals is None:
    raise ValueError(f"{fn}: lmi=True needs 'image_locals' and/or 'text_locals' ([B, L, D] "
                     "local embeddings); pass lmi=False for CMA (+ IMC) only")
  kw = dict(temperature=temperature, axis_name=axis_name, normalize=normalize, valid=valid,
            impl=impl, block_size=block_size)
  out = {"cma_i2t": distilled_info_nce(image, text_m, teacher_query=image_m, alpha=alpha,
                                       queue=text_queue, **kw),
         "cma_t2i": distilled_info_nce(text, image_m, teacher_query=text_m, alpha=alpha,
                                       queue=image_queue, **kw)}
  if imc:
    out["imc_image"] = info_nce(image, image_m, negatives=image_queue, **kw)
    out["imc_text"] = info_nce(text, text_m, negatives=text_queue, **kw)
  if lmi:
    for name, glob, loc, lv in (("image", image, image_locals, image_local_valid),
                                ("text", text, text_locals, text_local_valid)):
      if loc is not None:
        try:
          out[f"lmi_{name}"] = tcl_lmi(glob, loc, local_valid=lv, **kw)
        except (ValueError, TypeError) as e:  # name the tcl_loss argument
          msg = str(e).replace("tcl_lmi", fn).replace("'locals_'", f"'{name}_locals'")
          msg = msg.replace("'local_valid'", f"'{name}_local_valid'")
          raise type(e)(msg.replace("'global_'", f"'{name}'")) from None
  return out


def tcl_loss(image, text, image_m, text_m, *, image_locals=None, text_locals=None,
             image_local_valid=None, text_local_valid=None, alpha=0.4, imc=True, lmi=True,
             temperature=0.07, image_queue=None, text_queue=None, axis_name=None,
             normalize=True, valid=None, impl="dense", block_size=1024):
  """TCL's contrastive objective ``L_ita``: the mean of the active directional terms
  (CMA i2t / t2i, IMC image / text when ``imc``, LMI image / text for each given locals when
  ``lmi``). Returns ``[B_local]``; the global mean is the loss.

  Args:
    image, text, image_m, text_m: ``[B, D]`` online and momentum global embeddings.
    image_locals, text_locals: ``[B, L, D]`` locals (patches / tokens) for LMI.
    image_local_valid, text_local_valid: ``[B, L]`` bool validity of the locals (padding).
    alpha: soft-target weight of CMA (0.4; traced allowed).
    imc, lmi: include the intra-modal / local terms (``False, False`` = ALBEF's ITC).
    Others: as :func:`distilled_info_nce`.
  """
  terms = tcl_terms(image, text, image_m, text_m, image_locals=image_locals,
                    text_locals=text_locals, image_local_valid=image_local_valid,
                    text_local_valid=text_local_valid, alpha=alpha, imc=imc, lmi=lmi,
                    temperature=temperature, image_queue=image_queue, text_queue=text_queue,
                    axis_name=axis_name, normalize=normalize, valid=valid, impl=impl,
                    block_size=block_size)
  return sum(terms.values()) / len(terms)
