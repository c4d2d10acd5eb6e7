"""Objective adapters: one calling convention for every loss the trainer can run.

The step encodes ``K = config.views.num`` views of each local example into ``z [B_local, K, D]``
and calls ``objective(z, labels, rng, axis_name) -> [B_local]``. :func:`make_objective` builds
that function from ``config.loss.name`` and ``config.loss.kwargs`` by the loss's kind:

* ``pair`` (``fn(a, b, ...)``: nt_xent, dcl, dclw, info_nce, clip_loss, siglip_loss,
  truncated_info_nce, mochi_loss): views 0 and 1 when ``K == 2``; for ``K > 2`` the pairwise-sum
  baseline of Koromilas et al. (arXiv 2507.06979, "pwe")::

      L_i = 1 / C(K,2) * sum_{v < w} fn(z[:, v], z[:, w])_i

* ``views`` (``fn(views [B, K, D], ...)``: mv_info_nce, mv_dhel): all ``K`` views at once;
* ``labels`` (``fn(features [B, K, D], labels, ...)``: supcon): the batch labels too.

A loss whose signature has ``rng`` gets the per-step key (``fold_in(rng, pair)`` per view pair),
the same on every device, so sharded runs draw what a single device would.

Example:
  >>> import jax, jax.numpy as jnp
  >>> obj = make_objective("nt_xent", {"temperature": 0.5}, num_views=3)
  >>> z = jax.random.normal(jax.random.key(0), (4, 3, 8))
  >>> obj(z, jnp.zeros(4, jnp.int32), jax.random.key(1), None).shape
  (4,)
"""
from __future__ import annotations

import functools
import inspect
import itertools

import jax
import jax.numpy as jnp

KINDS = {
    "nt_xent": "pair", "dcl": "pair", "dclw": "pair", "info_nce": "pair", "clip_loss": "pair",
    "siglip_loss": "pair", "truncated_info_nce": "pair", "mochi_loss": "pair",
    "mv_info_nce": "views", "mv_dhel": "views",
    "supcon": "labels",
}


def takes_rng(fn):
  return "rng" in inspect.signature(fn).parameters


def reserved_kwargs(name, fn):
  """Arguments the adapter supplies, so a config may not set them."""
  out = ("axis_name",) + (("rng",) if takes_rng(fn) else ())
  return out + (("labels",) if KINDS.get(name) == "labels" else ())


def make_objective(name, kwargs, num_views):
  """``objective(z [B, K, D], labels [B], rng, axis_name) -> [B]`` for ``jaxcl.losses.<name>``."""
  import jaxcl.losses
  if name not in KINDS:
    raise ValueError(f"loss {name!r} has no trainer adapter (supported: {sorted(KINDS)})")
  if num_views < 2:
    raise ValueError(f"num_views must be >= 2, got {num_views}")
  fn = functools.partial(getattr(jaxcl.losses, name), **dict(kwargs))
  kind, with_rng = KINDS[name], takes_rng(fn.func)

  def objective(z, labels, rng, axis_name):
    extra = lambda i: {"rng": jax.random.fold_in(rng, i)} if with_rng else {}
    if kind == "views":
      return fn(z, axis_name=axis_name, **extra(0))
    if kind == "labels":
      return fn(z, labels, axis_name=axis_name, **extra(0))
    pairs = list(itertools.combinations(range(z.shape[1]), 2))
    per = [fn(z[:, v], z[:, w], axis_name=axis_name, **extra(i))
           for i, (v, w) in enumerate(pairs)]
    # One pair (K == 2) is returned as is, so two-view runs are unchanged bit for bit.
    return per[0] if len(per) == 1 else jnp.mean(jnp.stack(per), axis=0)

  return objective
