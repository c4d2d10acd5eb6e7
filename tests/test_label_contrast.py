"""Input-label contrast (`primer`): ``losses.contrib.label_contrast`` (softmax and binary-NCE forms)
against float64 loop references (value, finite-difference gradients), the CE identity of the
softmax form, sharded = single device, bf16, extreme and bad inputs; the trainer's
``label_embedding`` objective (config checks, 3 steps); the few-shot / long-tail training
subsets (``data.per_class`` / ``data.imbalance``: counts, order, resumable loader, train split
only)."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import data, losses
from jaxcl.losses.label_contrast import _negative_mask
from jaxcl.train import ConfigError, setup
from jaxcl.train import objectives
from jaxcl.train.sharding import global_batch
from tests.reference import fd_coords

B, C, D = 16, 5, 6
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(B, D)).astype(np.float32)
E = RNG.normal(size=(C, D)).astype(np.float32)
LABELS = RNG.integers(0, C, size=B).astype(np.int32)
VALID = np.ones(B, bool)
VALID[[2, 9, 15]] = False  # padding on several of the 8 devices
T = 0.3
KEY = jax.random.key(7)


# --- float64 loop references ------------------------------------------------------------------

def _unit(v):
  n = math.sqrt(sum(a * a for a in v))
  return [a / n for a in v] if n > 0 else list(v)


def _scores(z, e, temperature, normalize):
  z, e = np.asarray(z, np.float64), np.asarray(e, np.float64)
  rows = [_unit(r) if normalize else list(r) for r in z]
  labs = [_unit(r) if normalize else list(r) for r in e]
  return [[sum(a * b for a, b in zip(r, l)) / temperature for l in labs] for r in rows]


def ref_softmax(z, e, labels, temperature, normalize=True, valid=None):
  """-s(x_i, y_i) + log sum_c exp s(x_i, c), by loops in float64; padded rows 0."""
  out = []
  for i, s in enumerate(_scores(z, e, temperature, normalize)):
    if valid is not None and not valid[i]:
      out.append(0.0)
      continue
    m = max(s)
    out.append(m + math.log(sum(math.exp(v - m) for v in s)) - s[labels[i]])
  return np.array(out)


def _log_sigmoid(x):
  return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def ref_binary(z, e, labels, temperature, normalize=True, valid=None, negatives=None):
  """-log sigmoid(s(x_i, y_i)) - sum_{c in N_i} log sigmoid(-s(x_i, c)); ``negatives[i]`` is
  the set N_i (default: every other label)."""
  out = []
  for i, s in enumerate(_scores(z, e, temperature, normalize)):
    if valid is not None and not valid[i]:
      out.append(0.0)
      continue
    neg = [c for c in range(len(s)) if c != labels[i]] if negatives is None else negatives[i]
    out.append(-_log_sigmoid(s[labels[i]]) - sum(_log_sigmoid(-s[c]) for c in neg))
  return np.array(out)


def _neg_sets(mask):
  return [list(np.flatnonzero(r)) for r in np.asarray(mask)]


# --- values and gradients ---------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
def test_softmax_value_and_gradient_match_the_reference(normalize):
  got = losses.contrib.label_contrast(Z, E, LABELS, temperature=T, normalize=normalize, valid=VALID)
  assert got.dtype == jnp.float32 and got.shape == (B,)
  want = ref_softmax(Z, E, LABELS, T, normalize, VALID)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(got)[~VALID] == 0) and np.all(want[VALID] > 0)
  f = lambda z, e: jnp.mean(losses.contrib.label_contrast(z, e, LABELS, temperature=T,
                                                  normalize=normalize, valid=VALID))
  gz, ge = jax.grad(f, argnums=(0, 1))(jnp.asarray(Z), jnp.asarray(E))
  cz = [(i, d) for i in (0, 2, 5, 11) for d in range(D)]
  fd = fd_coords(lambda z: ref_softmax(z, E, LABELS, T, normalize, VALID).mean(), Z, cz)
  np.testing.assert_allclose(np.asarray(gz)[tuple(np.array(cz).T)], fd, atol=2e-5)
  ce = [(c, d) for c in range(C) for d in range(D)]
  fd = fd_coords(lambda e: ref_softmax(Z, e, LABELS, T, normalize, VALID).mean(), E, ce)
  np.testing.assert_allclose(np.asarray(ge).reshape(-1), fd, atol=2e-5)
  assert np.all(np.asarray(gz)[~VALID] == 0) and np.abs(fd).max() > 1e-3


@pytest.mark.parametrize("sampled", [False, True])
def test_binary_value_and_gradient_match_the_reference(sampled):
  kw = dict(num_negatives=2, rng=KEY) if sampled else {}
  negs = _neg_sets(_negative_mask(KEY, jnp.asarray(LABELS), C, 2, None)) if sampled else None
  got = losses.contrib.label_contrast(Z, E, LABELS, form="binary", temperature=T, valid=VALID, **kw)
  want = ref_binary(Z, E, LABELS, T, valid=VALID, negatives=negs)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.all(np.asarray(got)[~VALID] == 0)
  f = lambda z, e: jnp.mean(losses.contrib.label_contrast(z, e, LABELS, form="binary", temperature=T,
                                                  valid=VALID, **kw))
  gz, ge = jax.grad(f, argnums=(0, 1))(jnp.asarray(Z), jnp.asarray(E))
  cz = [(i, d) for i in (0, 2, 5, 11) for d in range(D)]
  ref = lambda z, e: ref_binary(z, e, LABELS, T, valid=VALID, negatives=negs).mean()
  fd = fd_coords(lambda z: ref(z, E), Z, cz)
  np.testing.assert_allclose(np.asarray(gz)[tuple(np.array(cz).T)], fd, atol=2e-5)
  ce = [(c, d) for c in range(C) for d in range(D)]
  fd = fd_coords(lambda e: ref(Z, e), E, ce)
  np.testing.assert_allclose(np.asarray(ge).reshape(-1), fd, atol=2e-5)
  assert np.abs(fd).max() > 1e-3


def test_sampled_negatives_are_k_wrong_labels_uniformly():
  draw = jax.jit(_negative_mask, static_argnums=(2, 3, 4))
  y = jnp.asarray(np.tile(np.arange(C, dtype=np.int32), 200))
  m = np.asarray(draw(KEY, y, C, 2, None))
  assert np.all(m.sum(1) == 2) and not np.any(m[np.arange(len(y)), np.asarray(y)])
  # Each wrong label is drawn with probability 2 / (C - 1) = 0.5 (200 rows per true label).
  for c in range(C):
    freq = m[np.asarray(y) == c].mean(0)
    np.testing.assert_allclose(np.delete(freq, c), 0.5, atol=0.12)
  # Row i's draw depends on the key and the row only; k = C - 1 is the full binary form.
  m2 = np.asarray(draw(KEY, y[:7], C, 2, None))
  np.testing.assert_array_equal(m2, m[:7])
  assert not np.array_equal(np.asarray(draw(jax.random.key(8), y, C, 2, None)), m)
  full = losses.contrib.label_contrast(Z, E, LABELS, form="binary", temperature=T)
  np.testing.assert_allclose(losses.contrib.label_contrast(Z, E, LABELS, form="binary", temperature=T,
                                                   num_negatives=C - 1, rng=KEY), full,
                             rtol=1e-6)


def test_softmax_form_unnormalised_at_t1_is_ce_of_a_bias_free_linear_classifier():
  # logits_ic = <z_i, e_c> / 1: label_contrast's lse - positive = log-sum-exp - true logit.
  f_lc = lambda z, e: losses.contrib.label_contrast(z, e, LABELS, temperature=1.0, normalize=False)
  f_ce = lambda z, e: losses.contrib.softmax_cross_entropy(z @ e.T, LABELS)
  np.testing.assert_allclose(f_lc(Z, E), f_ce(Z, E), rtol=1e-6, atol=1e-6)
  g_lc = jax.grad(lambda z, e: jnp.mean(f_lc(z, e)), argnums=(0, 1))(Z, E)
  g_ce = jax.grad(lambda z, e: jnp.mean(f_ce(z, e)), argnums=(0, 1))(Z, E)
  for a, b in zip(g_lc, g_ce):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Normalised (cosine) scores are a different objective.
  assert not np.allclose(losses.contrib.label_contrast(Z, E, LABELS, temperature=1.0), f_ce(Z, E))


def _mesh():
  return jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))


@pytest.mark.parametrize("kw", [{"form": "softmax"}, {"form": "binary"},
                                {"form": "binary", "num_negatives": 3}])
def test_sharded_equals_single_device_value_and_gradient(kw):
  w = RNG.normal(size=(D, D)).astype(np.float32)
  extra = {"rng": KEY} if "num_negatives" in kw else {}
  fn = lambda w, e, x, y, v, axis_name=None: losses.contrib.label_contrast(
      x @ w, e, y, temperature=T, valid=v, axis_name=axis_name, **kw, **extra)
  sharded = jax.shard_map(lambda w, e, x, y, v: fn(w, e, x, y, v, axis_name="d"),
                          mesh=_mesh(), in_specs=(P(), P(), P("d"), P("d"), P("d")),
                          out_specs=P("d"))
  per = jax.jit(sharded)(w, E, Z, LABELS, VALID)
  np.testing.assert_allclose(per, fn(w, E, Z, LABELS, VALID), rtol=1e-5, atol=1e-6)
  mean_s = lambda w, e: jnp.mean(sharded(w, e, Z, LABELS, VALID))
  mean_1 = lambda w, e: jnp.mean(fn(w, e, Z, LABELS, VALID))
  gs = jax.jit(jax.grad(mean_s, argnums=(0, 1)))(w, E)
  g1 = jax.grad(mean_1, argnums=(0, 1))(w, E)
  for a, b in zip(gs, g1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(b).max() > 1e-3


@pytest.mark.parametrize("form", ["softmax", "binary"])
def test_bf16_inputs(form):
  z, e = jnp.asarray(Z, jnp.bfloat16), jnp.asarray(E, jnp.bfloat16)
  got = losses.contrib.label_contrast(z, e, LABELS, form=form, temperature=T)
  assert got.dtype == jnp.float32
  ref = ref_softmax if form == "softmax" else ref_binary
  np.testing.assert_allclose(got, ref(np.asarray(z, np.float32), np.asarray(e, np.float32),
                                      LABELS, T), rtol=2e-3, atol=2e-3)
  gz, ge = jax.grad(lambda z, e: jnp.mean(losses.contrib.label_contrast(z, e, LABELS, form=form,
                                                                temperature=T)),
                    argnums=(0, 1))(z, e)
  assert gz.dtype == jnp.bfloat16 and ge.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(gz, np.float32)))


@pytest.mark.parametrize("form", ["softmax", "binary"])
@pytest.mark.parametrize("case", ["huge", "tiny_t", "zero_rows", "unnormalised_huge"])
def test_extreme_inputs_are_finite(form, case):
  z, e, t, norm = Z * 1e4, E * 1e-4, T, True
  if case == "tiny_t":
    z, e, t = Z, E, 1e-4
  if case == "zero_rows":
    z, e = Z.copy(), E.copy()
    z[[0, 3]] = 0.0
    e[1] = 0.0
  if case == "unnormalised_huge":
    z, e, norm = Z * 1e3, E * 1e3, False
  f = lambda z, e: losses.contrib.label_contrast(z, e, LABELS, form=form, temperature=t,
                                         normalize=norm)
  per = f(z, e)
  gz, ge = jax.grad(lambda z, e: jnp.mean(f(z, e)), argnums=(0, 1))(z, e)
  for a in (per, gz, ge):
    assert np.all(np.isfinite(np.asarray(a)))
  if case == "tiny_t" and form == "softmax":  # T -> 0: the margin to the best wrong label / T
    want = ref_softmax(Z, E, LABELS, 1e-4)
    np.testing.assert_allclose(per, want, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("call, err, match", [
    (lambda: losses.contrib.label_contrast(Z.astype(np.int32), E, LABELS), TypeError,
     r"label_contrast: 'z' must be a floating"),
    (lambda: losses.contrib.label_contrast(Z, E.astype(np.int32), LABELS), TypeError,
     r"'label_embeddings' must be a floating"),
    (lambda: losses.contrib.label_contrast(Z[0], E, LABELS), ValueError, r"'z' must have rank 2"),
    (lambda: losses.contrib.label_contrast(Z, E[0], LABELS), ValueError,
     r"'label_embeddings' must have rank 2"),
    (lambda: losses.contrib.label_contrast(Z, E[:, :3], LABELS), ValueError,
     r"'z' and 'label_embeddings' must have the same feature size"),
    (lambda: losses.contrib.label_contrast(Z, E[:1], np.zeros(B, np.int32)), ValueError,
     r"'label_embeddings' needs at least 2 classes"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, form="nce"), ValueError, r"'form' must be"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, temperature=0.0), ValueError,
     r"'temperature' must be > 0"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS[:3]), ValueError,
     r"'labels' must have shape \(16,\)"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS.astype(np.float32)), TypeError,
     r"'labels' must be integers"),
    (lambda: losses.contrib.label_contrast(Z, E, np.where(LABELS == 0, C, LABELS)), ValueError,
     r"'labels' must be in \[0, 5\)"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, valid=np.ones(3, bool)), ValueError,
     r"'valid' must have shape"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, num_negatives=2, rng=KEY), ValueError,
     r"'num_negatives' applies to form='binary' only"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, form="binary", num_negatives=C, rng=KEY),
     ValueError, r"'num_negatives' must be an int in \[1, 4\]"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, form="binary", num_negatives=0, rng=KEY),
     ValueError, r"'num_negatives' must be an int in \[1, 4\]"),
    (lambda: losses.contrib.label_contrast(Z, E, LABELS, form="binary", num_negatives=2), ValueError,
     r"'rng' is required"),
])
def test_bad_inputs_name_the_argument(call, err, match):
  with pytest.raises(err, match=match):
    call()


def test_traced_out_of_range_labels_are_nan_unless_padded():
  bad = LABELS.copy()
  bad[[2, 3]] = C  # row 2 is padding, row 3 is not
  for form in ("softmax", "binary"):
    per = np.asarray(jax.jit(lambda y: losses.contrib.label_contrast(Z, E, y, form=form, valid=VALID))(
        bad))
    assert np.isnan(per[3]) and per[2] == 0 and np.all(np.isfinite(np.delete(per, 3)))


# --- the trainer's label_embedding objective ------------------------------------------------

NC, TB = 10, 16


def lc_config(**over):
  from tests.test_train import tiny_config
  return tiny_config(**{"loss.name": "label_contrast",
                        "loss.kwargs": {"num_classes": NC, "form": "binary", "num_negatives": 3,
                                        "temperature": 0.2}, **over})


def test_objective_owns_label_embeddings_and_matches_the_loss():
  obj = objectives.make_objective("label_contrast", {"num_classes": C, "temperature": T}, 3)
  assert isinstance(obj, objectives.ParamObjective)
  params = obj.init(jax.random.key(0), 64)
  e = np.asarray(params["label_embeddings"])
  assert e.shape == (C, 64) and abs(e.std() - 1 / 8) < 0.02  # N(0, 1/D)
  params = {"label_embeddings": jnp.asarray(E)}
  z3 = RNG.normal(size=(B, 3, D)).astype(np.float32)
  got = obj.apply(params, z3, LABELS, KEY, None)
  want = np.mean([ref_softmax(z3[:, v], E, LABELS, T) for v in range(3)], axis=0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "label_contrast: 'num_classes' must be an int >= 2"),
    ({"num_classes": 5}, r"config.loss.kwargs.num_classes=5 is smaller than the 10 classes"),
    ({"num_classes": NC, "labels": 0}, "config.loss.kwargs.labels"),
    ({"num_classes": NC, "label_embeddings": 0}, "config.loss.kwargs.label_embeddings"),
    ({"num_classes": NC, "rng": 0}, "config.loss.kwargs.rng"),
])
def test_config_errors(kwargs, match):
  with pytest.raises(ConfigError, match=match):
    setup(lc_config(**{"loss.kwargs": kwargs}))


@pytest.mark.long
def test_three_trainer_steps_train_the_label_embeddings():
  parts = setup(lc_config())
  state, losses_seen = parts["state"], []
  x = data.load_arrays("mnist1d", "train")
  e0 = np.asarray(jax.device_get(state.objective_params["label_embeddings"]))
  for s in range(3):
    batch = {k: np.asarray(v[s * TB:(s + 1) * TB]) for k, v in x.items()}
    state, metrics = parts["step"](state, global_batch(parts["mesh"], batch))
    losses_seen.append(float(metrics["loss"]))
  assert all(math.isfinite(l) and l > 0 for l in losses_seen)
  e3 = np.asarray(jax.device_get(state.objective_params["label_embeddings"]))
  assert e3.shape == (NC, 16) and np.abs(e3 - e0).max() > 1e-4


# --- few-shot / long-tail training subsets ------------------------------------------------

def test_per_class_keeps_the_first_n_of_each_class_in_stored_order():
  y = data.load_arrays("mnist1d", "train")["y"]
  idx = data.count_indices(y, per_class=7)
  assert np.all(np.diff(idx) > 0)
  for c in range(10):
    np.testing.assert_array_equal(idx[y[idx] == c], np.flatnonzero(y == c)[:7])
  np.testing.assert_array_equal(data.count_indices(y), np.arange(len(y)))
  big = data.count_indices(y, per_class=10_000)  # more than a class has: all of it
  np.testing.assert_array_equal(big, np.arange(len(y)))


@pytest.mark.parametrize("per_class, ratio", [(0, 100.0), (0, 10.0), (50, 10.0)])
def test_imbalance_gives_the_exponential_profile(per_class, ratio):
  y = data.load_arrays("mnist1d", "train")["y"]
  idx = data.count_indices(y, per_class=per_class, imbalance=ratio)
  counts = np.bincount(y[idx], minlength=10)
  n_max = per_class or np.bincount(y).max()
  for c in range(10):
    want = max(1, math.floor(n_max * ratio ** (-c / 9) + 1e-9))
    assert counts[c] == min(want, (y == c).sum()), (c, counts)
    np.testing.assert_array_equal(idx[y[idx] == c], np.flatnonzero(y == c)[:counts[c]])
  assert counts[-1] == math.floor(n_max / ratio) and np.all(np.diff(counts[1:]) < 0)


@pytest.mark.parametrize("kw, match", [({"per_class": -1}, "'per_class' must be an int"),
                                       ({"per_class": 2.5}, "'per_class' must be an int"),
                                       ({"imbalance": 0.5}, "'imbalance' must be a number >= 1")])
def test_count_indices_bad_arguments(kw, match):
  with pytest.raises(ValueError, match="where: " + match):
    data.count_indices(np.arange(10) % 2, where="where", **kw)
  with pytest.raises(ValueError, match="regression"):
    data.count_indices(np.linspace(0, 1, 10), per_class=2)


@pytest.mark.parametrize("in_memory", [True, False])
def test_subset_loader_order_and_resume(in_memory):
  y = data.load_arrays("mnist1d", "train")["y"]
  x = data.load_arrays("mnist1d", "train")["x"]
  kept = data.count_indices(y, per_class=6, imbalance=3.0)
  kw = dict(global_batch_size=16, seed=4, per_class=6, imbalance=3.0, in_memory=in_memory)
  it = data.make_loader("mnist1d", "train", **kw)
  first = [next(it) for _ in range(max(len(kept) // 16 + 3, 8))]  # past one epoch
  seen = np.concatenate([b["x"] for b in first])
  rows = {r.tobytes() for r in x[kept]}
  assert all(r.tobytes() in rows for r in seen)
  assert {r.tobytes() for r in seen} == rows  # a whole epoch went through
  it2 = data.make_loader("mnist1d", "train", **kw)
  for _ in range(5):
    next(it2)
  state = json.loads(it2.get_state())
  after = [next(it2)["x"] for _ in range(3)]
  it3 = data.make_loader("mnist1d", "train", **kw)
  it3.set_state(json.dumps(state).encode())
  for want in after:
    np.testing.assert_array_equal(next(it3)["x"], want)
  np.testing.assert_array_equal(first[5]["x"], after[0])


def test_config_keys_validate_and_subset_the_training_split_only(tmp_path):
  from jaxcl.train.trainer import Evaluator, _loader
  for over, match in (({"data.per_class": -3}, "config.data.per_class must be an int >= 0"),
                      ({"data.imbalance": 0.5}, "config.data.imbalance must be a number >= 1"),
                      ({"data.name": "diabetes", "data.per_class": 3,
                        "loss.name": "nt_xent", "loss.kwargs": {"temperature": 0.5}},
                       "config.data.per_class / config.data.imbalance need class labels")):
    with pytest.raises(ConfigError, match=match):
      setup(lc_config(**over))
  c = lc_config(**{"data.per_class": 4, "data.imbalance": 2.0})
  train, test = Evaluator(c, None, str(tmp_path)).data()
  y = data.load_arrays("mnist1d", "train")["y"]
  np.testing.assert_array_equal(train["y"], y[data.count_indices(y, per_class=4, imbalance=2.0)])
  assert len(test["y"]) == data.info("mnist1d").splits["test"]
  it = _loader(c, c.data.train_split)
  assert set(np.unique(np.concatenate([next(it)["y"] for _ in range(4)]))) <= set(range(10))
  assert "per_class=4" in json.loads(it.get_state())["data_source"]
