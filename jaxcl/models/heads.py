"""Projection / prediction heads and the encoder + head pair used by every recipe.

* ``ProjectionHead``: SimCLR's ``g(h)`` (Chen et al. 2020, arXiv 2002.05709):
  ``num_layers - 1`` blocks ``Dense(hidden) -> [BN] -> ReLU`` then ``Dense(out)`` (with a
  final BN when ``last_bn``, as SimCLR v2 / MoCo v3).
* ``PredictionHead``: BYOL / SimSiam predictor ``q(z)`` (Grill et al. 2020, arXiv
  2006.07733; Chen & He 2021, arXiv 2011.10566): ``Dense(hidden) -> BN -> ReLU -> Dense(out)``.
* ``ContrastiveModel(encoder, head)``: ``x -> (h = encoder(x), z = head(h))``; the probe
  uses ``h``, the objective ``z``.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.models import MLP
  >>> m = ContrastiveModel(MLP(hidden=(16,)), ProjectionHead(hidden=16, out=8))
  >>> v = m.init(jax.random.key(0), jnp.zeros((2, 4)))
  >>> [a.shape for a in m.apply(v, jnp.zeros((2, 4)))]
  [(2, 16), (2, 8)]
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp


def _bn(train, axis_name, dtype):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype)


class ProjectionHead(nn.Module):
  hidden: int = 512
  out: int = 128
  num_layers: int = 2
  use_bn: bool = True
  last_bn: bool = False
  bn_axis_name: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = False):
    x = h.astype(self.dtype)
    for _ in range(self.num_layers - 1):
      x = nn.Dense(self.hidden, use_bias=not self.use_bn, dtype=self.dtype)(x)
      if self.use_bn:
        x = _bn(train, self.bn_axis_name, self.dtype)(x)
      x = nn.relu(x)
    x = nn.Dense(self.out, use_bias=not self.last_bn, dtype=self.dtype)(x)
    if self.last_bn:
      x = _bn(train, self.bn_axis_name, self.dtype)(x)
    return x


class PredictionHead(nn.Module):
  hidden: int = 512
  out: int = 128
  use_bn: bool = True
  bn_axis_name: Any = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = False):
    x = nn.Dense(self.hidden, use_bias=not self.use_bn, dtype=self.dtype)(z.astype(self.dtype))
    if self.use_bn:
      x = _bn(train, self.bn_axis_name, self.dtype)(x)
    return nn.Dense(self.out, dtype=self.dtype)(nn.relu(x))


class ContrastiveModel(nn.Module):
  """``(features, projections)``; ``head=None`` returns the features twice."""
  encoder: nn.Module
  head: Optional[nn.Module] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = self.encoder(x, train=train)
    z = h if self.head is None else self.head(h, train=train)
    return h, z
