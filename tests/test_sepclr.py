"""SepCLR (jaxcl/losses/sepclr.py): the objective and its terms against a float64 loop reference
written here from the reference code's equations (value and gradient by finite differences),
8 devices = 1 device (value and gradient), bf16 / extreme / one-sided
batches, argument errors, the two-tower model and the trainer adapter."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses, metrics
from tests.reference import fd_coords, fd_directional

B, D, CD = 7, 6, 3   # 3 common + 3 salient columns
LABELS = np.array([0, 1, 1, 0, 1, 0, 1], np.int32)
LABELS3 = np.array([0, 4, 2, 3, 1, 5, 3], np.int32)   # background_classes=3: rows 0, 2, 4 bg
VALID = np.array([1, 1, 1, 1, 1, 0, 1], bool)        # row 5 is padding


def _data(seed, *shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


# ------------------------------------------------------------------ the float64 loop reference


def _sq(a, b):
  return sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))


def _unit(x):
  n = math.sqrt(sum(float(t) ** 2 for t in x))
  return np.asarray(x, np.float64) / n


def ref_terms(f, labels, common_dim, background_classes=1, temperature=0.5, valid=None):
  """The reference script's four terms over the valid rows (loops over rows and pairs)."""
  f = np.asarray(f, np.float64)
  g = 1.0 / (2.0 * temperature)
  rows = [i for i in range(len(f)) if valid is None or valid[i]]
  tgt = {i: labels[i] >= background_classes for i in rows}
  c = {(i, v): _unit(f[i, v, :common_dim]) for i in rows for v in (0, 1)}
  s = {(i, v): f[i, v, common_dim:] for i in rows for v in (0, 1)}
  st = {k: (x if tgt[k[0]] else 0.0 * x) for k, x in s.items()}

  def align(a, b, sel):
    return g * sum(_sq(a[i], b[i]) for i in sel) / len(sel) if sel else 0.0

  def unif(x):
    vals = [math.exp(-g * _sq(x[i], x[j])) for i in rows for j in rows if i < j]
    return math.log(sum(vals) / len(vals))

  def kjem(a, b):
    return sum(math.log(sum(math.exp(-g * _sq(a[i], a[j]) - g * _sq(b[i], b[j])) for j in rows)
                        / len(rows)) for i in rows) / len(rows)

  view = lambda d, v: {i: d[(i, v)] for i in rows}
  zero = {i: np.zeros(f.shape[2] - common_dim) for i in rows}
  t_rows = [i for i in rows if tgt[i]]
  b_rows = [i for i in rows if not tgt[i]]
  c1, c2, s1, s2, st1, st2 = (view(d, v) for d in (c, s, st) for v in (0, 1))
  return {"common": align(c1, c2, rows) + unif(c1) + unif(c2),
          "salient": align(s1, s2, t_rows) + unif(st1) + unif(st2),
          "infoless": 0.5 * (align(zero, s1, b_rows) + align(zero, s2, b_rows)),
          "mi": 0.5 * (kjem(c1, st1) + kjem(c2, st2))}


def ref_sepclr(f, labels, common_dim, salient_weight=1000.0, infoless_weight=1000.0,
               mi_weight=10.0, **kw):
  t = ref_terms(f, labels, common_dim, **kw)
  return (t["common"] + salient_weight * t["salient"] + infoless_weight * t["infoless"]
          + mi_weight * t["mi"])


def _valid_mean(per, valid):
  per = np.asarray(per, np.float64)
  return per.mean() if valid is None else per[valid].mean()


CASES = {
    "reference_defaults": (dict(), LABELS, None),
    "bg_classes3_valid_T04_mi0": (dict(background_classes=3, temperature=0.4, mi_weight=0.0,
                                       salient_weight=3.0, infoless_weight=2.0), LABELS3, VALID),
}


