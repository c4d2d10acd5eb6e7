"""Objective adapters (jaxcl/train/objectives.py) and K-view training through the trainer."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import jaxcl.losses as L
from jaxcl.train import ConfigError, setup
from jaxcl.train.objectives import make_objective

B, D = 16, 8


def _z(k):
  return jax.random.normal(jax.random.key(0), (B, k, D))


LABELS = jnp.arange(B) % 3
RNG = jax.random.key(7)


def test_two_views_call_the_loss_unchanged():
  z = _z(2)
  got = make_objective("dcl", {"temperature": 0.2}, 2)(z, LABELS, RNG, None)
  np.testing.assert_array_equal(got, L.dcl(z[:, 0], z[:, 1], temperature=0.2))


def test_pairwise_sum_baseline_averages_all_view_pairs():
  z = _z(4)
  got = make_objective("nt_xent", {"temperature": 0.3}, 4)(z, LABELS, RNG, None)
  pairs = list(itertools.combinations(range(4), 2))
  want = sum(L.nt_xent(z[:, v], z[:, w], temperature=0.3) for v, w in pairs) / len(pairs)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # a different pair set would differ: the mean is not just views 0 and 1
  assert not np.allclose(got, L.nt_xent(z[:, 0], z[:, 1], temperature=0.3))


@pytest.mark.long
def test_multiview_and_label_losses_get_all_views_and_labels():
  z = _z(3)
  np.testing.assert_array_equal(make_objective("mv_dhel", {}, 3)(z, LABELS, RNG, None),
                                L.mv_dhel(z))
  np.testing.assert_array_equal(make_objective("supcon", {}, 3)(z, LABELS, RNG, None),
                                L.supcon(z, LABELS))


@pytest.mark.long
def test_rng_losses_get_a_key_per_pair():
  z = _z(2)
  kw = {"num_hard": 4, "num_mix": 3, "num_mix_query": 2}
  obj = make_objective("mochi_loss", kw, 2)
  np.testing.assert_array_equal(obj(z, LABELS, RNG, None),
                                L.contrib.mochi_loss(z[:, 0], z[:, 1], rng=jax.random.fold_in(RNG, 0),
                                             **kw))
  assert not np.allclose(obj(z, LABELS, RNG, None), obj(z, LABELS, jax.random.key(8), None))


@pytest.mark.parametrize("name, kwargs, k", [
    ("nt_xent", {}, 3), ("mv_info_nce", {}, 4), ("supcon", {}, 2),
    ("mochi_loss", {"num_hard": 4, "num_mix": 3, "num_mix_query": 2}, 3)])
@pytest.mark.long
def test_sharded_equals_single_device(name, kwargs, k):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  obj = make_objective(name, kwargs, k)
  z = _z(k)
  sharded = jax.jit(jax.shard_map(lambda z, y, r: obj(z, y, r, "data"), mesh=mesh,
                                  in_specs=(P("data"), P("data"), P()), out_specs=P("data")))
  single = obj(z, LABELS, RNG, None)
  np.testing.assert_allclose(sharded(z, LABELS, RNG), single, rtol=1e-5, atol=1e-6)
  g = lambda f: jax.grad(lambda z: jnp.mean(f(z)))(z)
  np.testing.assert_allclose(g(lambda z: sharded(z, LABELS, RNG)),
                             g(lambda z: obj(z, LABELS, RNG, None)), rtol=1e-4, atol=1e-6)


def _config(**over):
  from tests.test_train import tiny_config
  return tiny_config(**over)


@pytest.mark.parametrize("over, match", [
    ({"views.num": 1}, "config.views.num must be >= 2"),
    ({"loss.name": "mochi_loss", "loss.kwargs": {"rng": 0}}, "config.loss.kwargs.rng"),
    ({"loss.name": "supcon", "loss.kwargs": {"tau": 0.1}}, "config.loss.kwargs.tau"),
    ({"loss.name": "nspt", "loss.kwargs": {}}, "has no trainer objective adapter"),
    ({"loss.name": "symile", "loss.kwargs": {}}, "symile: needs >= 2 modalities"),
])
def test_config_errors(over, match):
  with pytest.raises(ConfigError, match=match):
    setup(_config(**over))


@pytest.mark.long
def test_k_views_train_step_eight_devices_equal_one():
  from tests.test_train import _compare, run_steps
  over = {"views.num": 3, "loss.name": "mv_dhel", "loss.kwargs": {"temperature": 0.3}}
  l8, p8 = run_steps(_config(**over))
  l1, p1 = run_steps(_config(**over), devices=jax.devices()[:1])
  _compare(l8, p8, l1, p1)
  assert l8[0] != l8[-1]
