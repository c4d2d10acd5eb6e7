"""COCONUT (jaxcl.losses.coconut, jaxcl.recipes.coconut; arXiv 2310.02699): float64 loop
references of NSPT and the MM term written here (value and gradient by finite differences),
8 devices = 1 device (value and gradient), bf16 and extreme inputs, argument errors, the replay
batches / buffer / continual metrics, and two tiny tasks end to end (warm start, frozen teacher
snapshot, resume)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from jaxcl.recipes import coconut
from tests.reference import fd_coords, fd_directional
from tests.reference import unit as _unit, lse as _lse

B, D = 8, 5
LABELS = np.array([0, 1, 0, 2, 1, 3, 3, 0], np.int32)
OLD = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)        # rehearsal rows (classes 0, 1)
VALID = np.array([1, 1, 1, 1, 1, 1, 0, 1], bool)      # row 6 is padding


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ float64 loop references


def _prep(x, normalize):
  return np.array([_unit(r) if normalize else np.asarray(r, np.float64) for r in x])


def ref_nspt(s, t, y, old, temperature, valid=None, normalize=True):
  """Anchors: valid rehearsal rows; positives: teacher rows of the class; negatives: student
  rows of other classes; mean over anchors (the module docstring's equation)."""
  s, t = _prep(s, normalize), _prep(t, normalize)
  b = len(s)
  ok = [True] * b if valid is None else [bool(v) for v in valid]
  anchors = [i for i in range(b) if ok[i] and old[i]]
  out = np.zeros(b)
  for i in anchors:
    pos = [float(np.dot(s[i], t[p])) / temperature for p in range(b) if ok[p] and y[p] == y[i]]
    neg = [float(np.dot(s[i], s[n])) / temperature for n in range(b) if ok[n] and y[n] != y[i]]
    out[i] = -sum(pos) / len(pos) + _lse(pos + neg)
  return b * out / len(anchors) if anchors else out


def ref_mm(a, bb, y, cur, temperature, valid=None, normalize=True):
  """Both directions over the valid current rows, class-level positives."""
  a, bb = _prep(a, normalize), _prep(bb, normalize)
  n = len(a)
  ok = [True] * n if valid is None else [bool(v) for v in valid]
  rows = [i for i in range(n) if ok[i] and cur[i]]
  out = np.zeros(n)
  for i in rows:
    for q, k in ((a, bb), (bb, a)):
      cand = [float(np.dot(q[i], k[j])) / temperature for j in rows]
      pos = [float(np.dot(q[i], k[p])) / temperature for p in rows if y[p] == y[i]]
      out[i] += 0.5 * (-sum(pos) / len(pos) + _lse(cand))
  return n * out / len(rows) if rows else out


def _check(lib_fn, ref_fn, inputs, wrt):
  """Values to 1e-5; d/dx sum_i w_i loss_i for the inputs in ``wrt`` vs central differences
  of the reference (one coordinate per row + one direction); the others get zero gradient."""
  want = ref_fn(*inputs)
  w = np.random.default_rng(99).uniform(0.5, 1.5, size=len(want))
  idx = tuple(range(len(inputs)))
  values, grads = jax.jit(lambda *xs: (lib_fn(*xs), jax.grad(
      lambda *xs: jnp.sum(w * lib_fn(*xs)), argnums=idx)(*xs)))(*inputs)
  values = np.asarray(values)
  assert values.dtype == np.float32 and values.shape == want.shape
  np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
  rng = np.random.default_rng(5)
  for n, x in enumerate(inputs):
    got = np.asarray(grads[n], np.float64)
    if n not in wrt:
      assert np.all(got == 0)
      continue
    scalar = lambda xn, n=n: float(np.dot(w, ref_fn(*[xn if m == n else z
                                                      for m, z in enumerate(inputs)])))
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 0
    tol = lambda want: dict(rtol=2e-4, atol=2e-4 * max(1e-3, np.abs(want).max()))
    coords = [(i, int(rng.integers(x.shape[-1]))) for i in range(x.shape[0])]
    fd = fd_coords(scalar, x, coords)
    np.testing.assert_allclose([got[c] for c in coords], fd, **tol(fd))
    direction = rng.normal(size=x.shape)
    fd = fd_directional(scalar, x, direction)
    np.testing.assert_allclose(np.sum(got * direction), fd, **tol(fd))
  return want


@pytest.mark.parametrize("kw", [dict(temperature=0.1, valid=VALID),
                                dict(temperature=0.5, normalize=False)], ids=["valid", "raw"])
def test_nspt_matches_the_loop_reference(kw):
  s = _data(0, B, D)
  t = s + 0.5 * _data(1, B, D)                         # a teacher close to the student
  if not kw.get("normalize", True):
    s, t = 0.4 * s, 0.4 * t
  want = _check(lambda s, t: losses.contrib.nspt(s, t, LABELS, OLD, **kw),
                lambda s, t: ref_nspt(s, t, LABELS, OLD, **kw), [s, t], wrt=(0,))
  anchors = OLD & kw.get("valid", np.ones(B, bool))
  assert np.all(want[~anchors] == 0) and np.all(want[anchors] != 0)


def test_mm_matches_the_loop_reference():
  a = _data(2, B, D)
  b = a + _data(3, B, D)
  kw = dict(temperature=0.2, valid=VALID)
  want = _check(lambda a, b: losses.contrib.coconut_mm(a, b, LABELS, ~OLD, **kw),
                lambda a, b: ref_mm(a, b, LABELS, ~OLD, **kw), [a, b], wrt=(0, 1))
  assert np.all(want[OLD | ~VALID] == 0) and np.all(want[~OLD & VALID] != 0)


def test_structure_and_empty_anchor_sets():
  s, t = _data(4, B, D), _data(5, B, D)
  # The teacher is the positive side: the student's own other-class rows are its negatives;
  # moving a *teacher* row of another class changes nothing, a student one does.
  f = jax.jit(lambda s, t: losses.contrib.nspt(s, t, LABELS, OLD)[0])
  base = float(f(s, t))
  t2, s2 = t.copy(), s.copy()
  t2[3], s2[3] = _data(6, D), _data(6, D)               # row 3: class 2, not the anchor's
  assert abs(float(f(s, t2)) - base) < 1e-6 and abs(float(f(s2, t)) - base) > 1e-3
  # No rehearsal row / no current row: 0 with zero gradient; the global mean is the anchors'.
  none = np.zeros(B, bool)
  (v1, g1), (v2, g2), full = jax.jit(lambda s, t: (
      jax.value_and_grad(lambda s: jnp.sum(losses.contrib.nspt(s, t, LABELS, none)))(s),
      jax.value_and_grad(lambda s: jnp.sum(losses.contrib.coconut_mm(s, t, LABELS, none)))(s),
      losses.contrib.nspt(s, t, LABELS, OLD)))(s, t)
  assert float(v1) == 0 and float(v2) == 0 and not np.any(g1) and not np.any(g2)
  per_anchor = ref_nspt(s, t, LABELS, OLD, 0.1)[OLD] * OLD.sum() / B      # L_i
  np.testing.assert_allclose(np.mean(full), np.mean(per_anchor), rtol=1e-5)


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN, DOUT = 16, 6, 5
SL = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 0, 1, 1, 2, 3, 3, 1], np.int32)
SOLD = np.isin(SL, (0, 1))
SVALID = np.ones(NB, bool)
SVALID[[2, 9]] = False
SX = _data(10, 3, NB, DIN)
SW = _data(11, DIN, DOUT)


