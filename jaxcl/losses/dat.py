"""Dual Adversarial Training (DAT): the joint discriminative-generative loss of a classifier
whose log-sum-exp logit is an energy model.

Equation (Yin, Zhang, Steele, Shavit, Wang, "Joint Discriminative-Generative Modeling via Dual
Adversarial Training", arXiv 2510.13872; reference code xuwangyin/DAT,
``rebm/training/metrics.py``: ``compute_ebm_metrics`` and ``compute_clf_adv_loss``). For a
classifier ``f(x) in R^C`` the "EBM logit" is ``l(x) = LSE_c f_c(x)`` (= -E(x), JEM's energy);
with real rows ``x_i``, contrastive samples ``x~_i`` (class-conditional L2-PGD ascent of
``f_{y_i}`` from out-of-distribution starts, no gradient through the sampler:
:func:`jaxcl.pgd.sample_class_conditional`) and adversarial rows ``x^adv_i`` (untargeted
L2-PGD on the cross-entropy, :func:`jaxcl.pgd.attack_ce`)::

    L_EBM = 1/(2B) sum_i [ softplus(-l(x_i)) + softplus(l(x~_i)) ]   # BCE-with-logits,
                                                                    # real 1, sample 0
    L_clf = 1/B    sum_i CE(f(x^adv_i), y_i)
    L     = bce_weight * L_EBM + clf_weight * L_clf

Per example (the trainer's convention: the global mean of the returned ``[B_local]`` values
is ``L``)::

    L_i = bce_weight * (softplus(-l(x_i)) + softplus(l(x~_i))) / 2 + clf_weight * CE_i

Inputs are the three logit arrays ``[B, C]`` (any float dtype; float32 compute): the loss is a
pure function of logits, the samplers live in :mod:`jaxcl.pgd` and the trainer adapter
(:func:`jaxcl.train.objectives.dat_objective`) builds the rows. ``real_logits`` and
``sample_logits`` may both be ``None`` (no EBM term: PGD adversarial training; with clean
rows as ``adv_logits``, plain cross-entropy). Every row is independent, so ``axis_name`` is
accepted for the common convention and needs no communication. ``valid=False`` rows give 0
and no gradient. The optional R1 penalty of the reference is not implemented (weight 0 in
every released config).

The T curriculum of the reference (``rebm/training/train.py``) as pure functions of an explicit
state (:func:`curriculum_init`, :func:`curriculum_update`): every batch's AUC of ``l`` on real
rows vs samples enters a window of the last ``window`` batches; when the window is full and
its mean is ``>= threshold``, ``T += 1`` (up to ``max_steps``) and the window restarts.

Recommendation: ``bce_weight = clf_weight = 1`` (the reference); train stage 2 (this loss)
from a PGD-adversarially-trained classifier (stage 1), without BatchNorm.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.losses.contrib import dat_loss
  >>> k = jax.random.split(jax.random.key(0), 3)
  >>> real, fake, adv = (jax.random.normal(kk, (4, 10)) for kk in k)
  >>> dat_loss(real, fake, adv, jnp.array([0, 1, 2, 3])).shape
  (4,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.losses import _common as c
from jaxcl.losses.crossentropy import softmax_cross_entropy


def lse_energy(logits):
  """``l(x) = logsumexp_c logits_c`` (float32, ``[B]``): the negative JEM energy."""
  return jax.nn.logsumexp(jnp.asarray(logits).astype(jnp.float32), axis=-1)


def dat_loss(real_logits, sample_logits, adv_logits, labels, *, bce_weight=1.0,
             clf_weight=1.0, valid=None, axis_name=None):
  """Per-example DAT loss ``[B_local]`` (module docstring); ``real_logits`` /
  ``sample_logits`` ``None``: no EBM term."""
  fn = "dat_loss"
  del axis_name  # per-row loss
  adv = c.embeddings("adv_logits", adv_logits, fn, what="[batch, classes]")
  b = adv.shape[0]
  valid = c.valid_mask(valid, b, fn)
  for name, w in (("bce_weight", bce_weight), ("clf_weight", clf_weight)):
    if not isinstance(w, jax.core.Tracer) and not float(w) >= 0:
      raise ValueError(f"{fn}: '{name}' must be >= 0, got {w}")
  out = clf_weight * softmax_cross_entropy(adv, labels, valid=valid)
  if (real_logits is None) != (sample_logits is None):
    raise ValueError(f"{fn}: 'real_logits' and 'sample_logits' must both be given or both be "
                     "None")
  if real_logits is not None:
    real = c.embeddings("real_logits", real_logits, fn, what="[batch, classes]")
    fake = c.embeddings("sample_logits", sample_logits, fn, what="[batch, classes]")
    for name, x in (("real_logits", real), ("sample_logits", fake)):
      if x.shape != adv.shape:
        raise ValueError(f"{fn}: '{name}' and 'adv_logits' must have the same shape, got "
                         f"{tuple(x.shape)} and {tuple(adv.shape)}")
    bce = 0.5 * (jax.nn.softplus(-lse_energy(real)) + jax.nn.softplus(lse_energy(fake)))
    out = out + bce_weight * bce
  return c.finalize(out, valid)


def curriculum_init(start, window):
  """The curriculum state: ``T = start``, an empty window of ``window`` batch AUCs."""
  return {"steps": jnp.zeros((), jnp.int32), "T": jnp.asarray(start, jnp.int32),
          "aucs": jnp.zeros((window,), jnp.float32), "count": jnp.zeros((), jnp.int32),
          "auc": jnp.zeros((), jnp.float32)}


def curriculum_update(state, batch_auc, *, threshold, max_steps):
  """Records ``batch_auc``; ``T + 1`` and an empty window when the full window's mean AUC is
  ``>= threshold`` and ``T < max_steps`` (``steps`` is left to the caller)."""
  window = state["aucs"].shape[0]
  aucs = state["aucs"].at[state["count"] % window].set(batch_auc)
  count = state["count"] + 1
  filled = jnp.arange(window) < count
  mean = jnp.sum(jnp.where(filled, aucs, 0.0)) / jnp.minimum(count, window)
  up = (count >= window) & (mean >= threshold) & (state["T"] < max_steps)
  return dict(state, T=state["T"] + up.astype(jnp.int32), aucs=aucs,
              count=jnp.where(up, 0, count), auc=jnp.asarray(batch_auc, jnp.float32))
