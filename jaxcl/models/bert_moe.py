"""``BertMoE``: :class:`jaxcl.models.bert.BertEncoder` with its FFN (MLP) layers copied into
``num_experts`` domain experts and *enforced* (static, sentence-wise) routing.

Hallee et al., "Contrastive Learning and Mixture of Experts Enables Precise Vector Embeddings",
arXiv 2401.15713 (reference code Gleghorn-Lab/Mixture-of-Experts-Sentence-Similarity,
``models/moe_blocks.py``): every BERT MLP becomes ``N`` experts, one per domain, and each
sequence goes to the expert of its domain (no learned gate, so no router auxiliary loss).

Input ``x [B, 1 + L]``: column 0 is the expert (domain) id of the row, columns ``1..L`` its
token ids (float-carried as jaxcl's token data, ``0`` = padding) -- so the domain rides in the
data through the trainer's loader, sharding and checkpoints unchanged. An id outside
``[0, num_experts)`` makes that row's embedding NaN (the trainer stops on a non-finite loss)
rather than silently using no expert.

Parameters: BertEncoder's tree exactly, except that in the layers of ``moe_layers`` (default:
all) ``ffn_in`` / ``ffn_out`` carry a leading expert axis (``kernel [E, dim, mlp]``, ``bias
[E, mlp]``; ``kernel [E, mlp, dim]``, ``bias [E, dim]``). :func:`expand_bert_params` tiles a
dense BertEncoder's parameters into that layout (every expert = the pretrained FFN) and
:func:`warm_start` copies all-MiniLM-L6-v2 into every BertMoE tower of a train state (the
trainer's ``warm_start=`` hook). Experts are computed densely for every row and the row's
expert is selected by a one-hot mask (exact; E times the FFN FLOPs, fine for E = 3 on CPU),
so gradients reach only the row's own expert.

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = BertMoE(vocab=50, dim=8, depth=1, heads=2, mlp_dim=16, max_len=8, num_experts=3)
  >>> x = jnp.array([[2., 5, 7, 9, 0], [0., 4, 4, 0, 0]])  # expert 2, expert 0
  >>> v = jax.jit(m.init)(jax.random.key(0), x)
  >>> v["params"]["layer_0"]["ffn_in"]["kernel"].shape, jax.jit(m.apply)(v, x).shape
  ((3, 8, 16), (2, 8))
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.models.bert import attention_sublayer

Dtype = Any


class _ExpertDense(nn.Module):
  """``E`` stacked Dense layers; row ``b`` of ``x [E, B, L, in]`` goes through expert ``e``."""
  features: int
  num_experts: int
  dtype: Dtype

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                        (self.num_experts, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.num_experts, self.features),
                      jnp.float32)
    y = jnp.einsum("ebli,eif->eblf", x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)[:, None, None, :]


class _MoELayer(nn.Module):
  """A post-LN BERT block (``bert._Layer``'s attention, names and placement) whose FFN is
  ``num_experts`` experts (``num_experts = 0``: the dense FFN, BertEncoder's layer)."""
  dim: int
  heads: int
  mlp_dim: int
  eps: float
  dropout: float
  dtype: Dtype
  num_experts: int

  @nn.compact
  def __call__(self, x, mask, onehot, train):
    x, drop, dense, ln = attention_sublayer(self, x, mask, train)
    if not self.num_experts:
      h = nn.gelu(dense(self.mlp_dim, "ffn_in")(x), approximate=False)
      return ln("ffn_ln")(x + drop(dense(self.dim, "ffn_out")(h)))
    e = self.num_experts
    xe = jnp.broadcast_to(x[None], (e,) + x.shape)
    h = nn.gelu(_ExpertDense(self.mlp_dim, e, self.dtype, name="ffn_in")(xe), approximate=False)
    y = _ExpertDense(self.dim, e, self.dtype, name="ffn_out")(h)          # [E, B, L, dim]
    y = jnp.einsum("ebld,be->bld", y, onehot.astype(y.dtype))            # the row's expert
    return ln("ffn_ln")(x + drop(y))


class BertMoE(nn.Module):
  """BERT encoder with domain-expert FFNs and enforced routing; see the module docstring.

  ``__call__(x [B, 1 + L], train=False) -> [B, dim]``: ``x[:, 0]`` expert ids, ``x[:, 1:]``
  token ids (attention mask = ids != 0, token types 0), masked mean pooling, optional L2
  normalisation, as :class:`BertEncoder`. ``moe_layers``: indices of the layers with experts
  (``None``: all ``depth`` layers; the others keep BertEncoder's dense FFN).
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
  num_experts: int = 3
  moe_layers: Optional[Sequence[int]] = None

  def expert_layers(self):
    layers = tuple(range(self.depth)) if self.moe_layers is None else tuple(self.moe_layers)
    if any(not 0 <= i < self.depth for i in layers):
      raise ValueError(f"BertMoE: 'moe_layers'={self.moe_layers} must index layers 0.."
                       f"{self.depth - 1}")
    return layers

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim != 2 or x.shape[1] < 2:
      raise ValueError(f"BertMoE: 'x' must be [B, 1 + L] (expert id, then token ids), got "
                       f"shape {tuple(x.shape)}")
    if isinstance(self.num_experts, bool) or not isinstance(self.num_experts, int) or \
        self.num_experts < 1:
      raise ValueError(f"BertMoE: 'num_experts' must be an int >= 1, got {self.num_experts!r}")
    if self.dim % self.heads:
      raise ValueError(f"BertMoE: 'dim'={self.dim} is not divisible by 'heads'={self.heads}")
    if x.shape[1] - 1 > self.max_len:
      raise ValueError(f"BertMoE: {x.shape[1] - 1} tokens exceed max_len={self.max_len}")
    layers = self.expert_layers()
    route = jnp.round(x[:, 0]).astype(jnp.int32)
    ids = jnp.round(x[:, 1:]).astype(jnp.int32)
    onehot = jax.nn.one_hot(route, self.num_experts, dtype=jnp.float32)  # 0 row if out of range
    mask = ids != 0
    emb = lambda n, name: nn.Embed(n, self.dim, dtype=self.dtype, name=name)
    h = (emb(self.vocab, "word")(ids) + emb(self.max_len, "position")(
        jnp.arange(ids.shape[1])[None]) + emb(self.type_vocab, "token_type")(jnp.zeros_like(ids)))
    h = nn.LayerNorm(epsilon=self.eps, dtype=self.dtype, name="embed_ln")(h)
    if self.dropout:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    for i in range(self.depth):
      h = _MoELayer(self.dim, self.heads, self.mlp_dim, self.eps, self.dropout, self.dtype,
                    self.num_experts if i in layers else 0, name=f"layer_{i}")(
                        h, mask, onehot, train)
    w = mask.astype(jnp.float32)[..., None]
    pooled = (h.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
    if self.normalize:
      pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    in_range = (route >= 0) & (route < self.num_experts)
    return jnp.where(in_range[:, None], pooled, jnp.nan)


def expand_bert_params(bert_params, num_experts: int, moe_layers=None):
  """A dense :class:`BertEncoder` parameter tree in :class:`BertMoE`'s layout: the FFN
  tensors of ``moe_layers`` (``None``: every ``layer_i``) tiled ``num_experts`` times along a
  new leading axis (every expert starts as the dense FFN); everything else unchanged."""
  if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
    raise ValueError(f"expand_bert_params: 'num_experts' must be an int >= 1, got "
                     f"{num_experts!r}")
  layers = sorted(k for k in bert_params if k.startswith("layer_"))
  if moe_layers is not None:
    layers = [f"layer_{i}" for i in moe_layers]
    missing = [k for k in layers if k not in bert_params]
    if missing:
      raise ValueError(f"expand_bert_params: 'moe_layers' names {missing}, not in the params")
  out = dict(bert_params)
  for k in layers:
    layer = dict(out[k])
    for name in ("ffn_in", "ffn_out"):
      layer[name] = {p: np.repeat(np.asarray(v)[None], num_experts, axis=0)
                     for p, v in layer[name].items()}
    out[k] = layer
  return out


def warm_start(num_experts: int, moe_layers=None, bert_params=None):
  """``state -> state``: all-MiniLM-L6-v2 (or ``bert_params``) copied into every BertMoE tower
  of a train state, each expert initialised from the pretrained FFN (the trainer's
  ``warm_start=`` hook; optimiser state stays fresh, as in fine-tuning). Reuses
  :func:`jaxcl.models.pretrained.copy_into`, which checks the structure and every shape."""
  from jaxcl.models import pretrained
  if bert_params is None:
    _, bert_params, _ = pretrained.load_minilm()
  expanded = expand_bert_params(bert_params, num_experts, moe_layers)

  def apply(state):
    state = state.replace(params=pretrained.copy_into(state.params, expanded))
    if state.ema is not None:
      state = state.replace(ema={**state.ema, "params": pretrained.copy_into(
          state.ema["params"], expanded, where="ema")})
    return state
  return apply