def _both(axis_name, impl):
  def fn(w, x, y, old, valid):
    s, t, v = (x[k] @ w for k in range(3))
    return jnp.stack([losses.contrib.nspt(s, t, y, old, valid=valid, axis_name=axis_name, impl=impl,
                                  block_size=4),
                      losses.contrib.coconut_mm(s, v, y, ~old, valid=valid, axis_name=axis_name,
                                        temperature=0.3)], axis=1)
  return fn


def test_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  single = _both(None, "dense")
  sharded = jax.shard_map(_both("d", "ring"), mesh=mesh,
                          in_specs=(P(), P(None, "d"), P("d"), P("d"), P("d")),
                          out_specs=P("d"))

  def per_and_grad(f, *args):
    per, vjp = jax.vjp(lambda w: f(w, *args[1:]), args[0])
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  (v1, g1), (v8, g8) = jax.jit(lambda *a: (per_and_grad(single, *a),
                                           per_and_grad(sharded, *a)))(SW, SX, SL, SOLD, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0)
  assert np.all(v1[SOLD & SVALID, 0] != 0) and np.all(v1[~SOLD & SVALID, 1] != 0)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * np.abs(np.asarray(g1)).max())
  assert np.abs(np.asarray(g1)).max() > 0


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_inputs():
  s, t = _data(12, B, D), _data(13, B, D)
  fn = lambda s, t, tau=0.1: (losses.contrib.nspt(s, t, LABELS, OLD, temperature=tau)
                              + losses.contrib.coconut_mm(s, t, LABELS, ~OLD, temperature=tau))
  grad = jax.grad(lambda s, t, tau=0.1: jnp.sum(fn(s, t, tau)), argnums=(0, 1))

  @jax.jit
  def variants(s, t):
    extreme = (1e4 * s).at[2].set(0.0)                 # huge rows, a zero row, tiny T
    return (fn(s, t), fn(s.astype(jnp.bfloat16), t.astype(jnp.bfloat16)),
            grad(s.astype(jnp.bfloat16), t), (fn(extreme, t, 1e-3), grad(extreme, t, 1e-3)))

  ref, low, g_low, *extreme = variants(s, t)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, ref, rtol=2e-2, atol=2e-2)
  for value, grads in [(None, g_low)] + extreme:
    if value is not None:
      assert np.all(np.isfinite(np.asarray(value)))
    assert all(np.all(np.isfinite(np.asarray(x, np.float32))) for x in grads)


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  s, t = _data(14, B, D), _data(15, B, D)
  cases = [
      (lambda: losses.contrib.nspt(s[0], t, LABELS, OLD), r"nspt: 'student' must have rank 2"),
      (lambda: losses.contrib.nspt(s, t[:3], LABELS, OLD),
       r"nspt: 'student' and 'teacher' must have the same batch size"),
      (lambda: losses.contrib.nspt(s, t.astype(np.int32), LABELS, OLD),
       r"'teacher' must be a floating-point array"),
      (lambda: losses.contrib.nspt(s, t, LABELS[:3], OLD), r"nspt: 'labels' must have shape \(8,\)"),
      (lambda: losses.contrib.nspt(s, t, LABELS, OLD[:3]), r"nspt: 'rehearsal' must have shape \(8,\)"),
      (lambda: losses.contrib.nspt(s, t, LABELS, OLD.astype(np.int32)), r"'rehearsal' must be a bool"),
      (lambda: losses.contrib.nspt(s, t, LABELS, OLD, temperature=0.0), r"'temperature' must be > 0"),
      (lambda: losses.contrib.coconut_mm(s, t[:, :3], LABELS, OLD),
       r"coconut_mm: 'a' and 'b' must have the same feature size"),
      (lambda: losses.contrib.coconut_mm(s, t, LABELS, OLD[:2]), r"'current' must have shape"),
      (lambda: losses.contrib.coconut_mm(s, t, LABELS, OLD, valid=VALID[:2]), r"'valid' must have shape"),
  ]
  for call, match in cases:
    with pytest.raises((ValueError, TypeError), match=match):
      call()


