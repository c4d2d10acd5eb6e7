"""Every cross-device communication jaxcl does lives here.

Losses never call ``jax.lax`` collectives directly: they call these helpers with the
``axis_name`` they were given, and ``axis_name=None`` means "single device, identity".
``axis_name`` may be a mesh axis name or a tuple of names (e.g. ``('dp', 'fsdp')``), in which
case the collectives act over the product of those axes in row-major order, which is the
same order ``lax.axis_index`` uses, so gathered rows are laid out by global position.

Gradient semantics: the transpose of ``all_gather`` is ``psum_scatter``, so gathering keys
"with gradient" is correct by construction -- every device receives the sum of the
cotangents that all devices computed for the rows it owns (the bug lightly #1528 and
open_clip #616 describe cannot occur).
"""
from __future__ import annotations

from typing import Hashable, Optional, Sequence, Union

import jax
import jax.numpy as jnp

AxisName = Optional[Union[Hashable, Sequence[Hashable]]]


def _norm(axis_name: AxisName):
  if axis_name is None:
    return None
  if isinstance(axis_name, (list, tuple)):
    return tuple(axis_name)
  return axis_name


def axis_size(axis_name: AxisName) -> int:
  """Number of devices along ``axis_name`` (1 when None). Static."""
  axis_name = _norm(axis_name)
  if axis_name is None:
    return 1
  return jax.lax.psum(1, axis_name)


def axis_index(axis_name: AxisName):
  """This device's linear index along ``axis_name`` (0 when None)."""
  axis_name = _norm(axis_name)
  if axis_name is None:
    return jnp.int32(0)
  return jax.lax.axis_index(axis_name)


def all_gather(x, axis_name: AxisName):
  """Concatenates ``x`` from every device along axis 0 (identity when None)."""
  axis_name = _norm(axis_name)
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def psum(x, axis_name: AxisName):
  axis_name = _norm(axis_name)
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmax(x, axis_name: AxisName):
  axis_name = _norm(axis_name)
  return x if axis_name is None else jax.lax.pmax(x, axis_name)


def pmean(x, axis_name: AxisName):
  axis_name = _norm(axis_name)
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def ppermute_next(x, axis_name: AxisName):
  """Sends ``x`` to the next device on the ring (device d -> d+1 mod W)."""
  axis_name = _norm(axis_name)
  if axis_name is None:
    return x
  n = axis_size(axis_name)
  return jax.lax.ppermute(x, axis_name, perm=[(i, (i + 1) % n) for i in range(n)])


def ppermute_prev(x, axis_name: AxisName):
  """Sends ``x`` to the previous device on the ring (device d -> d-1 mod W)."""
  axis_name = _norm(axis_name)
  if axis_name is None:
    return x
  n = axis_size(axis_name)
  return jax.lax.ppermute(x, axis_name, perm=[(i, (i - 1) % n) for i in range(n)])


def global_row_index(local_batch: int, axis_name: AxisName):
  """Global positions ``[offset, offset + local_batch)`` of this device's rows."""
  return axis_index(axis_name) * local_batch + jnp.arange(local_batch, dtype=jnp.int32)
