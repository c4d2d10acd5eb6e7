"""Orbax checkpoints of the train state and of the data iterator, with automatic resume.

A checkpoint at step ``s`` (``workdir/checkpoints/<s>/``) holds ``state`` (params, optimiser
state, BatchNorm statistics, step, RNG; sharded arrays written by every process) and ``data``
(the grain iterator position, one JSON file per process through grain's orbax handler). The
iterator state is taken after ``s`` batches were consumed, so resuming replays nothing and
skips nothing. Saves are asynchronous; orbax finalises a step directory atomically, so a
process killed mid-save leaves the previous checkpoint as the latest one (the iterator's JSON
is written inside that directory, so it is atomic with it). A checkpoint damaged later
(truncated files) is moved aside on resume and the newest readable one restored
(:func:`restore_latest`).

Example:
  >>> mngr = manager("/tmp/run/checkpoints", keep=2)  # doctest: +SKIP
"""
from __future__ import annotations

import base64
import json
import os
import time
import warnings

import grain
import jax
import orbax.checkpoint as ocp

from jaxcl.train import distributed


class CheckpointError(RuntimeError):
  """No checkpoint of the run directory can be restored (see :func:`restore_latest`)."""


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
  """Restores the newest readable checkpoint into ``abstract_state``'s shardings (and the
  iterator's position); ``None`` if there is no checkpoint.

  A checkpoint that fails to restore while an older one restores is unreadable (truncated or
  partly deleted files): it is moved to ``<checkpoints>/corrupt/<step>-<unix time>`` with a
  RuntimeWarning naming it, and training resumes from the older one. If no checkpoint
  restores, nothing is moved and :class:`CheckpointError` names the directory: a changed
  config (a different model) is then a likelier cause than damage. Every process tries the
  same steps and they agree on the outcome (one failing process fails the step for all).
  """
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        abstract_state)
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    error = None
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          data=grain.checkpoint.CheckpointRestore(IteratorState(iterator))))
    except Exception as e:  # noqa: BLE001 -- orbax, tensorstore, JSON: whatever damage raises
      error = e
    if distributed.all_processes_max(error is not None):
      failed.append((step, error or RuntimeError("failed on another process")))
      continue
    if failed:
      _move_aside(mngr, failed, step)
    return restored["state"]
  if failed:
    raise CheckpointError(f"no readable checkpoint in {mngr.directory} (steps "
                          f"{[s for s, _ in failed]} all fail to restore; the newest: "
                          f"{_first_line(failed[0][1])})") from failed[0][1]
  return None


def _first_line(error):
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _move_aside(mngr, failed, good_step):
  """Moves the unreadable steps into ``corrupt/`` (process 0), then every process rescans."""
  corrupt = os.path.join(os.fspath(mngr.directory), "corrupt")
  for step, error in failed:
    source = os.path.join(os.fspath(mngr.directory), str(step))
    dest = os.path.join(corrupt, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(corrupt, exist_ok=True)
      os.replace(source, dest)
    warnings.warn(f"checkpoint {source} is unreadable ({_first_line(error)}); moved to {dest}; "
                  f"resuming from step {good_step}", RuntimeWarning, stacklevel=3)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("jaxcl: unreadable checkpoints moved aside")
  mngr.reload()


def restore_modules(workdir, state, modules):
  """``state`` with the parameters and BatchNorm statistics of the top-level model ``modules``
  (e.g. ``("encoder",)``) taken from the latest checkpoint in ``workdir/checkpoints``: the
  start of a fine-tuning run (``config.init``). Everything else (the other modules, the
  optimiser state, the objective's parameters, step and RNG) keeps its fresh initialisation;
  an EMA teacher, when present, gets the same copy. Raises ``ValueError`` naming the module when
  the checkpoint lacks it or its shapes differ, ``FileNotFoundError`` when there is no
  checkpoint."""
  import flax.traverse_util as tu
  import numpy as np
  directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"config.init.workdir={workdir!r} has no checkpoints directory "
                            f"(train that run first)")
  mngr = manager(directory, use_async=False)
  step = mngr.latest_step()
  if step is None:
    mngr.close()
    raise FileNotFoundError(f"config.init.workdir={workdir!r} has no finished checkpoint")
  saved = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  as_dict = lambda t: t if isinstance(t, dict) else dict(t or {})

  def copy(target, source, what):
    target, source = as_dict(target), as_dict(source)
    out = dict(target)
    for m in modules:
      if m not in target:
        if what == "batch_stats":
          continue
        raise ValueError(f"config.init.modules: the model has no module {m!r} (modules: "
                         f"{sorted(target)})")
      if m not in source:
        raise ValueError(f"config.init.modules: the checkpoint in {workdir!r} has no {what} of "
                         f"module {m!r} (it has {sorted(source)})")
      t_flat, s_flat = tu.flatten_dict(as_dict(target[m])), tu.flatten_dict(as_dict(source[m]))
      if set(t_flat) != set(s_flat) or any(np.shape(s_flat[k]) != t_flat[k].shape
                                           for k in t_flat):
        diff = {"/".join(k): (np.shape(s_flat.get(k)), t_flat[k].shape) for k in t_flat
                if k not in s_flat or np.shape(s_flat[k]) != t_flat[k].shape}
        raise ValueError(f"config.init.modules: {what} of module {m!r} in {workdir!r} do not "
                         f"match the model's (checkpoint vs model shapes: {diff}, checkpoint "
                         f"only: {sorted('/'.join(k) for k in set(s_flat) - set(t_flat))})")
      new = {k: jax.device_put(np.asarray(s_flat[k], t_flat[k].dtype), t_flat[k].sharding)
             for k in t_flat}
      out[m] = tu.unflatten_dict(new)
    return type(target)(out) if not isinstance(target, dict) else out

  params = copy(state.params, saved["params"], "params")
  stats = state.batch_stats
  if stats:
    stats = copy(stats, saved.get("batch_stats") or {}, "batch_stats")
  new = state.replace(params=params, batch_stats=stats)
  if state.ema is not None:
    new = new.replace(ema={"params": params, "batch_stats": stats})
  return new
