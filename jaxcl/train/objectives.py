"""Objective adapters: one calling convention for every loss the trainer can run.

The step encodes ``K = config.views.num`` views of each local example into ``z [B_local, K, D]``
and calls ``objective(z, labels, rng, axis_name) -> [B_local]``. :func:`make_objective` builds
that function from ``config.loss.name`` and ``config.loss.kwargs`` by the loss's kind:

* ``pair`` (``fn(a, b, ...)``: nt_xent, dcl, dclw, info_nce, clip_loss, siglip_loss,
  truncated_info_nce, mochi_loss): views 0 and 1 when ``K == 2``; for ``K > 2`` the pairwise-sum
  baseline of Koromilas et al. (arXiv 2507.06979, "pwe")::

      L_i = 1 / C(K,2) * sum_{v < w} fn(z[:, v], z[:, w])_i

* ``views`` (``fn(views [B, K, D], ...)``: mv_info_nce, mv_dhel, mv_average): all ``K`` views
  at once;
* ``labels`` (``fn(features [B, K, D], labels, ...)``: supcon, supremix): the batch labels too;
* ``prototypes`` (swav_loss): a :class:`ParamObjective` that owns learnable prototypes
  ``C [num_prototypes, D]`` (extra ``config.loss.kwargs``: ``num_prototypes``,
  ``freeze_prototypes_steps``); the first ``config.views.num`` views are SwAV's global
  (assigned) crops, the rest its local crops (``config.views.num_local``).

An objective with learnable parameters of its own is a :class:`ParamObjective`: the trainer
keeps its parameters in ``TrainState.objective_params`` (replicated), calls ``project`` on them
before every step (no gradient), passes them to ``apply`` inside ``shard_map``, differentiates
and updates them with the model's optimiser, and skips their update for the first
``freeze_steps`` steps.

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

import dataclasses
import functools
import inspect
import itertools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

KINDS = {
    "nt_xent": "pair", "dcl": "pair", "dclw": "pair", "info_nce": "pair", "clip_loss": "pair",
    "siglip_loss": "pair", "truncated_info_nce": "pair", "mochi_loss": "pair",
    "mv_info_nce": "views", "mv_dhel": "views", "mv_average": "views",
    "supcon": "labels", "supremix": "labels",
    "swav_loss": "prototypes",
}

# Pair losses that take a queue of past keys (config.queue.size > 0) as shared negatives, and
# the argument that receives it: the objective is then called with ``queue=[M, D]``.
QUEUE_ARGS = {"info_nce": "negatives", "mochi_loss": "queue"}
# SwAV's queue (past embeddings of global crop 1) only joins the Sinkhorn of the codes.
QUEUE_ARGS["swav_loss"] = "queue_scores"

# config.loss.kwargs that configure the objective's own parameters, not the loss function.
OBJECTIVE_KWARGS = {"prototypes": {"num_prototypes": 30, "freeze_prototypes_steps": 0}}


@dataclasses.dataclass(frozen=True)
class ParamObjective:
  """An objective with learnable parameters (SwAV prototypes, a CLIP temperature, ...).

  Attributes:
    apply: ``(params, z [B_local, K, D], labels, rng, axis_name) -> [B_local]``.
    init: ``(rng, dim) -> params`` for embeddings of width ``dim``.
    project: ``params -> params`` applied before every step, outside the gradient.
    freeze_steps: the parameters are not updated during the first ``freeze_steps`` steps.
    health: optional ``(params, z, axis_name) -> {name: scalar}`` diagnostics, identical on
      every device (logged with the step's metrics).
  """
  apply: Callable[..., jax.Array]
  init: Callable[[jax.Array, int], Any]
  project: Callable[[Any], Any] = lambda params: params
  freeze_steps: int = 0
  health: Optional[Callable[..., dict]] = None


def takes_rng(fn):
  return "rng" in inspect.signature(fn).parameters


def reserved_kwargs(name, fn):
  """Arguments the adapter supplies, so a config may not set them."""
  out = ("axis_name",) + (("rng",) if takes_rng(fn) else ())
  if KINDS.get(name) == "prototypes":
    out += ("num_global", "queue_scores", "valid")
  return out + (("labels",) if KINDS.get(name) == "labels" else ())


def objective_kwargs(name):
  """``{key: default}`` of the config.loss.kwargs that belong to the objective, not the loss."""
  return dict(OBJECTIVE_KWARGS.get(KINDS.get(name), {}))


def make_objective(name, kwargs, num_views, num_global_views=None):
  """``objective(z [B, K, D], labels [B], rng, axis_name) -> [B]`` for ``jaxcl.losses.<name>``
  (a :class:`ParamObjective` for the ``prototypes`` kind, whose first ``num_global_views``
  views, default all, get codes)."""
  import jaxcl.losses
  if name not in KINDS:
    raise ValueError(f"loss {name!r} has no trainer adapter (supported: {sorted(KINDS)})")
  if num_views < 2:
    raise ValueError(f"num_views must be >= 2, got {num_views}")
  if KINDS[name] == "prototypes":
    return swav_objective(kwargs, num_views, num_global_views or num_views)
  fn = functools.partial(getattr(jaxcl.losses, name), **dict(kwargs))
  kind, with_rng = KINDS[name], takes_rng(fn.func)

  def objective(z, labels, rng, axis_name, queue=None):
    extra = lambda i: {"rng": jax.random.fold_in(rng, i)} if with_rng else {}
    if queue is not None:  # MoCo: the queue joins every pair's negatives
      rng_extra = extra
      extra = lambda i: {**rng_extra(i), QUEUE_ARGS[name]: queue}
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


def swav_objective(kwargs, num_views, num_global):
  """SwAV (Caron et al., arXiv 2006.09882) with its prototypes ``C [K, D]`` as objective
  parameters: scores ``S^v = normalize(z^v) C.T`` for every view, codes from the first
  ``num_global`` views (Sinkhorn over the global batch), swapped prediction over all others
  (:func:`jaxcl.losses.swav_loss`). ``C`` starts as unit Gaussian rows, is re-normalised to
  unit rows before every step and is used as is inside the step, so (as in the official code,
  which normalises the weight in place under ``no_grad``) its gradient is not projected.

  ``queue`` (``[M, D]``, the trainer's replicated FIFO of past crop-1 embeddings,
  ``config.queue.size``): its scores with the current prototypes are prepended to every
  assigned crop's scores before the Sinkhorn, and their codes dropped (methods.md: queue
  before batch). Unlike the official code, one queue (crop 1's) serves both assigned crops,
  slots never written yet hold random unit vectors, and it is used from step 0.

  Health: ``swav/code_entropy`` (mean entropy of the codes of view 0, nats; ln K when
  uniform) and ``swav/used_prototypes`` (prototypes that are the arg-max prediction of at
  least one view-0 row of the global batch; few means collapse).
  """
  import jaxcl.losses
  from jaxcl import collectives, sinkhorn
  from jaxcl.losses import _common as c
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("swav_loss").items()}
  num_prototypes, freeze = int(own["num_prototypes"]), int(own["freeze_prototypes_steps"])
  if num_prototypes < 2:
    raise ValueError(f"swav: 'num_prototypes' must be >= 2, got {num_prototypes}")
  if not 1 <= num_global <= num_views:
    raise ValueError(f"swav: {num_global} global views out of {num_views}")
  loss = functools.partial(jaxcl.losses.swav_loss, num_global=num_global, **kw)

  def scores(params, z):
    return jaxcl.losses.prototype_scores(c.l2_normalize(z), params["prototypes"],
                                         normalize=False)

  def apply(params, z, labels, rng, axis_name, queue=None):
    del labels, rng
    queue_scores = None
    if queue is not None:
      # The replicated [M, D] queue is split over the devices so that the psum'd Sinkhorn
      # counts each stored row once (codes do not depend on the row order).
      n = collectives.axis_size(axis_name)
      if queue.shape[0] % n:
        raise ValueError(f"swav: queue size {queue.shape[0]} is not divisible by {n} devices")
      m = queue.shape[0] // n
      mine = jax.lax.dynamic_slice_in_dim(queue, collectives.axis_index(axis_name) * m, m)
      queue_scores = jnp.stack([scores(params, mine)] * num_global)
    return loss([scores(params, z[:, v]) for v in range(z.shape[1])], axis_name=axis_name,
                queue_scores=queue_scores)

  def init(rng, dim):
    return {"prototypes": jax.random.normal(rng, (num_prototypes, dim), jnp.float32)}

  def health(params, z, axis_name):
    s = scores(params, z[:, 0])
    q = sinkhorn.sinkhorn_knopp(s, epsilon=kw.get("epsilon", 0.05),
                                num_iters=kw.get("sinkhorn_iters", 3), axis_name=axis_name)
    ent = -jnp.sum(q * jnp.log(jnp.maximum(q, 1e-30)))
    n = collectives.psum(jnp.float32(q.shape[0]), axis_name)
    hits = collectives.psum(jnp.sum(jax.nn.one_hot(jnp.argmax(s, -1), num_prototypes), 0),
                            axis_name)
    return {"swav/code_entropy": collectives.psum(ent, axis_name) / n,
            "swav/used_prototypes": jnp.sum(hits > 0).astype(jnp.float32)}

  return ParamObjective(apply=apply, init=init, project=jaxcl.losses.normalize_prototypes,
                        freeze_steps=freeze, health=health)
