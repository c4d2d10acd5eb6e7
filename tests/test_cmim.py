"""cMIM / A-MIM (jaxcl.losses.contrib.cmim, arXiv 2411.10548 / 2509.21511; MIM arXiv 1910.03175): a
float64 loop reference written here (value and finite-difference gradient), the reference
code's algebra (q_x marginal), 8 devices = 1 device for the whole sample -> decode -> loss
pipeline (value and gradient, ring kernel vs dense), bf16 and extreme variances, argument
errors, and the trainer adapter (identity views, decoder learned) for 2 steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import fd_coords, fd_directional

B, D, PIX = 6, 3, 5
VALID = np.array([1, 1, 0, 1, 1, 1], bool)  # row 2 is padding


def _data(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, size=(B, PIX)).astype(np.float32)
  logits = _data(seed + 1, B, PIX)
  mean = _data(seed + 2, B, D)
  logvar = rng.uniform(-1.0, 0.5, size=(B, D)).astype(np.float32)
  z = (mean + np.exp(0.5 * logvar) * _data(seed + 3, B, D)).astype(np.float32)
  return [x, logits, z, mean, logvar]


# ------------------------------------------------------------------ the float64 loop reference


def _sigmoid(t):
  return 1.0 / (1.0 + math.exp(-t))


def _log_normal(zv, mv, lv):
  return sum(-0.5 * ((a - m) ** 2 / math.exp(l) + l + math.log(2 * math.pi))
             for a, m, l in zip(zv, mv, lv))


def ref_cmim(x, logits, z, mean, logvar, weight=1.0, q_x="marginal", beta=1.0, clip=1e-3,
             valid=None):
  """Loops over rows, pixels and candidate posteriors (the module docstring's equations)."""
  x, logits, z, mean, logvar = (np.asarray(a, np.float64) for a in (x, logits, z, mean, logvar))
  b = len(x)
  ok = [True] * b if valid is None else [bool(v) for v in valid]
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    log_px = 0.0
    for p in range(x.shape[1]):
      t, s = x[i, p], _sigmoid(logits[i, p])
      if clip:
        t, s = min(max(t, clip), 1 - clip), min(max(s, clip), 1 - clip)
      log_px += t * math.log(s) + (1 - t) * math.log(1 - s)
    log_pz = _log_normal(z[i], [0.0] * z.shape[1], [0.0] * z.shape[1])
    log_qzx = _log_normal(z[i], mean[i], logvar[i])
    log_qx = log_px + log_pz - log_qzx if q_x == "marginal" else 0.0
    out[i] = -0.5 * (log_px + log_pz + beta * (log_qzx + log_qx))
    if weight:
      cands = [_log_normal(z[i], mean[j], logvar[j]) for j in range(b) if ok[j]]
      m = max(cands)
      lse = m + math.log(sum(math.exp(c - m) for c in cands))
      out[i] += weight * (lse - log_qzx)
  return out


CASES = {
    "cmim_marginal_valid": dict(weight=0.7, valid=VALID),
    "cmim_data_exact_beta": dict(weight=1.0, q_x="data", beta=0.5, clip=0.0),
}


def _lib(kw):
  kw = dict(kw)
  opts = dict(contrastive_weight=kw.pop("weight"), q_x=kw.pop("q_x", "marginal"),
              beta=kw.pop("beta", 1.0), probs_clip=kw.pop("clip", 1e-3),
              valid=kw.pop("valid", None))
  return lambda *xs: losses.contrib.cmim(*xs, **opts)


@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_match_the_loop_reference(case):
  kw = CASES[case]
  inputs = _inputs()
  lib, ref = _lib(kw), lambda *xs: ref_cmim(*xs, **kw)
  want = ref(*inputs)
  w = np.random.default_rng(99).uniform(0.5, 1.5, size=B)
  idx = tuple(range(1, 5))  # logits, z, mean, logvar (x is data)
  values, grads = jax.jit(lambda *xs: (lib(*xs), jax.grad(
      lambda *xs: jnp.sum(w * lib(*xs)), argnums=idx)(*xs)))(*inputs)
  values = np.asarray(values)
  assert values.dtype == np.float32 and values.shape == (B,)
  np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-5)
  if "valid" in kw:
    assert want[2] == 0 and values[2] == 0
  rng = np.random.default_rng(5)
  for g, n in zip(grads, idx):
    scalar = lambda xn, n=n: float(np.dot(w, ref(*[xn if m == n else v
                                                   for m, v in enumerate(inputs)])))
    got = np.asarray(g, np.float64)
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 0
    tol = lambda want: dict(rtol=2e-4, atol=2e-4 * max(1e-3, np.abs(want).max()))
    coords = [(i, int(rng.integers(inputs[n].shape[1]))) for i in range(B)]
    fd = fd_coords(scalar, inputs[n], coords)
    np.testing.assert_allclose([got[c] for c in coords], fd, **tol(fd))
    direction = rng.normal(size=inputs[n].shape)
    fd = fd_directional(scalar, inputs[n], direction)
    np.testing.assert_allclose(np.sum(got * direction), fd, **tol(fd))


