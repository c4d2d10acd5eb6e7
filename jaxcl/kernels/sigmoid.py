"""Row sums of the pairwise sigmoid loss (SigLIP): no normaliser, so a plain sum over key blocks."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels.lse import check_reverse_mode, logits, resolve_impl


def sigmoid_row_sum(q, k, scale, bias, *, q_tags, k_tags, pos_fn, valid_fn=None, axis_name=None,
                    impl: str = "dense", block_size: int = 1024, precision=None):
  """``sum_j -log sigmoid(z_ij * (scale <q_i, k_j> + bias))`` with ``z_ij = +1`` where
  ``pos_fn`` holds and ``-1`` elsewhere, over keys for which ``valid_fn`` holds; ``impl``
  (``"blockwise"`` / ``"ring"``: reverse-mode autodiff only) and ``precision`` of the
  similarity product as in :func:`jaxcl.kernels.contrastive_lse`."""
  resolved = resolve_impl(impl, q.shape[0], k.shape[0], axis_name)
  check_reverse_mode(impl, resolved, q, k, scale, bias)
  impl = resolved
  if impl != "dense":
    from jaxcl.kernels import blockwise  # pylint: disable=g-import-not-at-top
    return blockwise.sigmoid_row_sum_tiled(
        q, k, scale, bias, q_tags=q_tags, k_tags=k_tags, pos_fn=pos_fn, valid_fn=valid_fn,
        axis_name=axis_name, ring=(impl == "ring"), block_size=block_size,
        precision=precision)
  k = collectives.all_gather(k, axis_name)
  k_tags = {n: collectives.all_gather(v, axis_name) for n, v in k_tags.items()}
  qt = {n: v[:, None] for n, v in q_tags.items()}
  kt = {n: v[None, :] for n, v in k_tags.items()}
  s = logits(q, k, scale, precision) + jnp.asarray(bias, jnp.float32)
  z = jnp.where(pos_fn(qt, kt), 1.0, -1.0)
  per = -jax.nn.log_sigmoid(z * s)
  if valid_fn is not None:
    per = jnp.where(jnp.broadcast_to(valid_fn(qt, kt), per.shape), per, 0.0)
  return jnp.sum(per, axis=1)
