"""Representation metrics: alignment, uniformity, tolerance, effective rank.

* ``alignment(z1, z2, alpha)`` = mean over positive pairs of ``||x - y||^alpha``
  (Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
  Uniformity on the Hypersphere", arXiv 2005.10242).
* ``uniformity(z, t)`` = ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` (same paper; lower is
  more uniform).
* ``tolerance(z, labels)`` = mean cosine similarity over distinct same-label pairs ``i != j``
  (Wang & Liu, "Understanding the Behaviour of Contrastive Loss", arXiv 2012.09740); 0 when
  there is no such pair.
* ``effective_rank(z)`` = ``exp(H(p))`` with ``p = sigma / sum(sigma)`` the normalised singular
  values of ``z`` as given (RankMe, Garrido et al., arXiv 2210.02885).

The first three L2-normalise inside, like the losses. With ``axis_name`` (inside
``shard_map``), each device passes its local rows and the result is the global-batch metric,
identical on every device.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c


def alignment(z1, z2, alpha=2, *, axis_name=None):
  z1 = c.l2_normalize(c.embeddings("z1", z1, "alignment"))
  z2 = c.l2_normalize(c.embeddings("z2", z2, "alignment"))
  c.check_same("z1", z1, "z2", z2, 0, "alignment", "batch size")
  d = jnp.sum((z1 - z2) ** 2, axis=-1)
  # ||x - y||^alpha via the squared distance keeps the gradient finite at x == y for alpha=2.
  d = d if alpha == 2 else jnp.where(d > 0, d, 1.0) ** (alpha / 2) * (d > 0)
  total = collectives.psum(jnp.sum(d), axis_name)
  return total / collectives.psum(d.shape[0], axis_name)


def uniformity(z, t=2, *, axis_name=None):
  z = c.l2_normalize(c.embeddings("z", z, "uniformity"))
  b = z.shape[0]
  # On the unit sphere -t ||x - y||^2 = 2t <x, y> - 2t: one pass of the shared kernel.
  tags = {"sample": collectives.global_row_index(b, axis_name)}
  res = contrastive_lse(z, z, 2.0 * t, q_tags=tags, k_tags=tags,
                        mask_fn=lambda qt, kt: qt["sample"] != kt["sample"], axis_name=axis_name)
  m = jax.lax.stop_gradient(collectives.pmax(jnp.max(jax.lax.stop_gradient(res.lse)), axis_name))
  total = collectives.psum(jnp.sum(jnp.exp(res.lse - m)), axis_name)
  n = b * collectives.axis_size(axis_name)
  return m + jnp.log(total) - 2.0 * t - jnp.log(float(n * (n - 1)))


def tolerance(z, labels, *, axis_name=None):
  z = c.l2_normalize(c.embeddings("z", z, "tolerance"))
  b = z.shape[0]
  labels = c.labels_array(labels, b, "tolerance")
  tags = {"sample": collectives.global_row_index(b, axis_name), "label": labels}
  res = contrastive_lse(
      z, z, 1.0, q_tags=tags, k_tags=tags,
      pos_fn=lambda qt, kt: (qt["label"] == kt["label"]) & (qt["sample"] != kt["sample"]),
      axis_name=axis_name)
  total = collectives.psum(jnp.sum(res.pos_sum), axis_name)
  count = collectives.psum(jnp.sum(res.pos_count), axis_name)
  return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def effective_rank(z, *, axis_name=None, eps=1e-12):
  z = c.embeddings("z", z, "effective_rank").astype(jnp.float32)
  if axis_name is not None:
    # Gather by summing zero-padded shards: exact, and unlike all_gather the result is typed
    # replicated under shard_map's check_vma, so callers can return it with out_specs=P().
    b = z.shape[0]
    n = b * collectives.axis_size(axis_name)
    offset = collectives.axis_index(axis_name) * b
    z = jax.lax.dynamic_update_slice(jnp.zeros((n, z.shape[1]), z.dtype), z, (offset, 0))
    z = collectives.psum(z, axis_name)
  s = jnp.linalg.svd(z, compute_uv=False)
  p = s / (jnp.sum(s) + eps) + eps
  return jnp.exp(-jnp.sum(p * jnp.log(p)))
