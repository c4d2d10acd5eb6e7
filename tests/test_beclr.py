"""BECLR loss and DyCE memory (jaxcl.beclr) against float64 loops; sharded == single device;
the few-shot study's smoke run."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import beclr, kmeans
from tests import ssl_reference as ref

B, D, T, LAM = 8, 5, 2.0, 0.1


def _inputs(seed, b=B):
  return [np.random.default_rng(seed + i).normal(size=(b, D)).astype(np.float32)
          for i in range(6)]


def _loss_ref(p1, p2, zt1, zt2, zs1, zs2, valid=None):
  """float64 loop: -1/2 (cos(p1, zt2) + cos(p2, zt1)) + lambda log mean_a (1/(2N-2))
  sum_{b not a, not pair(a)} exp(Z_a . Z_b / T), over the valid rows."""
  b = len(p1)
  valid = np.ones(b, bool) if valid is None else valid
  u = lambda x: ref.unit(np.asarray(x, np.float64))
  p1, p2, zt1, zt2, zs1, zs2 = map(u, (p1, p2, zt1, zt2, zs1, zs2))
  rows = [(i, v) for v in (0, 1) for i in range(b) if valid[i]]
  zs = (zs1, zs2)
  n = int(valid.sum())
  means = []
  for i, v in rows:
    total = sum(np.exp(zs[v][i] @ zs[w][j] / T) for j, w in rows if j != i)
    means.append(total / (2 * n - 2))
  neg = np.log(np.mean(means))
  out = np.zeros(b)
  for i in range(b):
    if valid[i]:
      out[i] = -0.5 * (p1[i] @ zt2[i] + p2[i] @ zt1[i]) + LAM * neg
  return out


_loss = jax.jit(functools.partial(beclr.beclr_loss, temperature=T, neg_weight=LAM))


@pytest.mark.parametrize("masked", [False, True])
def test_loss_matches_float64_loop(masked):
  x = _inputs(0)
  valid = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool) if masked else None
  got = _loss(*x, valid=valid)
  assert got.shape == (B,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, _loss_ref(*x, valid=valid), rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences_and_teacher_gets_none():
  x = _inputs(1)
  grads = jax.grad(lambda *a: jnp.mean(_loss(*a)), argnums=tuple(range(6)))(*x)
  for which in (2, 3):                                   # teacher projections: stop-gradient
    assert np.all(np.asarray(grads[which]) == 0)
  for which in (0, 1, 4, 5):
    direction = np.random.default_rng(10 + which).normal(size=(B, D))

    def f(v, which=which):
      args = list(x)
      args[which] = v
      return np.mean(_loss_ref(*args))

    fd = ref.fd_directional(f, x[which], direction)
    np.testing.assert_allclose(np.sum(np.asarray(grads[which]) * direction), fd, rtol=1e-3,
                               atol=1e-5)


def test_neg_term_is_the_log_of_the_batch_mean_not_the_mean_of_logs():
  x = _inputs(2)
  with_neg = _loss(*x)
  pos_only = beclr.beclr_loss(*x, neg_weight=0.0)
  neg = (np.asarray(with_neg) - np.asarray(pos_only)) / LAM
  np.testing.assert_allclose(neg, neg[0], atol=3e-5)     # one scalar shared by every row
  z = ref.unit(np.concatenate([x[4], x[5]]).astype(np.float64))
  e = np.exp(z @ z.T / T)
  for i in range(B):                                     # remove self and pair
    e[i, i] = e[i + B, i + B] = e[i, i + B] = e[i + B, i] = 0
  per_anchor = e.sum(1) / (2 * B - 2)
  assert neg.mean() == pytest.approx(np.log(per_anchor.mean()), abs=3e-5)
  assert abs(np.log(per_anchor.mean()) - np.mean(np.log(per_anchor))) > 3e-4  # >> the 3e-5 tolerance


def test_sharded_loss_and_gradient_equal_single_device():
  x = _inputs(3, b=16)                                   # 2 rows per device
  valid = np.ones(16, bool)
  valid[[1, 9]] = False

  def total(fn, *a):
    return jnp.sum(fn(*a))

  body = lambda *a: beclr.beclr_loss(*a[:6], temperature=T, neg_weight=LAM, valid=a[6],
                                     axis_name="data")
  sharded = ref.shard(body, (P("data"),) * 7, P("data"))
  got = sharded(*x, valid)
  want = _loss(*x, valid=valid)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  g_sh = jax.grad(lambda *a: jnp.sum(sharded(*a, valid)), argnums=(0, 4, 5))(*x)
  g_1 = jax.grad(lambda *a: jnp.sum(_loss(*a, valid=valid)), argnums=(0, 4, 5))(*x)
  for a, b in zip(g_sh, g_1):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_loss_errors_name_the_argument():
  x = _inputs(0)
  with pytest.raises(ValueError, match="'p1' and 'zt2'"):
    beclr.beclr_loss(x[0][:4], *x[1:])
  with pytest.raises(ValueError, match="'temperature'"):
    beclr.beclr_loss(*x, temperature=0.0)
  with pytest.raises(ValueError, match="'num_clusters'"):
    beclr.dyce_init(4, D, 5)
  with pytest.raises(ValueError, match="'order'"):
    beclr.enhance(beclr.dyce_init(8, D, 2), x[0], jax.random.key(0), order="random")


# ------------------------------------------------------------------------- DyCE

M, K = 24, 3
_insert = jax.jit(functools.partial(beclr.dyce_insert, epsilon=0.05, num_iters=10))


def _clustered_state(seed=0):
  """A memory filled by three batches of 8 around three directions, then clustered."""
  rng = np.random.default_rng(seed)
  dirs = ref.unit(rng.normal(size=(3, D)))
  state = beclr.dyce_init(M, D, K)
  batches = []
  for i in range(3):
    z = (dirs[rng.integers(0, 3, size=8)] + 0.2 * rng.normal(size=(8, D))).astype(np.float32)
    batches.append(z)
    state = _insert(state, z, jax.random.key(i))
  return state, batches, dirs


def test_fifo_fill_then_first_clustering_is_kmeans_of_the_full_memory():
  state, batches, _ = _clustered_state()
  np.testing.assert_allclose(state.memory, ref.unit(np.concatenate(batches)), rtol=1e-5,
                             atol=1e-6)
  assert int(state.count) == M and bool(state.clustered)
  # The memory became full on the third insert, whose key seeds the k-means.
  res = kmeans.kmeans(state.memory, K, jax.random.key(2), num_iters=20, metric="cosine")
  np.testing.assert_array_equal(state.labels, res.assignments)
  np.testing.assert_allclose(state.centres, res.centroids, rtol=1e-5, atol=1e-6)
  # Before it was full: labels -1, not clustered.
  half = _insert(beclr.dyce_init(M, D, K), batches[0], jax.random.key(0))
  assert not bool(half.clustered) and np.all(np.asarray(half.labels) == -1)


def test_later_batches_overwrite_the_oldest_rows_with_sinkhorn_labels_and_recentre():
  state, _, dirs = _clustered_state()
  z = (dirs[[0, 1, 2, 0, 1]] + 0.1 * np.random.default_rng(5).normal(size=(5, D)))
  z = z.astype(np.float32)
  new = _insert(state, z, jax.random.key(9))
  zu = ref.unit(z.astype(np.float64))
  codes = ref.sinkhorn_swav(zu @ np.asarray(state.centres, np.float64).T, 0.05, 10)
  want_mem = np.asarray(state.memory).copy()
  want_lab = np.asarray(state.labels).copy()
  want_mem[:5], want_lab[:5] = zu, np.argmax(codes, 1)   # count = 24: pointer back at row 0
  np.testing.assert_allclose(new.memory, want_mem, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(new.labels, want_lab)
  assert int(new.count) == M + 5
  for k in range(K):
    members = want_mem[want_lab == k]
    want = ref.unit(members.sum(0)) if len(members) else np.asarray(state.centres[k])
    np.testing.assert_allclose(new.centres[k], want, rtol=1e-5, atol=1e-6)


def test_an_empty_cluster_keeps_its_centre():
  old = np.eye(3, D, dtype=np.float32)
  memory = ref.unit(np.random.default_rng(0).normal(size=(6, D))).astype(np.float32)
  labels = np.array([0, 0, 2, 2, 0, 2], np.int32)                 # cluster 1 is empty
  new = beclr.cluster_means(jnp.asarray(memory), jnp.asarray(labels), jnp.asarray(old))
  np.testing.assert_allclose(new[1], old[1])
  np.testing.assert_allclose(new[0], ref.unit(memory[[0, 1, 4]].sum(0)), rtol=1e-5)


def test_lookup_matches_a_loop():
  state, _, dirs = _clustered_state(1)
  q = (dirs[[2, 0, 1, 1]] + 0.3 * np.random.default_rng(7).normal(size=(4, D)))
  q = q.astype(np.float32)
  nbrs, valid = beclr.dyce_lookup(state, q, top_k=3)
  mem, lab, cen = (np.asarray(a, np.float64) for a in (state.memory, state.labels,
                                                       state.centres))
  for i, qi in enumerate(ref.unit(q.astype(np.float64))):
    c = int(np.argmax(cen @ qi))
    members = np.flatnonzero(lab == c)
    order = members[np.argsort(-(mem[members] @ qi), kind="stable")][:3]
    assert np.all(np.asarray(valid[i, :len(order)])) and not np.any(valid[i, len(order):])
    np.testing.assert_allclose(nbrs[i, :len(order)], mem[order], rtol=1e-5, atol=1e-6)


def test_insert_first_finds_the_sample_itself_lookup_first_does_not():
  state, _, dirs = _clustered_state(2)
  z = (dirs[[0, 1, 2, 1]] + 0.3 * np.random.default_rng(8).normal(size=(4, D)))
  z = jnp.asarray(z, jnp.float32)
  enh = jax.jit(beclr.enhance, static_argnames=("top_k", "order"))
  rows, valid, s1 = enh(state, z, jax.random.key(0), top_k=2, order="insert_first")
  assert rows.shape == (4 * 3, D) and bool(valid.all())
  np.testing.assert_allclose(rows[:4], z)                       # the batch itself first
  np.testing.assert_allclose(rows[4:8], ref.unit(np.asarray(z, np.float64)), rtol=1e-5,
                             atol=1e-6)                         # 1st neighbours: own copies
  rows2, _, s2 = enh(state, z, jax.random.key(0), top_k=2, order="lookup_first")
  sims = np.sum(np.asarray(rows2[4:8]) * ref.unit(np.asarray(z, np.float64)), -1)
  assert np.all(sims < 1 - 1e-4)                                # the old memory only
  np.testing.assert_allclose(s1.memory, s2.memory)               # the same write either way
  # Neighbours are constants: the gradient reaches z only through its own rows.
  g = jax.grad(lambda v: jnp.sum(enh(state, v, jax.random.key(0), top_k=2)[0] ** 2))(z)
  np.testing.assert_allclose(g, 2 * z, rtol=1e-6)


def test_sharded_insert_equals_single_device():
  state, _, dirs = _clustered_state(3)
  z = (dirs[np.arange(16) % 3] + 0.2 * np.random.default_rng(4).normal(size=(16, D)))
  z = z.astype(np.float32)
  rep = jax.tree.map(lambda _: P(), state)
  body = lambda s, v: beclr.dyce_insert(s, v, jax.random.key(1), axis_name="data")
  got = ref.shard(body, (rep, P("data")), rep)(state, z)
  want = _insert(state, z, jax.random.key(1))
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.long  # a study smoke
def test_study_smoke(tmp_path):
  from experiments import beclr as study
  study.main(["--smoke", "--out", str(tmp_path)])
  for ext in ("md", "json", "png"):
    assert (tmp_path / f"beclr.{ext}").stat().st_size > 0
  out = json.loads((tmp_path / "beclr.json").read_text())
  assert out["command"] == "python -m experiments.beclr --smoke"
  accs = [s for s in out["summary"] if "accuracy" in s]
  assert {s["setting"]["opta_passes"] for s in accs} == {0, 1}
  assert all(0.2 < s["accuracy"]["mean"] <= 1.0 for s in accs)   # 5-way chance is 0.2
  md = (tmp_path / "beclr.md").read_text()
  assert "## Verdict" in md and "| BECLR + DyCE encoder | 1 | prototype | 1 |" in md


def test_recipe_validates():
  from configs import beclr_digits
  from jaxcl.train.config import make_objective, validate
  c = beclr_digits.get_config()
  assert validate(c, num_devices=8, num_processes=1).name == "digits"
  make_objective(c)
  assert not set(beclr_digits.PRETRAIN_CLASSES) & set(beclr_digits.HELD_OUT_CLASSES)