def test_reference_code_algebra_and_helpers():
  # q_x="marginal": the log q(z|x) terms cancel, A-MIM = -(1 + beta)/2 [log p(x|z) + log P(z)].
  x, logits, z, mean, logvar = _inputs(1)
  lib = importlib_cmim()
  dec = losses.contrib.init_mim_decoder(jax.random.key(0), D, PIX, hidden=(4, 7))

  @jax.jit  # one program: eager calls would compile every op separately
  def everything(x, logits, z, mean, logvar):
    args = (x, logits, z, mean, logvar)
    simple = [-(1 + beta) / 2 * (lib.bernoulli_log_prob(x, logits)
                                 + lib.gaussian_log_prob(z, 0 * z, 0 * z)) for beta in (1.0, 0.3)]
    return dict(
        a_mim=[losses.contrib.a_mim(*args, beta=beta) for beta in (1.0, 0.3)], simple=simple,
        w0=losses.contrib.cmim(*args, contrastive_weight=0.0),
        w2=losses.contrib.cmim(*args, contrastive_weight=2.0),
        nce=losses.contrib.posterior_nce(z, mean, logvar),
        sample=losses.contrib.posterior_sample(mean, logvar, jax.random.key(3)),
        eps0=jax.random.normal(jax.random.fold_in(jax.random.key(3), 0), (D,)),
        split=losses.contrib.split_posterior(jnp.concatenate([mean, jnp.full_like(mean, -99.0)], 1)),
        logits=losses.contrib.mim_decoder(dec, mean), emb=losses.contrib.informative_embeddings(dec, mean))

  r = everything(x, logits, z, mean, logvar)
  for got, want in zip(r["a_mim"], r["simple"]):
    np.testing.assert_allclose(got, want, rtol=1e-5)
  # contrastive_weight=0 is A-MIM; the weight scales the posterior InfoNCE.
  np.testing.assert_allclose(r["w0"], r["a_mim"][0])
  np.testing.assert_allclose(r["w2"], r["a_mim"][0] + 2 * r["nce"], rtol=1e-5)
  assert np.all(np.asarray(r["nce"]) > 0)
  # Samples: row g's noise from fold_in(rng, g); split / decoder / informative embeddings.
  np.testing.assert_allclose(r["sample"][0], mean[0] + np.exp(0.5 * logvar[0]) * r["eps0"],
                             rtol=1e-5)
  m, lv = r["split"]
  np.testing.assert_array_equal(m, mean)
  assert float(lv.min()) == -30.0  # the variance floor
  assert r["logits"].shape == (B, PIX) and r["emb"].shape == (B, D + 7)
  np.testing.assert_array_equal(r["emb"][:, :D], mean)


