"""Momentum (EMA) teacher: the key encoder of MoCo, updated after every optimiser step.

    theta_k <- m_t theta_k + (1 - m_t) theta_q
    m_t = 1 - (1 - m_0) (cos(pi t / T) + 1) / 2     (cosine schedule, m_T = 1; else m_t = m_0)

References: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
arXiv 1911.05722 (eq. 2, m = 0.999); Grill et al., "Bootstrap Your Own Latent", arXiv
2006.07733 (the cosine schedule of m).

The teacher's BatchNorm statistics are not averaged: as in MoCo's code (which updates only
``parameters()``), they are the running statistics of the teacher's own forward passes.

Example:
  >>> import jax.numpy as jnp
  >>> [round(float(decay(0.99, t, 100, cosine=True)), 4) for t in (0, 50, 100)]
  [0.99, 0.995, 1.0]
  >>> update({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.75)["w"].tolist()
  [0.25, 0.25]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def decay(base, step, num_steps, *, cosine=False):
  """``m_t`` at ``step`` (0-based count of completed steps)."""
  base = jnp.float32(base)
  if not cosine:
    return base
  t = jnp.clip(jnp.asarray(step, jnp.float32) / max(num_steps, 1), 0.0, 1.0)
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * t) + 1.0) / 2.0


def update(teacher, online, m):
  """``m * teacher + (1 - m) * online``, leaf by leaf, in each teacher leaf's dtype."""
  return jax.tree.map(lambda t, o: (m * t + (1.0 - m) * o).astype(t.dtype), teacher, online)


def encode(model, teacher, x, axis_name):
  """Teacher embeddings of ``x`` (train-mode BatchNorm, synchronised over ``axis_name``) and
  its new BatchNorm statistics; no gradient reaches the teacher."""
  teacher = jax.lax.stop_gradient(teacher)
  variables = {"params": teacher["params"]}
  if teacher["batch_stats"]:
    variables["batch_stats"] = teacher["batch_stats"]
  (_, z), new = model.apply(variables, x, train=True, mutable=["batch_stats"])
  stats = new.get("batch_stats", teacher["batch_stats"])
  stats = jax.tree.map(lambda s: jax.lax.pmean(s, axis_name), stats)
  return jax.lax.stop_gradient(z), stats


def proxy_accuracy(query, key, queue, axis_name):
  """Fraction of the global batch whose positive logit beats every negative (the other keys
  of the global batch and the queue): MoCHi's "proxy task" accuracy, without the synthetic
  points. Replicated scalar."""
  from jaxcl import collectives
  from jaxcl.losses import _common as c
  q, k = c.l2_normalize(jax.lax.stop_gradient(query)), c.l2_normalize(key)
  keys = collectives.all_gather(k, axis_name)
  row = collectives.global_row_index(q.shape[0], axis_name)
  sims = jnp.where(jnp.arange(keys.shape[0])[None] == row[:, None], -jnp.inf, q @ keys.T)
  best = jnp.max(sims, axis=1)
  if queue is not None:
    best = jnp.maximum(best, jnp.max(q @ c.l2_normalize(queue).T, axis=1))
  hits = collectives.psum(jnp.sum(jnp.sum(q * k, -1) > best).astype(jnp.float32), axis_name)
  return hits / (q.shape[0] * collectives.axis_size(axis_name))
