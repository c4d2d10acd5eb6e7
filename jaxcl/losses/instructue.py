"""InstructUE's contrastive-autoregressive objective (arXiv 2510.11016; methods.md ``instructue``).

For example ``i`` (user ``X_i``, instruction ``I_i``, answer tokens ``a_i``)::

    L_i = ar_weight * L_AR_i + weight * L_CL_i
    L_AR_i = -(1 / |a_i|) sum_t log p(a_{i,t} | a_{i,<t}, I_i, X_i)            (masked mean)
    L_CL_i = (1/2) [ -log softmax_j(s(u_i, t_j) / T)_i - log softmax_j(s(t_i, u_j) / T)_i ]

``u_i = f(X_i, I_i)`` is the instruction-conditioned user embedding, ``t_j`` the text embedding of
answer ``j``, ``s`` cosine; ``L_CL`` is :func:`jaxcl.losses.clip_loss` (symmetric InfoNCE over the
global batch through the one kernel: the paper does not pin symmetry, tau or lambda; methods.md
says treat it as CLIP). ``answer_ids`` (optional ``[B]`` ints) are the answers' identities: rows
with the same answer are not each other's negatives (``sample_ids``). ``L_AR`` is per example
(the token mean over the example's own answer tokens: no cross-batch term, so ``axis_name`` only
reaches ``L_CL``). Returns ``[B_local]``; the global mean is the loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.losses import _common as c
from jaxcl.losses.infonce import clip_loss


def instructue_loss(logits, targets, target_mask, user, text, *, weight=1.0, ar_weight=1.0,
                    temperature=0.1, answer_ids=None, axis_name=None, impl="dense"):
  """Per-example ``ar_weight * L_AR + weight * L_CL`` (module docstring).

  Args:
    logits: ``[B, T, V]`` next-token logits at the answer positions.
    targets: ``[B, T]`` int answer token ids.
    target_mask: ``[B, T]`` bool / 0-1: which positions are answer tokens.
    user, text: ``[B, D]`` user and answer-text embeddings (normalised inside).
  """
  fn = "instructue_loss"
  if logits.ndim != 3:
    raise ValueError(f"{fn}: 'logits' must be [B, T, V], got shape {tuple(logits.shape)}")
  if targets.shape != logits.shape[:2] or target_mask.shape != logits.shape[:2]:
    raise ValueError(f"{fn}: 'targets' {tuple(targets.shape)} and 'target_mask' "
                     f"{tuple(target_mask.shape)} must be [B, T] = {tuple(logits.shape[:2])}")
  if not jnp.issubdtype(targets.dtype, jnp.integer):
    raise ValueError(f"{fn}: 'targets' must be integer token ids, got {targets.dtype}")
  if user.ndim != 2 or user.shape != text.shape or user.shape[0] != logits.shape[0]:
    raise ValueError(f"{fn}: 'user' {tuple(user.shape)} and 'text' {tuple(text.shape)} must "
                     f"both be [B, D] with B = {logits.shape[0]}")
  c.check_temperature(temperature, fn)
  m = target_mask.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), -1)[..., 0]
  ar = jnp.sum(nll * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)
  cl = clip_loss(user, text, temperature=temperature, axis_name=axis_name,
                 sample_ids=answer_ids, impl=impl)
  return ar_weight * ar + weight * cl
