"""Encoders ``x[B, *shape] -> features[B, F]`` (Flax linen, pure ``init``/``apply``).

* ``MLP``: flatten, ``Dense -> [BN] -> ReLU`` blocks.
* ``CNN1D``: for ``[B, L, C]`` signals (MNIST-1D): strided ``Conv -> BN -> ReLU`` blocks and
  global average pooling, so features are (nearly) shift-invariant.
* ``ResNet``: He et al. 2016 (arXiv 1512.03385), CIFAR stem of SimCLR App. B.9 (3x3 stride-1
  conv, no max-pool); basic blocks (ResNet-18) or bottlenecks (ResNet-50), global pooling.
* ``ViT``: Dosovitskiy et al. 2021 (arXiv 2010.11929): patch embedding, learned positions,
  ``[CLS]`` token, pre-LN transformer; works on images ``[B, H, W, C]`` and on signals
  ``[B, L, C]`` (1-D patches).

Every module takes ``train`` in ``__call__``: BatchNorm uses batch statistics and updates the
``batch_stats`` collection when ``train=True`` (apply with ``mutable=["batch_stats"]``);
``bn_axis_name`` names the mesh axis over which batch statistics are averaged inside
``jax.shard_map`` (the global-batch statistics, as SimCLR's synchronised BN).

Example:
  >>> import jax, jax.numpy as jnp
  >>> m = CNN1D(widths=(8, 16))
  >>> v = m.init(jax.random.key(0), jnp.zeros((2, 40, 1)))
  >>> m.apply(v, jnp.zeros((2, 40, 1))).shape
  (2, 16)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def _bn(train, axis_name, dtype, name=None, zero_init=False):
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype, name=name,
                      scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones)


class MLP(nn.Module):
  """Flattened input through ``Dense(h) -> [BN] -> ReLU`` for ``h`` in ``hidden``."""
  hidden: Sequence[int] = (256, 256)
  use_bn: bool = False
  bn_axis_name: Any = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for h in self.hidden:
      x = nn.Dense(h, dtype=self.dtype)(x)
      if self.use_bn:
        x = _bn(train, self.bn_axis_name, self.dtype)(x)
      x = nn.relu(x)
    return x


class CNN1D(nn.Module):
  """``Conv(w, k) -> BN -> ReLU`` per width (stride 2 after the first), then global mean."""
  widths: Sequence[int] = (32, 64, 128)
  kernel_size: int = 5
  use_bn: bool = True
  bn_axis_name: Any = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim == 2:  # [B, L] -> [B, L, 1]
      x = x[..., None]
    x = x.astype(self.dtype)
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (self.kernel_size,), strides=(1 if i == 0 else 2,), padding="SAME",
                  use_bias=not self.use_bn, dtype=self.dtype)(x)
      if self.use_bn:
        x = _bn(train, self.bn_axis_name, self.dtype)(x)
      x = nn.relu(x)
    return jnp.mean(x, axis=1)


class BasicBlock(nn.Module):
  width: int
  stride: int = 1
  bn_axis_name: Any = None
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda **kw: _bn(train, self.bn_axis_name, self.dtype, **kw)
    conv = lambda w, k, s: nn.Conv(w, (k, k), (s, s), padding="SAME", use_bias=False,
                                   dtype=self.dtype)
    y = nn.relu(bn()(conv(self.width, 3, self.stride)(x)))
    y = bn(zero_init=True)(conv(self.width, 3, 1)(y))  # zero-init: block starts as identity
    if x.shape[-1] != self.width or self.stride != 1:
      x = bn()(conv(self.width, 1, self.stride)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  width: int
  stride: int = 1
  bn_axis_name: Any = None
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda **kw: _bn(train, self.bn_axis_name, self.dtype, **kw)
    conv = lambda w, k, s: nn.Conv(w, (k, k), (s, s), padding="SAME", use_bias=False,
                                   dtype=self.dtype)
    out = self.width * self.expansion
    y = nn.relu(bn()(conv(self.width, 1, 1)(x)))
    y = nn.relu(bn()(conv(self.width, 3, self.stride)(y)))
    y = bn(zero_init=True)(conv(out, 1, 1)(y))
    if x.shape[-1] != out or self.stride != 1:
      x = bn()(conv(out, 1, self.stride)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR-style ResNet: 3x3 stem, no max-pool, 4 stages (stride 1, 2, 2, 2), global mean.

  Features: ``8 * width * expansion`` (512 for ResNet-18, 2048 for ResNet-50 at width 64).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = "basic"  # "basic" | "bottleneck"
  width: int = 64
  bn_axis_name: Any = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    x = x.astype(self.dtype)
    x = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(_bn(train, self.bn_axis_name, self.dtype)(x))
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        x = block(self.width * 2 ** i, stride=2 if (i > 0 and j == 0) else 1,
                  bn_axis_name=self.bn_axis_name, dtype=self.dtype)(x, train)
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


class _EncoderBlock(nn.Module):
  dim: int
  heads: int
  mlp_ratio: int = 4
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, mask=None):
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                        dropout_rate=self.dropout,
                                        deterministic=not train)(y, y, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.gelu(nn.Dense(self.mlp_ratio * self.dim, dtype=self.dtype)(y))
    y = nn.Dense(self.dim, dtype=self.dtype)(y)
    return x + nn.Dropout(self.dropout, deterministic=not train)(y)


class ViT(nn.Module):
  """Vision Transformer; features are the final-LayerNorm ``[CLS]`` token (``pool="cls"``)
  or the mean token (``pool="mean"``). ``dropout > 0`` needs a ``"dropout"`` rng when
  ``train=True``. ``return_tokens=True`` returns ``(features, patch tokens [B, N, dim], valid
  [B, N])`` (final-LayerNorm patch tokens, all valid: local features, e.g. TCL's LMI)."""
  dim: int = 192
  depth: int = 12
  heads: int = 3
  patch_size: int = 4
  mlp_ratio: int = 4
  dropout: float = 0.0
  pool: str = "cls"
  dtype: Dtype = jnp.float32
  return_tokens: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    nd = x.ndim - 2  # spatial dims: 2 for images, 1 for signals
    p = self.patch_size
    x = nn.Conv(self.dim, (p,) * nd, strides=(p,) * nd, padding="VALID",
                dtype=self.dtype, name="patch_embed")(x.astype(self.dtype))
    x = x.reshape((x.shape[0], -1, self.dim))
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(x.dtype), x],
                        axis=1)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (1,) + x.shape[1:])
    x = nn.Dropout(self.dropout, deterministic=not train)(x + pos.astype(x.dtype))
    for _ in range(self.depth):
      x = _EncoderBlock(self.dim, self.heads, self.mlp_ratio, self.dropout, self.dtype)(x, train)
    x = nn.LayerNorm(dtype=self.dtype)(x)
    h = x[:, 0] if self.pool == "cls" else jnp.mean(x[:, 1:], axis=1)
    if self.return_tokens:
      return h, x[:, 1:], jnp.ones(x[:, 1:].shape[:2], bool)
    return h
