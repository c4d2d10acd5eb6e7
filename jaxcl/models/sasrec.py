"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) in Flax, in
RecBole's form (the encoder of CL4SRec / DuoRec / MCLRec).

Item ids ``1..num_items`` (0 = padding, ``num_items + 1`` = CL4SRec's mask token), sequences
**left**-padded to ``max_len`` so the newest item is always the last position::

    x = Dropout(LayerNorm(E_item[s] + E_pos[0..L-1]))
    x = Block_n(... Block_1(x))         post-LN: x = LN(x + Drop(MHA_causal(x)));
                                                 x = LN(x + Drop(W2 GELU(W1 x)))
    h = x[:, -1]                        (the sequence representation)
    scores = h @ E_item[1..num_items]^T (tied weights: full ranking over all items)

Attention is causal and padded keys are masked out (a large negative bias, as RecBole's
-10000, so a padded query row stays finite). Weights ~ N(0, 0.02) (RecBole's
``initializer_range``), LayerNorm eps 1e-12. Right-padding (RecBole) and left-padding give the
same ``h`` up to the position embeddings' alignment: here position ``L - 1`` is always the
newest item.

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = SASRec(num_items=30, max_len=5, dim=8, num_heads=2)
  >>> s = jnp.array([[0, 0, 3, 4, 5]])
  >>> p = m.init(jax.random.key(0), s)
  >>> m.apply(p, s).shape, m.apply(p, s, method=SASRec.scores).shape
  ((1, 8), (1, 30))
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

_INIT = nn.initializers.normal(0.02)


class _Block(nn.Module):
  dim: int
  num_heads: int
  inner: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train):
    a = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, kernel_init=_INIT,
                                        dropout_rate=self.dropout,
                                        deterministic=not train)(x, x, mask=mask)
    x = nn.LayerNorm(epsilon=1e-12)(x + nn.Dropout(self.dropout, deterministic=not train)(a))
    f = nn.Dense(self.inner, kernel_init=_INIT)(x)
    f = nn.Dense(self.dim, kernel_init=_INIT)(nn.gelu(f, approximate=False))
    return nn.LayerNorm(epsilon=1e-12)(x + nn.Dropout(self.dropout,
                                                       deterministic=not train)(f))


class SASRec(nn.Module):
  """``__call__(seqs [B, L] int, train=False) -> h [B, dim]``; ``scores(seqs) -> [B, items]``."""
  num_items: int
  max_len: int = 20
  dim: int = 32
  num_layers: int = 1
  num_heads: int = 2
  inner: int = 128
  dropout: float = 0.2

  def setup(self):
    self.item_embedding = nn.Embed(self.num_items + 2, self.dim, embedding_init=_INIT)
    self.position_embedding = nn.Embed(self.max_len, self.dim, embedding_init=_INIT)
    self.norm = nn.LayerNorm(epsilon=1e-12)
    self.drop = nn.Dropout(self.dropout)
    self.blocks = [_Block(self.dim, self.num_heads, self.inner, self.dropout)
                   for _ in range(self.num_layers)]

  def __call__(self, seqs, train: bool = False):
    if seqs.ndim != 2 or seqs.shape[1] != self.max_len:
      raise ValueError(f"SASRec: 'seqs' must be [batch, {self.max_len}], got {seqs.shape}")
    seqs = seqs.astype(jnp.int32)
    x = self.item_embedding(seqs) + self.position_embedding(jnp.arange(self.max_len))[None]
    x = self.drop(self.norm(x), deterministic=not train)
    causal = jnp.tril(jnp.ones((self.max_len, self.max_len), bool))
    mask = (causal[None] & (seqs > 0)[:, None, :])[:, None]        # [B, 1, Lq, Lk]
    for block in self.blocks:
      x = block(x, mask, train)
    return x[:, -1]

  def item_table(self):
    """``[num_items, dim]``: the embeddings of items ``1..num_items`` (scoring weights)."""
    return self.item_embedding.embedding[1:self.num_items + 1]

  def scores(self, seqs, train: bool = False):
    return self(seqs, train) @ self.item_table().T
