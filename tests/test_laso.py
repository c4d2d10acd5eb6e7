"""LaSO (jaxcl.losses.laso, arXiv 1902.09811): a float64 reference written here (the op
networks and every term, pair by pair), gradients by finite differences (features, op
networks, classifier with and without the stop-gradient), pairings, the analytic residual path,
8 devices = 1 device (value and gradient, permutation pairing with padding), bf16 and extreme
inputs, argument errors, the ``multilabel_protos`` data, the config checks and the trainer
adapter for 3 steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import fd_coords, fd_directional

B, D, C = 4, 3, 3
LABELS = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], np.int32)
PARTNERS = np.array([2, 3, 0, 2], np.int32)            # row 3 shares row 0's partner
ALL = np.ones(B, bool)
WEIGHTS = {"real": 0.7, "fake": 1.1, "reconstruction": 0.9, "subtract": 1.3, "union": 0.8,
           "intersect": 1.2, "tautology_class": 0.6, "symmetric_class": 1.4,
           "tautology_mse": 0.5, "symmetric_mse": 1.5}


def _features(seed, *shape):  # strictly positive, away from the kinks of min / relu
  return np.random.default_rng(seed).uniform(0.2, 2.0, size=shape).astype(np.float32)


def _params(seed=0, dim=D, labels=C, layers=1):
  p = losses.contrib.init_laso(jax.random.key(seed), dim, labels, layers=layers)
  # Non-trivial LayerNorm parameters, so their use is checked too.
  rng = np.random.default_rng(seed + 100)
  return jax.tree.map(lambda x: np.asarray(x) + 0.1 * rng.normal(size=x.shape).astype(
      np.float32), jax.device_get(p))


# ------------------------------------------------------------------ the float64 reference


def _ref_net(p, op, a, b):
  """One op network on one pair of rows, float64 (methods.md section 28)."""
  f64 = lambda x: np.asarray(x, np.float64)

  def ln(x, q):
    mu = sum(x) / len(x)
    var = sum((t - mu) ** 2 for t in x) / len(x)
    return [(t - mu) / math.sqrt(var + 1e-5) * f64(q["scale"])[k] + f64(q["bias"])[k]
            for k, t in enumerate(x)]

  def dense(x, q):
    w, c = f64(q["kernel"]), f64(q["bias"])
    return [sum(x[i] * w[i, o] for i in range(len(x))) + c[o] for o in range(w.shape[1])]

  leaky = lambda x: [t if t > 0 else 0.2 * t for t in x]
  res = {"subtract": [max(s - t, 0.0) for s, t in zip(a, b)],
         "intersect": [min(s, t) for s, t in zip(a, b)],
         "union": [s + t for s, t in zip(a, b)]}[op]
  h = leaky(ln(dense(list(a) + list(b), p["input"]), p["input_norm"]))
  for layer in p["residual"]:
    h = leaky([s + t for s, t in zip(ln(dense(h, layer["dense"]), layer["norm"]), res)])
  return np.array([max(t, 0.0) for t in dense(h, p["output"])])


def _ref_ml(cls, x, t):
  w, c = np.asarray(cls["w"], np.float64), np.asarray(cls["b"], np.float64)
  s = w @ x + c
  return sum(math.log1p(math.exp(-abs(v))) + max(v, 0.0) - tc * v for v, tc in zip(s, t)) / len(s)


def _mse(x, y):
  return float(np.mean((np.asarray(x) - np.asarray(y)) ** 2))


def ref_laso(params, x, y, partners, weights=None, valid=None):
  """The LaSO objective of every row's pair ``(x_i, x_partners[i])``, written term by term."""
  w = {**losses.laso.WEIGHTS, **(weights or {})}
  x = np.asarray(x, np.float64)
  ok = np.ones(len(x), bool) if valid is None else np.asarray(valid, bool)
  S = lambda s, t: _ref_net(params["subtract"], "subtract", s, t)
  I = lambda s, t: _ref_net(params["intersect"], "intersect", s, t)
  U = lambda s, t: _ref_net(params["union"], "union", s, t)
  out = np.zeros(len(x))
  for i in range(len(x)):
    j = int(partners[i])
    if not (ok[i] and ok[j]):
      continue
    a, b = x[i], x[j]
    A, Bs = [bool(v) for v in y[i]], [bool(v) for v in y[j]]
    t_i = [p and q for p, q in zip(A, Bs)]
    t_u = [p or q for p, q in zip(A, Bs)]
    t_as = [p and not q for p, q in zip(A, Bs)]
    t_bs = [q and not p for p, q in zip(A, Bs)]
    l = lambda f, t: _ref_ml(params["classifier"], f, t)
    aSb, bSa, aIb, bIa, aUb, bUa = S(a, b), S(b, a), I(a, b), I(b, a), U(a, b), U(b, a)
    aSbIa, bSaIb, aSaIb, bSbIa = S(a, bIa), S(b, aIb), S(a, aIb), S(b, bIa)
    fake_a, fake_b = U(aSbIa, aIb), U(bSaIb, bIa)
    terms = [
        (w["real"], l(a, A)), (w["real"], l(b, Bs)),
        (w["fake"], l(fake_a, A)), (w["fake"], l(fake_b, Bs)),
        (w["reconstruction"], _mse(a, fake_a)), (w["reconstruction"], _mse(b, fake_b)),
        (w["subtract"], l(aSb, t_as)), (w["subtract"], l(bSa, t_bs)),
        (w["union"], l(aUb, t_u)), (w["intersect"], l(aIb, t_i)),
        (w["union"] * w["symmetric_class"], l(bUa, t_u)),
        (w["intersect"] * w["symmetric_class"], l(bIa, t_i)),
        (w["symmetric_mse"], _mse(aUb, bUa)), (w["symmetric_mse"], _mse(aIb, bIa)),
    ]
    tc = w["tautology_class"]
    for f, t, op in [(S(aSb, b), t_as, "subtract"), (S(bSa, a), t_bs, "subtract"),
                     (aSaIb, t_as, "subtract"), (bSaIb, t_bs, "subtract"),
                     (bSbIa, t_bs, "subtract"), (aSbIa, t_as, "subtract"),
                     (U(aUb, b), t_u, "union"), (U(bUa, a), t_u, "union"),
                     (I(aIb, b), t_i, "intersect"), (I(bIa, a), t_i, "intersect")]:
      terms.append((w[op] * tc, l(f, t)))
    for base, other in [(aSb, S(aSb, b)), (aSb, aSaIb), (aSb, aSbIa),
                        (bSa, S(bSa, a)), (bSa, bSaIb), (bSa, bSbIa)]:
      terms.append((w["tautology_mse"], _mse(base, other)))
    out[i] = sum(c * v for c, v in terms)
  return out


