"""Orbax checkpoints of the train state and of the data iterator, with automatic resume.

A checkpoint at step ``s`` (``workdir/checkpoints/<s>/``) holds ``state`` (params, optimiser
state, BatchNorm statistics, step, RNG; sharded arrays written by every process) and ``data``
(the grain iterator position, one JSON file per process through grain's orbax handler). The
iterator state is taken after ``s`` batches were consumed, so resuming replays nothing and
skips nothing. Saves are asynchronous; orbax finalises a step directory atomically, so a
process killed mid-save leaves the previous checkpoint as the latest one.

Example:
  >>> mngr = manager("/tmp/run/checkpoints", keep=2)  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import json

import grain
import jax
import orbax.checkpoint as ocp


class IteratorState:
  """Adapts any iterator with ``get_state``/``set_state`` to grain's orbax handler.

  The handler writes ``get_state()`` as text; states may be bytes (grain's DataLoader) or
  JSON-able objects (dataset iterators), so they are wrapped in a small JSON envelope.
  """

  def __init__(self, iterator):
    self.iterator = iterator

  def get_state(self) -> bytes:
    state = self.iterator.get_state()
    if isinstance(state, bytes):
      env = {"bytes": base64.b64encode(state).decode("ascii")}
    else:
      env = {"json": state}
    return json.dumps(env).encode()

  def set_state(self, state: bytes):
    env = json.loads(state.decode() if isinstance(state, bytes) else state)
    value = base64.b64decode(env["bytes"]) if "bytes" in env else env["json"]
    self.iterator.set_state(value)

  def start_prefetch(self):
    start = getattr(self.iterator, "start_prefetch", None)
    if start is not None:
      start()


def manager(directory, *, keep=2, use_async=True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=use_async,
                                         create=True)
  return ocp.CheckpointManager(directory, options=options,
                               item_handlers={"state": ocp.StandardCheckpointHandler(),
                                              "data": grain.checkpoint.CheckpointHandler()})


def save(mngr, step, state, iterator, *, force=False):
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data=grain.checkpoint.CheckpointSave(IteratorState(iterator)))
  return mngr.save(int(step), args=args, force=force)


def restore_latest(mngr, abstract_state, iterator):
  """Restores the latest checkpoint into ``abstract_state``'s shardings; ``None`` if none."""
  step = mngr.latest_step()
  if step is None:
    return None
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        abstract_state)
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target),
      data=grain.checkpoint.CheckpointRestore(IteratorState(iterator))))
  return restored["state"]
