"""Train state and the sharded, jitted contrastive train step.

One step on a global batch ``x`` (sharded ``P('data')``):

1. ``K = config.views.num`` views per example (default 2), made on device with keys
   ``k_{v,i} = fold_in(fold_in(fold_in(rng, step), v), i)`` where ``i`` is the example's
   position in the global stream (``step * B + row``), so the views do not depend on how many
   devices or processes hold the batch;
2. inside ``jax.shard_map`` over 'data', each device encodes its local rows of all views
   (BatchNorm statistics synchronised over 'data') and calls the objective adapter
   (:mod:`jaxcl.train.objectives`) on ``z [B_local, K, D]`` with ``axis_name='data'``, so
   every anchor sees the negatives of the whole global batch;
   an objective with learnable parameters of its own (:class:`jaxcl.train.objectives.
   ParamObjective`, e.g. SwAV's prototypes) gets them projected (no gradient) before the
   step, replicated into ``shard_map``, differentiated with the model and updated by the
   same optax transformation (its own state), except during its first ``freeze_steps``;
3. ``loss = jaxcl.losses.global_mean(loss_i)``, the mean over the valid rows of the global
   batch (every row of the trainer's batches is valid: the plain mean); its gradient flows
   back through ``shard_map`` (the transpose of the implicit broadcast of replicated
   parameters is a ``psum``), and the optax update runs on the replicated or FSDP-sharded
   parameters;
4. the finiteness guard (:func:`guard_nonfinite`): a step whose loss, gradient norm or new
   state is not finite is not applied (the state stays the previous one, its step count
   advanced) and ``metrics["nonfinite"]`` says which (the trainer stops or skips on it).

Example:
  >>> # see jaxcl.train.trainer.train for the full loop; tests/test_train.py for a 3-step run
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxcl import queue as queue_lib
from jaxcl.losses._common import check_int
from jaxcl.losses.reduce import global_mean
from jaxcl.train import momentum as momentum_lib
from jaxcl.train.sharding import AXIS, data_sharding, replicated, state_shardings


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array    # int32 scalar: number of completed steps
  rng: jax.Array     # uint32[2] raw key; per-step keys are fold_in(rng, step)
  # Learnable parameters of the objective (SwAV prototypes, a CLIP temperature, ...) and
  # their optimiser state; None when the objective has none. Always replicated.
  objective_params: Any = None
  objective_opt_state: Any = None
  # MoCo: the momentum teacher {"params", "batch_stats"} (jaxcl.train.momentum) and the FIFO
  # of past global-batch keys (jaxcl.queue.Queue, replicated); None when off.
  ema: Any = None
  queue: Any = None
  # Non-differentiable state of the objective (BECLR's DyCE memories), replicated; None when
  # the objective keeps none.
  objective_state: Any = None


def build_model(model_config, bn_axis_name=None, modalities=()):
  """``ContrastiveModel(encoder, projection head)`` from ``config.model``.

  ``bn_axis_name`` is set on every module that has BatchNorm (the trainer passes 'data' so
  batch statistics are global, as with one device). With ``modalities`` (a multimodal
  dataset's :class:`jaxcl.data.catalog.Modality` blocks): a :class:`jaxcl.models.MultiModal`
  with one encoder + head per modality (:func:`modality_towers`).
  """
  from jaxcl import models
  if model_config.get("locals", False) and not modalities:
    raise ValueError("config.model.locals: local embeddings need a multimodal dataset")
  if modalities and model_config.get("locals", False):  # globals then locals (TCL's LMI)
    return models.MultiModalLocals(modality_towers(model_config, modalities, bn_axis_name),
                                   tuple(modalities))
  if modalities and model_config.get("shared_tower", False):  # one bi-encoder tower
    towers = modality_towers(model_config, modalities[:1], bn_axis_name)
    return models.MultiModal(towers, tuple(modalities), shared=True)
  if modalities:
    return models.MultiModal(modality_towers(model_config, modalities, bn_axis_name),
                             tuple(modalities))
  return _single_model(model_config, bn_axis_name,
                       models.build_encoder(model_config.encoder,
                                            **dict(model_config.encoder_kwargs)))


def modality_towers(model_config, modalities, bn_axis_name=None):
  """One ``ContrastiveModel`` per modality: ``config.model.modalities.<name>.encoder`` /
  ``.encoder_kwargs`` (a ConfigDict per modality, optional) override the defaults
  (``config.model.encoder`` and its kwargs; ``"text_transformer"`` with the modality's
  ``vocab`` and length for ``tokens``); the projection head is the configured one."""
  from jaxcl import models
  per = dict(model_config.get("modalities") or {})
  if model_config.get("shared_tower", False):  # the one shared tower takes the first's options
    per = {modalities[0].name: o for o in per.values()} if len(per) == 1 else per
  unknown = set(per) - {m.name for m in modalities}
  if unknown:
    raise ValueError(f"config.model.modalities names {sorted(unknown)}, not modalities of the "
                     f"dataset ({[m.name for m in modalities]})")
  towers = []
  for m in modalities:
    o = per.get(m.name) or {}
    if m.kind == "tokens":
      name, kwargs = "text_transformer", {"vocab": m.vocab, "max_len": m.shape[0]}
    else:
      name, kwargs = model_config.encoder, dict(model_config.encoder_kwargs)
    if o.get("encoder"):
      name, kwargs = o["encoder"], ({"vocab": m.vocab, "max_len": m.shape[0]}
                                    if o["encoder"] == "text_transformer" else {})
    elif m.kind == "tokens" and model_config.encoder == "bert":  # pretrained vocabulary
      name, kwargs = "bert", dict(model_config.encoder_kwargs)
    kwargs.update(dict(o.get("encoder_kwargs") or {}))
    try:
      enc = models.build_encoder(name, **kwargs)
    except ValueError as e:
      raise ValueError(f"modality {m.name!r}: {e}") from e
    if model_config.get("locals", False):  # token outputs through the head (models.locals)
      if "return_tokens" not in getattr(enc, "__dataclass_fields__", {}):
        raise ValueError(f"config.model.locals: modality {m.name!r}'s encoder {name!r} has no "
                         "token outputs (vit_* and text_transformer have)")
      tower = _single_model(model_config, bn_axis_name, enc.clone(return_tokens=True))
      if not isinstance(tower, models.ContrastiveModel):
        raise ValueError("config.model.locals does not combine with config.model.towers > 1")
      towers.append(models.LocalsModel(tower.encoder, tower.head))
      continue
    towers.append(_single_model(model_config, bn_axis_name, enc))
  return tuple(towers)


def _single_model(model_config, bn_axis_name, encoder):
  from jaxcl import models
  if hasattr(encoder, "bn_axis_name"):
    encoder = encoder.clone(bn_axis_name=bn_axis_name)
  head = models.ProjectionHead(hidden=model_config.head_hidden, out=model_config.head_out,
                               num_layers=model_config.head_layers, use_bn=model_config.head_bn,
                               bn_axis_name=bn_axis_name)
  if model_config.head_layers == 0:  # no projection head: z = h (fine-tuning objectives with
    head = None                      # heads of their own, e.g. Core-tuning)
  towers = model_config.get("towers", 1)
  towers = check_int(towers, 1, message="config.model.towers must be an int >= 1")
  if towers > 1:  # independent copies (own parameters), outputs concatenated
    return models.MultiTower(tuple(models.ContrastiveModel(encoder.clone(),
                                                          head and head.clone())
                                   for _ in range(towers)))
  return models.ContrastiveModel(encoder, head)


def init_variables(model, rng, example_shape):
  x = jnp.zeros((2,) + tuple(example_shape), jnp.float32)
  variables = model.init(jax.random.fold_in(rng, 1), x, train=False)
  return variables.get("params", {}), variables.get("batch_stats", {})  # {}: no parameters


def init_objective_params(objective, model, rng, example_shape):
  """The objective's own parameters (``None`` if it has none), projected, for embeddings of
  the model's output width. Key: ``fold_in(rng, 2)`` (the model uses ``fold_in(rng, 1)``)."""
  if not hasattr(objective, "init"):
    return None
  x = jax.ShapeDtypeStruct((2,) + tuple(example_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  _, z = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return objective.project(objective.init(jax.random.fold_in(rng, 2), z.shape[-1]))


def create_state(mesh, model, tx, rng, example_shape, *, fsdp=False, fsdp_min_size=1 << 18,
                 objective=None, momentum=False, queue_size=0):
  """Initialises the train state directly with its shardings. Returns ``(state, shardings)``."""
  rng = jnp.asarray(rng, jnp.uint32)
  init_obj_state = getattr(objective, "init_state", None)

  def init():
    params, batch_stats = init_variables(model, rng, example_shape)
    obj = init_objective_params(objective, model, rng, example_shape)
    return TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32), rng,
                      objective_params=obj,
                      objective_opt_state=None if obj is None else tx.init(obj),
                      ema=({"params": params, "batch_stats": batch_stats} if momentum
                           else None),
                      queue=(queue_lib.init(jax.random.fold_in(rng, 3), queue_size,
                                            embedding_dim(model, example_shape))
                             if queue_size else None),
                      objective_state=(init_obj_state(embedding_dim(model, example_shape))
                                       if init_obj_state else None))

  abstract = jax.eval_shape(init)
  shardings = state_shardings(mesh, abstract, fsdp=fsdp, min_size=fsdp_min_size)
  # Scalars, the RNG and the objective's parameters stay replicated whatever the FSDP rule
  # says (the objective sees them whole inside shard_map).
  rep = lambda t: jax.tree.map(lambda _: replicated(mesh), t)
  shardings = shardings.replace(step=replicated(mesh), rng=replicated(mesh),
                                objective_params=rep(abstract.objective_params),
                                objective_opt_state=rep(abstract.objective_opt_state),
                                queue=rep(abstract.queue),
                                objective_state=rep(abstract.objective_state))
  return jax.jit(init, out_shardings=shardings)(), shardings


def embedding_dim(model, example_shape):
  x = jax.ShapeDtypeStruct((2,) + tuple(example_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  return jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)[1].shape[-1]


def per_example_views(view_fn, key, index, x):
  """``view_fn`` applied to each row with key ``fold_in(key, index[row])``."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
  return jax.vmap(lambda k, xi: view_fn(k, xi[None])[0])(keys, x)


def make_views(view_fn, state, x, num_views=2):
  """``num_views`` views of every row; view ``v`` uses ``fold_in(step_key, v)``.

  ``view_fn`` is one function for every view or a tuple of ``num_views`` (multi-crop: global
  then local crops); either way view ``v``'s keys depend only on ``(rng, step, v, row)``.
  """
  n = x.shape[0]
  key = jax.random.fold_in(state.rng, state.step)
  index = state.step * n + jnp.arange(n, dtype=jnp.int32)
  fns = tuple(view_fn) if isinstance(view_fn, (tuple, list)) else (view_fn,) * num_views
  if len(fns) != num_views:
    raise ValueError(f"make_views: {len(fns)} view functions for {num_views} views")
  return tuple(per_example_views(fns[v], jax.random.fold_in(key, v), index, x)
               for v in range(num_views))


LOSS_STREAM = 1 << 30  # fold_in index of the loss's key: apart from the views' 0..K-1
DROPOUT_STREAM = 7     # fold_in of the loss key for the model's "dropout" rng


def objective_key(state):
  """Per-step key of losses that draw (MoCHi), the same on every device."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), LOSS_STREAM)


def by_example(z, num_views, b):
  """View-major rows ``[K*B, D]`` (or ``[K*B, M, D]`` from a multimodal model) -> ``[B, K*M,
  D]``, column ``v*M + m`` = view ``v`` of modality ``m`` (``M = 1``: ``[B, K, D]``)."""
  z = z.reshape((num_views, b, -1, z.shape[-1]))
  return jnp.swapaxes(z, 0, 1).reshape((b, -1, z.shape[-1]))


def sharded_loss(model, objective, mesh, num_views=2, teacher_views="key"):
  """``(params, batch_stats, views, labels, rng[, objective_params]) -> (per_example_loss [B],
  new batch_stats, health)``.

  ``objective(z [B_local, K, D], labels [B_local], rng, axis_name) -> [B_local]``
  (:mod:`jaxcl.train.objectives`); a ``ParamObjective`` is called as
  ``objective.apply(objective_params, z, labels, rng, axis_name)`` and its optional
  ``health(objective_params, z, axis_name)`` returns replicated scalar diagnostics (``{}``
  otherwise).

  MoCo (``mo = {"ema": teacher or None, "queue": [M, D] or None}``, replicated): with a
  teacher, view 1 is encoded by it (:func:`jaxcl.train.momentum.encode`, no gradient) and the
  other views by the online model; the queue goes to the objective as ``queue=``. The fourth
  output holds the keys to enqueue (``z[:, 1]``, stop-gradient, global batch order), the
  teacher's new BatchNorm statistics and the proxy-task accuracy. With
  ``teacher_views="all"`` (BYOL / BECLR) every view is encoded by both networks and the
  objective gets ``z [B, 2K, D]``: the K online views, then the K teacher views.

  An objective with state (``ParamObjective.init_state``) gets ``state=obj_state`` and
  returns its new state (replicated) as the fifth output; ``None`` otherwise. One with
  ``takes_encoder`` also gets ``inputs=views`` (local) and ``encode(x, train=False)``.
  """
  with_params = hasattr(objective, "init")
  with_state = getattr(objective, "init_state", None) is not None
  every_view = teacher_views == "all"

  def encode(variables, x, train=False):
    if train:
      out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
      return out
    return model.apply(variables, x, train=False)

  def local(params, batch_stats, views, labels, rng, mo, obj_state, obj_params=None):
    b = views[0].shape[0]
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    teacher = mo["ema"] is not None
    online = (views[0],) + tuple(views[2:]) if teacher and not every_view else views
    # One forward pass over all views (view-major rows): BatchNorm sees the K*B rows together.
    # Dropout (e.g. SimCSE's views): its own stream, different on every device.
    drop = jax.random.fold_in(jax.random.fold_in(rng, DROPOUT_STREAM), jax.lax.axis_index(AXIS))
    (_, z), new_vars = model.apply(variables, jnp.concatenate(online), train=True,
                                   mutable=["batch_stats"], rngs={"dropout": drop})
    z = by_example(z, len(online), b)
    mo_out = {"ema_stats": None, "keys": None, "proxy_acc": None}
    if teacher and every_view:
      zk, mo_out["ema_stats"] = momentum_lib.encode(model, mo["ema"], jnp.concatenate(views),
                                                    AXIS)
      zk = by_example(zk, len(views), b)
      mo_out["proxy_acc"] = momentum_lib.proxy_accuracy(z[:, 0], zk[:, 1], None, AXIS)
      z = jnp.concatenate([z, zk.astype(z.dtype)], axis=1)
    elif teacher:
      zk, mo_out["ema_stats"] = momentum_lib.encode(model, mo["ema"], views[1], AXIS)
      z = jnp.concatenate([z[:, :1], zk[:, None].astype(z.dtype), z[:, 1:]], axis=1)
    if (teacher and not every_view) or mo["queue"] is not None:
      mo_out["keys"] = jax.lax.stop_gradient(z[:, 1])
      mo_out["proxy_acc"] = momentum_lib.proxy_accuracy(z[:, 0], z[:, 1], mo["queue"], AXIS)
    health, new_obj_state = {}, None
    if with_params:
      queue = {} if mo["queue"] is None else {"queue": mo["queue"]}
      if with_state:
        queue["state"] = obj_state
      if objective.takes_encoder:
        queue["inputs"], queue["encode"] = views, functools.partial(encode, variables)
      per = objective.apply(obj_params, z, labels, rng, AXIS, **queue)
      if with_state:
        per, new_obj_state = per[0], jax.lax.stop_gradient(per[1])
      if objective.health is not None:
        health = objective.health(jax.lax.stop_gradient(obj_params),
                                  jax.lax.stop_gradient(z), AXIS)
    elif mo["queue"] is not None:
      per = objective(z, labels, rng, AXIS, queue=mo["queue"])
    else:
      per = objective(z, labels, rng, AXIS)
    new_stats = new_vars.get("batch_stats", batch_stats)
    # Already synchronised by BatchNorm's axis_name; pmean makes that explicit to shard_map.
    new_stats = jax.tree.map(lambda s: jax.lax.pmean(s, AXIS), new_stats)
    return per, new_stats, health, mo_out, new_obj_state

  in_specs = ((P(), P(), (P(AXIS),) * num_views, P(AXIS), P(), P(), P())
              + ((P(),) if with_params else ()))
  mo_specs = {"ema_stats": P(), "keys": P(AXIS), "proxy_acc": P()}
  return jax.shard_map(local, mesh=mesh, in_specs=in_specs,
                       out_specs=(P(AXIS), P(), P(), mo_specs, P()))


def make_train_step(mesh, model, tx, objective, view_fn, schedule, state_shardings_,
                    *, num_views=2, nan_at_step=-1, ema_decay=None, teacher_views="key"):
  """Returns the jitted ``step(state, batch) -> (state, metrics)`` (state donated); metrics:
  ``loss``, ``grad_norm``, ``lr``, the objective's health scalars and ``nonfinite`` (the
  guard's flags, :func:`guard_nonfinite`; 0 = the step was applied).

  ``ema_decay(step) -> m`` is the teacher's momentum when the state has one;
  ``teacher_views`` is ``config.momentum.teacher_views`` (see :func:`sharded_loss`).
  """
  forward = sharded_loss(model, objective, mesh, num_views, teacher_views)

  def step(state, batch):
    views = tuple(jax.lax.with_sharding_constraint(v, data_sharding(mesh))
                  for v in make_views(view_fn, state, batch["x"], num_views))
    rng = objective_key(state)
    with_params = state.objective_params is not None
    # SwAV-style projection (prototype rows back to unit norm) before the step, no gradient.
    obj_params = objective.project(state.objective_params) if with_params else None

    mo = {"ema": state.ema, "queue": None if state.queue is None else state.queue.keys}

    def loss_of(params, obj_params):
      extra = (obj_params,) if with_params else ()
      per, stats, health, mo_out, obj_state = forward(
          params, state.batch_stats, views, batch["y"], rng, mo, state.objective_state, *extra)
      loss = global_mean(per)    # per is the global [B] array here (outside shard_map)
      if nan_at_step >= 0:  # test hook for the NaN guard
        loss = loss * jnp.where(state.step == nan_at_step, jnp.nan, 1.0)
      return loss, (stats, health, mo_out, obj_state)

    (loss, (stats, health, mo_out, obj_state)), (grads, obj_grads) = jax.value_and_grad(
        loss_of, argnums=(0, 1), has_aux=True)(state.params, obj_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), "lr": schedule(state.step),
               **health}
    if mo_out["proxy_acc"] is not None:
      metrics["proxy_acc"] = mo_out["proxy_acc"]
    new = state.replace(params=params, batch_stats=stats, opt_state=opt_state,
                        step=state.step + 1, objective_state=obj_state)
    if state.ema is not None:  # after the optimiser step, as MoCo's before the next forward
      ema = momentum_lib.update(state.ema["params"], params, ema_decay(state.step))
      new = new.replace(ema={"params": ema, "batch_stats": mo_out["ema_stats"]})
    if state.queue is not None:
      new = new.replace(queue=queue_lib.enqueue(state.queue, mo_out["keys"]))
    if with_params:
      obj_params, obj_opt_state = update_objective_params(
          tx, obj_params, obj_grads, state.objective_opt_state,
          frozen=state.step < objective.freeze_steps)
      new = new.replace(objective_params=obj_params, objective_opt_state=obj_opt_state)
    new, metrics["nonfinite"] = guard_nonfinite(state, new, loss, metrics["grad_norm"])
    return new, metrics

  batch_sh = {"x": data_sharding(mesh), "y": data_sharding(mesh)}
  return jax.jit(step, in_shardings=(state_shardings_, batch_sh),
                 out_shardings=(state_shardings_, replicated(mesh)), donate_argnums=0)


NONFINITE = ("loss", "grad_norm", "params")  # bit i of metrics["nonfinite"]: NONFINITE[i]


def guard_nonfinite(old, new, loss, grad_norm):
  """``(state, flags)``: ``new`` when the loss, the gradient norm and every float leaf of ``new``
  (parameters, optimiser and objective state, statistics: "params") are finite; otherwise
  ``old`` with only its step count advanced (the step's batch is consumed, nothing is applied).
  ``flags`` (int32) has bit ``i`` set when ``NONFINITE[i]`` is not finite; 0 = applied.

  Computed on device inside the step; the caller reads ``flags`` with the loss.
  """
  params_ok = jnp.bool_(True)
  for x in jax.tree.leaves(new):
    if jnp.issubdtype(x.dtype, jnp.inexact):
      params_ok &= jnp.all(jnp.isfinite(x))
  bad = (~jnp.isfinite(loss), ~jnp.isfinite(grad_norm), ~params_ok)
  flags = sum(b.astype(jnp.int32) << i for i, b in enumerate(bad))
  keep = old.replace(step=new.step)
  return jax.tree.map(lambda n, o: jnp.where(flags == 0, n, o), new, keep), flags


def update_objective_params(tx, params, grads, opt_state, *, frozen):
  """One optax step of the objective's parameters; while ``frozen`` they stay put.

  Frozen = parameters and the optimiser's float state (momenta, Adam moments) unchanged, as
  if the optimiser skipped them (SwAV drops the prototypes' gradient for
  ``freeze_prototypes_niters``), while its integer step counts keep pace with the model's so
  both follow one learning-rate schedule. (Adam's bias correction therefore uses the global
  count, not a per-parameter one as in PyTorch.)
  """
  updates, new_state = tx.update(grads, opt_state, params)
  keep = lambda old, new: (new if jnp.issubdtype(new.dtype, jnp.integer)
                           else jnp.where(frozen, old, new))
  new_params = jax.tree.map(lambda p, u: jnp.where(frozen, p, p + u), params, updates)
  return new_params, jax.tree.map(keep, opt_state, new_state)


def _global_norm(tree):
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
