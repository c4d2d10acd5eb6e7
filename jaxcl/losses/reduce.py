"""The reduction of per-example losses to the batch loss, padding-aware and sharded.

Every loss in :mod:`jaxcl.losses` returns per-example values for the local rows whose mean over
the global batch is the published loss, with padded rows (``valid=False``) at 0. A plain
``mean`` then divides by the padded batch size and under-weights the loss of a padded batch;
the right reduction is the mean over the *valid* rows of the global batch (devices ``d``
along ``axis_name``, local rows ``i``)::

    global_mean(l, valid) = sum_{d, i : valid_{d,i}} l_{d,i} / max(1, #{(d, i) : valid_{d,i}})

Both sums are ``psum``-ed through :mod:`jaxcl.collectives`, so inside ``jax.shard_map`` every
device gets the same scalar and value and gradient equal the single-device call on the full
batch. A batch with no valid row gives 0 with a zero gradient (not 0 / 0); a padded row gets a
zero gradient whatever value it holds (NaN included). Without ``valid`` it is the plain mean.

Example:
  >>> import jax.numpy as jnp, jaxcl
  >>> per = jnp.array([1.0, 3.0, 0.0, 0.0])
  >>> float(jaxcl.losses.global_mean(per, jnp.array([True, True, False, False])))
  2.0
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl import collectives
from jaxcl.losses import _common as c


def global_mean(per_example: ArrayLike, valid: ArrayLike | None = None,
                axis_name: str | tuple[str, ...] | None = None) -> jax.Array:
  """Mean of per-example losses over the valid rows of the global batch (padding-aware).

  With devices ``d`` along ``axis_name`` and local rows ``i``::

      global_mean(l, valid) = sum_{d, i : valid_{d,i}} l_{d,i} / max(1, #{(d, i) : valid_{d,i}})

  Both sums are ``psum``-ed along ``axis_name``, so inside ``jax.shard_map`` every device
  gets the same scalar and value and gradient equal the single-device call on the full
  batch. This is the reduction of the ``[B_local]`` per-example values every loss in
  :mod:`jaxcl.losses` returns (a plain ``.mean()`` divides by the padded batch size). A batch
  with no valid row gives 0 with a zero gradient (not 0 / 0); a padded row gets a zero
  gradient whatever value it holds (NaN included). With ``valid=None`` it is the plain
  global mean.

  Args:
    per_example: ``[B_local]`` per-example values (any float dtype; reduced in float32).
    valid: ``[B_local]`` bool; rows marked False are left out of both sums. ``None``: every
      row counts.
    axis_name: mesh axis name(s) inside ``jax.shard_map``. ``None``: single device.

  Returns:
    A float32 scalar, the same on every device.

  Example:
    Two valid rows with values 1 and 3 and two padded rows: ``(1 + 3) / 2 = 2.0`` (a plain
    mean would give ``4 / 4 = 1.0``).

    >>> import jax.numpy as jnp, jaxcl
    >>> per = jnp.array([1.0, 3.0, 0.0, 0.0])
    >>> float(jaxcl.losses.global_mean(per, jnp.array([True, True, False, False])))
    2.0
    >>> float(jaxcl.losses.global_mean(per))
    1.0
  """
  fn = "global_mean"
  per = c.embeddings("per_example", per_example, fn, rank=1, what="[batch]").astype(jnp.float32)
  b = per.shape[0]
  if valid is None:
    return collectives.psum(jnp.sum(per), axis_name) / (b * collectives.axis_size(axis_name))
  valid = c.valid_mask(valid, b, fn)
  total = collectives.psum(jnp.sum(jnp.where(valid, per, 0.0)), axis_name)
  count = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
  return total / jnp.maximum(count, 1.0)
