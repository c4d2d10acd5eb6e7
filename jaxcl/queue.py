"""A FIFO of past embeddings (MoCo's queue), as a pure pytree.

The queue holds ``size`` rows; each step writes the ``B`` newest rows (a whole *global* batch,
in global row order) at the ring position ``ptr = count mod size`` and wraps around, so the
oldest rows are overwritten first:

    slots(ptr, B) = (ptr + [0, 1, ..., B-1]) mod size,   keys[slots] <- batch,   count += B

Rows that were never written hold random unit vectors (MoCo's initialisation), so every slot is
a usable negative from step 0; :func:`filled` / :func:`valid` say which slots hold real
embeddings for consumers that want to wait for a full queue (SwAV's queue).

Reference: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
arXiv 1911.05722 (section 3.2, dictionary as a queue).

Because the queue is replicated and written with the global batch, its content does not depend
on how many devices hold the batch.

Example:
  >>> import jax, jax.numpy as jnp
  >>> q = init(jax.random.key(0), size=4, dim=2)
  >>> q = enqueue(q, jnp.ones((3, 2)))
  >>> int(q.count), int(position(q)), valid(q).tolist()
  (3, 3, [True, True, True, False])
"""
from __future__ import annotations

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class Queue:
  keys: jax.Array    # [size, D] float32, newest rows just before ``position``
  count: jax.Array   # int32 scalar: rows enqueued so far


def init(rng, size, dim, dtype=jnp.float32):
  """A queue of ``size`` random unit vectors (nothing enqueued yet)."""
  if not isinstance(size, int) or size <= 0:
    raise ValueError(f"queue.init: 'size' must be an int > 0, got {size!r}")
  keys = jax.random.normal(rng, (size, dim), jnp.float32)
  keys = keys / jnp.linalg.norm(keys, axis=-1, keepdims=True)
  return Queue(keys.astype(dtype), jnp.zeros((), jnp.int32))


def size(queue):
  return queue.keys.shape[0]


def position(queue):
  """The ring position where the next row goes."""
  return queue.count % size(queue)


def filled(queue):
  """How many slots hold enqueued embeddings."""
  return jnp.minimum(queue.count, size(queue))


def valid(queue):
  """``[size]`` bool: slots written at least once."""
  return jnp.arange(size(queue)) < filled(queue)


def enqueue(queue, rows):
  """Writes ``rows`` ``[B, D]`` (B <= size) at the ring position; stop-gradient."""
  b, m = rows.shape[0], size(queue)
  if rows.ndim != 2 or rows.shape[1] != queue.keys.shape[1]:
    raise ValueError(f"queue.enqueue: 'rows' must be [B, {queue.keys.shape[1]}], "
                     f"got {tuple(rows.shape)}")
  if b > m:
    raise ValueError(f"queue.enqueue: a batch of {b} rows does not fit a queue of {m}")
  slots = (position(queue) + jnp.arange(b)) % m
  rows = jax.lax.stop_gradient(rows).astype(queue.keys.dtype)
  return Queue(queue.keys.at[slots].set(rows), queue.count + b)
