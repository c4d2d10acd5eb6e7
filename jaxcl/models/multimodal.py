"""``MultiModal``: one tower per modality of a flat multimodal example.

``x [B, F]`` holds the modality blocks of :class:`jaxcl.data.catalog.Modality` flattened and
concatenated (token ids as float32); each block is reshaped (tokens cast to int32) and encoded by
its own :class:`jaxcl.models.ContrastiveModel` ``-> (h_m, z_m)``. ``__call__`` returns
``(h = [h_1 | ... | h_M], z [B, M, D])`` (every head has the same output width ``D``), so the
trainer's step sees ``M`` "views" per example; ``per_modality`` returns ``((h_1, z_1), ...)``
for the multimodal evaluation (per-modality probes, zero-shot, retrieval).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.data.catalog import Modality
  >>> from jaxcl.models import MLP, ContrastiveModel, ProjectionHead
  >>> tower = lambda: ContrastiveModel(MLP(hidden=(8,)), ProjectionHead(hidden=8, out=3))
  >>> m = MultiModal((tower(), tower()), (Modality("a", "tabular", (4,)),
  ...                                    Modality("b", "tabular", (2,))))
  >>> v = m.init(jax.random.key(0), jnp.zeros((2, 6)))
  >>> [a.shape for a in m.apply(v, jnp.zeros((2, 6)))]
  [(2, 16), (2, 2, 3)]
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcl.data.catalog import split_modalities


class MultiModal(nn.Module):
  """One tower per modality (``shared=False``) or one tower for every modality (``shared=True``:
  a Siamese / bi-encoder, e.g. MNRL's query and document texts; the blocks must have one shape
  and are encoded in one batched pass)."""
  towers: Sequence[nn.Module]
  modalities: Sequence[Any]
  shared: bool = False

  def setup(self):
    if len(self.modalities) < 2:
      raise ValueError(f"MultiModal: needs >= 2 modalities, got {len(self.modalities)}")
    if self.shared:
      if len(self.towers) != 1:
        raise ValueError(f"MultiModal(shared=True): needs exactly one tower, got "
                         f"{len(self.towers)}")
      shapes = {(m.kind, tuple(m.shape)) for m in self.modalities}
      if len(shapes) != 1:
        raise ValueError(f"MultiModal(shared=True): every modality must have one kind and "
                         f"shape, got {sorted(shapes)}")
    elif len(self.towers) != len(self.modalities):
      raise ValueError(f"MultiModal: needs one tower per modality (>= 2), got "
                       f"{len(self.towers)} towers for {len(self.modalities)} modalities")

  def per_modality(self, x, train: bool = False):
    blocks = split_modalities(x, self.modalities)
    if self.shared:
      h, z = self.towers[0](jnp.concatenate(blocks), train=train)
      m = len(blocks)
      return tuple(zip(jnp.split(h, m), jnp.split(z, m)))
    return tuple(t(b, train=train) for t, b in zip(self.towers, blocks))

  def __call__(self, x, train: bool = False):
    outs = self.per_modality(x, train)
    widths = {o[1].shape[-1] for o in outs}
    if len(widths) != 1:
      raise ValueError(f"MultiModal: every modality's embedding must have one width, got "
                       f"{[o[1].shape[-1] for o in outs]}")
    return (jnp.concatenate([o[0] for o in outs], axis=-1),
            jnp.stack([o[1] for o in outs], axis=1))