@pytest.mark.parametrize("case", list(CASES))
def test_value_terms_and_gradient_match_the_loop_reference(case):
  kw, labels, valid = CASES[case]
  f = _data(1, B, 2, D)
  f[:, 1] += f[:, 0]  # correlated views
  term_kw = {k: v for k, v in kw.items() if k in ("background_classes", "temperature")}
  lib = lambda x: losses.contrib.sepclr(x, labels, common_dim=CD, valid=valid, **kw)
  n = B if valid is None else int(valid.sum())
  keep = np.ones(B, bool) if valid is None else valid

  @jax.jit
  def run(x):
    per, vjp = jax.vjp(lib, x)
    terms = losses.contrib.sepclr_terms(x, labels, common_dim=CD, valid=valid, **term_kw)
    return per, vjp(jnp.asarray(keep, jnp.float32) / n)[0], terms

  per, grad, terms = run(f)
  per = np.asarray(per)
  assert per.dtype == np.float32 and per.shape == (B,) and np.all(per[~keep] == 0)
  want = ref_sepclr(f, labels, CD, valid=valid, **kw)
  np.testing.assert_allclose(_valid_mean(per, keep), want, rtol=1e-5, atol=1e-4)
  for name, value in ref_terms(f, labels, CD, valid=valid, **term_kw).items():
    np.testing.assert_allclose(_valid_mean(terms[name], keep), value, rtol=1e-5, atol=1e-5,
                               err_msg=name)
  scalar = lambda x: ref_sepclr(x, labels, CD, valid=valid, **kw)
  grad = np.asarray(grad, np.float64)
  assert np.all(np.isfinite(grad)) and np.all(grad[~keep] == 0)
  rng = np.random.default_rng(5)
  coords = [(i, v, int(rng.integers(D))) for i in range(B) for v in (0, 1)]
  fd = fd_coords(scalar, f, coords)
  tol = dict(rtol=2e-4, atol=2e-4 * np.abs(fd).max())
  np.testing.assert_allclose([grad[c] for c in coords], fd, **tol)
  direction = rng.normal(size=f.shape)
  np.testing.assert_allclose(np.sum(grad * direction), fd_directional(scalar, f, direction),
                             rtol=2e-4)


def test_uniformity_is_the_metric_on_the_sphere_and_kjem_of_the_concatenation():
  from jaxcl.losses import _common as c
  z, a, s = _data(2, 9, 4), _data(3, 9, 3), _data(4, 9, 2)
  f, y = _data(5, 6, 2, 5), np.array([0, 1, 0, 1, 1, 0], np.int32)

  @jax.jit
  def run():
    both = jnp.concatenate([jnp.asarray(a), jnp.asarray(s)], 1)
    t = losses.contrib.sepclr_terms(f, y, common_dim=2)
    return (losses.contrib.sepclr_uniformity(c.l2_normalize(jnp.asarray(z))), metrics.uniformity(z, t=1),
            losses.contrib.sepclr_kjem(a, s), losses.contrib.sepclr_kjem(both[:, :1], both[:, 1:]),
            sum(t.values()), losses.contrib.sepclr(f, y, common_dim=2, salient_weight=1,
                                           infoless_weight=1, mi_weight=1))

  unif, metric, kjem, kjem_split, terms, weighted = run()
  np.testing.assert_allclose(unif, metric, rtol=1e-5)
  np.testing.assert_allclose(kjem, kjem_split, rtol=1e-5)
  # the unweighted sum of the terms is the objective at weights (1, 1, 1, 1)
  np.testing.assert_allclose(terms, weighted, rtol=1e-5)


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN = 16, 5
SL = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1], np.int32)
SVALID = np.ones(NB, bool)
SVALID[[3, 12]] = False
SX = _data(10, NB, 2, DIN)
SX[:, 1] += SX[:, 0]
SW = _data(11, DIN, 8)


