"""MCL: the digits_easy proxy data, group-masked losses, the cluster-homogeneous sampler and
the multistage driver (jaxcl.recipes.mcl)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import data, losses
from jaxcl.data.grouped import GroupedBatches, epoch_batches
from jaxcl.recipes import mcl
from tests.reference import fd_coords

B, D = 16, 5
GROUPS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 3, 0, 1, 2, 0, 1, 2], np.int32)  # 3 alone-ish
VALID = np.ones(B, bool)
VALID[[5, 11]] = False


def _normal(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape)


# --------------------------------------------------------------- float64 loop references


def _unit(v):
  return v / math.sqrt(float(np.dot(v, v)))


def _lse(vals):
  m = max(vals)
  return m + math.log(sum(math.exp(v - m) for v in vals))


def ref_grouped_nt_xent(z1, z2, t, groups, valid):
  """Mean over the 2 views of -s(a, p(a)) + log sum_{b != a, group(b) = group(a), valid} e^s."""
  z = [[_unit(r) for r in np.asarray(z1, np.float64)],
       [_unit(r) for r in np.asarray(z2, np.float64)]]
  out = np.zeros(len(z1))
  for i in range(len(z1)):
    if not valid[i]:
      continue
    for v in range(2):
      cands = [np.dot(z[v][i], z[w][j]) / t for j in range(len(z1)) for w in range(2)
               if valid[j] and groups[j] == groups[i] and (j, w) != (i, v)]
      out[i] += 0.5 * (_lse(cands) - np.dot(z[0][i], z[1][i]) / t)
  return out


def ref_grouped_info_nce(q, k, t, groups, valid, hard=None):
  """-s(q_i, k_i) + log sum over valid same-group keys (and same-group rows' hard negatives)."""
  q = [_unit(r) for r in np.asarray(q, np.float64)]
  k = [_unit(r) for r in np.asarray(k, np.float64)]
  out = np.zeros(len(q))
  for i in range(len(q)):
    if not valid[i]:
      continue
    cands = [np.dot(q[i], k[j]) / t for j in range(len(q)) if valid[j] and groups[j] == groups[i]]
    if hard is not None:
      cands += [np.dot(q[i], _unit(np.asarray(hard[j, m], np.float64))) / t
                for j in range(len(q)) if valid[j] and groups[j] == groups[i]
                for m in range(hard.shape[1])]
    out[i] = _lse(cands) - np.dot(q[i], k[i]) / t
  return out


Z1, Z2 = _normal(0, B, D), _normal(1, B, D)
Z2 = Z1 + 0.7 * Z2
HARD = _normal(2, B, 2, D)


def test_grouped_nt_xent_matches_loop_reference_value_and_gradient():
  t = 0.3
  loss = jax.jit(lambda a, g: losses.nt_xent(a, jnp.float32(Z2), temperature=t, group_ids=g,
                                             valid=VALID))
  got = loss(jnp.float32(Z1), GROUPS)
  want = ref_grouped_nt_xent(Z1, Z2, t, GROUPS, VALID)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Differs from the unmasked loss (the mask is not a no-op) ...
  plain = jax.jit(lambda a: losses.nt_xent(a, jnp.float32(Z2), temperature=t, valid=VALID))(
      jnp.float32(Z1))
  assert np.abs(np.asarray(plain) - want).max() > 1e-2
  # ... and equals it when every row is in one group.
  np.testing.assert_allclose(loss(jnp.float32(Z1), np.zeros(B, np.int32)), plain, rtol=1e-6)
  g = jax.jit(jax.grad(lambda a: jnp.mean(loss(a, GROUPS))))(jnp.float32(Z1))
  coords = [(0, 0), (3, 2), (8, 4), (9, 1), (5, 3)]   # (5, .) is padding: gradient 0
  fd = fd_coords(lambda a: ref_grouped_nt_xent(a, Z2, t, GROUPS, VALID).mean(), Z1, coords)
  np.testing.assert_allclose([g[c] for c in coords], fd, rtol=1e-3, atol=1e-5)
  assert g[5, 3] == 0 and abs(fd[-1]) < 1e-8


def test_grouped_info_nce_with_hard_negatives_matches_loop_reference():
  t = 0.2
  loss = jax.jit(lambda k: losses.info_nce(jnp.float32(Z1), k, temperature=t, group_ids=GROUPS,
                                           valid=VALID, negatives=jnp.float32(HARD)))
  got = loss(jnp.float32(Z2))
  want = ref_grouped_info_nce(Z1, Z2, t, GROUPS, VALID, HARD)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  g = jax.jit(jax.grad(lambda k: jnp.mean(loss(k))))(jnp.float32(Z2))
  coords = [(0, 1), (2, 2), (8, 0), (15, 4)]
  fd = fd_coords(lambda k: ref_grouped_info_nce(Z1, k, t, GROUPS, VALID, HARD).mean(), Z2,
                 coords)
  np.testing.assert_allclose([g[c] for c in coords], fd, rtol=1e-3, atol=1e-5)
  with pytest.raises(ValueError, match="group_ids"):
    losses.info_nce(Z1, Z2, group_ids=GROUPS, negatives=HARD[:, 0])
  with pytest.raises(TypeError, match="'group_ids' must be integers"):
    losses.nt_xent(Z1, Z2, group_ids=GROUPS.astype(np.float32))


@pytest.mark.parametrize("name", ["nt_xent", "info_nce"])
def test_grouped_loss_sharded_equals_single_device(name):
  fn = getattr(losses, name)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  w0 = jnp.float32(_normal(3, D, 4))
  a, b = jnp.float32(Z1), jnp.float32(Z2)
  call = lambda w, a, b, g, v, axis_name=None: fn(a @ w, b @ w, temperature=0.25, group_ids=g,
                                                  valid=v, axis_name=axis_name)
  sharded = lambda w, *args: jax.shard_map(
      lambda w, *a: call(w, *a, axis_name="data"), mesh=mesh,
      in_specs=(P(),) + (P("data"),) * 4, out_specs=P("data"))(w, *args)
  args = (a, b, jnp.asarray(GROUPS), jnp.asarray(VALID))
  single, g_single = jax.jit(jax.value_and_grad(lambda w: jnp.mean(call(w, *args))))(w0)
  per_single = call(w0, *args)
  per_sharded = jax.jit(sharded)(w0, *args)
  g_sharded = jax.jit(jax.grad(lambda w: jnp.mean(sharded(w, *args))))(w0)
  np.testing.assert_allclose(per_sharded, per_single, rtol=1e-5, atol=1e-6)
  assert np.abs(g_single).max() > 0
  np.testing.assert_allclose(g_sharded, g_single, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- sampler


def test_sampler_batches_are_homogeneous_and_process_count_independent():
  rng = np.random.default_rng(0)
  groups = rng.integers(0, 4, 200)
  groups[groups == 3] = 2          # group 3 empty; group sizes unequal
  groups[:7] = 5                   # group 5 too small for one batch: never served
  x = np.arange(200, dtype=np.float32)[:, None]
  gb = 16
  plan = epoch_batches(groups, gb, seed=3, epoch=0)
  for batch in plan:
    assert len(set(groups[batch])) == 1 and len(set(batch)) == gb
  assert 5 not in groups[plan[:, 0]]
  assert len(set(plan.ravel())) == plan.size                   # no row twice in an epoch
  # round-robin: the first batches cycle through the groups in sorted order
  assert list(groups[plan[:3, 0]]) == [0, 1, 2]
  assert not np.array_equal(plan, epoch_batches(groups, gb, seed=3, epoch=1))

  def global_batches(nproc, steps):
    its = [GroupedBatches(x, x[:, 0], groups, global_batch_size=gb, seed=3, process_index=p,
                          process_count=nproc) for p in range(nproc)]
    return [np.concatenate([next(it)["index"] for it in its]) for _ in range(steps)]

  steps = len(plan) + 3                                        # crosses an epoch boundary
  one = global_batches(1, steps)
  for nproc in (2, 4):
    for a, b in zip(one, global_batches(nproc, steps)):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(one[0], plan[0])


def test_sampler_resumes_from_state():
  groups = np.repeat(np.arange(3), 30)
  x = np.random.default_rng(1).normal(size=(90, 2)).astype(np.float32)
  make = lambda: GroupedBatches(x, groups, groups, global_batch_size=8, seed=7,
                                process_index=0, process_count=1)
  it = make()
  ref = [next(it)["index"] for _ in range(25)]
  it = make()
  for _ in range(11):
    next(it)
  state = it.get_state()
  resumed = make()
  resumed.set_state(state)
  for want in ref[11:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["index"], want)
    np.testing.assert_array_equal(got["x"], x[want])
  with pytest.raises(ValueError, match="no group has 'global_batch_size'"):
    GroupedBatches(x, groups, groups, global_batch_size=31, seed=0, process_index=0,
                   process_count=1)


def test_pseudo_labels_cumulative_and_last_only():
  c1 = np.array([0, 0, 1, 1, 2, 2])
  c2 = np.array([1, 0, 1, 0, 1, 1])
  cum = mcl.pseudo_labels([c1, c2], 3, cumulative=True)
  last = mcl.pseudo_labels([c1, c2], 3, cumulative=False)
  # cumulative: same label iff both clusterings agree
  for i in range(6):
    for j in range(6):
      assert (cum[i] == cum[j]) == (c1[i] == c1[j] and c2[i] == c2[j])
      assert (last[i] == last[j]) == (c2[i] == c2[j])
  assert sorted(set(cum)) == list(range(5))


# ------------------------------------------------------------------ data and driver


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_digits_easy_is_digits_plus_a_shared_easy_channel(data_dir):
  from jaxcl.data import embedded
  meta = data.info("digits_easy")
  for split in ("train", "test"):
    a = data.load_arrays("digits_easy", split, data_dir=data_dir)
    d = embedded.generate("digits")[split]
    assert a["x"].shape == (meta.splits[split],) + meta.shape
    np.testing.assert_array_equal(a["x"][..., 0], d[0][..., 0])
    np.testing.assert_array_equal(a["y"], d[1])
    level = (a["easy"] + 0.5) / embedded.EASY_LEVELS
    np.testing.assert_allclose(a["x"][..., 1], np.broadcast_to(level[:, None, None], (len(level), 8, 8)))
    assert set(a["easy"]) == set(range(5))
  # The easy label carries (almost) no information about the digit.
  from sklearn.metrics import normalized_mutual_info_score
  tr = data.load_arrays("digits_easy", "train", data_dir=data_dir)
  assert normalized_mutual_info_score(tr["y"], tr["easy"]) < 0.02


def _tiny_config(data_dir, **mcl_kw):
  from configs.mcl_digits import get_config
  c = get_config()
  c.data.data_dir = data_dir
  c.batch_size = 64
  c.num_steps = 3
  c.optim.warmup_steps = 1
  c.log_every = 3
  c.checkpoint.every = 3
  c.checkpoint.use_async = False
  c.model.encoder_kwargs = {"hidden": [32]}
  c.model.head_hidden = 32
  c.model.head_out = 16
  c.plots = False
  c.progress = False
  c.eval.probe_steps = 5
  c.eval.probe_l2 = (1e-4,)
  c.mcl.num_clusters = 3
  c.mcl.kmeans_iters = 5
  for k, v in mcl_kw.items():
    c.mcl[k] = v
  return c


def _check_end_to_end(res, workdir, num_clusters):
  """What a two-stage run returns and leaves in its workdir."""
  assert set(res["representations"]) == {"stage 1", "stage 2", "concat"}
  for rep in res["representations"].values():
    for name in ("label", "easy"):
      assert 0 <= rep[name]["linear_probe"] <= 1
  s2 = res["stages"][1]
  assert 1 <= s2["num_groups"] <= num_clusters and sum(s2["group_sizes"]) == 1437
  assert s2["rows_per_epoch"] <= 1437
  assert set(res["stages"][0]["cluster_nmi"]) == {"label", "easy"}
  assert (workdir / "mcl.json").exists()
  assert sorted(p.name for p in workdir.iterdir() if p.is_dir()) == ["stage_1", "stage_2"]


# The sampler mechanism runs end to end inside the study smoke (test_mcl_study_smoke: the same
# pipeline, once); the mask mechanism here.
@pytest.mark.long
@pytest.mark.slow
def test_two_tiny_stages_end_to_end_mask_mechanism(tmp_path, data_dir):
  c = _tiny_config(data_dir, mechanism="mask")
  _check_end_to_end(mcl.train(c, str(tmp_path)), tmp_path, c.mcl.num_clusters)


def test_bad_mcl_config_is_named(tmp_path, data_dir):
  from jaxcl.train.config import ConfigError
  c = _tiny_config(data_dir, mechanism="both")
  with pytest.raises(ConfigError, match="config.mcl.mechanism"):
    mcl.train(c, str(tmp_path))


@pytest.mark.long  # a study smoke
def test_mcl_study_smoke(tmp_path):
  import json
  from experiments import mcl as study
  study.main(["--smoke", "--out", str(tmp_path), "--keep-runs", str(tmp_path / "runs")])
  out = json.loads((tmp_path / "mcl.json").read_text())
  assert out["command"] == "python -m experiments.mcl --smoke"
  assert [s["setting"]["representation"] for s in out["summary"]] == list(study.REPS)
  for s in out["summary"]:
    assert 0 < s["digit_probe"]["mean"] <= 1 and s["n"] == 1
    assert ("easy_probe" in s) == (s["setting"]["representation"] != study.REPS[0])
  md = (tmp_path / "mcl.md").read_text()
  assert "## Verdict" in md and len([l for l in md.splitlines() if l.startswith("| ")]) == 6
  assert (tmp_path / "mcl.png").stat().st_size > 0
  # The study's MCL run (sampler mechanism), end to end: its results and workdir ...
  config = study.run_config(dict(study.settings(True))["mcl"], seed=0)
  run = tmp_path / "runs" / "mcl_seed0"
  res = json.loads((run / "mcl.json").read_text())
  _check_end_to_end(res, run, config.mcl.num_clusters)
  # ... and resuming it: the finished stages are restored, the same result.
  again = mcl.train(config, str(run))
  assert json.loads(json.dumps(again["representations"])) == res["representations"]
