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
