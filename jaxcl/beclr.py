"""BECLR's pretraining pieces: the BECLR loss and the DyCE memory, as pure functions.

Poulakakis-Daktylidis & Jamali-Rad, "BECLR: Batch Enhanced Contrastive Few-Shot Learning",
ICLR 2024, arXiv 2402.02444 (reference code stypoumic/BECLR: ``BECLRLoss`` in
``models/beclr.py``, ``NNmemoryBankModule2`` in ``memory.py``). OpTA, BECLR's inference-time
step, is :func:`jaxcl.sinkhorn.opta` / :mod:`jaxcl.eval.fewshot`.

**Loss**: :func:`jaxcl.losses.contrib.beclr_loss` (``L_pos + lambda L_neg`` over the global batch;
equation in :mod:`jaxcl.losses.beclr`), re-exported here as ``beclr.beclr_loss``.

**DyCE** (dynamic clustered memory). A FIFO memory of ``M`` detached, L2-normalised
embeddings, each with a cluster label, and ``K`` centres. The first time it is full, spherical
k-means (:mod:`jaxcl.kmeans`) clusters it; afterwards every incoming batch is assigned to the
centres by Sinkhorn-Knopp on the cosine scores (:func:`jaxcl.sinkhorn.sinkhorn_knopp`:
equipartition over the batch, then argmax), written over the oldest rows, and each centre is
recomputed as the normalised mean of its members (an empty cluster keeps its old centre).
*Batch enhancement*: every embedding gets the ``top_k`` memory members most similar to it
among those of its nearest centre, so a batch of ``B`` becomes ``B (1 + top_k)`` rows
(:func:`enhance`; rows ``j B + i`` hold the ``j``-th neighbour of sample ``i``, so two views'
enhanced batches stay paired row by row). Neighbours are memory rows: constants for the
gradient.

Order (``order=``): the reference code inserts the batch *before* the lookup
(``"insert_first"``), so a sample's first neighbour is typically its own copy;
``"lookup_first"`` looks up in the memory of the previous steps. The paper does not settle it.

**Explicit, caller-owned state.** jaxcl's design takes negatives from the global batch, never
from a memory bank. DyCE is BECLR's deliberate exception, so it is an optional
:class:`DyCEState` the caller passes in and gets back: nothing is hidden in the loss, and the
memory is replicated on every device (``axis_name`` gathers the batch before it is written).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl import beclr
  >>> z = jax.random.normal(jax.random.key(0), (8, 4))
  >>> state = beclr.dyce_init(memory_size=16, dim=4, num_clusters=2)
  >>> insert = jax.jit(beclr.dyce_insert)
  >>> for i in range(3):
  ...   state = insert(state, z + i, jax.random.key(i))
  >>> bool(state.clustered), int(state.count), state.memory.shape
  (True, 24, (16, 4))
  >>> nbrs, valid = beclr.dyce_lookup(state, z, top_k=2)
  >>> nbrs.shape, valid.shape
  ((8, 2, 4), (8, 2))
  >>> p1, p2, t1, t2, s1, s2 = jax.random.normal(jax.random.key(1), (6, 8, 4))
  >>> beclr.beclr_loss(p1, p2, t1, t2, s1, s2).shape
  (8,)
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl import collectives, kmeans, sinkhorn
from jaxcl.losses import _common as c
# The loss lives with the other objectives (jaxcl/losses/beclr.py); re-exported for BECLR users.
from jaxcl.losses.beclr import beclr_loss, uniformity_term  # noqa: F401

ORDERS = ("insert_first", "lookup_first")


# ------------------------------------------------------------------------- DyCE

class DyCEState(NamedTuple):
  memory: jax.Array      # [M, D] float32, L2-normalised, detached
  labels: jax.Array      # [M] int32 cluster of each row (-1 before the first clustering)
  centres: jax.Array     # [K, D] float32 unit centres (zeros before the first clustering)
  count: jax.Array       # int32: rows written so far (the FIFO pointer is count % M)
  clustered: jax.Array   # bool: k-means has run (the memory was full once)


def dyce_init(memory_size, dim, num_clusters):
  """An empty memory of ``memory_size`` rows and ``num_clusters`` centres."""
  if not 1 <= num_clusters <= memory_size:
    raise ValueError(f"dyce_init: 'num_clusters' must be in [1, memory_size={memory_size}], "
                     f"got {num_clusters}")
  return DyCEState(jnp.zeros((memory_size, dim), jnp.float32),
                   jnp.full((memory_size,), -1, jnp.int32),
                   jnp.zeros((num_clusters, dim), jnp.float32), jnp.zeros((), jnp.int32),
                   jnp.zeros((), bool))


def cluster_means(memory, labels, old_centres):
  """Normalised mean of each cluster's rows; an empty cluster keeps ``old_centres``."""
  k = old_centres.shape[0]
  onehot = jax.nn.one_hot(labels, k, dtype=jnp.float32)      # label -1 -> all zeros
  counts = jnp.sum(onehot, axis=0)
  new = c.l2_normalize(onehot.T @ memory)
  return jnp.where(counts[:, None] > 0, new, old_centres)


def assign(z, centres, *, epsilon=0.05, num_iters=10):
  """Sinkhorn-balanced cluster of each unit row of ``z``: argmax of the equipartitioned codes
  of the cosine scores ``z @ centres.T``. ``[B]`` int32."""
  codes = sinkhorn.sinkhorn_knopp(z @ centres.T, epsilon=epsilon, num_iters=num_iters)
  return jnp.argmax(codes, axis=1).astype(jnp.int32)