# ------------------------------------------------------------------ value and gradients


@jax.jit
def _values_and_grads(params, x, rw, partners, valid):
  """Per-row values, d/d(params, x) of sum(rw * L) and, with the classifier detached, the
  classifier's gradient: one compiled graph, shared by every test of this shape."""
  lib = lambda p, x, detach: losses.contrib.laso_loss(p, x, LABELS, partners=partners, weights=WEIGHTS,
                                              detach_classifier=detach, valid=valid)
  values, vjp = jax.vjp(lambda p, x: lib(p, x, False), params, x)
  g_det = jax.grad(lambda cls: jnp.sum(rw * lib({**params, "classifier": cls}, x, True)))(
      params["classifier"])
  return values, vjp(jnp.asarray(rw, jnp.float32)), g_det


def test_values_and_gradients_match_the_reference():
  x, params = _features(0, B, D), _params(0)
  rw = np.random.default_rng(99).uniform(0.5, 1.5, size=B).astype(np.float32)
  values, (gp, gx), g_det = _values_and_grads(params, x, rw, PARTNERS, ALL)
  want = ref_laso(params, x, LABELS, PARTNERS, WEIGHTS)
  assert np.asarray(values).dtype == np.float32
  np.testing.assert_allclose(values, want, rtol=2e-5, atol=1e-6)

  rng = np.random.default_rng(5)
  tol = lambda fd: dict(rtol=3e-4, atol=3e-4 * max(1e-3, np.abs(fd).max()))
  scalar_x = lambda xn: float(rw @ ref_laso(params, xn, LABELS, PARTNERS, WEIGHTS))
  coords = [(i, int(rng.integers(D))) for i in range(B)]
  np.testing.assert_allclose([np.asarray(gx)[c] for c in coords],
                             fd_coords(scalar_x, x, coords), **tol(np.asarray(gx)))
  direction = rng.normal(size=x.shape)
  fd = fd_directional(scalar_x, x, direction)
  np.testing.assert_allclose(np.sum(np.asarray(gx) * direction), fd, **tol(fd))
  # Op networks and classifier: directional derivatives per parameter array.
  only_real = {k: (v if k == "real" else 0.0) for k, v in WEIGHTS.items()}
  for path in (("union", "input", "kernel"), ("intersect", "residual", 0, "norm", "scale"),
               ("subtract", "output", "bias"), ("classifier", "w"), ("classifier", "b")):
    get = lambda t: _get(t, path)
    direction = rng.normal(size=get(params).shape)

    def scalar(eps_dir, weights=WEIGHTS):
      p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
      _set(p, path, np.asarray(get(params), np.float64) + eps_dir)
      return float(rw @ ref_laso(p, x, LABELS, PARTNERS, weights))
    fd = fd_directional(scalar, np.zeros(direction.shape), direction)
    np.testing.assert_allclose(np.sum(np.asarray(get(gp)) * direction), fd, **tol(fd))
    if path[0] == "classifier":  # detached: only the real-feature term trains the classifier
      fd = fd_directional(lambda e: scalar(e, only_real), np.zeros(direction.shape), direction)
      np.testing.assert_allclose(np.sum(np.asarray(g_det[path[1]]) * direction), fd, **tol(fd))


