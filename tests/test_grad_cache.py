"""GradCache equals the plain full-batch value and gradient (float32, 1e-5 relative)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxcl
from jaxcl import grad_cache


def assert_tree_close(actual, expected, rtol=1e-5):
  """``|a - e| <= rtol * (|e| + max|e|)``, the max over the whole tree (a leaf whose true
  gradient is zero, like a bias before BatchNorm, is then compared at the tree's scale)."""
  scale = max(float(np.max(np.abs(e))) for e in jax.tree.leaves(expected))
  assert scale > 0, "reference gradient is all zero: the test would not catch a bug"
  jax.tree.map(lambda a, e: np.testing.assert_allclose(
      np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=rtol, atol=rtol * scale),
      actual, expected)


def mlp_params(key, d_in=6, d_hidden=16, d_out=8):
  k1, k2 = jax.random.split(key)
  return {"w1": jax.random.normal(k1, (d_in, d_hidden)) / np.sqrt(d_in), "b1": jnp.full((d_hidden,), 0.1),
          "w2": jax.random.normal(k2, (d_hidden, d_out)) / np.sqrt(d_hidden)}


def mlp(p, x):
  return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"]


def two_views(key, b=12, d=6):
  k1, k2 = jax.random.split(key)
  x1 = jax.random.normal(k1, (b, d))
  return x1, x1 + 0.3 * jax.random.normal(k2, (b, d))


@pytest.mark.parametrize("chunk_size", [4, 5, 20])
def test_mlp_two_views_matches_full_batch(chunk_size):
  params = mlp_params(jax.random.key(0))
  batch = two_views(jax.random.key(1))
  embed = lambda p, x, rng: (mlp(p, x[0]), mlp(p, x[1]))
  loss = lambda p, e: jaxcl.losses.nt_xent(*e, temperature=0.2).mean()

  value, grads = jax.jit(grad_cache.value_and_grad(embed, loss, chunk_size))(params, batch)
  ref_value, ref_grads = jax.jit(jax.value_and_grad(lambda p: loss(p, embed(p, batch, None))))(
      params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert_tree_close(grads, ref_grads)


class SmallCNN(nn.Module):
  dim: int = 8

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))   # one conv: XLA:CPU compiles convs slowly
    return nn.Dense(self.dim)(x.mean(axis=(1, 2)))


class TextTower(nn.Module):
  dim: int = 8

  @nn.compact
  def __call__(self, tokens):
    h = nn.Embed(32, 16)(tokens).mean(axis=1)
    return nn.Dense(self.dim)(nn.gelu(nn.Dense(16)(h)))


def clip_setup(b=10):
  k = jax.random.split(jax.random.key(2), 4)
  images = jax.random.normal(k[0], (b, 8, 8, 3))
  tokens = jax.random.randint(k[1], (b, 5), 0, 32)
  cnn, text = SmallCNN(), TextTower()
  params = {"image": cnn.init(k[2], images[:1])["params"],
            "text": text.init(k[3], tokens[:1])["params"],
            "log_scale": jnp.log(jnp.float32(1 / 0.1))}

  def embed(p, x, rng):
    return {"image": cnn.apply({"params": p["image"]}, x["image"]),
            "text": text.apply({"params": p["text"]}, x["text"])}

  return params, {"image": images, "text": tokens}, embed


def test_cnn_two_towers_learnable_temperature():
  chunk_size = 3  # 10 rows: three chunks of 3 and a remainder of 1
  params, batch, embed = clip_setup()

  def loss(p, e):
    per = jaxcl.losses.clip_loss(e["image"], e["text"], temperature=jnp.exp(-p["log_scale"]))
    return per.mean(), per

  step = jax.jit(grad_cache.value_and_grad(embed, loss, chunk_size, has_aux=True))
  (value, per), grads = step(params, batch)
  (ref_value, ref_per), ref_grads = jax.jit(jax.value_and_grad(
      lambda p: loss(p, embed(p, batch, None)), has_aux=True))(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(per, ref_per, rtol=1e-5)
  assert_tree_close(grads, ref_grads)


class DropoutMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(32)(x)))
    return nn.Dense(8)(h)


