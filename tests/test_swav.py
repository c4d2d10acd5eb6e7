"""SwAV swapped prediction: float64 loop reference (value, gradient), queue, sharding,
prototype helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses, sinkhorn
from tests import ssl_reference as ref

V, B, K = 4, 6, 5          # 2 global + 2 local crops


def _scores(seed, v=V, b=B, k=K):
  rng = np.random.default_rng(seed)
  c = ref.unit(rng.normal(size=(k, 8)))
  return np.stack([ref.unit(rng.normal(size=(b, 8))) @ c.T for _ in range(v)]).astype(np.float32)


@pytest.mark.parametrize("num_global,queue_rows,temperature", [(2, 0, 0.1), (1, 0, 0.5),
                                                                (2, 3, 0.1)])
def test_value_matches_loop_reference(num_global, queue_rows, temperature):
  s = _scores(0)
  queue = _scores(1, v=num_global, b=queue_rows) if queue_rows else None
  got = jax.jit(lambda x, qs: losses.swav_loss(x, temperature=temperature,
                                               num_global=num_global, queue_scores=qs))(
                                                   list(s), queue)
  want = ref.swav(s, temperature, 0.05, 3, num_global, queue=queue)
  assert got.dtype == jnp.float32 and got.shape == (B,)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences_with_frozen_codes():
  s = _scores(2)
  codes = [np.asarray(jax.jit(sinkhorn.sinkhorn_knopp)(s[a]), np.float64) for a in range(2)]
  g = np.random.default_rng(3).uniform(0.5, 1.5, size=B)
  got = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(g * losses.swav_loss(x))))(s), np.float64)
  direction = np.random.default_rng(4).normal(size=s.shape)
  f = lambda x: float(g @ ref.swav(x, 0.1, 0.05, 3, 2, codes=codes))
  np.testing.assert_allclose(np.sum(got * direction), ref.fd_directional(f, s, direction),
                             rtol=2e-4)
  # The codes carry no gradient: the assigned crop's scores only receive the gradient of
  # their role as predictions for the other assigned crop.
  assert np.all(np.isfinite(got)) and np.abs(got[0]).sum() > 0


def test_sharded_with_queue_equals_single_device():
  b, q = 16, 8                                                # 2 rows + 1 queue row per device
  s = _scores(5, b=b)
  queue = _scores(6, v=2, b=q)
  valid = np.ones(b, bool)
  valid[[1, 9]] = False
  g = np.random.default_rng(7).uniform(0.5, 1.5, size=b).astype(np.float32)

  def body(x, qs, v, w):
    return jax.lax.psum(jnp.sum(w * losses.swav_loss(x, queue_scores=qs, valid=v,
                                                     axis_name="data")), "data")

  spec = P(None, "data")
  total = ref.shard(body, (spec, spec, P("data"), P("data")), P())
  single = lambda x: jnp.sum(g * losses.swav_loss(x, queue_scores=queue, valid=valid))
  np.testing.assert_allclose(total(s, queue, valid, g), jax.jit(single)(s), rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.grad(total))(s, queue, valid, g),
                             jax.jit(jax.grad(single))(s), rtol=1e-5, atol=1e-7)
  want = ref.swav(s[:, valid], 0.1, 0.05, 3, 2, queue=queue)
  got = jax.jit(lambda x: losses.swav_loss(x, queue_scores=queue, valid=valid))(s)
  np.testing.assert_allclose(np.asarray(got)[valid], want, rtol=1e-5)


def test_prototype_scores_and_bf16_inputs():
  rng = np.random.default_rng(8)
  z, c = rng.normal(size=(B, 8)).astype(np.float32), rng.normal(size=(K, 8)).astype(np.float32)
  np.testing.assert_allclose(losses.prototype_scores(z, c), ref.unit(z) @ ref.unit(c).T,
                             rtol=1e-5, atol=1e-6)
  s16 = losses.prototype_scores(jnp.asarray(z, jnp.bfloat16), jnp.asarray(c, jnp.bfloat16))
  assert s16.dtype == jnp.float32
  out = jax.jit(losses.swav_loss)(jnp.stack([s16.astype(jnp.bfloat16)] * 3))
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))


def test_normalize_prototypes_on_a_flax_tree():
  params = {"params": {"prototypes": {"kernel": jnp.full((3, 4), 2.0, jnp.bfloat16)},
                       "head": {"kernel": jnp.full((3, 3), 2.0)}}}
  out = losses.normalize_prototypes(params, axis=0)            # Dense kernel [D, K]
  kern = out["params"]["prototypes"]["kernel"]
  assert kern.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.sum(np.asarray(kern, np.float32) ** 2, axis=0), 1.0, rtol=1e-2)
  assert np.all(out["params"]["head"]["kernel"] == 2.0)
  np.testing.assert_allclose(np.linalg.norm(losses.normalize_prototypes(jnp.ones((5, 3))),
                                            axis=1), 1.0, rtol=1e-6)


def test_freeze_prototypes_until_threshold():
  tx = optax.chain(optax.adamw(0.1, weight_decay=0.5), losses.contrib.freeze_prototypes_until(2))
  params = {"prototypes": jnp.ones(3), "w": jnp.ones(3)}
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
  history = []
  for _ in range(3):
    updates, state = step(params, state)
    params = optax.apply_updates(params, updates)
    history.append(params)
  assert np.all(history[1]["prototypes"] == 1.0)              # frozen, weight decay too
  assert np.all(history[2]["prototypes"] != 1.0)              # step 3 moves them
  assert np.all(history[0]["w"] != 1.0)


def test_bad_inputs_name_the_argument():
  s = _scores(0)
  with pytest.raises(TypeError, match="'scores_per_crop\\[1\\]'"):
    losses.swav_loss([s[0], s[1].astype(np.int32)])
  with pytest.raises(ValueError, match="'scores_per_crop'"):
    losses.swav_loss([s[0], s[1][:, :3]])
  with pytest.raises(ValueError, match="'num_global'"):
    losses.swav_loss(s, num_global=0)
  with pytest.raises(ValueError, match="'queue_scores'"):
    losses.swav_loss(s, queue_scores=_scores(1, v=1, b=2))
  with pytest.raises(ValueError, match="'temperature'"):
    losses.swav_loss(s, temperature=-1.0)
