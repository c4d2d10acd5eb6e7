"""jaxcl.models: encoder/head shapes, train-mode BN updates, synchronised BN under shard_map."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import models

TINY = {  # name -> (input shape, kwargs, feature size)
    "mlp": ((3, 40, 1), dict(hidden=(16, 8)), 8),
    "cnn1d": ((3, 40, 1), dict(widths=(4, 8)), 8),
    # thin, shallow variants of the same modules: full depth only costs compile time here
    "resnet18": ((3, 8, 8, 3), dict(width=4, stage_sizes=(1, 1)), 8),
    "resnet50": ((3, 8, 8, 3), dict(width=2, stage_sizes=(1, 1)), 16),
    "vit_tiny": ((3, 8, 8, 3), dict(depth=1, dim=16, heads=2), 16),
}


@pytest.mark.parametrize("name", list(TINY))
def test_encoder_init_apply_shapes(name):
  shape, kw, feat = TINY[name]
  enc = models.build_encoder(name, **kw)
  x = jax.random.normal(jax.random.key(0), shape)
  v = jax.jit(enc.init)(jax.random.key(1), x)
  y_eval = jax.jit(lambda v, x: enc.apply(v, x, train=False))(v, x)
  y_train, upd = jax.jit(lambda v, x: enc.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  assert y_eval.shape == y_train.shape == (shape[0], feat)
  assert np.isfinite(np.asarray(y_train)).all()
  if "batch_stats" in v:  # train mode updates running statistics, eval mode uses them
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), v["batch_stats"],
                           upd["batch_stats"])
    assert any(jax.tree.leaves(changed))
    assert not np.allclose(y_eval, y_train)


@pytest.mark.parametrize("name,kw,feat", [
    ("resnet50", {}, 2048), ("vit_base", dict(patch_size=8), 768),
    ("vit_small", {}, 384), ("resnet18", {}, 512)])
def test_full_size_encoders_by_eval_shape(name, kw, feat):
  enc = models.build_encoder(name, **kw)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  v = jax.eval_shape(enc.init, jax.random.key(0), x)
  assert jax.eval_shape(enc.apply, v, x).shape == (2, feat)
  n = sum(np.prod(a.shape) for a in jax.tree.leaves(v["params"]))
  # parameter counts of the published architectures (CIFAR stem, no classifier)
  want = {"resnet50": 23.5e6, "resnet18": 11.2e6, "vit_base": 85.8e6, "vit_small": 21.7e6}
  assert abs(n - want[name]) / want[name] < 0.02, n


def test_vit_on_signals():
  enc = models.build_encoder("vit_tiny", depth=1, dim=8, heads=2, patch_size=5, pool="mean")
  x = jnp.ones((2, 40, 1))
  assert jax.eval_shape(enc.apply, jax.eval_shape(enc.init, jax.random.key(0), x), x).shape == (
      2, 8)


def test_heads_and_contrastive_model():
  enc = models.build_encoder("cnn1d", widths=(4, 8))
  m = models.ContrastiveModel(enc, models.ProjectionHead(hidden=16, out=6, num_layers=3))
  x = jnp.ones((4, 40, 1))
  v = jax.jit(m.init)(jax.random.key(0), x)
  (h, z), _ = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  assert h.shape == (4, 8) and z.shape == (4, 6)
  pred = models.PredictionHead(hidden=12, out=6)
  pv = pred.init(jax.random.key(1), z)
  assert pred.apply(pv, z).shape == (4, 6)
  bare = models.ContrastiveModel(enc)
  h2, z2 = jax.jit(lambda x: bare.apply(bare.init(jax.random.key(0), x), x))(x)
  np.testing.assert_array_equal(h2, z2)  # no head: projections are the features


def test_bad_encoder_name_and_option():
  with pytest.raises(ValueError, match="unknown encoder 'resnet34'.*resnet18"):
    models.build_encoder("resnet34")
  with pytest.raises(ValueError, match="widht"):
    models.build_encoder("resnet18", widht=8)


@pytest.mark.parametrize("name,shape,kw", [
    ("resnet50", (16, 8, 8, 3), dict(width=2, stage_sizes=(1,))),
    ("cnn1d", (16, 40, 1), dict(widths=(4, 8))),
])
def test_bn_axis_name_in_shard_map_equals_global_batch(name, shape, kw):
  # 8 devices x 2 rows with BN synchronised over 'data' == one device with all 16 rows.
  n_dev = jax.device_count()
  assert n_dev == 8, "conftest sets 8 virtual CPU devices"
  x = jax.random.normal(jax.random.key(0), shape)
  ref = models.build_encoder(name, **kw)
  v = jax.jit(ref.init)(jax.random.key(1), x)
  y_ref, upd_ref = jax.jit(lambda v, x: ref.apply(v, x, train=True, mutable=["batch_stats"]))(
      v, x)

  synced = models.build_encoder(name, bn_axis_name="data", **kw)
  mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

  def local(v, x):
    y, upd = synced.apply(v, x, train=True, mutable=["batch_stats"])
    return y, upd["batch_stats"]
  f = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                            out_specs=(P("data"), P())))
  y, stats = f(v, x)
  np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), stats,
               upd_ref["batch_stats"])

  # without axis_name each device normalises with its own 2 rows: different (the test can fail)
  unsynced = models.build_encoder(name, **kw)
  g = jax.jit(jax.shard_map(lambda v, x: unsynced.apply(v, x, train=True,
                                                        mutable=["batch_stats"])[0],
                            mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))
  assert not np.allclose(g(v, x), y_ref, atol=1e-3)