def test_dropout_rng_is_replayed():
  model, chunk_size = DropoutMLP(), 4
  x1, x2 = two_views(jax.random.key(3), b=10)
  params = model.init(jax.random.key(4), x1, train=False)["params"]
  rng = jax.random.key(5)

  def embed(p, x, key):
    k1, k2 = jax.random.split(key)
    return (model.apply({"params": p}, x[0], train=True, rngs={"dropout": k1}),
            model.apply({"params": p}, x[1], train=True, rngs={"dropout": k2}))

  loss = lambda p, e: jaxcl.losses.nt_xent(*e, temperature=0.3).mean()
  value, grads = jax.jit(grad_cache.value_and_grad(embed, loss, chunk_size))(params, (x1, x2),
                                                                              rng=rng)

  # Reference: the same per-chunk keys (fold_in(rng, chunk)), one differentiated graph.
  def ref(p):
    parts = [embed(p, (x1[s:s + chunk_size], x2[s:s + chunk_size]), jax.random.fold_in(rng, i))
             for i, s in enumerate(range(0, 10, chunk_size))]
    return loss(p, tuple(jnp.concatenate(v) for v in zip(*parts)))

  ref_value, ref_grads = jax.jit(jax.value_and_grad(ref))(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert_tree_close(grads, ref_grads)
  # Dropout is really active: without it the gradient is different.
  no_drop = jax.jit(jax.grad(lambda p: loss(p, (model.apply({"params": p}, x1, train=False),
                                                model.apply({"params": p}, x2, train=False)))))(
                                                    params)
  assert not np.allclose(grads["Dense_0"]["kernel"], no_drop["Dense_0"]["kernel"], rtol=1e-2)


class BNNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(8)(nn.relu(nn.BatchNorm(use_running_average=False, momentum=0.9)(nn.Dense(16)(x))))


def test_batchnorm_state_is_ghost_batch_norm():
  model, chunk_size = BNNet(), 4
  x1, x2 = two_views(jax.random.key(6), b=12)
  variables = model.init(jax.random.key(7), x1)
  params, stats = variables["params"], variables["batch_stats"]

  def embed(p, x, rng):
    # Both views in one call so they share the chunk's statistics.
    e, state = model.apply({"params": p, "batch_stats": stats}, jnp.concatenate(x),
                           mutable=["batch_stats"])
    return (e[:len(x[0])], e[len(x[0]):]), state["batch_stats"]

  loss = lambda p, e: jaxcl.losses.nt_xent(*e, temperature=0.3).mean()
  value, grads, new_stats = jax.jit(grad_cache.value_and_grad(embed, loss, chunk_size,
                                                              has_state=True))(params, (x1, x2))

  def ref(p):
    parts = [embed(p, (x1[s:s + chunk_size], x2[s:s + chunk_size]), None)[0]
             for s in range(0, 12, chunk_size)]
    return loss(p, tuple(jnp.concatenate(v) for v in zip(*parts)))

  ref_value, ref_grads = jax.jit(jax.value_and_grad(ref))(params)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert_tree_close(grads, ref_grads)
  # Equal chunks: the averaged running mean equals one update with the full-batch mean.
  _, full_state = model.apply({"params": params, "batch_stats": stats},
                              jnp.concatenate([x1, x2]), mutable=["batch_stats"])
  np.testing.assert_allclose(new_stats["BatchNorm_0"]["mean"],
                             full_state["batch_stats"]["BatchNorm_0"]["mean"], rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("axis_name", [None, "data"])
def test_shard_map_matches_sharded_and_single_device(axis_name):
  n_dev, b, chunk_size = 4, 16, 3   # 4 local rows per device, chunks of 3 + 1
  mesh = jax.make_mesh((n_dev,), ("data",), devices=jax.devices()[:n_dev])
  params = mlp_params(jax.random.key(8))
  a, t = two_views(jax.random.key(9), b=b)
  embed = lambda p, x, rng: (mlp(p, x[0]), mlp(p, x[1]))
  # Local share of the global mean: the sum over devices of the local losses is the loss.
  local_loss = lambda p, e: jaxcl.losses.clip_loss(*e, temperature=0.2, axis_name="data").sum() / b

  gc = grad_cache.value_and_grad(embed, local_loss, chunk_size, axis_name=axis_name)
  plain = jax.value_and_grad(lambda p, x: local_loss(p, embed(p, x, None)))

  def sharded(fn):
    def body(p, x):
      value, grads = fn(p, x)
      return jax.lax.psum(value, "data"), grads
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P("data")),
                                 out_specs=(P(), P())))

  rows = jax.sharding.NamedSharding(mesh, P("data"))
  x = (jax.device_put(a, rows), jax.device_put(t, rows))
  value, grads = sharded(gc)(params, x)
  sh_value, sh_grads = sharded(plain)(params, x)
  ref_value, ref_grads = jax.jit(jax.value_and_grad(
      lambda p: jaxcl.losses.clip_loss(*embed(p, (a, t), None), temperature=0.2).mean()))(params)
  np.testing.assert_allclose(value, sh_value, rtol=1e-5)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  assert_tree_close(grads, sh_grads)
  assert_tree_close(grads, ref_grads)


def test_activation_memory_does_not_grow_with_batch():
  """Compiled temp memory: plain grows ~linearly in B, GradCache stays near one chunk."""
  params = mlp_params(jax.random.key(10), d_in=64, d_hidden=2048, d_out=32)
  embed = lambda p, x, rng: (mlp(p, x[0]), mlp(p, x[1]))
  # An alignment loss: a dense nt_xent's [2B, 2B] logits would dominate the temp memory here.
  loss = lambda p, e: jnp.mean(jnp.sum((e[0] - e[1]) ** 2, axis=-1))
  plain = jax.value_and_grad(lambda p, x: loss(p, embed(p, x, None)))
  gc = grad_cache.value_and_grad(embed, loss, 64)

  def temp_bytes(fn, b):
    x = jax.ShapeDtypeStruct((b, 64), jnp.float32)
    return jax.jit(fn).lower(params, (x, x)).compile().memory_analysis().temp_size_in_bytes

  activations = 2 * 1024 * 2048 * 4  # two views' hidden layer at B=1024, float32
  assert temp_bytes(plain, 1024) > activations
  assert temp_bytes(gc, 1024) < activations / 4
  assert temp_bytes(gc, 1024) < 1.5 * temp_bytes(gc, 256)


def test_argument_errors():
  embed = lambda p, x, rng: x["a"] @ p
  loss = lambda p, e: e.sum()
  with pytest.raises(ValueError, match="chunk_size"):
    grad_cache.value_and_grad(embed, loss, 0)
  with pytest.raises(ValueError, match="same leading"):
    grad_cache.value_and_grad(embed, loss, 2)(jnp.ones((3, 2)), {"a": jnp.ones((4, 3)),
                                                                 "b": jnp.ones((5,))})
