"""``TextTransformer``: a small token-embedding transformer text tower (mean-pooled).

Token ids ``[B, L]`` (``0`` = padding) -> embeddings + learned positions -> ``depth`` pre-LN
blocks with padding masked out of attention -> final LayerNorm -> mean over the non-padding
tokens ``[B, dim]`` (an all-padding row gives the mean of nothing: zeros). The default tower of
``tokens`` modalities in :class:`jaxcl.models.MultiModal` when no pretrained text tower is
configured.

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = TextTransformer(vocab=10, dim=8, depth=1, heads=2, max_len=4)
  >>> v = m.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  >>> m.apply(v, jnp.array([[3, 4, 0, 0]])).shape
  (1, 8)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcl.models.encoders import _EncoderBlock

Dtype = Any


class TextTransformer(nn.Module):
  vocab: int = 64
  dim: int = 64
  depth: int = 2
  heads: int = 4
  max_len: int = 16
  mlp_ratio: int = 2
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  return_tokens: bool = False  # also return (token states [B, L, dim], valid = non-padding)

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
      raise ValueError(f"TextTransformer: 'tokens' must be [B, L <= max_len={self.max_len}], got "
                       f"shape {tuple(tokens.shape)}")
    tokens = tokens.astype(jnp.int32)
    keep = tokens > 0
    x = nn.Embed(self.vocab, self.dim, dtype=self.dtype, name="embed")(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, self.max_len, self.dim))
    x = nn.Dropout(self.dropout, deterministic=not train)(
        x + pos[:, :tokens.shape[1]].astype(x.dtype))
    mask = nn.make_attention_mask(keep, keep)
    for _ in range(self.depth):
      x = _EncoderBlock(self.dim, self.heads, self.mlp_ratio, self.dropout, self.dtype)(
          x, train, mask=mask)
    x = nn.LayerNorm(dtype=self.dtype)(x)
    w = keep.astype(x.dtype)[..., None]
    h = jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
    return (h, x, keep) if self.return_tokens else h
