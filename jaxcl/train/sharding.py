"""Mesh, batch placement and parameter sharding (replicated or FSDP) over one 'data' axis.

The mesh spans every device of every process. A global batch of ``B`` rows lives as one
``jax.Array`` sharded ``P('data')``: each process contributes its ``B / num_processes`` local
rows (:func:`global_batch`), each device holds ``B / num_devices``. Parameters are replicated,
or with FSDP each array of at least ``min_size`` elements is split along its largest axis that
the device count divides (ZeRO-3 style: stored sharded, gathered for compute by XLA).

Example:
  >>> import jax, numpy as np
  >>> mesh = make_mesh()
  >>> x = global_batch(mesh, {"x": np.zeros((8, 3), np.float32)})["x"]
  >>> x.sharding.spec == jax.sharding.PartitionSpec("data")
  True
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """1-D ``('data',)`` mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def data_sharding(mesh):
  return NamedSharding(mesh, P(AXIS))


def replicated(mesh):
  return NamedSharding(mesh, P())


def global_batch(mesh, local_batch):
  """Assembles per-process numpy rows into global arrays sharded ``P('data')``."""
  sharding = data_sharding(mesh)
  nproc = jax.process_count()

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, (x.shape[0] * nproc,) + x.shape[1:])

  return jax.tree.map(place, local_batch)


def replicate_array(mesh, x, spec=P()):
  """A host array (identical on every process) placed with ``spec``; rows padded by the caller."""
  x = np.asarray(x)
  sharding = NamedSharding(mesh, spec)
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def fsdp_spec(shape, num_shards, min_size):
  """``P`` that splits the largest axis divisible by ``num_shards`` of big arrays, else ``P()``."""
  if num_shards == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % num_shards == 0:
      spec = [None] * len(shape)
      spec[axis] = AXIS
      return P(*spec)
  return P()


def state_shardings(mesh, abstract_tree, *, fsdp=False, min_size=1 << 18):
  """Shardings for a pytree of ``ShapeDtypeStruct``: replicated, or FSDP by shape.

  The rule depends only on a leaf's shape, so optimiser moments get their parameter's spec.
  """
  n = mesh.shape[AXIS]

  def one(leaf):
    spec = fsdp_spec(leaf.shape, n, min_size) if fsdp else P()
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, abstract_tree)