def importlib_cmim():
  import importlib
  return importlib.import_module("jaxcl.losses.cmim")


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN, LAT = 16, 8, 3
SX = np.random.default_rng(10).uniform(0, 1, size=(NB, DIN)).astype(np.float32)
SVALID = np.ones(NB, bool)
SVALID[[3, 12]] = False
ENC = _data(11, DIN, 2 * LAT, scale=0.5)
DEC = losses.contrib.init_mim_decoder(jax.random.key(4), LAT, DIN, hidden=(6,))
RNG = jax.random.key(12)


def _pipeline(axis_name, impl):
  def fn(params, x, valid):
    enc, dec = params
    mean, logvar = losses.contrib.split_posterior(x @ enc)
    z = losses.contrib.posterior_sample(mean, logvar, RNG, axis_name)
    return losses.contrib.cmim(x, losses.contrib.mim_decoder(dec, z), z, mean, logvar, valid=valid,
                       axis_name=axis_name, impl=impl, block_size=4)
  return fn


def test_sharded_ring_equals_single_device_dense():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  single = _pipeline(None, "dense")
  sharded = jax.shard_map(_pipeline("d", "ring"), mesh=mesh, in_specs=(P(), P("d"), P("d")),
                          out_specs=P("d"))

  def per_and_grad(f, params, *args):
    per, vjp = jax.vjp(lambda p: f(p, *args), params)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  @jax.jit
  def both(params, x, valid):
    return per_and_grad(single, params, x, valid), per_and_grad(sharded, params, x, valid)

  (v1, g1), (v8, g8) = both((ENC, DEC), SX, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.abs(v1).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    assert np.all(np.isfinite(b))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
  assert np.abs(np.asarray(g1[0])).max() > 0 and np.abs(np.asarray(g1[1][0]["w"])).max() > 0


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_variances():
  x, logits, z, mean, logvar = _inputs(2)
  fn = lambda l, z, m, lv: losses.contrib.cmim(x, l, z, m, lv)
  grad = jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=(0, 1, 2, 3))
  far = 10.0 * np.arange(B, dtype=np.float32)[:, None] + mean  # well-separated posteriors
  tiny = np.full_like(logvar, -30.0)                            # sigma ~ 3e-7

  @jax.jit
  def variants(l, z, m, lv):
    low = [a.astype(jnp.bfloat16) for a in (l, z, m, lv)]
    z_tiny = far + jnp.exp(0.5 * tiny) * (z - m)
    return (fn(l, z, m, lv), fn(*low), grad(*low),
            (losses.contrib.posterior_nce(z_tiny, far, tiny), grad(l, z_tiny, far, tiny)),
            fn(30 * l, z, m, lv))

  ref, low, g_low, (nce_tiny, g_tiny), v_big = variants(logits, z, mean, logvar)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=3e-2, atol=3e-2)
  # Sharp, separated posteriors: the exact positive logit makes the InfoNCE ~0 (the expanded
  # product alone would be off by far more at |z|^2 / sigma^2 ~ 1e15).
  np.testing.assert_allclose(nce_tiny, 0.0, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(v_big)))
  for grads in (g_low, g_tiny):
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  x, logits, z, mean, logvar = _inputs(3)
  cases = [
      (lambda: losses.contrib.cmim(x, logits[:, :2], z, mean, logvar),
       r"cmim: 'x' and 'logits' must have the same shape"),
      (lambda: losses.contrib.cmim(x[:3], logits[:3], z, mean, logvar),
       r"'x' and 'z' must have the same batch size"),
      (lambda: losses.contrib.cmim(x, logits, z, mean[:, :2], logvar),
       r"'z' and 'mean' must have the same shape"),
      (lambda: losses.contrib.posterior_nce(z, mean, logvar[None]),
       r"posterior_nce: 'logvar' must have rank 2"),
      (lambda: losses.contrib.a_mim(x, logits, z, mean, logvar, q_x="prior"), r"a_mim: 'q_x' must be"),
      (lambda: losses.contrib.cmim(x, logits, z.astype(np.int32), mean, logvar),
       r"'z' must be a floating-point array"),
      (lambda: losses.contrib.cmim(x, logits, z, mean, logvar, q_x="prior"), r"'q_x' must be one of"),
      (lambda: losses.contrib.cmim(x, logits, z, mean, logvar, probs_clip=0.7), r"'probs_clip' must be"),
      (lambda: losses.contrib.cmim(x, logits, z, mean, logvar, contrastive_weight=-1.0),
       r"'contrastive_weight' must be >= 0"),
      (lambda: losses.contrib.cmim(x, logits, z, mean, logvar, valid=VALID[:2]),
       r"'valid' must have shape"),
      (lambda: losses.contrib.posterior_sample(mean, logvar, None), r"needs an explicit 'rng'"),
      (lambda: losses.contrib.split_posterior(z), r"'z' must have an even last axis"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


def test_objective_and_config_errors():
  from jaxcl.train import ConfigError, objectives
  from jaxcl.train.config import validate
  with pytest.raises(ValueError, match="cmim: 'input_dim' must be an int >= 1"):
    objectives.make_objective("cmim", {}, 2)
  with pytest.raises(ValueError, match="cmim: 'decoder_hidden' must be widths >= 1"):
    objectives.make_objective("cmim", {"input_dim": 64, "decoder_hidden": (0,)}, 2)
  obj = objectives.make_objective("cmim", {"input_dim": 64}, 2)
  with pytest.raises(ValueError, match="the model's output width must be even"):
    obj.init(jax.random.key(0), 31)
  from configs.cmim_digits import get_config
  c = get_config()
  c.loss.kwargs.temperature = 0.1
  with pytest.raises(ConfigError, match="unknown key 'config.loss.kwargs.temperature'"):
    validate(c, num_devices=8, num_processes=1)
  c = get_config()
  c.loss.kwargs.mean = 0.0
  with pytest.raises(ConfigError, match="unknown key 'config.loss.kwargs.mean'"):
    validate(c, num_devices=8, num_processes=1)


# ------------------------------------------------------------------ trainer adapter


@pytest.mark.long
def test_trainer_runs_two_steps_with_identity_views_and_learns_the_decoder():
  from jaxcl import data
  from jaxcl.train import setup
  from jaxcl.train.sharding import global_batch
  from jaxcl.train.step import make_views
  from configs.cmim_digits import get_config
  from tests.test_train import tiny_config
  base = get_config()
  cfg = tiny_config(**{"data.name": "digits", "batch_size": 32, "loss.name": "cmim",
                       "augment.params": dict(base.augment.params), "model.head_bn": False,
                       "model.encoder_kwargs": {"hidden": (32,)}, "model.head_out": 8,
                       "loss.kwargs": {"input_dim": 64, "decoder_hidden": (16,)}})
  parts = setup(cfg)
  state = parts["state"]
  x = data.load_arrays("digits", "train")
  dec0 = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert [l["w"].shape for l in dec0] == [(4, 16), (16, 64)]
  seen = []
  for s in range(2):
    batch = global_batch(parts["mesh"], {k: np.asarray(v[32 * s:32 * (s + 1)])
                                         for k, v in x.items()})
    if s == 0:  # the recipe's views are the identity: the decoder's target is the input
      v0, v1 = make_views(parts["view_fn"], state, batch["x"], 2)
      np.testing.assert_array_equal(v0, batch["x"])
      np.testing.assert_array_equal(v1, batch["x"])
    state, metrics = parts["step"](state, batch)
    seen.append(float(metrics["loss"]))
    assert -30.0 <= float(metrics["cmim/logvar"]) <= 20.0
  assert all(np.isfinite(seen)) and seen[0] > 0
  dec = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert np.abs(dec[0]["w"] - dec0[0]["w"]).max() > 0
