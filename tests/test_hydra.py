"""Hydra / SimLAP (jaxcl.losses.contrib.hydra, arXiv 2410.18200): a float64 loop reference written here,
gradients by finite differences, partner draws, the identical-mode reductions, 8 devices = 1
device (value and gradient, partners and gate drawn inside ``shard_map``), bf16 and extreme
inputs, argument errors, the trainer adapter for 3 steps, and the cheap digit views
(shift / erasing / noise) of the study."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import augment, losses
from tests.reference import check_value_and_grad

B, D = 6, 5
LABELS = np.array([0, 1, 0, 2, 1, 0], np.int32)
PARTNERS = np.array([1, 1, 2, 0, 0, 2], np.int32)     # rows 1: identical pair; others distinct
VALID = np.array([1, 1, 1, 1, 0, 1], bool)            # row 4 is padding


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _gates(seed=7, b=B, d=D):
  return np.random.default_rng(seed).uniform(0.1, 0.95, size=(b, d)).astype(np.float32)


# ------------------------------------------------------------------ the float64 loop reference


def _unit(x):
  n = math.sqrt(sum(float(t) * float(t) for t in x))
  return np.asarray(x, np.float64) / n if n > 0 else np.zeros(len(x))


def _lse(values):
  m = max(values)
  return m + math.log(sum(math.exp(t - m) for t in values))


def ref_hydra(f, y, y2, g, temperature, variant="fastssl", symmetric=False, valid=None,
              normalize=True):
  """Loops over samples, anchor views and keys (the equation of the module docstring)."""
  f = np.asarray(f, np.float64)
  g = np.asarray(g, np.float64)
  b, v, d = f.shape
  ok = [True] * b if valid is None else [bool(t) for t in valid]
  u = np.array([[_unit(f[i, w]) if normalize else f[i, w] for w in range(v)] for i in range(b)])

  def logit(i, av, j, w):
    if variant == "fastssl":
      return sum(u[i, av, e] * g[i, e] * g[i, e] * u[j, w, e] for e in range(d)) / temperature
    a = [g[i, e] * f[i, av, e] for e in range(d)]
    k = [g[i, e] * f[j, w, e] for e in range(d)]
    return float(np.dot(_unit(a), _unit(k))) / temperature

  sums, total = np.zeros(b), 0
  for i in range(b):
    if not ok[i]:
      continue
    for av in (range(v) if symmetric else [0]):
      keys = [(j, w) for j in range(b) for w in range(v) if ok[j] and w != av]
      negs = [logit(i, av, j, w) for j, w in keys if y[j] != y[i] and y[j] != y2[i]]
      for j, w in keys:
        if y[j] == y2[i]:
          total += 1
          lp = logit(i, av, j, w)
          sums[i] += _lse([lp] + negs) - lp
  return b * sums / total if total else sums


# ------------------------------------------------------------------ value and gradient


def _check(lib_fn, ref_fn, inputs):
  return check_value_and_grad(lib_fn, ref_fn, inputs)[0]


CASES = {
    "fastssl": (dict(temperature=0.1), 2),
    "fastssl_symmetric_valid": (dict(temperature=0.2, symmetric=True, valid=VALID), 2),
    "fastssl_three_views_unnormalized": (dict(temperature=1.0, normalize=False), 3),
    "vitookit": (dict(temperature=0.1, variant="vitookit"), 2),
    "vitookit_symmetric_valid": (dict(temperature=0.3, variant="vitookit", symmetric=True,
                                      valid=VALID), 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_match_the_loop_reference(case):
  kw, views = CASES[case]
  f = _data(0, B, views, D)
  f[:, 1:] += f[:, :1]                                 # correlated views
  if not kw.get("normalize", True):
    f *= 0.4
  want = _check(lambda f, g: losses.contrib.hydra(f, LABELS, PARTNERS, g, **kw),
                lambda f, g: ref_hydra(f, LABELS, PARTNERS, g, **kw), [f, _gates()])
  if "valid" in kw:
    assert want[4] == 0 and np.all(want[VALID] != 0)


def test_traced_temperature_gets_its_gradient():
  f, g, t0, eps = _data(1, B, 2, D), _gates(), 0.2, 1e-6
  lib = lambda t: jnp.sum(losses.contrib.hydra(f, LABELS, PARTNERS, g, temperature=t))
  value, got = jax.jit(jax.value_and_grad(lib))(jnp.float32(t0))
  ref = lambda t: float(np.sum(ref_hydra(f, LABELS, PARTNERS, g, t)))
  np.testing.assert_allclose(value, ref(t0), rtol=1e-5)
  np.testing.assert_allclose(got, (ref(t0 + eps) - ref(t0 - eps)) / (2 * eps), rtol=1e-4)


def test_list_of_views_equals_stacked_array():
  f = _data(2, B, 2, D)
  a, b = jax.jit(lambda f, g: (losses.contrib.hydra([f[:, 0], f[:, 1]], LABELS, PARTNERS, g),
                               losses.contrib.hydra(f, LABELS, PARTNERS, g)))(f, _gates())
  np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ reductions and structure


def test_identical_with_unique_labels_is_info_nce_and_clip():
  # y2 = y1 and every class once: P_a = {the anchor's own other view}, every other key is a
  # negative and sum_a |P_a| = B, so each term is -l_aa + log(exp l_aa + sum_{j!=a} exp l_aj).
  f = _data(3, 8, 2, D)
  f[:, 1] += f[:, 0]
  y = np.arange(8, dtype=np.int32)
  one_way, both, nce, clip = jax.jit(lambda f: (
      losses.contrib.hydra(f, y, y, temperature=0.2), losses.contrib.hydra(f, y, y, temperature=0.2,
                                                           symmetric=True),
      losses.info_nce(f[:, 0], f[:, 1], temperature=0.2),
      losses.clip_loss(f[:, 0], f[:, 1], temperature=0.2)))(f)
  np.testing.assert_allclose(one_way, nce, rtol=1e-5)
  # Both views anchor: sum_a |P_a| = 2B, so sample i gets (term_i,0 + term_i,1) / 2.
  np.testing.assert_allclose(both, clip, rtol=1e-5)


def test_identical_repeated_labels_decouples_the_other_positives():
  # SupCon-like: identical mode on classes with several members equals the sum over positives
  # of a two-key InfoNCE (positive vs the other-class keys), i.e. adding a same-class key
  # anywhere changes only the number of terms, never another positive's denominator.
  f, y = _data(4, B, 2, D), LABELS
  got = np.asarray(jax.jit(lambda f: losses.contrib.hydra(f, y, y, temperature=0.5))(f))
  u = f / np.linalg.norm(f, axis=-1, keepdims=True)
  want, total = np.zeros(B), 0
  for i in range(B):
    neg = [float(u[i, 0] @ u[j, 1]) / 0.5 for j in range(B) if y[j] != y[i]]
    for p in range(B):
      if y[p] == y[i]:
        total += 1
        lp = float(u[i, 0] @ u[p, 1]) / 0.5
        want[i] += math.log1p(sum(math.exp(n - lp) for n in neg))
  np.testing.assert_allclose(got, B * want / total, rtol=1e-5)


def test_constant_gate_is_a_temperature():
  f = _data(5, B, 2, D)
  got, want = jax.jit(lambda f: (
      losses.contrib.hydra(f, LABELS, PARTNERS, jnp.full((B, D), 0.5), temperature=0.1),
      losses.contrib.hydra(f, LABELS, PARTNERS, temperature=0.4)))(f)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_own_class_is_neither_positive_nor_negative():
  # Anchor 0 (class 0, partner 1): moving the view-1 keys of class 0 (its own other view
  # included) leaves its loss unchanged; moving a negative (class 2) or a positive changes it.
  f = _data(6, B, 2, D)
  jitted = jax.jit(lambda f: losses.contrib.hydra(f, LABELS, PARTNERS, _gates())[0])
  loss0 = lambda f: float(jitted(f))
  base = loss0(f)
  own = f.copy()
  own[LABELS == 0, 1] = _data(7, int(np.sum(LABELS == 0)), D)
  assert abs(loss0(own) - base) < 1e-6 * abs(base)
  for j in (3, 1):                                     # a negative, then a positive
    moved = f.copy()
    moved[j, 1] = _data(8, D)
    assert abs(loss0(moved) - base) > 1e-3


def test_no_positive_and_no_negative_edge_cases():
  f = _data(9, 4, 2, D)
  y = np.array([0, 0, 1, 1], np.int32)
  # Partner class 3 does not occur: no positives anywhere, loss 0 with zero gradient.
  # Only classes 0 and 1 with partners swapped: every key is y1 or y2, so no negatives and
  # every term is log exp l_ap - l_ap = 0.
  (out, grad), swapped = jax.jit(lambda f: (
      jax.value_and_grad(lambda f: jnp.sum(losses.contrib.hydra(f, y, jnp.full(4, 3))))(f),
      losses.contrib.hydra(f, y, 1 - y)))(f)
  assert float(out) == 0.0 and np.all(np.asarray(grad) == 0)
  np.testing.assert_allclose(swapped, 0.0, atol=1e-6)


# ------------------------------------------------------------------ partners


def test_partner_modes():
  y = np.array([0, 1, 2, 3, 0, 1, 2, 9], np.int32)
  valid = np.ones(8, bool)
  valid[7] = False                                     # padding: never drawn, keeps its own
  same, d, draws = jax.jit(lambda y: (
      losses.contrib.hydra_partners(y, "identical"),
      losses.contrib.hydra_partners(y % 4, "distinct", rng=jax.random.key(0), num_classes=4),
      jax.vmap(lambda k: losses.contrib.hydra_partners(y, "arbitrary", rng=k, valid=valid))(
          jax.random.split(jax.random.key(1), 5))))(y)
  np.testing.assert_array_equal(same, y)
  d, draws = np.asarray(d), np.asarray(draws)
  assert np.all(d != y % 4) and np.all((0 <= d) & (d < 4))
  for a in draws:
    assert sorted(a[:7]) == sorted(y[:7]) and a[7] == 9
  assert len({tuple(a) for a in draws}) > 1


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN, DOUT, C = 16, 6, 5, 4
SL = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 1, 2, 3, 3, 1], np.int32)
SVALID = np.ones(NB, bool)
SVALID[[2, 11]] = False
SX = _data(10, NB, 2, DIN)
SX[:, 1] += SX[:, 0]
SW = _data(11, DIN, DOUT)
GATE = losses.contrib.init_hydra_gates(jax.random.key(3), C, DOUT, embed_dim=4, hidden=8)
RNG = jax.random.key(12)

SHARDED = {
    "fastssl_arbitrary": dict(mode="arbitrary", variant="fastssl", impl="dense"),
    "vitookit_distinct_symmetric": dict(mode="distinct", variant="vitookit", symmetric=True),
}


def _sharded_fn(kw, axis_name):
  kw = dict(kw)
  mode = kw.pop("mode")

  def fn(params, x, y, valid):
    w, gate = params
    y2 = losses.contrib.hydra_partners(y, mode, rng=RNG, num_classes=C, valid=valid, axis_name=axis_name)
    g = losses.contrib.hydra_gates(gate, y, y2)
    return losses.contrib.hydra(x @ w, y, y2, g, temperature=0.2, valid=valid, axis_name=axis_name,
                        block_size=4, **kw)
  return fn


@pytest.mark.parametrize("case", list(SHARDED))
def test_sharded_equals_single_device(case):
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  single = _sharded_fn(SHARDED[case], None)
  sharded = jax.shard_map(_sharded_fn(SHARDED[case], "d"), mesh=mesh,
                          in_specs=(P(), P("d"), P("d"), P("d")), out_specs=P("d"))

  def per_example_and_mean_grad(f, params, *args):  # one trace for both
    per, vjp = jax.vjp(lambda p: f(p, *args), params)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  @jax.jit
  def both(params, x, y, valid):
    return (per_example_and_mean_grad(single, params, x, y, valid),
            per_example_and_mean_grad(sharded, params, x, y, valid))

  (v1, g1), (v8, g8) = both((SW, GATE), SX, SL, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.abs(v1).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
  assert np.abs(np.asarray(g1[0])).max() > 0 and np.abs(np.asarray(g1[1]["dense2"]["kernel"])).max() > 0


def test_blockwise_equals_dense():
  f, g = _data(13, B, 2, D), _gates()
  vg = lambda impl: jax.value_and_grad(lambda f: jnp.sum(losses.contrib.hydra(
      f, LABELS, PARTNERS, g, impl=impl, block_size=4)))(f)
  dense, tiled = jax.jit(lambda f: (vg("dense"), vg("blockwise")))(f)
  np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-5)
  np.testing.assert_allclose(tiled[1], dense[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ precision and extremes


@pytest.mark.parametrize("variant", ["fastssl", "vitookit"])
def test_bf16_and_extreme_inputs(variant):
  f, g = _data(14, B, 2, D), _gates()
  f[:, 1] += f[:, 0]
  fn = lambda f, g, t=0.1: losses.contrib.hydra(f, LABELS, PARTNERS, g, temperature=t, variant=variant)
  grad = jax.grad(lambda f, g, t=0.1: jnp.sum(fn(f, g, t)), argnums=(0, 1))

  @jax.jit
  def variants(f, g):
    zero = f.at[2].set(0.0)
    return (fn(f, g), fn(f.astype(jnp.bfloat16), g.astype(jnp.bfloat16)),
            grad(f.astype(jnp.bfloat16), g), (fn(1e4 * f, g), grad(1e4 * f, g)),
            (fn(f, g, 1e-3), grad(f, g, 1e-3)), (fn(zero, g), grad(zero, g)))

  ref, low, g_low, *extreme = variants(f, g)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=2e-2, atol=2e-2)
  for value, grads in [(None, g_low)] + extreme:
    if value is not None:
      assert np.all(np.isfinite(np.asarray(value)))
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in grads)


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  f, g = _data(15, B, 2, D), _gates()
  cases = [
      (lambda: losses.contrib.hydra(f[:, 0], LABELS, PARTNERS), r"hydra: 'features' must have rank 3"),
      (lambda: losses.contrib.hydra(f[:, :1], LABELS, PARTNERS), r"'features' must have at least 2 views"),
      (lambda: losses.contrib.hydra([f[:, 0], f[:3, 1]], LABELS, PARTNERS),
       r"'features\[0\]' and 'features\[1\]' must have the same batch size"),
      (lambda: losses.contrib.hydra(f.astype(np.int32), LABELS, PARTNERS),
       r"'features' must be a floating-point array"),
      (lambda: losses.contrib.hydra(f, LABELS[:3], PARTNERS), r"'labels' must have shape \(6,\)"),
      (lambda: losses.contrib.hydra(f, LABELS, PARTNERS.astype(np.float32)),
       r"'partner_labels' must be integers"),
      (lambda: losses.contrib.hydra(f, LABELS, PARTNERS, g[:, :3]), r"'gates' must have shape \(6, 5\)"),
      (lambda: losses.contrib.hydra(f, LABELS, PARTNERS, temperature=0.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.hydra(f, LABELS, PARTNERS, variant="cosine"), r"'variant' must be one of"),
      (lambda: losses.contrib.hydra(f, LABELS, PARTNERS, valid=VALID[:2]), r"'valid' must have shape"),
      (lambda: losses.contrib.hydra_partners(LABELS, "random"), r"hydra_partners: 'mode' must be one of"),
      (lambda: losses.contrib.hydra_partners(LABELS, "arbitrary"), r"needs an explicit 'rng' key"),
      (lambda: losses.contrib.hydra_partners(LABELS, "distinct", rng=jax.random.key(0)),
       r"mode 'distinct' needs 'num_classes' >= 2"),
      (lambda: losses.contrib.hydra_gates(GATE, LABELS, PARTNERS[:2]), r"'partner_labels' must have shape"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


def test_objective_and_config_errors():
  from jaxcl.train import ConfigError, objectives
  from jaxcl.train.config import validate
  with pytest.raises(ValueError, match="hydra: 'num_classes' must be an int >= 2"):
    objectives.make_objective("hydra", {"temperature": 0.1}, 2)
  with pytest.raises(ValueError, match="hydra: 'partners' must be one of"):
    objectives.make_objective("hydra", {"num_classes": 10, "partners": "any"}, 2)
  from configs.hydra_digits import get_config
  c = get_config()
  c.loss.kwargs.num_classes = 5
  with pytest.raises(ConfigError, match="num_classes=5 is smaller than the 10 classes"):
    validate(c, num_devices=8, num_processes=1)
  c = get_config()
  c.loss.kwargs.gates = 1.0
  with pytest.raises(ConfigError, match="unknown key 'config.loss.kwargs.gates'"):
    validate(c, num_devices=8, num_processes=1)


# ------------------------------------------------------------------ trainer adapter


@pytest.mark.long
def test_trainer_runs_three_steps_and_learns_the_gate():
  from jaxcl.train import setup
  from jaxcl.train.sharding import global_batch
  from jaxcl import data
  from tests.test_train import tiny_config
  cfg = tiny_config(**{"data.name": "digits", "batch_size": 32, "loss.name": "hydra",
                       # identity views and a small encoder: compile time is the cost here
                       "augment.params": {"crop_scale": None, "flip_prob": 0.0,
                                          "jitter_prob": 0.0, "blur_prob": 0.0},
                       "model.encoder_kwargs": {"hidden": (32,)},
                       "loss.kwargs": {"temperature": 0.1, "num_classes": 10,
                                       "gate_embed_dim": 8, "gate_hidden": 16}})
  parts = setup(cfg)
  state = parts["state"]
  x = data.load_arrays("digits", "train")
  obj0 = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert obj0["gate"]["label_embedding"].shape == (10, 8)
  np.testing.assert_allclose(obj0["log_scale"], math.log(10.0), rtol=1e-6)
  losses_seen = []
  for s in range(3):
    batch = {k: np.asarray(v[32 * s:32 * (s + 1)]) for k, v in x.items()}
    log_scale = float(jax.device_get(state.objective_params["log_scale"]))
    state, metrics = parts["step"](state, global_batch(parts["mesh"], batch))
    losses_seen.append(float(metrics["loss"]))
    assert 0 < float(metrics["hydra/gate_mean"]) < 1
    assert 0 < float(metrics["hydra/gate_entropy"]) <= math.log(2) + 1e-6
    # Health is measured with the parameters the step used (before its update).
    np.testing.assert_allclose(metrics["hydra/temperature"], math.exp(-log_scale), rtol=1e-5)
  assert all(np.isfinite(losses_seen)) and losses_seen[0] > 0
  obj = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  for name in ("label_embedding",):
    assert np.abs(obj["gate"][name] - obj0["gate"][name]).max() > 0
  assert np.abs(obj["gate"]["dense2"]["kernel"] - obj0["gate"]["dense2"]["kernel"]).max() > 0
  assert obj["log_scale"] != obj0["log_scale"]


# ------------------------------------------------------------------ the study's digit views


def test_image_shift_erase_and_noise_views():
  x = jnp.asarray(np.random.default_rng(16).uniform(0.2, 0.8, size=(4, 8, 8, 1)), jnp.float32)
  plain = dict(crop_scale=None, flip_prob=0.0, jitter_prob=0.0, blur_prob=0.0)
  view = lambda **kw: augment.make_view_fn("image", **kw)

  @jax.jit
  def all_views(x):
    return (view(**plain)(jax.random.key(0), x), view(shift=1, **plain)(jax.random.key(2), x),
            view(erase_prob=1.0, erase_scale=(0.1, 0.2), **plain)(jax.random.key(3), x),
            view(noise_std=0.1, **plain)(jax.random.key(4), x))

  base, shifted, erased, noisy = map(np.asarray, all_views(x))
  xn = np.asarray(x)
  np.testing.assert_array_equal(base, xn)

  def shift(a, dy, dx):
    return a[np.clip(np.arange(8) + dy, 0, 7)][:, np.clip(np.arange(8) + dx, 0, 7)]

  for i in range(4):  # an exact integer shift by (dy, dx) in {-1, 0, 1}^2, edges clamped
    assert any(np.allclose(shifted[i], shift(xn[i], dy, dx), atol=1e-6)
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    kept = erased[i] != 0
    assert 1 <= int(np.sum(~kept)) <= 0.3 * 64 and np.allclose(erased[i][kept], xn[i][kept])
  assert 0.05 < np.std(noisy - xn) < 0.15 and noisy.min() >= 0 and noisy.max() <= 1
