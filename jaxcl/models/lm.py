"""``CausalLM``: a tiny decoder-only transformer language model with an explicit KV cache.

Token ids ``[B, L]`` -> token embeddings + learned positions -> ``depth`` pre-LN blocks (causal
multi-head self-attention, GELU MLP) -> final LayerNorm (the *hidden* states ``[B, L, dim]``, the
"last-layer states" that contrastive search and SimCTG use, as GPT-2's ``hidden_states[-1]``) ->
untied linear head (``logits [B, L, vocab]``).

``decode_step(token [B], cache, position)`` runs one position against a KV-cache pytree
(``init_cache(batch, max_len)``: ``{"k", "v"}`` of shape ``[depth, B, max_len, heads, dim //
heads]``, float32) and returns ``(logits [B, vocab], hidden [B, dim], cache)``; feeding a
sequence token by token through it reproduces ``__call__`` at every position (tested).
``position`` is one (traceable) integer shared by the batch; the decoders in
:mod:`jaxcl.decoding` drive it from ``lax.scan``.

Example (shapes only, via ``jax.eval_shape``; ``tests/test_decoding.py`` checks the values):
  >>> import jax, jax.numpy as jnp
  >>> m = CausalLM(vocab=11, dim=8, depth=1, heads=2, max_len=6)
  >>> v = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
  >>> logits, hidden = jax.eval_shape(m.apply, v, jnp.zeros((2, 3), jnp.int32))
  >>> logits.shape, hidden.shape
  ((2, 3, 11), (2, 3, 8))
  >>> step = lambda v, t, c: m.apply(v, t, c, 0, method=m.decode_step)
  >>> l0, h0, cache = jax.eval_shape(step, v, jnp.zeros(2, jnp.int32), m.init_cache(2, 6))
  >>> l0.shape, cache["k"].shape
  ((2, 11), (1, 2, 6, 2, 4))
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class _Block(nn.Module):
  dim: int
  heads: int
  mlp_ratio: int

  def setup(self):
    self.ln1 = nn.LayerNorm()
    self.qkv = nn.Dense(3 * self.dim)
    self.out = nn.Dense(self.dim)
    self.ln2 = nn.LayerNorm()
    self.fc1 = nn.Dense(self.mlp_ratio * self.dim)
    self.fc2 = nn.Dense(self.dim)

  def _split(self, x):
    q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
    shape = x.shape[:-1] + (self.heads, self.dim // self.heads)
    return q.reshape(shape), k.reshape(shape), v.reshape(shape)

  def _finish(self, x, att):
    x = x + self.out(att.reshape(x.shape))
    return x + self.fc2(nn.gelu(self.fc1(self.ln2(x))))

  def _attend(self, q, k, v, mask):
    # q [B, Lq, H, Dh], k/v [B, Lk, H, Dh], mask [Lq, Lk] bool
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    s = jnp.where(mask[None, None], s, jnp.finfo(s.dtype).min)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

  def __call__(self, x):
    q, k, v = self._split(x)
    n = x.shape[1]
    causal = jnp.tril(jnp.ones((n, n), bool))
    return self._finish(x, self._attend(q, k, v, causal))

  def step(self, x, kc, vc, position):
    # x [B, 1, D]; kc/vc [B, T, H, Dh]
    q, k, v = self._split(x)
    kc = jax.lax.dynamic_update_slice_in_dim(kc, k.astype(kc.dtype), position, axis=1)
    vc = jax.lax.dynamic_update_slice_in_dim(vc, v.astype(vc.dtype), position, axis=1)
    mask = (jnp.arange(kc.shape[1]) <= position)[None, :]
    return self._finish(x, self._attend(q, kc, vc, mask)), kc, vc


class CausalLM(nn.Module):
  vocab: int = 64
  dim: int = 64
  depth: int = 2
  heads: int = 4
  max_len: int = 64
  mlp_ratio: int = 4

  def setup(self):
    if self.dim % self.heads:
      raise ValueError(f"CausalLM: 'dim'={self.dim} must be divisible by 'heads'={self.heads}")
    self.embed = nn.Embed(self.vocab, self.dim)
    self.pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
    self.blocks = [_Block(self.dim, self.heads, self.mlp_ratio) for _ in range(self.depth)]
    self.ln_f = nn.LayerNorm()
    self.head = nn.Dense(self.vocab)

  def __call__(self, tokens):
    """tokens [B, L <= max_len] int -> (logits [B, L, vocab], hidden [B, L, dim])."""
    if tokens.ndim != 2 or tokens.shape[1] > self.max_len:
      raise ValueError(f"CausalLM: 'tokens' must be [B, L <= max_len={self.max_len}], got shape "
                       f"{tuple(tokens.shape)}")
    x = self.embed(tokens.astype(jnp.int32)) + self.pos[:tokens.shape[1]]
    for blk in self.blocks:
      x = blk(x)
    h = self.ln_f(x)
    return self.head(h), h

  def init_cache(self, batch: int, max_len: int):
    """An empty KV cache for ``batch`` sequences of up to ``max_len`` positions (no params)."""
    if max_len > self.max_len or max_len < 1 or batch < 1:
      raise ValueError(f"CausalLM.init_cache: need 'batch' >= 1 and 1 <= 'max_len' <= "
                       f"{self.max_len}, got batch={batch}, max_len={max_len}")
    shape = (self.depth, batch, max_len, self.heads, self.dim // self.heads)
    return {"k": jnp.zeros(shape, jnp.float32), "v": jnp.zeros(shape, jnp.float32)}

  def decode_step(self, token, cache, position):
    """token [B] int at ``position`` -> (logits [B, vocab], hidden [B, dim], updated cache)."""
    if token.ndim != 1 or cache["k"].shape[1] != token.shape[0]:
      raise ValueError(f"CausalLM.decode_step: 'token' must be [B] with B = the cache batch "
                       f"{cache['k'].shape[1]}, got shape {tuple(token.shape)}")
    x = (self.embed(token.astype(jnp.int32))
         + jax.lax.dynamic_index_in_dim(self.pos, position, keepdims=False))[:, None]
    ks, vs = [], []
    for i, blk in enumerate(self.blocks):
      x, kc, vc = blk.step(x, cache["k"][i], cache["v"][i], position)
      ks.append(kc)
      vs.append(vc)
    h = self.ln_f(x[:, 0])
    return self.head(h), h, {"k": jnp.stack(ks), "v": jnp.stack(vs)}
