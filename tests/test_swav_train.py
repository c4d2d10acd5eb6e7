"""SwAV through the trainer: learnable objective parameters (gradient, freeze, projection),
multi-crop views, 8 devices = 1 device, the recipe. Tiny MLP on digits, 3 steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import augment, losses
from jaxcl.losses import _common as c
from jaxcl.train import ConfigError, setup
from jaxcl.train import objectives
from jaxcl.train.sharding import global_batch
from jaxcl.train.step import make_views
from tests.test_train import dataset_batches, leaves, step_history, tiny_config

STEPS, B, K = 3, 16, 10


def swav_config(**over):
  cfg = tiny_config(**{"data.name": "digits", "batch_size": B,
                       "loss.name": "swav_loss", "views.num_local": 2,
                       "optim.weight_decay": 0.0,  # the SGD update is then -lr * gradient
                       "views.local_params": {"crop_scale": (0.1, 0.3)},
                       "loss.kwargs": {"temperature": 0.1, "num_prototypes": K,
                                       "freeze_prototypes_steps": 2},
                       **over})
  return cfg


def _batches():
  return dataset_batches("digits", B, STEPS)


def run(config, devices=None):
  return step_history(config, _batches(), devices)


@pytest.fixture(scope="module")
def eight():
  return run(swav_config())


@pytest.mark.long
def test_prototypes_get_the_reference_gradient_freeze_and_renorm(eight):
  parts, hist = eight
  protos = lambda s: np.asarray(jax.device_get(s.objective_params["prototypes"]))
  init = protos(hist[0][0])
  assert init.shape == (K, 16)
  np.testing.assert_allclose(np.linalg.norm(init, axis=1), 1.0, rtol=1e-6)  # projected at init
  # Steps 0 and 1 are frozen: the prototypes do not move (up to re-normalising unit rows)
  # although the model does (lr > 0 at step 1).
  np.testing.assert_allclose(protos(hist[1][2]), init, atol=1e-6, rtol=0)
  assert hist[1][1]["lr"] > 0
  assert any(np.abs(a - b).max() > 0 for a, b in zip(leaves(hist[1][0].params),
                                                    leaves(hist[1][2].params)))
  # Step 2: plain SGD, so the update is -lr * dL/dC at the re-normalised prototypes. The
  # reference gradient is taken on one device, outside the trainer, on the same views.
  before, metrics, after = hist[2]
  c0 = c.l2_normalize(jnp.asarray(protos(before)))
  x = global_batch(parts["mesh"], _batches()[2])["x"]
  fns = (parts["view_fn"],) * 2 + (augment.make_view_fn("image", crop_scale=(0.1, 0.3)),) * 2
  views = make_views(fns, before, x, 4)
  variables = {"params": before.params, "batch_stats": before.batch_stats}
  (_, z), _ = parts["eval_model"].apply(variables, jnp.concatenate(views), train=True,
                                        mutable=["batch_stats"])
  z = c.l2_normalize(z.reshape(4, B, -1))

  def loss_of(protos):
    scores = [losses.prototype_scores(z[v], protos, normalize=False) for v in range(4)]
    return jnp.mean(losses.swav_loss(scores, temperature=0.1))

  want_loss, want_grad = jax.value_and_grad(loss_of)(c0)
  np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-5)
  got_grad = (np.asarray(c0) - protos(after)) / metrics["lr"]
  np.testing.assert_allclose(got_grad, want_grad, rtol=2e-3, atol=2e-5)
  assert np.abs(want_grad).max() > 1e-3
  # Not unit norm after the update, but re-normalised before the next step uses them.
  assert np.abs(np.linalg.norm(protos(after), axis=1) - 1).max() > 1e-4
  assert 0 < metrics["swav/used_prototypes"] <= K
  assert 0 <= metrics["swav/code_entropy"] <= np.log(K) + 1e-5


@pytest.mark.long
def test_eight_devices_equal_one_device(eight):
  _, h8 = eight
  _, h1 = run(swav_config(), devices=jax.devices()[:1])
  for (_, m8, s8), (_, m1, s1) in zip(h8, h1):
    assert set(m8) == set(m1)
    for k in m8:
      np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    tree = lambda s: (s.params, s.batch_stats, s.objective_params, s.objective_opt_state)
    for a, b in zip(leaves(tree(s8)), leaves(tree(s1))):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)
  assert h8[0][1]["loss"] != h8[-1][1]["loss"]


def test_frozen_objective_params_skip_the_optimizer():
  from jaxcl.train.step import update_objective_params
  tx = optax.chain(optax.add_decayed_weights(0.1),
                   optax.sgd(optax.linear_schedule(1.0, 0.0, 10), momentum=0.9))
  params = {"c": jnp.ones((2, 2))}
  grads = {"c": jnp.full((2, 2), 0.5)}
  state = tx.init(params)
  p1, s1 = update_objective_params(tx, params, grads, state, frozen=jnp.bool_(True))
  np.testing.assert_array_equal(p1["c"], params["c"])
  floats = lambda s: [x for x in jax.tree.leaves(s) if jnp.issubdtype(x.dtype, jnp.floating)]
  ints = lambda s: [int(x) for x in jax.tree.leaves(s) if jnp.issubdtype(x.dtype, jnp.integer)]
  for a, b in zip(floats(s1), floats(state)):
    np.testing.assert_array_equal(a, b)             # no momentum from weight decay either
  assert ints(s1) == [i + 1 for i in ints(state)]  # the schedule keeps pace
  p2, _ = update_objective_params(tx, p1, grads, s1, frozen=jnp.bool_(False))
  # First real step: momentum trace 0, lr = schedule(1) = 0.9.
  np.testing.assert_allclose(p2["c"], 1.0 - 0.9 * (0.5 + 0.1 * 1.0), rtol=1e-6)


@pytest.mark.long
def test_multicrop_views_are_per_example_and_device_independent():
  parts = setup(swav_config())
  state = parts["state"]
  x = np.asarray(_batches()[0]["x"])
  local = augment.make_view_fn("image", crop_scale=(0.1, 0.3))
  fns = (parts["view_fn"],) * 2 + (local,) * 3
  views = jax.jit(lambda s, x: make_views(fns, s, x, 5))
  sharded = views(state, global_batch(parts["mesh"], {"x": x})["x"])
  single = views(jax.device_put(state, jax.devices()[0]), jax.device_put(x, jax.devices()[0]))
  for a, b in zip(sharded, single):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The global views do not change when local crops are added.
  plain = jax.jit(lambda s, x: make_views(parts["view_fn"], s, x, 2))(state, x)
  for a, b in zip(plain, sharded[:2]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Each view is its own draw, and a row's view does not depend on the other rows.
  assert not np.allclose(np.asarray(sharded[2]), np.asarray(sharded[3]))
  half = jax.jit(lambda s, x: make_views(fns, s, x, 5))(state, x)
  np.testing.assert_array_equal(np.asarray(half[4]), np.asarray(sharded[4]))
  # 1-D signals: local windows through the signal view's crop parameter.
  sig = augment.make_view_fn("signal1d", crop=(0.3, 0.5))
  out = sig(jax.random.key(0), jnp.ones((2, 40, 1)))
  assert out.shape == (2, 40, 1)


def test_objective_kwargs_are_checked():
  with pytest.raises(ConfigError, match="loss.kwargs.tau"):
    setup(swav_config(**{"loss.kwargs": {"tau": 0.1}}))
  with pytest.raises(ConfigError, match="num_global"):
    setup(swav_config(**{"loss.kwargs": {"num_global": 1}}))
  with pytest.raises(ConfigError, match="num_prototypes"):
    setup(swav_config(**{"loss.kwargs": {"num_prototypes": 1}}))
  obj = objectives.make_objective("swav_loss", {"num_prototypes": 4}, 3, num_global_views=2)
  params = obj.project(obj.init(jax.random.key(0), 8))
  z = jax.random.normal(jax.random.key(1), (6, 3, 8))
  assert obj.apply(params, z, None, None, None).shape == (6,)
  assert objectives.make_objective("nt_xent", {}, 2).__class__ is not objectives.ParamObjective


def test_recipe_validates():
  from configs.swav_digits import get_config
  from jaxcl.train.config import make_objective, validate
  cfg = get_config()
  assert validate(cfg, num_devices=8, num_processes=1).name == "digits"
  obj = make_objective(cfg)
  assert isinstance(obj, objectives.ParamObjective) and obj.freeze_steps > 0
