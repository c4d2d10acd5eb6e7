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
3. ``loss = mean_i loss_i`` over the global batch; its gradient flows back through
   ``shard_map`` (the transpose of the implicit broadcast of replicated parameters is a
   ``psum``), and the optax update runs on the replicated or FSDP-sharded parameters.

Example:
  >>> # see jaxcl.train.trainer.train for the full loop; tests/test_train.py for a 3-step run
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcl.train.sharding import AXIS, data_sharding, replicated, state_shardings


@flax.struct.dataclass
class TrainState:
  params: Any
  batch_stats: Any
  opt_state: Any
  step: jax.Array    # int32 scalar: number of completed steps
  rng: jax.Array     # uint32[2] raw key; per-step keys are fold_in(rng, step)


def build_model(model_config, bn_axis_name=None):
  """``ContrastiveModel(encoder, projection head)`` from ``config.model``.

  ``bn_axis_name`` is set on every module that has BatchNorm (the trainer passes 'data' so
  batch statistics are global, as with one device).
  """
  from jaxcl import models
  encoder = models.build_encoder(model_config.encoder, **dict(model_config.encoder_kwargs))
  if hasattr(encoder, "bn_axis_name"):
    encoder = encoder.clone(bn_axis_name=bn_axis_name)
  head = models.ProjectionHead(hidden=model_config.head_hidden, out=model_config.head_out,
                               num_layers=model_config.head_layers, use_bn=model_config.head_bn,
                               bn_axis_name=bn_axis_name)
  return models.ContrastiveModel(encoder, head)


def init_variables(model, rng, example_shape):
  x = jnp.zeros((2,) + tuple(example_shape), jnp.float32)
  variables = model.init(jax.random.fold_in(rng, 1), x, train=False)
  return variables["params"], variables.get("batch_stats", {})


def create_state(mesh, model, tx, rng, example_shape, *, fsdp=False, fsdp_min_size=1 << 18):
  """Initialises the train state directly with its shardings. Returns ``(state, shardings)``."""
  rng = jnp.asarray(rng, jnp.uint32)

  def init():
    params, batch_stats = init_variables(model, rng, example_shape)
    return TrainState(params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32), rng)

  abstract = jax.eval_shape(init)
  shardings = state_shardings(mesh, abstract, fsdp=fsdp, min_size=fsdp_min_size)
  # Scalars and the RNG stay replicated whatever the FSDP rule says.
  shardings = shardings.replace(step=replicated(mesh), rng=replicated(mesh))
  return jax.jit(init, out_shardings=shardings)(), shardings


def per_example_views(view_fn, key, index, x):
  """``view_fn`` applied to each row with key ``fold_in(key, index[row])``."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
  return jax.vmap(lambda k, xi: view_fn(k, xi[None])[0])(keys, x)


def make_views(view_fn, state, x, num_views=2):
  """``num_views`` views of every row; view ``v`` uses ``fold_in(step_key, v)``."""
  n = x.shape[0]
  key = jax.random.fold_in(state.rng, state.step)
  index = state.step * n + jnp.arange(n, dtype=jnp.int32)
  return tuple(per_example_views(view_fn, jax.random.fold_in(key, v), index, x)
               for v in range(num_views))


LOSS_STREAM = 1 << 30  # fold_in index of the loss's key: apart from the views' 0..K-1


def objective_key(state):
  """Per-step key of losses that draw (MoCHi), the same on every device."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), LOSS_STREAM)


def sharded_loss(model, objective, mesh, num_views=2):
  """``(params, batch_stats, views, labels, rng) -> (per_example_loss [B], new batch_stats)``.

  ``objective(z [B_local, K, D], labels [B_local], rng, axis_name) -> [B_local]``
  (:mod:`jaxcl.train.objectives`).
  """

  def local(params, batch_stats, views, labels, rng):
    b = views[0].shape[0]
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    # One forward pass over all views (view-major rows): BatchNorm sees the K*B rows together.
    (_, z), new_vars = model.apply(variables, jnp.concatenate(views), train=True,
                                   mutable=["batch_stats"])
    z = jnp.swapaxes(z.reshape((len(views), b) + z.shape[1:]), 0, 1)
    per = objective(z, labels, rng, AXIS)
    new_stats = new_vars.get("batch_stats", batch_stats)
    # Already synchronised by BatchNorm's axis_name; pmean makes that explicit to shard_map.
    new_stats = jax.tree.map(lambda s: jax.lax.pmean(s, AXIS), new_stats)
    return per, new_stats

  return jax.shard_map(local, mesh=mesh,
                       in_specs=(P(), P(), (P(AXIS),) * num_views, P(AXIS), P()),
                       out_specs=(P(AXIS), P()))


def make_train_step(mesh, model, tx, objective, view_fn, schedule, state_shardings_,
                    *, num_views=2, nan_at_step=-1):
  """Returns the jitted ``step(state, batch) -> (state, metrics)`` (state donated)."""
  forward = sharded_loss(model, objective, mesh, num_views)

  def step(state, batch):
    views = tuple(jax.lax.with_sharding_constraint(v, data_sharding(mesh))
                  for v in make_views(view_fn, state, batch["x"], num_views))
    rng = objective_key(state)

    def loss_of(params):
      per, stats = forward(params, state.batch_stats, views, batch["y"], rng)
      loss = jnp.mean(per)
      if nan_at_step >= 0:  # test hook for the NaN guard
        loss = loss * jnp.where(state.step == nan_at_step, jnp.nan, 1.0)
      return loss, stats

    (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = jax.tree.map(jnp.add, state.params, updates)
    metrics = {"loss": loss, "grad_norm": _global_norm(grads), "lr": schedule(state.step)}
    new = state.replace(params=params, batch_stats=stats, opt_state=opt_state,
                        step=state.step + 1)
    return new, metrics

  batch_sh = {"x": data_sharding(mesh), "y": data_sharding(mesh)}
  return jax.jit(step, in_shardings=(state_shardings_, batch_sh),
                 out_shardings=(state_shardings_, replicated(mesh)), donate_argnums=0)


def _global_norm(tree):
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