def test_recipe_config_errors():
  from configs.coconut_digits import get_config
  from jaxcl.train import ConfigError
  from jaxcl.train.config import validate
  c = get_config()
  # The per-task trainer config is an ordinary config the trainer accepts.
  assert validate(coconut.task_config(c, 1, [0, 1, 2, 3]), num_devices=8,
                  num_processes=1).name == "digits"
  for key, value, match in [("num_tasks", 6, "class_order"), ("class_order", (0, 0, 1), "distinct"),
                            ("replay_batch", 64, "replay_batch"), ("temperature", 0.0, "temperature"),
                            ("nspt_weigth", 1.0, "unknown config key")]:
    bad = get_config()
    with bad.unlocked():
      bad.coconut[key] = value
    with pytest.raises(ConfigError, match=match):
      coconut._check(bad, 10)


# ------------------------------------------------------------------ replay data and metrics


def test_replay_batches_buffer_and_metrics():
  y = np.repeat(np.arange(4), 30).astype(np.int32)
  x = np.arange(len(y), dtype=np.float32)[:, None]
  buf = coconut.buffer_rows(y, (0, 1), 5)
  np.testing.assert_array_equal(buf, np.r_[0:5, 30:35])          # first 5 of each, stored order
  cur = np.flatnonzero(np.isin(y, (2, 3)))
  make = lambda p, n: coconut.ReplayBatches(x[cur], y[cur], x[buf], y[buf], global_batch_size=8,
                                            replay_batch=3, num_classes=4, seed=7,
                                            process_index=p, process_count=n)
  it = make(0, 1)
  first = [next(it) for _ in range(3)]
  for b in first:
    old = b["y"] >= 4
    assert old.sum() == 3 and set(b["y"][old] - 4) <= {0, 1} and set(b["y"][~old]) <= {2, 3}
    assert len(set(b["x"][~old, 0])) == 5                          # no repeat among new rows
  state = it.get_state()
  again = make(0, 1)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["x"], next(it)["x"])  # resumes at the next batch
  halves = [next(make(p, 2)) for p in (0, 1)]                      # two processes, one batch
  np.testing.assert_array_equal(np.concatenate([h["x"] for h in halves]), first[0]["x"])
  empty = coconut.ReplayBatches(x[cur], y[cur], x[:0], y[:0], global_batch_size=8,
                                replay_batch=3, num_classes=4, seed=0, process_index=0,
                                process_count=1)
  assert np.all(next(empty)["y"] < 4)                              # first task: no replay
  tasks = [(0, 1), (2, 3)]
  logits = np.array([[5, 0, 9, 0], [0, 5, 0, 0], [0, 0, 9, 1], [9, 0, 0, 1]], np.float32)
  yy = np.array([0, 1, 2, 3])
  assert coconut.task_accuracies(logits, yy, tasks, 0) == [1.0]   # class 2 masked after task 0
  assert coconut.task_accuracies(logits, yy, tasks, 1) == [0.5, 0.5]
  avg, forget = coconut.continual_metrics([[1.0], [0.5, 0.5], [0.25, 1.0, 0.5]])
  assert avg == pytest.approx(1.75 / 3) and forget == pytest.approx((0.75 - 0.5) / 2)


