"""A small character-level tuple encoder and a symmetric pair classifier (SSACL's matcher,
methods.md ``table_integration``), in Flax linen.

Input: character-3-gram hashed features ``[N, H]`` of tuple strings
(:func:`jaxcl.data.tables.hash_ngrams`). ``encode``: ``Dense(hidden) - relu - Dense(dim)``, then
L2 normalisation (so the adversarial ``epsilon`` of :func:`jaxcl.losses.contrib.ssacl_loss` is relative
to a unit embedding). ``classify(a, b)``: ``Dense(head_hidden) - relu - Dense(1)`` on
``[a * b, |a - b|]``, symmetric in ``(a, b)`` -- a simplification of Robin's ``AIJNet``
(attention over the concatenated pair; its released shapes do not line up, methods.md).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class PairModel(nn.Module):
  hidden: int = 256
  dim: int = 64
  head_hidden: int = 64

  def setup(self):
    self.enc0 = nn.Dense(self.hidden)
    self.enc1 = nn.Dense(self.dim)
    self.head0 = nn.Dense(self.head_hidden)
    self.head1 = nn.Dense(1)

  def encode(self, x):
    h = self.enc1(jax.nn.relu(self.enc0(x)))
    return h * jax.lax.rsqrt(jnp.maximum(jnp.sum(h * h, -1, keepdims=True), 1e-24))

  def classify(self, a, b):
    f = jnp.concatenate([a * b, jnp.abs(a - b)], axis=-1)
    return self.head1(jax.nn.relu(self.head0(f)))[..., 0]

  def __call__(self, x):
    e = self.encode(x)
    return self.classify(e, e)
