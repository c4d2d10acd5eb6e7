"""``MultiTower``: several independent models on the same input, outputs concatenated.

Each tower is a module ``x -> (h, z)`` (a :class:`jaxcl.models.ContrastiveModel`); the
towers share nothing (own parameters, own BatchNorm statistics) and the result is
``(h = [h_1 | ... | h_N], z = [z_1 | ... | z_N])`` along the last axis, so the trainer and the
evaluator see one model. Uses: SepCLR's common and salient encoders (``z = [c | s]``, the
objective splits it at ``common_dim``); later one tower per modality.

The trainer builds ``config.model.towers = N`` copies of the configured encoder + projection
head (default 1: the plain ``ContrastiveModel``, unchanged).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.models import MLP, ContrastiveModel, ProjectionHead
  >>> tower = lambda: ContrastiveModel(MLP(hidden=(8,)), ProjectionHead(hidden=8, out=3))
  >>> m = MultiTower((tower(), tower()))
  >>> v = jax.jit(m.init)(jax.random.key(0), jnp.zeros((2, 4)))
  >>> [a.shape for a in jax.jit(m.apply)(v, jnp.zeros((2, 4)))]
  [(2, 16), (2, 6)]
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MultiTower(nn.Module):
  """``x -> ([h_1 | ... | h_N], [z_1 | ... | z_N])`` for towers ``x -> (h_t, z_t)``."""
  towers: Sequence[nn.Module]

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not self.towers:
      raise ValueError("MultiTower: 'towers' must name at least one module")
    outs = [tower(x, train=train) for tower in self.towers]
    return tuple(jnp.concatenate([o[i] for o in outs], axis=-1) for i in range(2))
