"""M3CoL (jaxcl.losses.m3col, arXiv 2409.17777): float64 loop references of M3Co (the
reference's ``mixco_nce`` with its soft-target matrix, fixed-point overwrite included) and
SoftCLIP, value and gradient by finite differences; the mixing draw; 8 devices = 1 device
(mixing drawn and inputs mixed inside ``shard_map``); bf16 and extreme inputs; argument
errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import check_value_and_grad
from tests.reference import unit as _unit, lse as _lse

B, D = 6, 4
LAM = np.array([0.7, 1.0, 0.2, 0.95, 0.5, 1.0], np.float32)
PERM = np.array([3, 2, 5, 0, 1, 4], np.int32)
PERM_FIXED = np.array([3, 1, 5, 0, 4, 2], np.int32)   # rows 1 and 4 are their own partners
VALID = np.array([1, 1, 1, 1, 0, 1], bool)            # row 4 is padding (nobody's partner)
PERM_VALID = np.array([3, 2, 5, 0, 4, 1], np.int32)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ float64 loop references


def _rows(x, normalize):
  x = np.asarray(x, np.float64)
  return [(_unit(r) if normalize else r) for r in x]


def ref_m3co(mixed, fixed, lam, perm, temperature=0.1, valid=None, normalize=True):
  """``mixco_nce``: P = diag(lam), then P[i, perm[i]] = 1 - lam[i] (overwriting); row i of
  -P * log_softmax(S) and column i of -P * log_softmax over the other axis, halved."""
  b = len(lam)
  ok = [True] * b if valid is None else [bool(t) for t in valid]
  a, f = _rows(mixed, normalize), _rows(fixed, normalize)
  idx = [i for i in range(b) if ok[i]]
  s = {(i, j): float(np.dot(a[i], f[j])) / temperature for i in idx for j in idx}
  p = {(i, j): 0.0 for i in idx for j in idx}
  for i in idx:
    p[i, i] = float(lam[i])
  for i in idx:
    p[i, int(perm[i])] = 1.0 - float(lam[i])
  out = np.zeros(b)
  for i in idx:
    lse_r = _lse([s[i, j] for j in idx])
    lse_c = _lse([s[k, i] for k in idx])
    row = -sum(p[i, j] * (s[i, j] - lse_r) for j in idx)
    col = -sum(p[k, i] * (s[k, i] - lse_c) for k in idx)
    out[i] = 0.5 * (row + col)
  return out


def ref_soft_clip(preds, targets, temperature=0.125, valid=None, normalize=True):
  """``soft_clip_loss``: loss1 = -(log_softmax(p t^T) * softmax(t t^T)) row i, loss2 the same
  with (p t^T)^T, halved."""
  b = len(preds)
  ok = [True] * b if valid is None else [bool(t) for t in valid]
  p, t = _rows(preds, normalize), _rows(targets, normalize)
  idx = [i for i in range(b) if ok[i]]
  out = np.zeros(b)
  for i in idx:
    g = [float(np.dot(t[i], t[j])) / temperature for j in idx]
    q = np.exp(np.array(g) - _lse(g))
    row = [float(np.dot(p[i], t[j])) / temperature for j in idx]
    col = [float(np.dot(p[j], t[i])) / temperature for j in idx]
    lr, lc = _lse(row), _lse(col)
    out[i] = 0.5 * (-sum(q[n] * (row[n] - lr) for n in range(len(idx)))
                    - sum(q[n] * (col[n] - lc) for n in range(len(idx))))
  return out


def _check(lib_fn, ref_fn, inputs):
  return check_value_and_grad(lib_fn, ref_fn, inputs, atol=1e-5)[0]


M3CO_CASES = {
    "default": (PERM, dict(temperature=0.1)),
    "fixed_points_overwrite": (PERM_FIXED, dict(temperature=0.3)),
    "valid_unnormalized": (PERM_VALID, dict(temperature=2.0, valid=VALID, normalize=False)),
}


@pytest.mark.parametrize("case", list(M3CO_CASES))
def test_m3co_matches_the_loop_reference(case):
  perm, kw = M3CO_CASES[case]
  a, f = _data(0, B, D), _data(1, B, D)
  f += a
  if not kw.get("normalize", True):
    a, f = 0.3 * a, 0.3 * f
  want = _check(lambda a, f: losses.contrib.m3co_loss(a, f, LAM, perm, **kw),
                lambda a, f: ref_m3co(a, f, LAM, perm, **kw), [a, f])
  if "valid" in kw:
    assert want[4] == 0 and np.all(want[VALID] != 0)


@pytest.mark.parametrize("kw", [dict(temperature=0.125),
                                dict(temperature=1.5, valid=VALID, normalize=False)],
                         ids=["default", "valid_unnormalized"])
def test_soft_clip_matches_the_loop_reference(kw):
  p, t = _data(2, B, D), _data(3, B, D)
  p += t
  if not kw.get("normalize", True):
    p, t = 0.3 * p, 0.3 * t
  _check(lambda p, t: losses.contrib.soft_clip_loss(p, t, **kw),
         lambda p, t: ref_soft_clip(p, t, **kw), [p, t])


def test_reductions_traced_temperature_and_detached_targets():
  a, f = _data(4, B, D), _data(5, B, D)
  ones = np.ones(B, np.float32)

  @jax.jit
  def run(a, f, t):
    return (losses.contrib.m3co_loss(a, f, ones, PERM), losses.clip_loss(a, f, temperature=0.1),
            jax.grad(lambda t: jnp.sum(losses.contrib.soft_clip_loss(a, f, temperature=t)))(t),
            jax.grad(lambda f: jnp.sum(losses.contrib.soft_clip_loss(a, f)))(f),
            jax.grad(lambda f: jnp.sum(losses.contrib.soft_clip_loss(a, f, stop_target_gradient=True)))(f))

  m3, clip, g_t, g_f, g_f_detached = run(a, f, jnp.float32(0.2))
  # No mixing (lam = 1): M3Co is CLIP.
  np.testing.assert_allclose(m3, clip, rtol=1e-5, atol=1e-6)
  ref = lambda t: float(np.sum(ref_soft_clip(a, f, t)))
  np.testing.assert_allclose(g_t, (ref(0.2 + 1e-6) - ref(0.2 - 1e-6)) / 2e-6, rtol=1e-4)
  assert np.abs(np.asarray(g_f) - np.asarray(g_f_detached)).max() > 1e-4


def test_mixing_draw_and_mix():
  n = 64
  valid = np.arange(n) % 5 != 0
  x = _data(6, n, 3)

  @jax.jit
  def draws(k0, k1):   # one program: the Beta sampler's while loop compiles slowly
    lam, partner = losses.contrib.m3co_mixing(k0, n)
    return (lam, partner, losses.contrib.m3co_mixing(k1, n, valid=valid, prob=1.0),
            losses.contrib.m3co_mix(x, lam, partner))

  lam, partner, (lam_v, part_v), mixed = draws(jax.random.key(0), jax.random.key(1))
  lam, partner = np.asarray(lam), np.asarray(partner)
  assert np.all(partner != np.arange(n)) and sorted(partner) == list(range(n))
  seen, i = set(), 0                                  # one cycle through every row
  while i not in seen:
    seen.add(i)
    i = partner[i]
  assert len(seen) == n
  assert np.all((lam > 0) & (lam <= 1)) and 15 < np.sum(lam < 1) < 50
  lam_v, part_v = np.asarray(lam_v), np.asarray(part_v)
  assert np.all(part_v[~valid] == np.arange(n)[~valid]) and np.all(lam_v[~valid] == 1)
  assert np.all(valid[part_v[valid]]) and np.all(part_v[valid] != np.arange(n)[valid])
  assert np.sum(lam_v[valid] < 1) > 0.8 * np.sum(valid)
  np.testing.assert_allclose(
      mixed,
      lam[:, None] * x + (1 - lam[:, None]) * x[partner], rtol=1e-6, atol=1e-6)


def test_beta_sampler_matches_the_distribution():
  import scipy.stats as st
  from jaxcl.losses.m3col import beta_sample
  n = 40000
  small, large = jax.jit(lambda k: (beta_sample(jax.random.fold_in(k, 0), 0.15, 0.15, (n,)),
                                    beta_sample(jax.random.fold_in(k, 1), 2.0, 5.0, (n,))))(
      jax.random.key(0))
  small, large = np.asarray(small, np.float64), np.asarray(large, np.float64)
  assert np.all((small >= 0) & (small <= 1)) and np.all((large > 0) & (large < 1))
  # Beta(0.15, 0.15) piles up at 0 and 1 (float32 rounds ~4% to exactly 1): compare the CDF.
  for t in (1e-4, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-4):
    assert abs(np.mean(small <= t) - st.beta(0.15, 0.15).cdf(t)) < 0.012, t
  assert st.kstest(large, st.beta(2.0, 5.0).cdf).pvalue > 1e-3


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN, DOUT = 16, 5, 4
SX = _data(10, NB, 2, DIN)
SX[:, 1] += SX[:, 0]
SW = (_data(11, DIN, DOUT), _data(12, DIN, DOUT))
SVALID = np.ones(NB, bool)
SVALID[[2, 11]] = False
RNG = jax.random.key(12)


def _objective(axis_name):
  """Input-space mixing of modality 0 drawn inside, M3Co against modality 1 + SoftCLIP."""

  def fn(w, x, valid):
    lam, partner = losses.contrib.m3co_mixing(RNG, x.shape[0], prob=0.8, valid=valid,
                                      axis_name=axis_name)
    mixed = losses.contrib.m3co_mix(x[:, 0], lam, partner, axis_name=axis_name) @ w[0]
    fixed = x[:, 1] @ w[1]
    kw = dict(axis_name=axis_name, valid=valid, block_size=4)
    return (losses.contrib.m3co_loss(mixed, fixed, lam, partner, **kw)
            + losses.contrib.soft_clip_loss(x[:, 0] @ w[0], fixed, **kw))
  return fn


def test_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  single = _objective(None)
  sharded = jax.shard_map(_objective("d"), mesh=mesh, in_specs=(P(), P("d"), P("d")),
                          out_specs=P("d"))

  def per_and_grad(f, *args):
    per, vjp = jax.vjp(lambda w: f(w, *args), SW)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  (v1, g1), (v8, g8) = jax.jit(lambda x, v: (per_and_grad(single, x, v),
                                             per_and_grad(sharded, x, v)))(SX, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.all(v1[SVALID] != 0)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(g8, g1):
    b = np.asarray(b)
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_blockwise_equals_dense():
  a, f = _data(13, B, D), _data(14, B, D)
  vg = lambda impl: jax.value_and_grad(lambda a: jnp.sum(
      losses.contrib.m3co_loss(a, f, LAM, PERM, impl=impl, block_size=4)
      + losses.contrib.soft_clip_loss(a, f, impl=impl, block_size=4)))(a)
  dense, tiled = jax.jit(lambda a: (vg("dense"), vg("blockwise")))(a)
  np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-5)
  np.testing.assert_allclose(tiled[1], dense[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_inputs():
  a, f = _data(15, B, D), _data(16, B, D)
  f += a

  def fn(a, f, t=0.1):
    return losses.contrib.m3co_loss(a, f, LAM, PERM, temperature=t) + losses.contrib.soft_clip_loss(
        a, f, temperature=t)
  grad = jax.grad(lambda a, f, t=0.1: jnp.sum(fn(a, f, t)), argnums=(0, 1))

  @jax.jit
  def variants(a, f):
    zero = a.at[2].set(0.0)
    bf = a.astype(jnp.bfloat16), f.astype(jnp.bfloat16)
    return (fn(a, f), fn(*bf), grad(*bf), (fn(1e4 * a, f), grad(1e4 * a, f)),
            (fn(a, f, 1e-3), grad(a, f, 1e-3)), (fn(zero, f), grad(zero, f)),
            (losses.contrib.m3co_mix(*bf[:1], LAM, PERM)))

  ref, low, g_low, *extreme, mixed = variants(a, f)
  assert np.asarray(low).dtype == np.float32 and mixed.dtype == jnp.bfloat16
  np.testing.assert_allclose(low, ref, rtol=3e-2, atol=3e-2)
  for value, grads in [(None, g_low)] + extreme:
    if value is not None:
      assert np.all(np.isfinite(np.asarray(value)))
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in grads)


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  a, f = _data(17, B, D), _data(18, B, D)
  cases = [
      (lambda: losses.contrib.m3co_loss(a[:, :2], f, LAM, PERM),
       r"m3co_loss: 'mixed' and 'fixed' must have the same feature size"),
      (lambda: losses.contrib.m3co_loss(a.astype(np.int32), f, LAM, PERM),
       r"'mixed' must be a floating-point array"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM[:3], PERM), r"'lam' must have shape \(6,\)"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM.astype(np.int32), PERM),
       r"'lam' must be a floating-point array"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM, PERM.astype(np.float32)),
       r"'partner' must be integers"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM, PERM[:2]), r"'partner' must have shape \(6,\)"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM, PERM, temperature=0.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.m3co_loss(a, f, LAM, PERM, valid=VALID[:2]), r"'valid' must have shape"),
      (lambda: losses.contrib.soft_clip_loss(a, f[:3]),
       r"soft_clip_loss: 'preds' and 'targets' must have the same batch size"),
      (lambda: losses.contrib.soft_clip_loss(a[0], f[0]), r"'preds' must have rank 2"),
      (lambda: losses.contrib.soft_clip_loss(a, f, temperature=-1.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.m3co_mixing(None, 4), r"m3co_mixing: 'rng' is required"),
      (lambda: losses.contrib.m3co_mixing(jax.random.key(0), 0), r"'batch' must be an int >= 1"),
      (lambda: losses.contrib.m3co_mixing(jax.random.key(0), 4, beta=0.0), r"'beta' must be > 0"),
      (lambda: losses.contrib.m3co_mixing(jax.random.key(0), 4, prob=1.5), r"'prob' must be in \[0, 1\]"),
      (lambda: losses.contrib.m3co_mix(a.astype(np.int32), LAM, PERM), r"m3co_mix: 'x' must be a float"),
      (lambda: losses.contrib.m3co_mix(a, LAM, PERM[:3]), r"m3co_mix: 'partner' must have shape"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


# ------------------------------------------------------------------ trainer adapter


def test_objective_and_config_errors():
  from jaxcl.train import ConfigError, objectives
  from jaxcl.train.config import validate
  make = lambda **kw: objectives.make_objective("m3co_loss", {"num_classes": 2, **kw}, 3, 1)
  with pytest.raises(ValueError, match="m3col: 'num_classes' must be an int >= 2"):
    objectives.make_objective("m3co_loss", {}, 3, 1)
  with pytest.raises(ValueError, match="m3col: 'contrastive' must be one of"):
    make(contrastive="mixup")
  with pytest.raises(ValueError, match="m3col: 'mix' must be 'input' or 'embedding'"):
    make(mix="latent")
  with pytest.raises(ValueError, match="m3col: 'switch_step' must be an int"):
    make(switch_step=0.5)
  with pytest.raises(ValueError, match="m3col: 'modality_sizes' must give the 3 modalities"):
    make(modality_sizes=(10, 20))
  with pytest.raises(ValueError, match="m3col: needs >= 2 modalities"):
    objectives.make_objective("m3co_loss", {"num_classes": 2}, 2, 2)
  from configs.m3col_breast_cancer import get_config
  c = get_config()
  c.loss.kwargs.lam = 0.5
  with pytest.raises(ConfigError, match="'config.loss.kwargs.lam'"):
    validate(c, num_devices=8, num_processes=1)


@pytest.mark.long
def test_trainer_runs_both_phases_on_8_devices():
  """3 steps of the recipe (tiny towers) on the 8 test devices: M3Co (input mixing through the
  model) at step 0, SoftCLIP from step 1 (lax.cond on the state's step count); the heads
  learn, the state counts the steps."""
  from experiments import _study, m3col
  from jaxcl import data
  from jaxcl.train import setup
  from jaxcl.train.sharding import global_batch
  # The study's smoke config (the same step program: a compile-cache hit for one of the two).
  cfg = _study.quiet(m3col.config("ce_m3col", m3col.LRS[0], smoke=True))
  assert (cfg.batch_size, cfg.num_steps, cfg.loss.kwargs.switch_step) == (32, 3, 1)
  cfg.eval.at_end = False
  parts = setup(cfg)
  state = parts["state"]
  assert parts["mesh"].devices.size == 8
  heads0 = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert heads0["fusion"]["w1"].shape == (96, 32) and len(heads0["unimodal"]) == 3
  x = data.load_arrays("breast_cancer_blocks", "train")
  seen = []
  for s in range(3):
    batch = {k: np.asarray(v[32 * s:32 * (s + 1)]) for k, v in x.items()}
    state, metrics = parts["step"](state, global_batch(parts["mesh"], batch))
    seen.append(float(metrics["loss"]))
  assert all(np.isfinite(seen)) and all(v > 0 for v in seen)
  assert int(jax.device_get(state.objective_state["steps"])) == 3
  heads = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert np.abs(heads["fusion"]["w2"] - heads0["fusion"]["w2"]).max() > 0
  assert np.abs(heads["unimodal"][2]["w1"] - heads0["unimodal"][2]["w1"]).max() > 0


@pytest.mark.long
def test_objective_composes_ce_and_the_scheduled_term():
  """The adapter on an identity "model" (z = the three 4-feature blocks of x): before the
  switch CE(fusion) + sum_m CE(head_m) + 0.1 sum_m M3Co(mix(x_m) -> x_{m+1}); input mixing
  (one forward per modality, or one with every block mixed) equals embedding mixing here;
  after the switch the same with SoftCLIP; CE alone without."""
  from jaxcl.train import objectives
  b, m, d = 8, 3, 4
  x = jnp.asarray(_data(20, b, m * d))
  y = jnp.array([0, 1, 1, 0, 1, 0, 0, 1])
  z = x.reshape(b, m, d)
  encode = lambda x, train=False: (x, x.reshape(x.shape[0], m, d))
  rng = jax.random.key(3)
  kw = {"num_classes": 2, "switch_step": 2, "head_hidden": 5, "mix_prob": 1.0}
  # Both phases for the recipe's path; the other two mixing paths in the M3Co phase only
  # (after="m3co": no cond, half the compile).
  objs = {name: objectives.make_objective("m3co_loss", {**kw, **extra}, m, 1)
          for name, extra in (("blocks", {"mix": "input", "modality_sizes": (d,) * m}),
                              ("input", {"mix": "input", "after": "m3co"}),
                              ("embedding", {"mix": "embedding", "after": "m3co"}))}
  ce_only = objectives.make_objective("m3co_loss", {**kw, "contrastive": "none",
                                                    "after": "none"}, m, 1)
  params = objs["input"].init(jax.random.key(0), d)

  @jax.jit
  def run(params, steps):   # traced steps: one compile for both phases
    return {name: o.apply(params, z, y, rng, None, state={"steps": steps}, inputs=(x,),
                          encode=encode)
            for name, o in (*objs.items(), ("ce", ce_only))}

  @jax.jit
  def manual(params):
    fused, uni = losses.contrib.m3col_heads(params, z)
    ce = losses.contrib.softmax_cross_entropy(fused, y) + sum(
        losses.contrib.softmax_cross_entropy(uni[:, i], y) for i in range(m))
    m3, soft = 0.0, 0.0
    for i in range(m):
      lam, partner = losses.contrib.m3co_mixing(jax.random.fold_in(rng, i), b, beta=0.15, prob=1.0)
      mixed = losses.contrib.m3co_mix(z[:, i], lam, partner)
      m3 = m3 + losses.contrib.m3co_loss(mixed, z[:, (i + 1) % m], lam, partner, temperature=0.1)
      soft = soft + losses.contrib.soft_clip_loss(z[:, i], z[:, (i + 1) % m], temperature=0.125)
    return ce, ce + 0.1 * m3, ce + 0.1 * soft

  ce, before, after = manual(params)
  out = {steps: run(params, jnp.int32(steps)) for steps in (0, 2)}
  for mix in objs:
    np.testing.assert_allclose(out[0][mix][0], before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[2][mix][0], after if mix == "blocks" else before,
                               rtol=1e-5, atol=1e-6)
    assert int(out[0][mix][1]["steps"]) == 1 and int(out[2][mix][1]["steps"]) == 3
  np.testing.assert_allclose(out[0]["ce"][0], ce, rtol=1e-6)
  np.testing.assert_allclose(out[2]["ce"][0], ce, rtol=1e-6)
  assert np.abs(np.asarray(before) - np.asarray(after)).max() > 1e-4


def test_breast_cancer_blocks_dataset():
  """The ``breast_cancer`` arrays (same split and standardisation) as 3 tabular modalities:
  sklearn's 10 mean / 10 standard-error / 10 worst columns, in that order."""
  from sklearn.datasets import load_breast_cancer
  from jaxcl import data
  info = data.info("breast_cancer_blocks")
  assert info.kind == "multimodal" and info.shape == (30,) and info.num_classes == 2
  assert [(m.name, m.kind, m.shape) for m in info.modalities] == [
      ("mean", "tabular", (10,)), ("se", "tabular", (10,)), ("worst", "tabular", (10,))]
  names = load_breast_cancer().feature_names
  assert all(n.startswith("mean") for n in names[:10]) and all(
      n.endswith("error") for n in names[10:20]) and all(n.startswith("worst") for n in names[20:])
  for split, n in info.splits.items():
    a, b = data.load_arrays("breast_cancer_blocks", split), data.load_arrays("breast_cancer", split)
    assert a["x"].shape == (n, 30) and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["y"], b["y"])
    blocks = data.split_modalities(a["x"], info.modalities)
    np.testing.assert_array_equal(blocks[1], a["x"][:, 10:20])
  np.testing.assert_allclose(data.load_arrays("breast_cancer_blocks", "train")["x"].std(0), 1,
                             atol=1e-3)