def test_extreme_and_bf16_inputs():
  x, params = _features(12, B, D), _params(3)
  rw = np.ones(B, np.float32)
  for scaled in (1e4 * x, np.zeros_like(x), 1e-6 * x):     # the same compiled graph
    values, grads, g_det = _values_and_grads(params, scaled, rw, PARTNERS, ALL)
    assert np.all(np.isfinite(np.asarray(values)))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves((grads, g_det)))
  # bf16 rows are computed in float32 (laso_loss casts its features the same way first).
  a, b = x[:2], x[2:]
  low = losses.contrib.laso_op(params, "union", jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
  assert np.asarray(low).dtype == np.float32
  want = np.stack([_ref_net(params["union"], "union", s, t) for s, t in zip(a, b)])
  np.testing.assert_allclose(low, want, rtol=3e-2, atol=3e-2)


def _get(t, path):
  for k in path:
    t = t[k]
  return t


def _set(t, path, value):
  for k in path[:-1]:
    t = t[k]
  t[path[-1]] = value


def test_the_analytic_operation_is_the_residual_path():
  # Input, residual dense and output layers zero, W_out = I, no norm: h0 = 0, h = leaky(r) = r
  # (r >= 0 for these features), out = relu(r) = r: the network is exactly its residual.
  p = jax.tree.map(np.zeros_like, jax.device_get(losses.contrib.init_laso(jax.random.key(0), D, C)))
  for op in losses.laso.OPS:
    p[op]["output"]["kernel"] = np.eye(D, dtype=np.float32)
  a, b = _features(1, 5, D), _features(2, 5, D)
  a[0, 0] = b[0, 0]                                     # a tie
  for op, want in (("intersect", np.minimum(a, b)), ("union", a + b),
                   ("subtract", np.maximum(a - b, 0))):
    np.testing.assert_allclose(losses.contrib.laso_op(p, op, a, b, norm="none"), want, rtol=1e-6)
    np.testing.assert_allclose(losses.contrib.analytic_op(op, a, b), want, rtol=1e-6)


def test_pairings():
  valid = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)
  half = np.asarray(losses.contrib.laso_partners(8))
  np.testing.assert_array_equal(half, [4, 5, 6, 7, 0, 1, 2, 3])
  draws = [np.asarray(losses.contrib.laso_partners(8, "permutation", rng=jax.random.key(k),
                                           valid=valid)) for k in range(4)]
  for d in draws:
    assert sorted(d[valid]) == sorted(np.flatnonzero(valid))  # a permutation of valid rows
    np.testing.assert_array_equal(d[~valid], np.flatnonzero(~valid))
  assert len({tuple(d) for d in draws}) > 1
  # Pairing "half" (row i with row i + B/2): a padded row has value 0, and so has the row
  # paired with it.
  x, params = _features(3, B, D), _params(1)
  pad = np.array([1, 1, 0, 1], bool)
  half = np.asarray(losses.contrib.laso_partners(B))
  out = np.asarray(_values_and_grads(params, x, np.ones(B, np.float32), half, pad)[0])
  want = ref_laso(params, x, LABELS, (np.arange(B) + B // 2) % B, WEIGHTS, valid=pad)
  assert out[2] == 0 and out[0] == 0 and out[1] > 0 and out[3] > 0
  np.testing.assert_allclose(out, want, rtol=2e-5)


# ------------------------------------------------------------------ 8 devices = 1 device

NB = 16


def test_sharded_equals_single_device():
  # 8 devices vs the float64 reference of the whole batch (which the single-device call equals,
  # test_values_and_gradients_match_the_reference): values and gradients, permutation pairing
  # across devices, padding.
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(10)
  x = _features(11, NB, D)
  y = (rng.uniform(size=(NB, C)) < 0.5).astype(np.int32)
  valid = np.ones(NB, bool)
  valid[[3, 12]] = False
  key = jax.random.key(7)
  params = _params(2)
  rw = rng.uniform(0.5, 1.5, size=NB).astype(np.float32)
  sharded = jax.shard_map(
      lambda p, x, y, valid: losses.contrib.laso_loss(p, x, y, pairing="permutation", rng=key,
                                              valid=valid, axis_name="d"),
      mesh=mesh, in_specs=(P(), P("d"), P("d"), P("d")), out_specs=P("d"))

  @jax.jit
  def run(p, x):
    per, vjp = jax.vjp(lambda p, x: sharded(p, x, y, valid), p, x)
    return per, vjp(jnp.asarray(rw))

  v8, (gp, gx) = run(params, x)
  partners = np.asarray(losses.contrib.laso_partners(NB, "permutation", rng=key, valid=valid))
  assert np.any(partners // 2 != np.arange(NB) // 2)       # partners on other devices
  want = ref_laso(params, x, y, partners, valid=valid)
  assert np.all(want[~valid] == 0) and np.all(want[valid] > 0)
  np.testing.assert_allclose(v8, want, rtol=2e-5, atol=1e-6)
  tol = lambda fd: dict(rtol=3e-4, atol=3e-4 * max(1e-3, abs(fd)))
  direction = rng.normal(size=x.shape)
  fd = fd_directional(lambda xn: float(rw @ ref_laso(params, xn, y, partners, valid=valid)),
                      x, direction)
  np.testing.assert_allclose(np.sum(np.asarray(gx) * direction), fd, **tol(fd))
  for path in (("union", "residual", 0, "dense", "kernel"), ("classifier", "w")):
    d = rng.normal(size=_get(params, path).shape)

    # detach_classifier (default): the classifier's gradient is the real-feature term's.
    w = {k: float(k == "real") for k in WEIGHTS} if path[0] == "classifier" else None

    def scalar(e, w=w):
      p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
      _set(p, path, np.asarray(_get(params, path), np.float64) + e)
      return float(rw @ ref_laso(p, x, y, partners, w, valid=valid))
    fd = fd_directional(scalar, np.zeros(d.shape), d)
    np.testing.assert_allclose(np.sum(np.asarray(_get(gp, path)) * d), fd, **tol(fd))


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  x, params = _features(13, B, D), _params(4)
  cases = [
      (lambda: losses.contrib.laso_loss(params, x[0], LABELS), r"laso_loss: 'features' must have rank 2"),
      (lambda: losses.contrib.laso_loss(params, x.astype(np.int32), LABELS),
       r"'features' must be a floating-point array"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS[:, 0]), r"'labels' must be multi-hot label sets"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS.astype(np.float32)),
       r"'labels' must be integer or bool"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS[:, :2]),
       r"'labels' has 2 labels per row but the classifier in 'params' has 3"),
      (lambda: losses.contrib.laso_loss(params, x[:, :2], LABELS),
       r"'params' were built for features of width 3, got width 2"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS, pairing="random"), r"'pairing' must be one of"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS, pairing="permutation"),
       r"needs an explicit 'rng' key"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS, partners=PARTNERS[:2]),
       r"'partners' must be int global row indices of shape \(4,\)"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS, weights={"recon": 1.0}),
       r"unknown 'weights' key\(s\) \['recon'\]"),
      (lambda: losses.contrib.laso_loss(params, x, LABELS, valid=np.ones(2, bool)),
       r"'valid' must have shape"),
      (lambda: losses.contrib.laso_loss({"union": params["union"]}, x, LABELS), r"'params' lacks"),
      (lambda: losses.contrib.laso_op(params, "xor", x, x), r"laso_op: 'op' must be one of"),
      (lambda: losses.contrib.laso_op(params, "union", x, x[:2]), r"'a' and 'b' must have the same shape"),
      (lambda: losses.contrib.laso_op(params, "union", x, x, norm="batch"), r"'norm' must be one of"),
      (lambda: losses.contrib.analytic_op("xor", x, x), r"analytic_op: 'op' must be one of"),
      (lambda: losses.contrib.init_laso(jax.random.key(0), 0, 3), r"init_laso: 'dim' must be an int >= 1"),
      (lambda: losses.contrib.init_laso(jax.random.key(0), 3, 3, layers=-1), r"'layers' must be an int"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


# ------------------------------------------------------------------ data, config, trainer


def test_multilabel_protos_data():
  from jaxcl import data
  from jaxcl.data import embedded
  meta = data.info("multilabel_protos")
  assert meta.multi_label and meta.num_classes == 20 and meta.shape == (64,)
  gen = embedded.generate("multilabel_protos")
  for split, n in meta.splits.items():
    x, y = gen[split]
    assert x.shape == (n, 64) and x.dtype == np.float32 and np.all(x >= 0)
    assert y.shape == (n, 20) and y.dtype == np.int32
    assert set(np.unique(y.sum(1))) == {1, 2, 3, 4}
    seen_only = split == "train"
    assert (y[:, 15:].sum() == 0) == seen_only
  a = data.load_arrays("multilabel_protos", "val")
  np.testing.assert_array_equal(a["x"], gen["val"][0])
  np.testing.assert_array_equal(a["y"], gen["val"][1])


def test_config_checks():
  from jaxcl.train import ConfigError
  from jaxcl.train.config import make_objective, validate
  from configs.laso_synthetic import get_config
  validate(get_config(), num_devices=8, num_processes=1)
  make_objective(get_config())
  bad = [({"eval.at_end": True}, "built-in probe / kNN evaluation needs one class"),
         ({"loss.name": "nt_xent", "loss.kwargs": {"temperature": 0.5}},
          "has multi-hot label sets; loss 'nt_xent'"),
         ({"data.name": "digits"}, "needs multi-hot label sets"),
         ({"loss.kwargs.weights": {"recon": 1.0}}, "unknown 'weights' key"),
         ({"loss.kwargs.num_labels": 0}, "'num_labels' must be an int >= 1"),
         ({"loss.kwargs.partners": 1}, "unknown key 'config.loss.kwargs.partners'")]
  for over, match in bad:
    c = get_config()
    for k, v in over.items():
      node = c
      *path, last = k.split(".")
      for p in path:
        node = node[p]
      node[last] = v
    with pytest.raises(ConfigError, match=match):
      validate(c, num_devices=8, num_processes=1)
      make_objective(c)


@pytest.mark.long
def test_trainer_runs_three_steps_on_multi_hot_labels():
  from jaxcl import data
  from jaxcl.train import setup
  from jaxcl.train.sharding import global_batch
  from configs.laso_synthetic import get_config
  cfg = get_config()
  cfg.batch_size, cfg.optim.warmup_steps, cfg.progress = 32, 1, False
  parts = setup(cfg, devices=jax.devices()[:1])   # 8 devices: test_sharded_equals_single_device
  state = parts["state"]
  assert state.params == {}                    # identity encoder, no head: only LaSO learns
  obj0 = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  assert obj0["classifier"]["w"].shape == (15, 64)
  x = data.load_arrays("multilabel_protos", "train")
  seen = []
  for s in range(3):
    batch = {k: np.asarray(v[32 * s:32 * (s + 1)]) for k, v in x.items()}
    state, metrics = parts["step"](state, global_batch(parts["mesh"], batch))
    seen.append(float(metrics["loss"]))
  assert all(np.isfinite(seen)) and seen[0] > 0
  obj = jax.tree.map(np.asarray, jax.device_get(state.objective_params))
  for path in (("union", "input", "kernel"), ("classifier", "w")):
    assert np.abs(_get(obj, path) - _get(obj0, path)).max() > 0
