"""The supervised cross-entropy baseline of the `supcon` study: ``losses.contrib.softmax_cross_entropy``
against a float64 loop reference (value, finite-difference gradient), sharded = single device,
bf16, bad input; the trainer's ``classifier`` objective (config checks, the reference gradient
of its classifier, 8 devices = 1 device over 3 steps); the SupCon recipe validates."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from jaxcl.train import ConfigError, setup
from jaxcl.train import objectives
from jaxcl.train.sharding import global_batch
from tests.reference import fd_coords

B, C, D, K = 16, 5, 6, 3
RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(B, C)).astype(np.float32) * 3
LABELS = RNG.integers(0, C, size=B).astype(np.int32)
VALID = np.ones(B, bool)
VALID[[2, 9, 15]] = False  # padding on several of the 8 devices
Z = RNG.normal(size=(B, K, D)).astype(np.float32)


def ref_ce(logits, labels, valid=None):
  """-log softmax(l_i)[y_i] by explicit loops, float64; padded rows 0."""
  out = []
  for i, row in enumerate(np.asarray(logits, np.float64)):
    if valid is not None and not valid[i]:
      out.append(0.0)
      continue
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    out.append(lse - row[labels[i]])
  return np.array(out)


def ref_objective(z, w, b, labels):
  """Mean over views and rows of the CE of the linear classifier ``z W.T + b``, float64."""
  z, w, b = (np.asarray(a, np.float64) for a in (z, w, b))
  total = 0.0
  for v in range(z.shape[1]):
    logits = [[sum(z[i, v, d] * w[c, d] for d in range(z.shape[2])) + b[c]
               for c in range(w.shape[0])] for i in range(z.shape[0])]
    total += ref_ce(np.array(logits), labels).mean()
  return total / z.shape[1]


def test_value_and_gradient_match_the_float64_reference():
  got = losses.contrib.softmax_cross_entropy(LOGITS, LABELS, valid=VALID)
  assert got.dtype == jnp.float32 and got.shape == (B,)
  want = ref_ce(LOGITS, LABELS, VALID)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(got)[~VALID] == 0) and np.all(np.asarray(got)[VALID] > 0)
  g = jax.grad(lambda l: jnp.mean(losses.contrib.softmax_cross_entropy(l, LABELS, valid=VALID)))(
      jnp.asarray(LOGITS))
  coords = [(i, c) for i in range(B) for c in range(C)]
  fd = fd_coords(lambda l: ref_ce(l, LABELS, VALID).mean(), LOGITS, coords)
  np.testing.assert_allclose(np.asarray(g)[tuple(np.array(coords).T)], fd, atol=1e-6)
  assert np.all(np.asarray(g)[~VALID] == 0) and np.abs(fd).max() > 1e-3


def test_shift_invariance_and_one_hot_limit():
  base = losses.contrib.softmax_cross_entropy(LOGITS, LABELS)
  np.testing.assert_allclose(losses.contrib.softmax_cross_entropy(LOGITS + 100.0, LABELS), base,
                             rtol=1e-5, atol=1e-5)
  big = 1e4 * np.eye(C, dtype=np.float32)[LABELS]  # extreme but finite
  np.testing.assert_allclose(losses.contrib.softmax_cross_entropy(big, LABELS), 0.0, atol=1e-6)
  wrong = losses.contrib.softmax_cross_entropy(big, (LABELS + 1) % C)
  np.testing.assert_allclose(wrong, 1e4, rtol=1e-6)


def _mesh():
  return jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))


def test_sharded_equals_single_device_value_and_gradient():
  w = RNG.normal(size=(D, C)).astype(np.float32)
  x = Z[:, 0]
  fn = lambda w, x, y, v, axis_name=None: losses.contrib.softmax_cross_entropy(
      x @ w, y, valid=v, axis_name=axis_name)
  sharded = jax.shard_map(lambda w, x, y, v: fn(w, x, y, v, axis_name="d"), mesh=_mesh(),
                          in_specs=(P(), P("d"), P("d"), P("d")), out_specs=P("d"))
  per = jax.jit(sharded)(w, x, LABELS, VALID)
  np.testing.assert_allclose(per, fn(w, x, LABELS, VALID), rtol=1e-6, atol=1e-6)
  g_shard = jax.jit(jax.grad(lambda w: jnp.mean(sharded(w, x, LABELS, VALID))))(w)
  g_single = jax.grad(lambda w: jnp.mean(fn(w, x, LABELS, VALID)))(w)
  np.testing.assert_allclose(g_shard, g_single, rtol=1e-5, atol=1e-7)
  assert np.abs(g_single).max() > 1e-3


def test_classifier_objective_matches_reference_and_shards():
  obj = objectives.make_objective("softmax_cross_entropy", {"num_classes": C}, K)
  assert isinstance(obj, objectives.ParamObjective)
  params = obj.project(obj.init(jax.random.key(0), D))
  assert params["w"].shape == (C, D) and params["b"].shape == (C,)
  params = {"w": params["w"], "b": jnp.asarray(RNG.normal(size=C), jnp.float32)}
  mean = lambda p, z: jnp.mean(obj.apply(p, z, LABELS, None, None))
  val, (gp, gz) = jax.value_and_grad(mean, argnums=(0, 1))(params, jnp.asarray(Z))
  w, b = np.asarray(params["w"]), np.asarray(params["b"])
  np.testing.assert_allclose(val, ref_objective(Z, w, b, LABELS), rtol=1e-5)
  ref_w = lambda w_: ref_objective(Z, w_, b, LABELS)
  fd_w = fd_coords(ref_w, w, [(c, d) for c in range(C) for d in range(D)]).reshape(C, D)
  np.testing.assert_allclose(gp["w"], fd_w, atol=1e-5)
  fd_b = fd_coords(lambda b_: ref_objective(Z, w, b_, LABELS), b, [(c,) for c in range(C)])
  np.testing.assert_allclose(gp["b"], fd_b, atol=1e-5)
  coords = [(i, v, d) for i in (0, 7, 12) for v in range(K) for d in range(D)]
  fd_z = fd_coords(lambda z_: ref_objective(z_, w, b, LABELS), Z, coords)
  np.testing.assert_allclose(np.asarray(gz)[tuple(np.array(coords).T)], fd_z, atol=1e-5)
  # Inside shard_map (params replicated): value and both gradients as on one device.
  sharded = jax.shard_map(lambda p, z, y: obj.apply(p, z, y, None, "d"), mesh=_mesh(),
                          in_specs=(P(), P("d"), P("d")), out_specs=P("d"))
  smean = lambda p, z: jnp.mean(sharded(p, z, LABELS))
  sval, (sgp, sgz) = jax.jit(jax.value_and_grad(smean, argnums=(0, 1)))(params, jnp.asarray(Z))
  np.testing.assert_allclose(sval, val, rtol=1e-6)
  for a, b_ in zip(jax.tree.leaves((sgp, sgz)), jax.tree.leaves((gp, gz))):
    np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-7)


def test_bf16_logits():
  lo = jnp.asarray(LOGITS, jnp.bfloat16)
  got = losses.contrib.softmax_cross_entropy(lo, LABELS)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref_ce(np.asarray(lo, np.float32), LABELS), rtol=1e-5,
                             atol=1e-5)
  g = jax.grad(lambda l: jnp.mean(losses.contrib.softmax_cross_entropy(l, LABELS)))(lo)
  assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize("call, err, match", [
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS.astype(np.int32), LABELS), TypeError,
     r"softmax_cross_entropy: 'logits' must be a floating"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS[0], LABELS), ValueError,
     r"'logits' must have rank 2"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS[:, None], LABELS), ValueError,
     r"'logits' must have rank 2"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS[:, :1], LABELS), ValueError,
     r"'logits' needs at least 2 classes"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS, LABELS[:3]), ValueError,
     r"'labels' must have shape \(16,\)"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS, LABELS.astype(np.float32)), TypeError,
     r"'labels' must be integers"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS, np.where(LABELS == 0, C, LABELS)),
     ValueError, r"'labels' must be in \[0, 5\)"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS, LABELS - 10), ValueError,
     r"'labels' must be in \[0, 5\)"),
    (lambda: losses.contrib.softmax_cross_entropy(LOGITS, LABELS, valid=np.ones(3, bool)),
     ValueError, r"'valid' must have shape"),
])
def test_bad_inputs_name_the_argument(call, err, match):
  with pytest.raises(err, match=match):
    call()


def test_out_of_range_labels_traced_are_nan_unless_padded():
  bad = LABELS.copy()
  bad[[2, 3]] = C  # row 2 is padding, row 3 is not
  per = np.asarray(jax.jit(losses.contrib.softmax_cross_entropy)(LOGITS, bad, valid=VALID))
  assert np.isnan(per[3]) and per[2] == 0
  assert np.all(np.isfinite(np.delete(per, 3)))
  # A padded row may carry any label, also concretely, and gets no gradient.
  pad = np.where(VALID, LABELS, -1).astype(np.int32)
  np.testing.assert_allclose(losses.contrib.softmax_cross_entropy(LOGITS, pad, valid=VALID),
                             ref_ce(LOGITS, LABELS, VALID), rtol=1e-6, atol=1e-6)


# --- the trainer's classifier objective -------------------------------------------------------

STEPS, TB, NC = 3, 16, 10


def ce_config(**over):
  from tests.test_train import tiny_config
  return tiny_config(**{"loss.name": "softmax_cross_entropy",
                        "loss.kwargs": {"num_classes": NC},
                        "optim.momentum": 0.0, "optim.weight_decay": 0.0,  # update = -lr g
                        **over})


@pytest.mark.parametrize("kwargs, match", [
    ({}, "'num_classes' must be an int >= 2"),
    ({"num_classes": 1}, r"config.loss.kwargs.num_classes=1 is smaller"),
    ({"num_classes": "10"}, "'num_classes' must be an int >= 2"),
    ({"num_classes": True}, "'num_classes' must be an int >= 2"),
    ({"num_classes": 5}, r"config.loss.kwargs.num_classes=5 is smaller than the 10 classes"),
    ({"num_classes": NC, "temperature": 0.1}, "config.loss.kwargs.temperature"),
    ({"num_classes": NC, "labels": 0}, "config.loss.kwargs.labels"),
    ({"num_classes": NC, "valid": None}, "config.loss.kwargs.valid"),
])
def test_classifier_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    setup(ce_config(**{"loss.kwargs": kwargs}))


def test_classifier_objective_checks_num_classes_itself():
  for bad in (None, 1, 0, 2.0, "3", True):
    with pytest.raises(ValueError, match="classifier: 'num_classes' must be an int >= 2"):
      objectives.make_objective("softmax_cross_entropy", {"num_classes": bad}, 2)
  obj = objectives.make_objective("softmax_cross_entropy", {"num_classes": np.int64(2)}, 2)
  assert obj.init(jax.random.key(0), 4)["w"].shape == (2, 4)


def test_classifier_needs_class_labels():
  with pytest.raises(ConfigError, match="needs class labels"):
    setup(ce_config(**{"data.name": "diabetes"}))


from tests.test_train import dataset_batches, leaves, step_history  # noqa: E402


def _batches():
  return dataset_batches("mnist1d", TB, STEPS)


def run(config, devices=None):
  return step_history(config, _batches(), devices)


@pytest.fixture(scope="module")
def eight():
  return run(ce_config())


@pytest.mark.long
def test_classifier_gets_the_reference_gradient(eight):
  from jaxcl.train.step import make_views
  parts, hist = eight
  before, metrics, after = hist[1]  # step 1: lr > 0 (step 0 is the warm-up's lr = 0)
  assert metrics["lr"] > 0
  x = global_batch(parts["mesh"], _batches()[1])["x"]
  views = make_views(parts["view_fn"], before, x, 2)
  variables = {"params": before.params, "batch_stats": before.batch_stats}
  (_, z), _ = parts["eval_model"].apply(variables, jnp.concatenate(views), train=True,
                                        mutable=["batch_stats"])
  z = np.swapaxes(np.asarray(z).reshape(2, TB, -1), 0, 1)
  y = _batches()[1]["y"]
  w0, b0 = (np.asarray(before.objective_params[k]) for k in ("w", "b"))
  np.testing.assert_allclose(metrics["loss"], ref_objective(z, w0, b0, y), rtol=1e-5)
  # Plain SGD without momentum or decay: (before - after) / lr is the gradient.
  for k, p0 in (("w", w0), ("b", b0)):
    got = (p0 - np.asarray(after.objective_params[k])) / metrics["lr"]
    want = jax.grad(lambda p: jnp.mean(jnp.stack([
        -jnp.take_along_axis(jax.nn.log_softmax(jnp.asarray(z[:, v]) @ p["w"].T + p["b"]),
                             jnp.asarray(y)[:, None], 1)[:, 0] for v in range(2)])))(
        {"w": jnp.asarray(w0), "b": jnp.asarray(b0)})[k]
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-5)
    assert np.abs(want).max() > 1e-3
  assert any(np.abs(a - b).max() > 0 for a, b in zip(leaves(before.params),
                                                    leaves(after.params)))


def test_classifier_eight_devices_equal_one_device(eight):
  _, h8 = eight
  _, h1 = run(ce_config(), devices=jax.devices()[:1])
  for (_, m8, s8), (_, m1, s1) in zip(h8, h1):
    assert set(m8) == set(m1)
    for k in m8:
      np.testing.assert_allclose(m8[k], m1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    tree = lambda s: (s.params, s.batch_stats, s.objective_params, s.objective_opt_state)
    for a, b in zip(leaves(tree(s8)), leaves(tree(s1))):
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=0)
  assert h8[0][1]["loss"] != h8[-1][1]["loss"]


def test_supcon_recipe_and_study_settings_validate():
  from configs.supcon_mnist1d import get_config
  from experiments import supcon
  from jaxcl.train.config import make_objective, validate
  c = get_config()
  assert c.loss.name == "supcon" and c.loss.kwargs.temperature == 0.1
  assert validate(c, num_devices=8, num_processes=1).name == "mnist1d"
  grid = supcon.settings(False)
  assert len(grid) == len(supcon.METHODS) * len(supcon.LRS)
  for label, cfg in grid:
    validate(cfg, num_devices=8, num_processes=1)
    make_objective(cfg)
    # Same budget for every method: only the loss and the lr differ from the recipe.
    assert (cfg.num_steps, cfg.batch_size, cfg.optim.lr) == (supcon.STEPS, c.batch_size,
                                                            label["lr"])
    assert cfg.model.to_dict() == c.model.to_dict() and cfg.augment.to_dict() == c.augment.to_dict()
  ce = [cfg for label, cfg in grid if label["method"] == "ce"][0]
  assert ce.loss.kwargs.num_classes == 10