def dyce_insert(state, z, rng, *, epsilon=0.05, num_iters=10, kmeans_iters=20,
                axis_name=None):
  """Writes the (global) batch ``z`` over the oldest rows; clusters or re-centres.

  Args:
    state: :class:`DyCEState`.
    z: ``[B_local, D]`` embeddings (detached and L2-normalised here); with ``axis_name`` the
      global batch is gathered first, so every device's memory is the same.
    rng: key of the k-means++ seeding (used once, when the memory first becomes full).
    epsilon, num_iters: Sinkhorn assignment of the batch to the centres (BECLR: iterations
      10; eps 0.05 in the first release, 1e-5 in the current config).
    kmeans_iters: Lloyd iterations of the first clustering.

  Returns:
    The new :class:`DyCEState`.
  """
  fn = "dyce_insert"
  z = c.embeddings("z", z, fn)
  if z.shape[1] != state.memory.shape[1]:
    raise ValueError(f"{fn}: 'z' has feature size {z.shape[1]}, the memory "
                     f"{state.memory.shape[1]}")
  z = c.l2_normalize(jax.lax.stop_gradient(collectives.all_gather(z, axis_name)))
  m, k = state.memory.shape[0], state.centres.shape[0]
  if z.shape[0] > m:
    raise ValueError(f"{fn}: the global batch ({z.shape[0]} rows) exceeds the memory ({m})")
  rows = (state.count + jnp.arange(z.shape[0])) % m
  labels_in = jnp.where(state.clustered,
                        assign(z, state.centres, epsilon=epsilon, num_iters=num_iters), -1)
  memory = state.memory.at[rows].set(z)
  labels = state.labels.at[rows].set(labels_in)
  count = state.count + z.shape[0]

  def first_clustering(_):
    res = kmeans.kmeans(memory, k, rng, num_iters=kmeans_iters, metric="cosine")
    return res.assignments, res.centroids

  def recentre(_):
    return labels, jnp.where(state.clustered, cluster_means(memory, labels, state.centres),
                             state.centres)

  now_full = (~state.clustered) & (count >= m)
  labels, centres = jax.lax.cond(now_full, first_clustering, recentre, None)
  # Identical on every device (computed from the gathered batch); pmax lets shard_map see
  # them as replicated (out_specs P()).
  memory, labels, centres = (collectives.pmax(a, axis_name) for a in (memory, labels, centres))
  return DyCEState(memory, labels, centres, count, state.clustered | now_full)


def dyce_lookup(state, z, *, top_k=5):
  """The ``top_k`` memory rows most similar to each row of ``z`` among the members of its
  nearest centre.

  Returns:
    ``(neighbours [B, top_k, D], valid [B, top_k])``; a neighbour is invalid before the first
    clustering or when the cluster has fewer than ``top_k`` members. Stop-gradient.
  """
  fn = "dyce_lookup"
  z = c.embeddings("z", z, fn)
  if not 1 <= top_k <= state.memory.shape[0]:
    raise ValueError(f"{fn}: 'top_k' must be in [1, {state.memory.shape[0]}], got {top_k}")
  zn = c.l2_normalize(jax.lax.stop_gradient(z))
  nearest = jnp.argmax(zn @ state.centres.T, axis=1)
  member = state.labels[None, :] == nearest[:, None]
  sims = jnp.where(member, zn @ state.memory.T, -jnp.inf)
  vals, idx = jax.lax.top_k(sims, top_k)
  valid = state.clustered & jnp.isfinite(vals)
  return jax.lax.stop_gradient(state.memory[idx]), valid


def enhance(state, z, rng, *, top_k=5, order="insert_first", insert=True, axis_name=None,
            **insert_kwargs):
  """DyCE batch enhancement of one embedding batch (and the memory update it implies).

  Args:
    state: :class:`DyCEState`.
    z: ``[B_local, D]`` embeddings.
    rng: key for :func:`dyce_insert`.
    top_k: neighbours appended per row (BECLR 5).
    order: ``"insert_first"`` (reference code) or ``"lookup_first"``.
    insert: False looks up without writing ``z`` (e.g. for the second view or the student
      embeddings when one array per step feeds the memory).
    insert_kwargs: ``epsilon``, ``num_iters``, ``kmeans_iters`` of :func:`dyce_insert`.

  Returns:
    ``(rows [B_local (1 + top_k), D], valid [B_local (1 + top_k)], new state)``: ``z`` (with
    its gradient) then the ``j``-th neighbours of every row, block by block; ``valid`` marks
    the real rows (all of ``z``; neighbours that exist).
  """
  if order not in ORDERS:
    raise ValueError(f"enhance: 'order' must be one of {ORDERS}, got {order!r}")
  if insert and order == "insert_first":
    state = dyce_insert(state, z, rng, axis_name=axis_name, **insert_kwargs)
  nbrs, ok = dyce_lookup(state, z, top_k=top_k)
  if insert and order == "lookup_first":
    state = dyce_insert(state, z, rng, axis_name=axis_name, **insert_kwargs)
  b = z.shape[0]
  rows = jnp.concatenate([z.astype(jnp.float32), jnp.swapaxes(nbrs, 0, 1).reshape(-1, z.shape[1])])
  valid = jnp.concatenate([jnp.ones((b,), bool), ok.T.reshape(-1)])
  return rows, valid, state
