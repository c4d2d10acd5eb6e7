"""Core-tuning (jaxcl.losses.contrib.core_tuning, arXiv 2102.06605): the hard-pair mining and mixtures
against loops written here (intended math and the reference code's arg-min / arg-max quirks),
the loss against a float64 loop reference (value, and gradient by finite differences, for the
intended math, the reference code's quirks and the SupCon form), the CE / SupCon reductions,
8 devices = 1 device (value and gradient), bf16 and extreme inputs, argument errors, the trainer
adapter / config and the fine-tuning start (``config.init``: encoder copied from a checkpoint,
``model.head_layers = 0``)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import fd_directional

N, D, C, H, OUT = 12, 5, 4, 6, 3
# Class 3 occurs once (no positive: its hard positive is itself); rows 4, 8 share row 0's class.
LABELS = np.array([0, 1, 2, 1, 0, 2, 1, 3, 0, 2, 1, 2], np.int32)
VALID = np.ones(N, bool)
VALID[9] = False
RNG = jax.random.key(5)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


FEAT = np.maximum(_data(1, N, D), 0.0) + 0.05          # post-ReLU features: cosines >= 0
W_CLS = _data(2, C, D) / 2
HEAD = {k: np.asarray(v) for k, v in
        losses.contrib.init_contrast_head(jax.random.key(3), D, hidden=H, out=OUT).items()}


# ------------------------------------------------------------------ loops written here


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / math.sqrt(float(np.dot(x, x)))


def _mined(f, y, ok, code):
  """Hardest positive / negative of every row, by loops (code: the reference's semantics)."""
  n = len(y)
  cos = [[float(np.dot(_unit(f[i]), _unit(f[j]))) for j in range(n)] for i in range(n)]
  hp, hn = [], []
  for i in range(n):
    if code:  # argmin / argmax of cos * mask over every valid column, first index wins
      pos = [(cos[i][j] if (y[j] == y[i] and j != i) else 0.0, j) for j in range(n) if ok[j]]
      neg = [(cos[i][j] if y[j] != y[i] else 0.0, j) for j in range(n) if ok[j]]
      p = min(pos, key=lambda t: (t[0], t[1]))[1]
      hp.append(i if p == 0 else p)
      hn.append(max(neg, key=lambda t: (t[0], -t[1]))[1])
    else:
      pos = [(cos[i][j], j) for j in range(n) if ok[j] and y[j] == y[i] and j != i]
      neg = [(cos[i][j], j) for j in range(n) if ok[j] and y[j] != y[i]]
      hp.append(min(pos)[1] if pos else i)
      hn.append(max(neg, key=lambda t: (t[0], -t[1]))[1] if neg else i)
  return hp, hn


def _partners(f, mixed_neg, lam):
  """The permutation partner of every row, recovered from its hard-negative mixture."""
  out = []
  for i in range(len(f)):
    err = [np.abs((1 - lam[i]) * f[i] + lam[i] * f[j] - mixed_neg[i]).max() for j in range(len(f))]
    out.append(int(np.argmin(err)))
    assert min(err) < 1e-5
  return out


def _soft(a, b, w):
  y = np.zeros(C)
  y[a] += 1 - w
  y[b] += w
  return y


def _code_key(a, b, w):
  """The reference's float32 sum_c Y_c 10^c of the soft label (1 - w) e_a + w e_b."""
  w = np.float32(w)
  y = np.zeros(C, np.float32)
  y[a] += np.float32(1) - w
  y[b] += w
  return float(np.sum(y * (10.0 ** np.arange(C)).astype(np.float32), dtype=np.float32))


def ref_core_tuning(f_orig, f_mix, y, w_cls, head, mix, ok, *, eta, temperature, focal, code):
  """Loops over rows and columns (module docstring). ``mix = (partner, lam, hp, hn, mu)`` or
  None; ``f_orig`` feeds the original rows, ``f_mix`` the mixtures (code mode detaches the
  originals: the caller holds ``f_orig`` fixed). Returns the loss (a float)."""
  f_orig, f_mix = np.asarray(f_orig, np.float64), np.asarray(f_mix, np.float64)
  n = len(y)
  rows = [(f_orig[i], y[i], y[i], 0.0, ok[i]) for i in range(n)]
  if mix is not None:
    partner, lam, hp, hn, mu = mix
    rows += [((1 - lam[i]) * f_mix[i] + lam[i] * f_mix[partner[i]], y[i], y[partner[i]],
              lam[i], ok[i]) for i in range(n)]
    rows += [(mu[i] * f_mix[hp[i]] + (1 - mu[i]) * f_mix[hn[i]], y[hn[i]], y[hp[i]], mu[i],
              ok[i]) for i in range(n)]
  r = len(rows)
  ce = 0.0
  z = []
  for x, a, b, w, good in rows:
    lg = [float(np.dot(x, w_cls[c])) for c in range(C)]
    m = max(lg)
    lse = m + math.log(sum(math.exp(t - m) for t in lg))
    if good:
      ce -= sum(_soft(a, b, w)[c] * (lg[c] - lse) for c in range(C))
    h = np.maximum(x @ head["w1"] + head["b1"], 0.0) @ head["w2"] + head["b2"]
    z.append(_unit(h))
  ce /= r
  same = lambda p, q: (_code_key(*p) == _code_key(*q)) if code else np.allclose(
      _soft(*p), _soft(*q), atol=1e-6)
  total, count = 0.0, 0
  for i in range(r):
    if not rows[i][4]:
      continue
    cand = [k for k in range(r) if k != i and rows[k][4]]
    s = {k: float(np.dot(z[i], z[k])) / temperature for k in cand}
    m = max(s.values())
    lse = m + math.log(sum(math.exp(v - m) for v in s.values()))
    pos = [k for k in cand if same(rows[i][1:4], rows[k][1:4])]
    if not pos:
      continue
    terms = [(1 - math.exp(s[k] - lse) if focal else 1.0) * (s[k] - lse) for k in pos]
    total += -sum(terms) / (r if code else len(pos))
    count += 1
  return ce + eta * total / max(count, 1)


# ------------------------------------------------------------------ mining and mixtures


@functools.lru_cache(maxsize=None)
def _pairs():
  """``core_tuning_pairs`` of FEAT in both modes (one compile, shared by the tests)."""
  both = jax.jit(lambda f: [losses.contrib.core_tuning_pairs(f, LABELS, rng=RNG, valid=VALID,
                                                     reproduce_code=code) for code in (0, 1)])
  return [tuple(np.asarray(t) for t in out) for out in both(FEAT)]


def test_pairs_mining_and_mixtures():
  for code, out in zip((False, True), _pairs()):
    mixed, a, b, w = (np.asarray(t) for t in out)
    lam, mu = w[0], w[1]
    assert np.all(lam >= 0.8 - 1e-7) and np.all(lam <= 1) and np.all((mu > 0) & (mu < 1))
    assert np.mean(lam == np.float32(0.8)) > 0.3            # the clamp: exactly 0.8
    partner = _partners(FEAT, mixed[0], lam)
    valid_rows = [i for i in range(N) if VALID[i]]
    assert sorted(partner[i] for i in valid_rows) == valid_rows    # a permutation of valid rows
    assert all(partner[i] == i for i in range(N) if not VALID[i])
    np.testing.assert_array_equal(a[0], LABELS)
    np.testing.assert_array_equal(b[0], LABELS[partner])
    hp, hn = _mined(FEAT, LABELS, VALID, code)
    expect = mu[:, None] * FEAT[hp] + (1 - mu[:, None]) * FEAT[hn]
    np.testing.assert_allclose(mixed[1], expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(b[1], LABELS[hp])
    np.testing.assert_array_equal(a[1], LABELS[hn])
    if not code:
      assert hp[7] == 7                                   # class 3 has no other member
      assert all(LABELS[hp[i]] == LABELS[i] for i in range(N))
      assert all(LABELS[hn[i]] != LABELS[i] for i in range(N))
    else:  # the quirk: the zeros of non-positives win the arg-min (or index 0 -> i)
      assert any(LABELS[hp[i]] != LABELS[i] for i in range(N))
      assert hp[0] == 0 or LABELS[hp[0]] == LABELS[0]


# ------------------------------------------------------------------ the float64 loop reference

CASES = {
    "intended": dict(eta=0.5, temperature=0.3, focal=True, mixup=True, reproduce_code=False),
    "code": dict(eta=0.5, temperature=0.3, focal=True, mixup=True, reproduce_code=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_value_and_gradient_match_the_loop_reference(case):
  kw = CASES[case]
  code, mixup = kw["reproduce_code"], kw["mixup"]

  def loss(f, w, head):
    per = losses.contrib.core_tuning(f, LABELS, w, lambda x: losses.contrib.contrast_head(head, x), rng=RNG,
                             valid=VALID, **kw)
    return jnp.mean(per), per

  (value, per), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
      FEAT, W_CLS, HEAD)
  mix = None
  if mixup:
    mixed, _, _, w = _pairs()[int(code)]
    hp, hn = _mined(FEAT, LABELS, VALID, code)
    mix = (_partners(FEAT, mixed[0], w[0]), w[0], hp, hn, w[1])
  ref = lambda f_orig, f_mix, wc, head: ref_core_tuning(
      f_orig, f_mix, LABELS, wc, head, mix, VALID, eta=kw["eta"],
      temperature=kw["temperature"], focal=kw["focal"], code=code)
  expect = ref(FEAT, FEAT, W_CLS, HEAD)
  np.testing.assert_allclose(float(value), expect, rtol=2e-5)
  assert np.all(np.asarray(per)[~VALID] == 0)
  # Gradients along random directions (finite differences of the float64 reference).
  rs = np.random.default_rng(0)
  f0 = FEAT.astype(np.float64)
  d_f = rs.normal(size=FEAT.shape)
  fd_f = fd_directional(lambda f: ref(f0 if code else f, f, W_CLS, HEAD), f0, d_f)
  np.testing.assert_allclose(np.sum(np.asarray(grads[0]) * d_f), fd_f, rtol=2e-3, atol=1e-5)
  d_w = rs.normal(size=W_CLS.shape)
  fd_w = fd_directional(lambda wc: ref(FEAT, FEAT, wc, HEAD), W_CLS, d_w)
  np.testing.assert_allclose(np.sum(np.asarray(grads[1]) * d_w), fd_w, rtol=2e-3, atol=1e-5)
  d_h = rs.normal(size=HEAD["w1"].shape)
  fd_h = fd_directional(lambda w1: ref(FEAT, FEAT, W_CLS, {**HEAD, "w1": w1}), HEAD["w1"], d_h)
  np.testing.assert_allclose(np.sum(np.asarray(grads[2]["w1"]) * d_h), fd_h, rtol=2e-3,
                             atol=1e-5)
  if code and not mixup:
    assert np.abs(np.asarray(grads[0])).max() == 0


def test_reductions_ce_supcon_and_detached_originals():
  y = np.array([0, 1, 2, 0, 1, 2, 3, 3], np.int32)          # every class twice: all have positives
  f, w = _data(4, 8, D), _data(5, C, D)

  @jax.jit
  def run(f, w):
    ce_only = losses.contrib.core_tuning(f, y, w, eta=0.0, mixup=False)
    both = losses.contrib.core_tuning(f, y, w, eta=1.0, mixup=False, focal=False, temperature=0.2)
    grad_code = jax.grad(lambda f: jnp.sum(losses.contrib.core_tuning(
        f, y, w, mixup=False, reproduce_code=True)))(f)
    return (ce_only, both, losses.contrib.softmax_cross_entropy(f @ w.T, y),
            losses.supcon(f[:, None], y, temperature=0.2), grad_code)

  ce_only, both, ce, sup, grad_code = (np.asarray(t) for t in run(f, w))
  np.testing.assert_allclose(ce_only, ce, rtol=1e-5)
  np.testing.assert_allclose(both, ce + sup, rtol=1e-5)
  assert np.abs(grad_code).max() == 0      # the reference detaches the original rows


# ------------------------------------------------------------------ 8 devices = 1 device

NB = 16
SL = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 1, 2, 3, 3, 1], np.int32)
SVALID = np.ones(NB, bool)
SVALID[[2, 11]] = False
SX = _data(10, NB, 7)
SP = _data(11, 7, D)


def test_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))

  def fn(axis_name):
    def f(params, x, y, valid):
      proj, w, head = params
      return losses.contrib.core_tuning(jax.nn.relu(x @ proj), y, w,
                                lambda h: losses.contrib.contrast_head(head, h), rng=RNG, eta=0.7,
                                temperature=0.2, valid=valid, axis_name=axis_name)
    return f

  single = fn(None)
  sharded = jax.shard_map(fn("d"), mesh=mesh, in_specs=(P(), P("d"), P("d"), P("d")),
                          out_specs=P("d"))

  def per_and_grad(f, params, *args):
    per, vjp = jax.vjp(lambda p: f(p, *args), params)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  @jax.jit
  def both(params, x, y, valid):
    return per_and_grad(single, params, x, y, valid), per_and_grad(sharded, params, x, y, valid)

  (v1, g1), (v8, g8) = both((SP, W_CLS, HEAD), SX, SL, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.abs(v1).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
  assert np.abs(np.asarray(g1[0])).max() > 0 and np.abs(np.asarray(g1[2]["w2"])).max() > 0


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_inputs():
  head = lambda x: losses.contrib.contrast_head(HEAD, x)
  fn = lambda f, t=0.07: jnp.sum(losses.contrib.core_tuning(f, LABELS, W_CLS, head, rng=RNG,
                                                    temperature=t))

  @jax.jit
  def variants(f):   # bf16; huge features, a tiny temperature and an all-zero row at once
    return fn(f), jax.value_and_grad(fn)(f.astype(jnp.bfloat16)), jax.value_and_grad(fn)(
        1e4 * f.at[2].set(0.0), 1e-3)

  ref, (low, g_low), extreme = variants(FEAT)
  np.testing.assert_allclose(low, ref, rtol=5e-2)
  assert np.asarray(g_low).dtype == jnp.bfloat16
  for value, g in [(low, g_low), extreme]:
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(g, np.float32)))


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  f = FEAT
  cases = [
      (lambda: losses.contrib.core_tuning(f[None], LABELS, W_CLS, rng=RNG),
       r"core_tuning: 'features' must have rank 2"),
      (lambda: losses.contrib.core_tuning(f.astype(np.int32), LABELS, W_CLS, rng=RNG),
       r"'features' must be a floating-point array"),
      (lambda: losses.contrib.core_tuning(f, LABELS[:3], W_CLS, rng=RNG), r"'labels' must have shape"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS[:, :2], rng=RNG),
       r"'classifier' must have shape \[num_classes, 5\]"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS[:1], rng=RNG), r"'classifier' needs at least 2"),
      (lambda: losses.contrib.core_tuning(f, LABELS + 4, W_CLS, rng=RNG), r"'labels' must be in \[0, 4\)"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS), r"mixup=True .* needs an explicit 'rng'"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS, head=3, rng=RNG), r"'head' must be a callable"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS, rng=RNG, temperature=0.0),
       r"'temperature' must be > 0"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS, rng=RNG, eta=-1.0), r"'eta' must be >= 0"),
      (lambda: losses.contrib.core_tuning(f, LABELS, W_CLS, rng=RNG, valid=VALID[:2]),
       r"'valid' must have shape"),
      (lambda: losses.contrib.core_tuning_pairs(f, LABELS, rng=RNG, lam_min=1.5),
       r"core_tuning_pairs: 'lam_min' must be in \[0.0, 1.0\]"),
      (lambda: losses.contrib.core_tuning_pairs(f, LABELS, rng=RNG, alpha=0.0), r"'alpha' must be > 0"),
      (lambda: losses.contrib.core_tuning_pairs(f, LABELS, rng=None), r"need an explicit 'rng' key"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


# ------------------------------------------------------------------ trainer adapter and init


def test_objective_config_and_fine_tuning_start(tmp_path):
  from jaxcl.train import ConfigError, objectives
  from jaxcl.train import checkpoint as ckpt
  from jaxcl.train.config import validate
  from jaxcl.train.step import TrainState, build_model
  with pytest.raises(ValueError, match="core_tuning: 'num_classes' must be an int >= 2"):
    objectives.make_objective("core_tuning", {"eta": 0.1}, 2)
  obj = objectives.make_objective("core_tuning", {"num_classes": C, "contrast_dim": OUT,
                                                  "temperature": 0.2, "mixup": False}, 2)
  params = obj.init(jax.random.key(0), D)
  assert params["classifier"].shape == (C, D) and params["head"]["w2"].shape == (D, OUT)
  z = jnp.stack([jnp.asarray(FEAT), jnp.asarray(FEAT) * 1.1], axis=1)  # [N, 2, D]
  per = jax.jit(lambda p, z: obj.apply(p, z, jnp.asarray(LABELS), RNG, None))(params, z)
  assert per.shape == (N,) and np.all(np.isfinite(np.asarray(per)))
  from configs.core_tuning_digits import get_config
  c = get_config()
  c.loss.kwargs.head = 1.0
  with pytest.raises(ConfigError, match="unknown key 'config.loss.kwargs.head'"):
    validate(c, num_devices=8, num_processes=1)
  c = get_config()
  c.init.modules = ()
  with pytest.raises(ConfigError, match="config.init.modules must be a non-empty tuple"):
    validate(c, num_devices=8, num_processes=1)
  # head_layers = 0: no projection head, z = h.
  c = get_config()
  model = build_model(c.model)
  v = model.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)))
  h, z = model.apply(v, jnp.ones((2, 8, 8, 1)))
  assert set(v["params"]) == {"encoder"} and np.array_equal(h, z)
  # config.init: the encoder comes from a checkpoint, everything else stays fresh.
  with pytest.raises(FileNotFoundError, match="has no checkpoints directory"):
    ckpt.restore_modules(str(tmp_path / "none"), None, ("encoder",))

  class It:
    def get_state(self):
      return {"pos": 0}

  src = TrainState({"encoder": {"w": jnp.full((3, 2), 7.0)}, "head": {"w": jnp.ones(4)}}, {},
                   {}, jnp.zeros((), jnp.int32), jnp.zeros((2,), jnp.uint32))
  mngr = ckpt.manager(str(tmp_path / "pre" / "checkpoints"), use_async=False)
  ckpt.save(mngr, 5, src, It())
  mngr.wait_until_finished()
  mngr.close()
  fresh = TrainState({"encoder": {"w": jnp.zeros((3, 2))}}, {}, {}, jnp.zeros((), jnp.int32),
                     jnp.zeros((2,), jnp.uint32), objective_params={"w": jnp.ones(2)})
  out = ckpt.restore_modules(str(tmp_path / "pre"), fresh, ("encoder",))
  np.testing.assert_array_equal(out.params["encoder"]["w"], np.full((3, 2), 7.0))
  assert set(out.params) == {"encoder"} and int(out.step) == 0
  np.testing.assert_array_equal(out.objective_params["w"], np.ones(2))
  bad = fresh.replace(params={"encoder": {"w": jnp.zeros((2, 2))}})
  with pytest.raises(ValueError, match="params of module 'encoder' .* do not match"):
    ckpt.restore_modules(str(tmp_path / "pre"), bad, ("encoder",))
