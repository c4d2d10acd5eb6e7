"""``BertEncoder``: a BERT-style (post-LN) Flax text encoder with mean pooling.

Token ids ``[B, L]``, an attention mask ``[B, L]`` (1 = token, 0 = padding) and optional token
type ids -> word + position + token-type embeddings, LayerNorm -> ``depth`` post-LN blocks
(multi-head self-attention with padding keys masked out, residual, LayerNorm; exact-erf GELU
FFN, residual, LayerNorm) -> mean over the masked tokens ``[B, dim]`` (sentence-transformers'
``Pooling(mean)``; an all-padding row gives zeros) -> optional L2 normalisation (its
``Normalize``: ``x / max(|x|, 1e-12)``). Defaults are all-MiniLM-L6-v2's shape (6 layers, 384
wide, 12 heads, FFN 1536); :func:`jaxcl.models.pretrained.load_minilm` loads its weights.
Dropout (``dropout > 0`` and ``train=True``, rng ``"dropout"``) follows BERT's placement:
embeddings, attention probabilities and both sublayer outputs; off by default.

Citation: Devlin et al., "BERT", NAACL 2019; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = BertEncoder(vocab=50, dim=8, depth=1, heads=2, mlp_dim=16, max_len=8)
  >>> ids = jnp.array([[2, 5, 7, 0]]); mask = (ids > 0).astype(jnp.int32)
  >>> v = jax.jit(m.init)(jax.random.key(0), ids, mask)
  >>> jax.jit(m.apply)(v, ids, mask).shape
  (1, 8)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def attention_sublayer(m, x, mask, train):
  """``LN(x + Attn(x))`` of a post-LN block ``m`` (fields ``dim, heads, eps, dropout, dtype``),
  called inside ``m``'s compact ``__call__`` so its submodules (``query``, ``key``, ``value``,
  ``attn_out``, ``attn_ln``) are ``m``'s. Returns ``(x, drop, dense, ln)`` for the FFN part
  (``jaxcl.models.bert_moe`` builds its expert FFN on the same attention)."""
  b, l, _ = x.shape
  hd = m.dim // m.heads
  drop = lambda y: nn.Dropout(m.dropout, deterministic=not train)(y) if m.dropout else y
  dense = lambda n, name: nn.Dense(n, dtype=m.dtype, name=name)
  split = lambda y: y.reshape(b, l, m.heads, hd)
  q, k, v = (split(dense(m.dim, n)(x)) for n in ("query", "key", "value"))
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / hd ** 0.5
  logits = jnp.where(mask[:, None, None, :] > 0, logits, jnp.finfo(jnp.float32).min)
  probs = drop(nn.softmax(logits, axis=-1).astype(m.dtype))
  att = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, m.dim)
  ln = lambda name: nn.LayerNorm(epsilon=m.eps, dtype=m.dtype, name=name)
  return ln("attn_ln")(x + drop(dense(m.dim, "attn_out")(att))), drop, dense, ln


class _Layer(nn.Module):
  """One post-LN BERT block: ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``."""
  dim: int
  heads: int
  mlp_dim: int
  eps: float
  dropout: float
  dtype: Dtype

  @nn.compact
  def __call__(self, x, mask, train):
    x, drop, dense, ln = attention_sublayer(self, x, mask, train)
    h = nn.gelu(dense(self.mlp_dim, "ffn_in")(x), approximate=False)
    return ln("ffn_ln")(x + drop(dense(self.dim, "ffn_out")(h)))


class BertEncoder(nn.Module):
  """BERT encoder + masked mean pooling (+ optional L2 normalisation); see the module docstring.

  ``__call__(input_ids [B, L] int (or float ids, as jaxcl's token data), attention_mask [B, L] = ids != 0, token_type_ids = 0,
  train=False) -> [B, dim]`` (``return_tokens=True``: also the token states ``[B, L, dim]``).
  """
  vocab: int = 30522
  dim: int = 384
  depth: int = 6
  heads: int = 12
  mlp_dim: int = 1536
  max_len: int = 512
  type_vocab: int = 2
  eps: float = 1e-12
  normalize: bool = True
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  return_tokens: bool = False
  # Token ids attended to but left out of the mean pooling (lexical specialization's word
  # vector = mean over the word's subwords: pool_exclude=(101, 102), MiniLM's [CLS] / [SEP]).
  pool_exclude: tuple = ()

  @nn.compact
  def __call__(self, input_ids, attention_mask=None, token_type_ids=None, train: bool = False):
    if input_ids.ndim != 2:
      raise ValueError(f"BertEncoder: 'input_ids' must be [B, L] token ids, got "
                       f"{input_ids.dtype}{list(input_ids.shape)}")
    if jnp.issubdtype(input_ids.dtype, jnp.floating):  # jaxcl's data carries ids as float32
      input_ids = jnp.round(input_ids).astype(jnp.int32)
    elif not jnp.issubdtype(input_ids.dtype, jnp.integer):
      raise ValueError(f"BertEncoder: 'input_ids' must be integer (or float32-carried) token "
                       f"ids, got {input_ids.dtype}")
    if input_ids.shape[1] > self.max_len:
      raise ValueError(f"BertEncoder: 'input_ids' length {input_ids.shape[1]} exceeds "
                       f"max_len={self.max_len}")
    if self.dim % self.heads:
      raise ValueError(f"BertEncoder: 'dim'={self.dim} is not divisible by 'heads'={self.heads}")
    mask = (input_ids != 0) if attention_mask is None else attention_mask
    if mask.shape != input_ids.shape:
      raise ValueError(f"BertEncoder: 'attention_mask' shape {mask.shape} != 'input_ids' shape "
                       f"{input_ids.shape}")
    types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    emb = lambda n, name: nn.Embed(n, self.dim, dtype=self.dtype, name=name)
    x = (emb(self.vocab, "word")(input_ids) + emb(self.max_len, "position")(
        jnp.arange(input_ids.shape[1])[None]) + emb(self.type_vocab, "token_type")(types))
    x = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="embed_ln")(x)
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.depth):
      x = _Layer(self.dim, self.heads, self.mlp_dim, self.eps, self.dropout, self.dtype,
                 name=f"layer_{i}")(x, mask, train)
    w = mask.astype(jnp.float32)[..., None]
    for t in self.pool_exclude:
      w = jnp.where((input_ids == int(t))[..., None], 0.0, w)
    pooled = (x.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
    if self.normalize:
      pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return (pooled, x) if self.return_tokens else pooled