# ------------------------------------------------------------------ two tiny tasks end to end


@pytest.mark.long
def test_study_smoke_two_tiny_tasks_end_to_end_with_frozen_teacher(tmp_path):
  # The study's smoke run (ER+NSPT+MM: 2 tasks of 2 steps, replay, the frozen teacher) is the
  # end-to-end run: its outputs, then what the run itself returned and left in its workdir.
  from experiments import coconut as study
  from tests.test_studies import check_smoke_outputs
  study.main(["--smoke", "--out", str(tmp_path), "--keep-runs", str(tmp_path / "runs")])
  check_smoke_outputs("coconut", tmp_path, ("method", "nspt", "mm", "replay"), 1)
  [(label, c)] = study.settings(True)
  c.seed = 0
  run = tmp_path / "runs" / f"{label['method']}_seed0"
  res = json.loads((run / "coconut.json").read_text())
  assert [len(r) for r in res["accuracy"]] == [1, 2] and res["tasks"] == [[0, 1], [2, 3]]
  assert all(0 <= a <= 1 for r in res["accuracy"] for a in r) and 0 < res["linear_probe"] <= 1
  assert [r["buffer_rows"] for r in res["records"]] == [0, 40]
  from tests.test_train import _final_params
  final = [_final_params(str(run / f"task_{t}"), 2) for t in range(2)]
  # Task 1's (frozen) teacher is task 0's final model; task 0's moved away from its start.
  teacher = lambda f, k: f[k.replace("['params']", "['objective_state']['params']", 1)]
  keys = [k for k in final[0] if k.startswith("['params']")]
  assert keys and all(np.array_equal(teacher(final[1], k), final[0][k]) for k in keys)
  assert any(np.abs(teacher(final[0], k) - final[0][k]).max() > 0 for k in keys)
  # Re-running resumes every finished task (nothing retrained): the same results.
  assert coconut.train(c, str(run))["accuracy"] == res["accuracy"]