def test_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))

  def fn(axis_name):
    return lambda w, x, y, valid: losses.contrib.sepclr(x @ w, y, common_dim=4, valid=valid,
                                                axis_name=axis_name)

  sharded = jax.shard_map(fn("d"), mesh=mesh, in_specs=(P(), P("d"), P("d"), P("d")),
                          out_specs=P("d"))

  @jax.jit
  def both(w, x, y, valid):
    out = []
    for f in (fn(None), sharded):
      per, vjp = jax.vjp(lambda w, f=f: f(w, x, y, valid), w)
      out.append((per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]))
    return out

  (v1, g1), (v8, g8) = both(SW, SX, SL, SVALID)
  v1, g1 = np.asarray(v1), np.asarray(g1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.abs(g1).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(g8, g1, rtol=1e-4, atol=1e-5 * np.abs(g1).max())


# ------------------------------------------------------------------ dtypes, extremes, errors


def test_bf16_extreme_and_one_sided_batches():
  f = _data(20, B, 2, D)
  big = f.copy()
  big[..., CD:] *= 100.0  # far-apart salient codes: exp(-d^2) underflows for distinct pairs
  mean = lambda x: jnp.mean(losses.contrib.sepclr(x, LABELS, common_dim=CD))

  @jax.jit
  def run(f, big):
    low = losses.contrib.sepclr(f.astype(jnp.bfloat16), LABELS, common_dim=CD)
    return (mean(f), low, jax.value_and_grad(mean)(big),
            losses.contrib.sepclr_terms(f, jnp.zeros(B, jnp.int32), common_dim=CD),
            losses.contrib.sepclr_terms(f, jnp.ones(B, jnp.int32), common_dim=CD))

  ref, low, (value, grad), bg, tg = run(f, big)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(np.mean(low), ref, rtol=2e-2)
  assert np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_allclose(value, ref_sepclr(big, LABELS, CD), rtol=1e-5)
  # Only background rows: the target-only alignment is 0 (the reference would give NaN), and
  # the salient uniformity of all-zero codes is log 1 = 0; only target rows: no info-less term.
  np.testing.assert_allclose(bg["salient"], 0.0, atol=1e-6)
  assert np.all(np.asarray(tg["infoless"]) == 0) and np.all(np.isfinite(np.asarray(tg["mi"])))


def test_bad_inputs_name_the_argument():
  f = _data(21, 4, 2, 6)
  y = np.array([0, 1, 0, 1], np.int32)
  with pytest.raises(TypeError, match="'features'"):
    losses.contrib.sepclr(np.ones((4, 2, 6), np.int32), y, common_dim=3)
  with pytest.raises(ValueError, match="2 views"):
    losses.contrib.sepclr(_data(22, 4, 3, 6), y, common_dim=3)
  for bad in (0, 6, 2.5, True):
    with pytest.raises(ValueError, match="'common_dim'"):
      losses.contrib.sepclr(f, y, common_dim=bad)
  with pytest.raises(ValueError, match="'background_classes'"):
    losses.contrib.sepclr(f, y, common_dim=3, background_classes=0)
  with pytest.raises(ValueError, match="'labels'"):
    losses.contrib.sepclr(f, y[:3], common_dim=3)
  with pytest.raises(ValueError, match="'mi_weight'"):
    losses.contrib.sepclr(f, y, common_dim=3, mi_weight=-1.0)
  with pytest.raises(ValueError, match="'temperature'"):
    losses.contrib.sepclr(f, y, common_dim=3, temperature=0.0)
  with pytest.raises(ValueError, match="'where'"):
    losses.contrib.sepclr_align(f[:, 0], f[:, 1], where=np.ones(3, bool))
  with pytest.raises(ValueError, match="'common' and 'salient'"):
    losses.contrib.sepclr_kjem(f[:, 0], f[:3, 1])


# ------------------------------------------------------------------ model, adapter, recipe


@pytest.mark.long
def test_two_towers_adapter_and_recipe():
  from configs.sepclr_digits import get_config
  from jaxcl import models
  from jaxcl.train.config import make_objective, validate
  from jaxcl.train.step import build_model
  c = get_config()
  assert validate(c, num_devices=8, num_processes=1).name == "digits_grating"
  model = build_model(c.model)
  assert isinstance(model, models.MultiTower) and len(model.towers) == 2
  x = _data(23, 4, 8, 8, 1)
  variables, (h, z) = jax.jit(lambda x: (lambda v: (v, model.apply(v, x)))(
      model.init(jax.random.key(0), x)))(x)
  params = variables["params"]
  k0, k1 = (jax.tree.leaves(params[f"towers_{t}"]) for t in (0, 1))
  assert all(a.shape == b.shape for a, b in zip(k0, k1))
  assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 0 for a, b in zip(k0, k1))
  assert h.shape == (4, 128) and z.shape == (4, 64)
  c.model.towers = 1
  assert isinstance(build_model(c.model), models.ContrastiveModel)
  c.model.towers = 0
  with pytest.raises(ValueError, match="config.model.towers"):
    build_model(c.model)
  # The adapter: z [B, 2, D] and the labels (y < 4 = background) straight into the loss.
  c = get_config()
  obj = make_objective(c)
  zz = _data(24, 6, 2, 64)
  y = np.array([0, 7, 3, 12, 43, 1], np.int32)
  got, want = jax.jit(lambda zz: (obj(zz, y, jax.random.key(0), None), losses.contrib.sepclr(
      zz, y, common_dim=32, background_classes=4)))(zz)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  c.loss.kwargs.common_dim = 64
  with pytest.raises(ValueError, match="'common_dim'"):
    jax.eval_shape(lambda zz: make_objective(c)(zz, y, jax.random.key(0), None), zz)


def test_digits_grating_dataset_encodes_both_factors():
  from jaxcl import data
  from jaxcl.data import embedded
  info = data.info("digits_grating")
  out = embedded.generate("digits_grating")
  again = embedded.generate("digits_grating")
  digits = embedded.generate("digits")
  for split, (x, y, extra) in out.items():
    np.testing.assert_array_equal(x, again[split][0])
    assert x.shape == (info.splits[split],) + info.shape and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(extra) == {n for n, _ in info.extra_labels}
    o, d, t = extra["orientation"], extra["digit"], extra["target"]
    assert t.sum() == len(y) // 2 == len(digits[split][1])
    np.testing.assert_array_equal(y < 4, t == 0)            # background_classes = 4
    np.testing.assert_array_equal(y % 4, o)
    np.testing.assert_array_equal(np.where(t == 1, y // 4 - 1, 10), d)
    np.testing.assert_array_equal(np.sort(d[t == 1]), np.sort(digits[split][1]))
    assert x[t == 0].max() <= 0.5 and y.max() < info.num_classes  # backgrounds: 0.5 g only
