"""Local (patch / token) embeddings next to the global ones, for objectives with local terms.

* ``LocalsModel(encoder, head)``: a :class:`jaxcl.models.ContrastiveModel` (same parameter
  tree: ``encoder``, ``head``) whose encoder returns its tokens (``return_tokens=True``:
  :class:`jaxcl.models.ViT` patch tokens, :class:`jaxcl.models.TextTransformer` token states;
  ``(features, tokens [B, N, W], valid [B, N])``). ``__call__`` is ``(h, z)`` as the plain
  model's; ``with_locals`` also returns the tokens through the same projection head,
  ``z_loc [B, N, D]``, invalid (padding) tokens set to zero vectors.
* ``MultiModalLocals``: :class:`jaxcl.models.MultiModal` whose ``__call__`` appends every
  modality's locals after the ``M`` globals: ``z [B, M + M*L, D]`` (column ``M + m*L + p``:
  local ``p`` of modality ``m``; ``L`` the largest token count, shorter modalities padded with
  zero vectors). A local is valid iff its vector is not all zero, so an objective that only
  sees ``z`` recovers the padding (``any(l != 0)``). ``per_modality`` is unchanged (the
  evaluator sees the globals only).

The trainer builds these with ``config.model.locals = True`` (off by default; every modality's
encoder must have token outputs). The head runs once over the globals and the tokens together,
so a BatchNorm head's statistics cover both (the TCL recipe uses a linear head, as the
reference's ``vision_proj`` / ``text_proj``: then the globals are exactly the plain model's).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.models import ViT, ProjectionHead
  >>> m = LocalsModel(ViT(dim=8, depth=1, heads=2, patch_size=2, return_tokens=True),
  ...                 ProjectionHead(out=4, num_layers=1, use_bn=False))
  >>> v = m.init(jax.random.key(0), jnp.zeros((2, 4, 4, 1)))
  >>> [a.shape for a in m.apply(v, jnp.zeros((2, 4, 4, 1)), method="with_locals")]
  [(2, 8), (2, 4), (2, 4, 4), (2, 4)]
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from jaxcl.data.catalog import split_modalities
from jaxcl.models.multimodal import MultiModal


class LocalsModel(nn.Module):
  """``(h, z)``; ``with_locals`` -> ``(h, z, z_loc [B, N, D], valid [B, N])``."""
  encoder: nn.Module
  head: Optional[nn.Module] = None

  def _encode(self, x, train):
    out = self.encoder(x, train=train)
    if not (isinstance(out, tuple) and len(out) == 3):
      raise ValueError("LocalsModel: the encoder must return (features, tokens, valid) "
                       "(build it with return_tokens=True)")
    return out

  def __call__(self, x, train: bool = False):
    h, _, _ = self._encode(x, train)
    return h, (h if self.head is None else self.head(h, train=train))

  def with_locals(self, x, train: bool = False):
    h, tok, valid = self._encode(x, train)
    b, n, w = tok.shape
    if w != h.shape[-1]:
      raise ValueError(f"LocalsModel: tokens ({w}) and features ({h.shape[-1]}) must have one "
                       "width (they share the projection head)")
    rows = jnp.concatenate([h[:, None], tok.astype(h.dtype)], axis=1).reshape(b * (n + 1), w)
    out = rows if self.head is None else self.head(rows, train=train)
    out = out.reshape(b, n + 1, -1)
    return h, out[:, 0], out[:, 1:] * valid[..., None].astype(out.dtype), valid


class MultiModalLocals(MultiModal):
  """``(h, z [B, M + M*L, D])``: the globals then every modality's ``L`` locals (padding and
  missing locals: zero vectors)."""

  def __call__(self, x, train: bool = False):
    blocks = split_modalities(x, self.modalities)
    outs = []
    for tower, block, m in zip(self.towers, blocks, self.modalities):
      if not hasattr(tower, "with_locals"):
        raise ValueError(f"MultiModalLocals: the tower of modality {m.name!r} has no local "
                         "outputs (a LocalsModel on an encoder with return_tokens=True)")
      outs.append(tower.with_locals(block, train=train))
    widths = {o[1].shape[-1] for o in outs}
    if len(widths) != 1:
      raise ValueError(f"MultiModalLocals: every modality's embedding must have one width, got "
                       f"{[o[1].shape[-1] for o in outs]}")
    n = max(o[2].shape[1] for o in outs)
    pad = lambda l: jnp.pad(l, ((0, 0), (0, n - l.shape[1]), (0, 0)))
    z = jnp.concatenate([jnp.stack([o[1] for o in outs], axis=1)] + [pad(o[2]) for o in outs],
                        axis=1)
    return jnp.concatenate([o[0] for o in outs], axis=-1), z
