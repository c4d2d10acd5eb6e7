"""DAT (jaxcl.losses.contrib.dat_loss, jaxcl.pgd, the ``dat_loss`` objective; arXiv 2510.13872):
float64 loop references for the loss (value and gradient) and for the PGD steps (normalised
gradient, eps-ball and box projection), the samples' stop-gradient, OOD starts, the AUC, the
T curriculum, 8 devices = 1 device for the whole objective (value, gradient, new state), bf16
and extreme logits, argument errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses, pgd
from tests.reference import fd_coords, fd_directional

B, C = 6, 4
LABELS = np.array([0, 1, 3, 2, 1, 0], np.int32)
VALID = np.array([1, 1, 1, 0, 1, 1], bool)


def _data(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ------------------------------------------------------------------ the loss: loop reference


def _lse(v):
  m = max(v)
  return m + math.log(sum(math.exp(t - m) for t in v))


def _softplus(t):
  return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


def ref_dat(real, fake, adv, y, bce_weight=1.0, clf_weight=1.0, valid=None):
  """Per row: w_b (softplus(-LSE real_i) + softplus(LSE fake_i)) / 2 + w_c CE(adv_i, y_i)."""
  out = np.zeros(len(adv))
  for i in range(len(adv)):
    if valid is not None and not valid[i]:
      continue
    a = [float(t) for t in adv[i]]
    out[i] = clf_weight * (_lse(a) - a[y[i]])
    if real is not None:
      out[i] += bce_weight * 0.5 * (_softplus(-_lse([float(t) for t in real[i]]))
                                    + _softplus(_lse([float(t) for t in fake[i]])))
  return out


@pytest.mark.parametrize("kw", [dict(), dict(bce_weight=0.5, clf_weight=2.0, valid=VALID),
                                dict(ebm=False)])
def test_loss_value_and_gradient_match_the_loop_reference(kw):
  kw = dict(kw)
  ebm = kw.pop("ebm", True)
  inputs = [_data(0, B, C, scale=2.0), _data(1, B, C, scale=2.0), _data(2, B, C, scale=2.0)]
  if not ebm:
    inputs = inputs[2:]
  lib = (lambda r, f, a: losses.contrib.dat_loss(r, f, a, LABELS, **kw)) if ebm else (
      lambda a: losses.contrib.dat_loss(None, None, a, LABELS, **kw))
  ref = (lambda r, f, a: ref_dat(r, f, a, LABELS, **kw)) if ebm else (
      lambda a: ref_dat(None, None, a, LABELS, **kw))
  want = ref(*inputs)
  w = np.random.default_rng(9).uniform(0.5, 1.5, size=B)
  idx = tuple(range(len(inputs)))
  value, grads = jax.jit(lambda *xs: (lib(*xs), jax.grad(
      lambda *xs: jnp.sum(w * lib(*xs)), argnums=idx)(*xs)))(*inputs)
  assert np.asarray(value).dtype == np.float32
  np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
  rng = np.random.default_rng(3)
  for n, x in enumerate(inputs):
    scalar = lambda xn, n=n: float(np.dot(w, ref(*[xn if m == n else z
                                                   for m, z in enumerate(inputs)])))
    got = np.asarray(grads[n], np.float64)
    coords = [(i, int(rng.integers(C))) for i in range(B)]
    fd = fd_coords(scalar, x, coords)
    np.testing.assert_allclose([got[c] for c in coords], fd, rtol=1e-4, atol=1e-5)
    d = rng.normal(size=x.shape)
    np.testing.assert_allclose(np.sum(got * d), fd_directional(scalar, x, d), rtol=1e-4,
                               atol=1e-5)
  if "valid" in kw:
    assert want[3] == 0 and np.all(np.asarray(grads[0])[3] == 0)


def test_bf16_and_extreme_logits():
  r, f, a = _data(4, B, C), _data(5, B, C), _data(6, B, C)
  fn = lambda r, f, a: losses.contrib.dat_loss(r, f, a, LABELS)
  grad = jax.grad(lambda *x: jnp.sum(fn(*x)), argnums=(0, 1, 2))
  ref, low, big, g_big = jax.jit(lambda r, f, a: (
      fn(r, f, a), fn(*(t.astype(jnp.bfloat16) for t in (r, f, a))), fn(1e4 * r, 1e4 * f,
                                                                         1e4 * a),
      grad(1e4 * r, 1e4 * f, 1e4 * a)))(r, f, a)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=3e-2, atol=3e-2)
  assert np.all(np.isfinite(np.asarray(big)))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in g_big)


# ------------------------------------------------------------------ PGD: loop reference

DIN, H = 5, 3
W1, W2 = _data(7, DIN, H), _data(8, H, C)
X = np.random.default_rng(10).uniform(0.05, 0.95, size=(B, DIN)).astype(np.float32)


def _logits64(x):
  return np.tanh(x @ W1.astype(np.float64)) @ W2.astype(np.float64)


def _grad64(x, y, kind):
  """d/dx of CE(f(x), y) (``ce``) or of f_y(x) (``logit``), row by row, float64."""
  h = np.tanh(x @ W1.astype(np.float64))
  lg = h @ W2.astype(np.float64)
  if kind == "ce":
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dl = p - np.eye(C)[y]
  else:
    dl = np.eye(C)[y]
  return ((dl @ W2.T.astype(np.float64)) * (1 - h * h)) @ W1.T.astype(np.float64)


def ref_pgd(x, y, kind, steps, step_size, eps, box=(0.0, 1.0)):
  x0 = np.asarray(x, np.float64)
  x = x0.copy()
  for _ in range(steps):
    g = _grad64(x, y, kind)
    for i in range(len(x)):
      x[i] = x[i] + step_size * g[i] / (math.sqrt(float(g[i] @ g[i])) + 1e-10)
      d = x[i] - x0[i]
      n = math.sqrt(float(d @ d))
      if n > eps:
        x[i] = x0[i] + d * (eps / n)
      x[i] = np.clip(x[i], box[0], box[1])
  return x


def test_pgd_steps_follow_the_normalised_gradient_and_respect_the_projection():
  f = lambda x: jnp.tanh(x @ W1) @ W2
  one, attack, sample, traced = jax.jit(lambda x: (
      pgd.attack_ce(f, x, LABELS, steps=1, step_size=0.05, eps=10.0),
      pgd.attack_ce(f, x, LABELS, steps=6, step_size=0.3, eps=0.5),
      pgd.sample_class_conditional(f, x, LABELS, steps=8, step_size=0.4),
      jax.jit(lambda x, t: pgd.attack_ce(f, x, LABELS, steps=t, step_size=0.3, eps=0.5))(
          x, jnp.int32(6))))(X)
  # One step inside the ball and the box: exactly the normalised gradient direction.
  g = _grad64(X.astype(np.float64), LABELS, "ce")
  step = np.asarray(one, np.float64) - X
  np.testing.assert_allclose(step, 0.05 * g / np.linalg.norm(g, axis=1, keepdims=True),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(attack, ref_pgd(X, LABELS, "ce", 6, 0.3, 0.5), atol=2e-5)
  np.testing.assert_allclose(traced, attack, atol=1e-6)    # traced T = static T
  assert np.all(np.linalg.norm(np.asarray(attack, np.float64) - X, axis=1) <= 0.5 + 1e-5)
  np.testing.assert_allclose(sample, ref_pgd(X, LABELS, "logit", 8, 0.4, math.inf), atol=2e-5)
  s = np.asarray(sample)
  assert s.min() >= 0.0 and s.max() <= 1.0 and np.any(s == 1.0)     # the box binds
  assert np.linalg.norm(s - X, axis=1).max() > 0.5                  # no ball when eps = inf
  # The attack raises the CE of every row, the sampler the class logit.
  ce = lambda x: np.array([_lse(list(r)) - r[t] for r, t in zip(_logits64(x), LABELS)])
  assert np.all(ce(np.asarray(attack, np.float64)) > ce(X.astype(np.float64)))
  pick = lambda x: _logits64(x)[np.arange(B), LABELS]
  assert np.all(pick(s.astype(np.float64)) > pick(X.astype(np.float64)))


def test_no_gradient_flows_through_the_samples():
  # d/dW sum f_y(sample(W); W) = the partial derivative with the sample held fixed.
  def total(w2, fixed=None):
    f = lambda x: jnp.tanh(x @ W1) @ w2
    s = pgd.sample_class_conditional(f, X, LABELS, steps=3, step_size=0.2) if fixed is None \
        else fixed
    return jnp.sum(jax.nn.logsumexp(f(s), -1)), s

  (_, s), g = jax.jit(jax.value_and_grad(total, has_aux=True))(W2)
  g_fixed = jax.jit(jax.grad(lambda w: total(w, s)[0]))(W2)
  np.testing.assert_allclose(g, g_fixed, rtol=1e-6, atol=1e-7)


def test_ood_starts_and_auc():
  x = np.random.default_rng(11).uniform(size=(8, 4, 2)).astype(np.float32)
  idx = np.arange(8, dtype=np.int32)
  key = jax.random.key(0)
  u, sh, u_half, sh2 = jax.jit(lambda x: (
      pgd.ood_starts(key, x, idx), pgd.ood_starts(key, x, idx, "shuffle"),
      pgd.ood_starts(key, x[4:], idx[4:]), pgd.ood_starts(jax.random.key(1), x, idx,
                                                          "shuffle")))(x)
  u, sh = np.asarray(u), np.asarray(sh)
  assert u.shape == x.shape and u.min() >= 0 and u.max() <= 1 and u.std() > 0.2
  np.testing.assert_array_equal(u_half, u[4:])      # a row's draw depends on its index only
  for a, b in zip(sh.reshape(8, -1), x.reshape(8, -1)):
    np.testing.assert_array_equal(np.sort(a), np.sort(b))
  assert np.any(sh != x) and np.any(np.asarray(sh2) != sh)
  pos, neg = np.array([0.3, 0.9, 0.5, 0.5]), np.array([0.5, 0.1, 0.7])
  want = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
  np.testing.assert_allclose(jax.jit(pgd.auc)(pos, neg), want, rtol=1e-6)


# ------------------------------------------------------------------ the objective


def _objective(**over):
  from jaxcl.train.objectives import make_objective
  kw = {"num_classes": C, "stage1_steps": 1, "sample_steps_start": 1, "sample_steps_max": 3,
        "sample_step_size": 0.3, "auc_threshold": 0.6, "auc_window": 2, "adv_steps": 2,
        "adv_step_size": 0.2, "adv_eps": 0.4, **over}
  return make_objective("dat_loss", kw, 2)


def _apply(obj, params, x, y, state, rng, axis_name):
  w1, w2 = params
  encode = lambda v, train=False: (v, jnp.tanh(v @ w1) @ w2)
  z = jnp.stack([encode(x)[1]] * 2, axis=1)
  return obj.apply({}, z, y, rng, axis_name, state=state, inputs=(x, x), encode=encode)


def ref_curriculum(aucs, start, window, threshold, t_max):
  """T after each batch: a deque of the last ``window`` AUCs, emptied when T moves."""
  t, dq, out = start, [], []
  for a in aucs:
    dq = (dq + [a])[-window:]
    if len(dq) == window and sum(dq) / window >= threshold and t < t_max:
      t, dq = t + 1, []
    out.append(t)
  return out


def test_curriculum_follows_the_window_rule():
  aucs = [0.9, 0.7, 0.9, 0.9, 0.95, 0.6, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.5]
  update = jax.jit(lambda s, a: losses.dat.curriculum_update(s, a, threshold=0.8,
                                                              max_steps=4))
  state, got = losses.dat.curriculum_init(1, 3), []
  for a in aucs:
    state = update(state, jnp.float32(a))
    got.append(int(state["T"]))
  assert got == ref_curriculum(aucs, 1, 3, 0.8, 4) and got[-1] == 4


def test_objective_stage1_is_pgd_at_then_the_curriculum_runs():
  obj = _objective(auc_threshold=0.0)     # every full window moves T
  state = obj.init_state(C)
  step = jax.jit(lambda s, k: _apply(obj, (W1, W2), X, LABELS, s, k, None))
  seen = []
  for i in range(5):
    per, state = step(state, jax.random.key(i))
    seen.append((int(state["steps"]), int(state["T"]), int(state["count"])))
    assert np.all(np.isfinite(np.asarray(per)))
  # Step 1 is stage 1 (nothing recorded), then T moves every auc_window = 2 batches, up to 3.
  assert seen == [(1, 1, 0), (2, 1, 1), (3, 2, 0), (4, 2, 1), (5, 3, 0)]
  with pytest.raises(ValueError, match=r"head_out = 7\) must equal num_classes \(4\)"):
    obj.init(jax.random.key(0), 7)
  assert obj.init(jax.random.key(0), C) == {}


NB = 16


def test_sharded_objective_equals_single_device():
  obj = _objective(stage1_steps=0, sample_steps_start=2, sample_init="shuffle")
  x = np.random.default_rng(12).uniform(size=(NB, DIN)).astype(np.float32)
  y = (np.arange(NB) % C).astype(np.int32)
  state = obj.init_state(C)
  rng = jax.random.key(5)
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  single = lambda p, x, y: _apply(obj, p, x, y, state, rng, None)
  sharded = jax.shard_map(lambda p, x, y: _apply(obj, p, x, y, state, rng, "d"), mesh=mesh,
                          in_specs=(P(), P("d"), P("d")), out_specs=(P("d"), P()))

  def value_grad(f, p):
    per, vjp, new = jax.vjp(lambda p: f(p, x, y), p, has_aux=True)
    return per, new, vjp(jnp.full(per.shape, 1.0 / NB))[0]

  (v1, s1, g1), (v8, s8, g8) = jax.jit(lambda p: (value_grad(single, p),
                                                  value_grad(sharded, p)))((W1, W2))
  assert np.abs(np.asarray(v1)).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(s8), jax.tree.leaves(s1)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  for a, b in zip(g8, g1):
    assert np.abs(np.asarray(b)).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(np.asarray(b)).max())


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  r = _data(13, B, C)
  f = lambda x: x @ np.ones((DIN, C), np.float32)
  cases = [
      (lambda: losses.contrib.dat_loss(r, r, r[:, 0], LABELS), r"dat_loss: 'adv_logits' must have rank 2"),
      (lambda: losses.contrib.dat_loss(r, None, r, LABELS), r"'real_logits' and 'sample_logits' must both"),
      (lambda: losses.contrib.dat_loss(r[:3], r, r, LABELS), r"'real_logits' and 'adv_logits' must have "
                                                     r"the same shape"),
      (lambda: losses.contrib.dat_loss(r, r.astype(np.int32), r, LABELS),
       r"'sample_logits' must be a floating-point array"),
      (lambda: losses.contrib.dat_loss(r, r, r, LABELS[:2]), r"'labels' must have shape \(6,\)"),
      (lambda: losses.contrib.dat_loss(r, r, r, LABELS, bce_weight=-1.0), r"'bce_weight' must be >= 0"),
      (lambda: pgd.attack_ce(f, X, LABELS, steps=-1, step_size=0.1, eps=1.0),
       r"attack_ce|l2_pgd: 'steps' must be >= 0"),
      (lambda: pgd.attack_ce(f, X, LABELS, steps=1, step_size=0.1, eps=0.0),
       r"l2_pgd: 'eps' must be > 0"),
      (lambda: pgd.sample_class_conditional(f, X, LABELS[:2], steps=1, step_size=0.1),
       r"sample_class_conditional: 'labels' must be integers of shape \(6,\)"),
      (lambda: pgd.ood_starts(jax.random.key(0), X, np.arange(B), "gaussian"),
       r"ood_starts: 'kind' must be one of"),
      (lambda: pgd.ood_starts(None, X, np.arange(B)), r"needs an explicit 'rng' key"),
      (lambda: _objective(num_classes=None), r"dat: 'num_classes' must be an int >= 2"),
      (lambda: _objective(sample_init="noise"), r"dat: 'sample_init' must be one of"),
      (lambda: _objective(sample_steps_start=5), r"'sample_steps_start' \(5\) > "
                                                 r"'sample_steps_max' \(3\)"),
      (lambda: _objective(auc_window=0), r"dat: 'auc_window' must be an int >= 1"),
      (lambda: _objective(adv_eps=0.0), r"dat: 'adv_eps' must be > 0"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


def test_recipe_validates_and_rejects_unknown_kwargs():
  from configs.dat_digits import get_config
  from jaxcl.train import ConfigError
  from jaxcl.train.config import make_objective, validate
  c = get_config()
  assert validate(c, num_devices=8, num_processes=1).name == "digits"
  assert make_objective(c).takes_encoder
  c.loss.kwargs.temperature = 0.1
  with pytest.raises(ConfigError, match="unknown key 'config.loss.kwargs.temperature'"):
    validate(c, num_devices=8, num_processes=1)
