"""MCLRec (jaxcl.losses.mclrec, jaxcl.recipes.mclrec, jaxcl.data.sequences; arXiv 2304.07763):
float64 loop references for the margin regulariser and the meta loss (value and gradient),
sharded == single device, bf16 / extreme inputs, clear errors; CL4SRec's augmentations and
HR / NDCG against loops; the two multi_transform optimisers keep the augmenters' and the
encoder's updates apart; the generator and the SASRec encoder's basic contracts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import reference
from jaxcl import losses
from jaxcl.data import sequences
from jaxcl.recipes import mclrec

B, D = 8, 5


def _x(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


# ------------------------------------------------------------------ float64 loop references
def _rows(a, b, valid):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  n = len(a)
  ok = [True] * n if valid is None else [bool(v) for v in valid]
  u = [a[i] for i in range(n)] + [b[i] for i in range(n)]
  okk = ok + ok
  return u, okk, n, ok


def ref_margin(a, b, temperature=1.0, valid=None):
  u, okk, n, ok = _rows(a, b, valid)
  out = np.zeros(n)
  for i in range(n):
    if not ok[i]:
      continue
    per = []
    for r in (i, n + i):
      pair = n + i if r == i else i
      p = float(np.dot(u[r], u[pair])) / temperature
      negs = [float(np.dot(u[r], u[k])) / temperature for k in range(2 * n)
              if okk[k] and k != r and k != pair]
      if not negs:
        per.append(0.0)
        continue
      m = max(negs)
      val = max(p - min(p, m), 0.0)
      val += sum(max(max(p, m) - x, 0.0) for x in negs) / len(negs)
      per.append(val)
    out[i] = 0.5 * (per[0] + per[1])
  return out


def ref_nt_dot(a, b, temperature=1.0, valid=None):
  u, okk, n, ok = _rows(a, b, valid)
  out = np.zeros(n)
  for i in range(n):
    if not ok[i]:
      continue
    per = []
    for r in (i, n + i):
      pair = n + i if r == i else i
      logits = [float(np.dot(u[r], u[k])) / temperature for k in range(2 * n)
                if okk[k] and k != r]
      per.append(-float(np.dot(u[r], u[pair])) / temperature + reference.lse(logits))
    out[i] = 0.5 * (per[0] + per[1])
  return out


def ref_meta(h0, h1, h2, h3, valid=None, weight=0.1):
  pairs = ((h0, h3), (h1, h2), (h2, h3))
  return sum(ref_nt_dot(x, y, 1.0, valid) + weight * ref_margin(x, y, 1.0, valid)
             for x, y in pairs)


VALID = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)


def test_margin_regularizer_value_and_grad():
  a, b = _x(0, B, D), _x(1, B, D)
  reference.check_value_and_grad(
      lambda a, b: losses.contrib.margin_regularizer(a, b, temperature=0.7, valid=VALID),
      lambda a, b: ref_margin(a, b, 0.7, VALID), (a, b))
  # Positive above the hardest negative: the first hinge is active.
  b_close = a + 0.01 * _x(2, B, D)
  assert np.all(np.asarray(losses.contrib.margin_regularizer(a * 3, b_close * 3)) > 0)


def test_meta_loss_value_and_grad():
  hs = tuple(_x(10 + k, B, D, scale=0.7) for k in range(4))
  reference.check_value_and_grad(
      lambda *h: losses.contrib.mclrec_meta_loss(*h, valid=VALID),
      lambda *h: ref_meta(*h, valid=VALID), hs, atol=1e-5)
  no_margin = losses.contrib.mclrec_meta_loss(*hs, margin_weight=0.0)
  np.testing.assert_allclose(no_margin, ref_meta(*hs, weight=0.0), rtol=1e-5, atol=1e-5)


def test_sharded_equals_single_device():
  n = 16
  x = _x(20, n, 4, 6)
  w = _x(21, 6, D, scale=0.5)
  valid = np.ones(n, bool)
  valid[[3, 9]] = False

  def f(axis_name):
    def fn(w, x, valid):
      h = jnp.einsum("bkd,de->bke", x, w)
      return losses.contrib.mclrec_meta_loss(h[:, 0], h[:, 1], h[:, 2], h[:, 3], valid=valid,
                                     axis_name=axis_name)
    return fn

  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  sharded = jax.shard_map(f("d"), mesh=mesh, in_specs=(P(), P("d"), P("d")), out_specs=P("d"))

  @jax.jit
  def both(w, x, valid):
    out = []
    for fn in (f(None), sharded):
      per, vjp = jax.vjp(lambda w: fn(w, x, valid), w)
      out.append((per, vjp(jnp.full(per.shape, 1.0 / n))[0]))
    return out

  (v1, g1), (v8, g8) = both(w, x, valid)
  assert np.all(np.asarray(v1)[~valid] == 0) and np.abs(np.asarray(g1)).max() > 0
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * np.abs(np.asarray(g1)).max())


def test_bf16_and_extreme_inputs():
  a, b = _x(30, B, D), _x(31, B, D)
  f32 = np.asarray(losses.contrib.margin_regularizer(a, b))
  bf = losses.contrib.margin_regularizer(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(bf, f32, rtol=5e-2, atol=5e-2)
  big = [h * 1e3 for h in (a, b, a + 1, b - 1)]
  v, g = jax.jit(jax.value_and_grad(lambda h: jnp.mean(losses.contrib.mclrec_meta_loss(h, *big[1:]))))(
      big[0])
  assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
  one = losses.contrib.margin_regularizer(a[:1], b[:1])     # no negatives at all: R = 0
  assert float(one[0]) == 0.0


def test_bad_inputs_name_the_argument():
  a = _x(40, B, D)
  with pytest.raises(ValueError, match="'b'"):
    losses.contrib.margin_regularizer(a, a[:4])
  with pytest.raises(TypeError, match="'a'"):
    losses.contrib.margin_regularizer(a.astype(np.int32), a)
  with pytest.raises(ValueError, match="temperature"):
    losses.contrib.margin_regularizer(a, a, temperature=0.0)
  with pytest.raises(ValueError, match="'h2'"):
    losses.contrib.mclrec_meta_loss(a, a, a[:, :3], a)
  with pytest.raises(ValueError, match="branch"):
    sequences.make_sequences(0, num_items=20, num_clusters=4, branch=6)


# ------------------------------------------------------------------ augmentations vs loops
L = 8
ROWS = [np.array(r, np.int32) for r in (
    [0, 0, 0, 5, 2, 7, 1, 9], [3, 4, 5, 6, 7, 8, 9, 10], [0, 0, 0, 0, 0, 0, 0, 4],
    [0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 6, 6, 2])]


def _items(x):
  return [int(v) for v in x if v > 0]


def np_crop(x, u, eta):
  s_ = _items(x)
  n = len(s_)
  c = min(max(1, int(np.floor(eta * n))), n)
  start = min(int(np.floor(u * (n - c + 1))), n - c)
  return np.asarray(sequences.left_pad([s_[start:start + c]], L)[0])


def np_mask(x, scores, gamma, token):
  pos = [j for j in range(L) if x[j] > 0]
  k = int(np.floor(gamma * len(pos)))
  hide = sorted(pos, key=lambda j: scores[j])[:k]
  out = x.copy()
  out[hide] = token
  return out


def np_reorder(x, u, scores, beta):
  s_ = _items(x)
  n = len(s_)
  r = int(np.floor(beta * n))
  start = min(int(np.floor(u * (n - r + 1))), n - r)
  lo = L - n + start
  window = list(range(lo, lo + r))
  order = sorted(window, key=lambda j: scores[j])
  out = x.copy()
  for dst, src in zip(window, order):
    out[dst] = x[src]
  return out


def test_augmentations_match_numpy_loops():
  rng = np.random.default_rng(0)
  crop = jax.jit(jax.vmap(sequences.crop_row, (0, 0, None)))
  mask = jax.jit(jax.vmap(sequences.mask_row, (0, 0, None, None)))
  reorder = jax.jit(jax.vmap(sequences.reorder_row, (0, 0, 0, None)))
  xs = np.stack(ROWS * 4)
  u = rng.random(len(xs)).astype(np.float32)
  sc = rng.random(xs.shape).astype(np.float32)
  got = (np.asarray(crop(xs, u, 0.5)), np.asarray(mask(xs, sc, 0.5, 99)),
         np.asarray(reorder(xs, u, sc, 0.8)))
  for r, x in enumerate(xs):
    np.testing.assert_array_equal(got[0][r], np_crop(x, u[r], 0.5))
    np.testing.assert_array_equal(got[1][r], np_mask(x, sc[r], 0.5, 99))
    np.testing.assert_array_equal(got[2][r], np_reorder(x, u[r], sc[r], 0.8))
  # A full-length reorder of the 8-item row is a permutation that moved something.
  assert sorted(got[2][1]) == sorted(ROWS[1])


def test_cl4srec_augment_applies_one_op_per_row():
  xs = np.stack(ROWS * 8)
  out = np.asarray(jax.jit(lambda k, x: sequences.cl4srec_augment(k, x, mask_token=99))(
      jax.random.key(3), xs))
  kinds = set()
  for x, y in zip(xs, out):
    a, b = _items(x), [int(v) for v in y if v > 0]
    if 99 in b:
      kinds.add("mask")
      assert len(b) == len(a) and all(p == q for p, q in zip(a, b) if q != 99)
    elif len(b) < len(a):
      kinds.add("crop")
      assert any(a[s:s + len(b)] == b for s in range(len(a)))
    else:
      assert sorted(a) == sorted(b)     # reorder (or an identity of a short row)
  assert kinds == {"mask", "crop"}


# ------------------------------------------------------------------ HR / NDCG vs loops
def test_hr_ndcg_match_loops():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(40, 30)).astype(np.float32)
  scores[0, :] = 0.0                                   # all tied: the lower id ranks first
  targets = rng.integers(1, 31, 40)
  targets[0] = 3
  hr, ndcg = mclrec.hr_ndcg(scores, targets, 10)
  for r in range(40):
    t = targets[r] - 1
    rank = sum(1 for j in range(30) if scores[r, j] > scores[r, t] or
               (scores[r, j] == scores[r, t] and j < t))
    assert hr[r] == (1.0 if rank < 10 else 0.0)
    np.testing.assert_allclose(ndcg[r], 1 / np.log2(rank + 2) if rank < 10 else 0.0, rtol=1e-6)
  assert hr[0] == 1.0 and np.isclose(ndcg[0], 1 / np.log2(4))


# ------------------------------------------------------------------ optimisers, data, model
def test_multi_transform_keeps_updates_apart():
  params = {"encoder": {"w": jnp.ones((3, 2))}, "augmenter": {"a1": {"v": jnp.ones(4)}}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  enc_tx, aug_tx = mclrec.optimizers(0.1, 0.2)
  s_enc, s_aug = enc_tx.init(params), aug_tx.init(params)
  up, s_enc2 = enc_tx.update(grads, s_enc, params)
  assert np.all(np.asarray(up["augmenter"]["a1"]["v"]) == 0)
  np.testing.assert_allclose(up["encoder"]["w"], -0.1, rtol=1e-5)
  up, _ = aug_tx.update(grads, s_aug, params)
  assert np.all(np.asarray(up["encoder"]["w"]) == 0)
  np.testing.assert_allclose(up["augmenter"]["a1"]["v"], -0.2, rtol=1e-5)
  # The encoder optimiser holds moments for the encoder only: a second step with zero
  # augmenter gradients still moves nothing there, and its counts are its own.
  up, _ = enc_tx.update(grads, s_enc2, params)
  assert np.all(np.asarray(up["augmenter"]["a1"]["v"]) == 0)
  moments = [x for x in jax.tree.leaves(s_enc2) if getattr(x, "shape", ()) == (4,)]
  assert not moments


def test_sequences_and_splits():
  d = sequences.make_sequences(0, num_users=30, num_items=40, length=7, num_clusters=4,
                               branch=4)
  d2 = sequences.make_sequences(0, num_users=30, num_items=40, length=7, num_clusters=4,
                                branch=4)
  np.testing.assert_array_equal(d.items, d2.items)
  assert d.items.min() >= 1 and d.items.max() <= 40
  np.testing.assert_allclose(d.transition[1:].sum(1), 1.0)
  chain = ~d.noise_click[:, 1:]
  assert np.all(d.transition[d.items[:, :-1], d.items[:, 1:]][chain] > 0)
  sp = sequences.splits(d, 6)
  assert sp["train"][0].shape == (30 * 4, 6)
  np.testing.assert_array_equal(sp["test"][1], d.items[:, -1])
  np.testing.assert_array_equal(sp["test"][0][:, -1], d.items[:, -2])
  np.testing.assert_array_equal(sp["val"][0][:, -1], d.items[:, -3])
  np.testing.assert_array_equal(sp["train"][0][1], [0, 0, 0, 0, *d.items[0, :2]])


def test_sasrec_ignores_padding_and_scores_all_items():
  from jaxcl.models import SASRec
  m = SASRec(num_items=12, max_len=6, dim=8, num_heads=2, inner=16, dropout=0.0)
  s = jnp.array([[0, 0, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
  p = jax.jit(m.init)(jax.random.key(0), s)
  apply = jax.jit(lambda p, s: (m.apply(p, s), m.apply(p, s, method=SASRec.scores)))
  h, scores = apply(p, s)
  assert h.shape == (2, 8) and np.all(np.isfinite(np.asarray(h))) and scores.shape == (2, 12)
  # Padded keys are masked out: the padding embedding does not reach h.
  p2 = jax.tree.map(lambda x: x, p)
  table = p2["params"]["item_embedding"]["embedding"]
  p2["params"]["item_embedding"]["embedding"] = table.at[0].set(50.0)
  np.testing.assert_allclose(apply(p2, s)[0], h, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="'seqs'"):
    m.apply(p, jnp.zeros((2, 5), jnp.int32))
