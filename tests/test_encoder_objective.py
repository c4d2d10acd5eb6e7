"""``ParamObjective(takes_encoder=True)``: the objective gets the local views and the model
under the current parameters, inside the sharded step (input-space objectives such as JEM's
PGD samples or a decoder's reconstruction need them)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.train.objectives import ParamObjective
from jaxcl.train.sharding import global_batch
from jaxcl.train.step import make_views
from tests.test_train import dataset_batches, leaves, step_history, tiny_config

B, STEPS = 16, 2


def objective():
  # Per-example: |z - encode(views)|^2 (0: in training mode, on the same rows, the model
  # gives z again, BatchNorm statistics included) + w * mean(encode(2 * view 1))^2 in
  # inference mode (a gradient only through ``encode``).
  def apply(params, z, labels, rng, axis_name, *, inputs, encode):
    b = inputs[0].shape[0]
    _, z_again = encode(jnp.concatenate(inputs), train=True)
    z_again = jnp.swapaxes(z_again.reshape(len(inputs), b, -1), 0, 1)
    _, z2 = encode(2.0 * inputs[1])
    return (jnp.sum((z - z_again) ** 2, (1, 2)) * 1e3
            + params["w"] * jnp.mean(z2, -1) ** 2)
  return ParamObjective(apply=apply, init=lambda rng, dim: {"w": jnp.ones(())},
                        takes_encoder=True)


@pytest.mark.long
def test_encoder_objective_through_the_trainer():
  cfg = tiny_config(**{"data.name": "digits", "batch_size": B, "optim.weight_decay": 0.0})
  batches = dataset_batches("digits", B, STEPS)
  parts, h8 = step_history_obj(cfg, batches)
  before, metrics, _ = h8[0]
  x = global_batch(parts["mesh"], batches[0])["x"]
  views = make_views(parts["view_fn"], before, x, 2)
  variables = {"params": before.params, "batch_stats": before.batch_stats}

  def loss_of(params, w):
    v = {**variables, "params": params}
    _, z2 = parts["eval_model"].apply(v, 2.0 * views[1], train=False)
    return jnp.mean(w * jnp.mean(z2, -1) ** 2)

  want, (g, gw) = jax.value_and_grad(loss_of, argnums=(0, 1))(before.params, 1.0)
  np.testing.assert_allclose(metrics["loss"], want, rtol=1e-4)  # first term is ~0
  assert float(gw) > 0 and max(np.abs(a).max() for a in leaves(g)) > 0
  before1, metrics1, after1 = h8[1]
  assert metrics1["lr"] > 0 and any(np.abs(a - b).max() > 0 for a, b in zip(
      leaves(before1.params), leaves(after1.params)))
  assert float(after1.objective_params["w"]) < 1.0  # w gets a gradient too
  _, h1 = step_history_obj(cfg, batches, jax.devices()[:1])
  for (_, m8, s8), (_, m1, s1) in zip(h8, h1):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(leaves((s8.params, s8.objective_params)),
                    leaves((s1.params, s1.objective_params))):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)


def step_history_obj(cfg, batches, devices=None):
  from jaxcl.train import trainer
  real = trainer.setup
  trainer_setup = lambda config, devices=None: real(config, devices=devices,
                                                    objective=objective())
  import tests.test_train as tt
  old, tt.setup = tt.setup, trainer_setup
  try:
    return step_history(cfg, batches, devices)
  finally:
    tt.setup = old
