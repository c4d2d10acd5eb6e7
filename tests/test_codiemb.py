"""CoDiEmb: float64 loop references for the multi-positive IR loss and the STS terms (Pearson,
PRO, RankKL, soft-rank Spearman; value and gradient), sort-based ranks vs scipy, sharded ==
single device, bf16 / extreme inputs, argument errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from scipy.stats import rankdata

from jaxcl import losses
from tests import ssl_reference as ref

B, NP, NN, D = 16, 3, 2, 6
T = 0.1


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _ir_inputs(seed):
  return _data(seed, B, D), _data(seed + 1, B, NP, D), _data(seed + 2, B, NN, D)


def ref_ir(q, pos, neg, t, valid, pv=None, nv=None):
  q, pos, neg = ref.unit(q), ref.unit(pos), ref.unit(neg)
  pv = np.ones(pos.shape[:2], bool) if pv is None else pv
  nv = np.ones(neg.shape[:2], bool) if nv is None else nv
  out = np.zeros(len(q))
  rows = np.where(valid)[0]
  for i in rows:
    slots = [p for p in range(pos.shape[1]) if pv[i, p]]
    for p in slots:
      cands = ([pos[j, p] for j in rows if pv[j, p]] +
               [neg[j, m] for j in rows for m in range(neg.shape[1]) if nv[j, m]])
      out[i] += (-q[i] @ pos[i, p] / t + ref.lse([q[i] @ c / t for c in cands])) / len(slots)
  return out


def ref_sts_terms(a, b, y, t, rank_t):
  s = np.sum(ref.unit(a) * ref.unit(b), axis=1)
  y = np.asarray(y, np.float64)
  n = len(s)

  def pearson(u, v):
    u, v = u - u.mean(), v - v.mean()
    return 0.0 if np.all(v == 0) else u @ v / np.sqrt((u @ u) * (v @ v))

  order = np.argsort(-y, kind="stable")
  ss, ys = s[order], y[order]
  terms = []
  for k in range(n):
    later = [j for j in range(k + 1, n) if ys[j] < ys[k]]
    if later:
      dl = [ys[k] - ys[j] for j in later]
      logits = [ss[k] * max(dl) / t] + [ss[j] * d / t for j, d in zip(later, dl)]
      terms.append(ref.lse(logits) - logits[0])
  pro = np.mean(terms) if terms else 0.0
  r = rankdata(-y) - 1
  tgt = ((n - 1 - r) / (n - 1)) / t
  logq = tgt - ref.lse(tgt)
  logp = s / t - ref.lse(s / t)
  rank_kl = np.sum(np.exp(logq) * (logq - logp)) / n
  soft = np.array([sum(1 / (1 + np.exp(-(s[i] - s[j]) / rank_t)) for j in range(n) if j != i)
                   for i in range(n)])
  return {"pearson": 1 - pearson(s, y), "pro": pro, "rank_kl": rank_kl,
          "spearman": 1 - pearson(soft, rankdata(y) - 1)}


def ref_sts(a, b, y, t=0.05, rank_t=0.1, w=(2.0, 0.5, 5.0, 0.3)):
  r = ref_sts_terms(a, b, y, t, rank_t)
  return w[0] * r["pearson"] + w[1] * r["pro"] + w[2] * r["rank_kl"] + w[3] * r["spearman"]


def _sts(a, b, y, **kw):
  return losses.contrib.codiemb_sts(a, b, y, spearman_weight=0.3, **kw)


def test_ir_matches_loop_reference_value_and_gradient():
  q, pos, neg = _ir_inputs(0)
  valid = np.ones(B, bool)
  valid[[4, 9]] = False
  rng = np.random.default_rng(2)
  pv, nv = rng.random((B, NP)) < 0.7, rng.random((B, NN)) < 0.7
  pv[0] = False                                                     # a query with no positive
  f = jax.jit(lambda *a: losses.contrib.codiemb_ir(*a, temperature=T, valid=valid, positive_valid=pv,
                                           negative_valid=nv))
  np.testing.assert_allclose(f(q, pos, neg), ref_ir(q, pos, neg, T, valid, pv, nv), rtol=2e-5,
                             atol=2e-5)
  g = np.random.default_rng(3).uniform(0.5, 1.5, B)
  grads = jax.jit(jax.grad(lambda *a: jnp.sum(g * f(*a)), argnums=(0, 1, 2)))(q, pos, neg)
  args = [q, pos, neg]
  for i, got in enumerate(grads):
    def fr(x, i=i):
      a = list(args)
      a[i] = x
      return g @ ref_ir(*a, T, valid, pv, nv)
    direction = np.random.default_rng(10 + i).normal(size=args[i].shape)
    np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                               ref.fd_directional(fr, args[i], direction), rtol=2e-4)


def test_ir_one_positive_is_info_nce_with_hard_negatives():
  q, pos, neg = _ir_inputs(20)
  both = jax.jit(lambda q, p, n: (losses.contrib.codiemb_ir(q, p[:, :1], n, temperature=T),
                                  losses.info_nce(q, p[:, 0], negatives=n, temperature=T)))
  got, want = both(q, pos, neg)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ranks_match_scipy_and_soft_rank_limit():
  y = np.array([3.0, 1.0, 1.0, 5.0, 3.0, 3.0, 0.0, 2.0], np.float32)
  valid = np.array([1, 1, 0, 1, 1, 0, 1, 1], bool)
  asc, desc, masked, soft = jax.jit(lambda y, v: (
      losses.contrib.average_rank(y), losses.contrib.average_rank(y, descending=True),
      losses.contrib.average_rank(y, v), losses.contrib.soft_rank(y, temperature=1e-3)))(y, valid)
  np.testing.assert_array_equal(asc, rankdata(y) - 1)
  np.testing.assert_array_equal(desc, rankdata(-y) - 1)
  np.testing.assert_array_equal(np.asarray(masked)[valid], rankdata(y[valid]) - 1)
  assert np.all(np.asarray(masked)[~valid] == -1)
  np.testing.assert_allclose(soft, rankdata(y) - 1, atol=1e-6)


def test_sts_matches_loop_reference_value_and_gradient():
  a, b = _data(30, B, D), _data(31, B, D)
  y = np.random.default_rng(32).integers(0, 6, B).astype(np.float32)     # ties
  vg = jax.value_and_grad(lambda u, v: jnp.mean(_sts(u, v, y)), argnums=(0, 1))
  terms, (val, grads) = jax.jit(lambda u, v: (losses.contrib.codiemb_sts_terms(u, v, y), vg(u, v)))(a, b)
  want = ref_sts_terms(a, b, y, 0.05, 0.1)
  for name, v in want.items():
    np.testing.assert_allclose(terms[name], v, rtol=5e-5, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(val, ref_sts(a, b, y), rtol=5e-5)
  for i, got in enumerate(grads):
    fr = (lambda x: ref_sts(x, b, y)) if i == 0 else (lambda x: ref_sts(a, x, y))
    direction = np.random.default_rng(33 + i).normal(size=a.shape)
    np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                               ref.fd_directional(fr, (a, b)[i], direction), rtol=5e-4)


def test_sharded_equals_single_device():
  """IR: value and gradient; STS (gathered, non-decomposable): value on every valid row."""
  q, pos, neg = _ir_inputs(40)
  a, b = _data(43, B, D), _data(44, B, D)
  y = np.random.default_rng(45).uniform(0, 5, B).astype(np.float32)
  valid = np.ones(B, bool)
  valid[[2, 13]] = False
  g = np.random.default_rng(46).uniform(0.5, 1.5, B).astype(np.float32)

  def loss(q, pos, neg, a, b, y, v, w, ax=None):
    ir = losses.contrib.codiemb_ir(q, pos, neg, temperature=T, valid=v, axis_name=ax)
    sts = losses.contrib.codiemb_sts(a, b, y, valid=v, axis_name=ax)
    return jnp.sum(w * ir), jnp.sum(w * sts)

  psum = lambda x: jax.lax.psum(x, "data")
  body = lambda *args: jax.tree.map(psum, loss(*args, ax="data"))
  total = ref.shard(body, (P("data"),) * 8, P())
  args = (q, pos, neg, a, b, y, valid, g)
  (value, sts), got = jax.jit(jax.value_and_grad(total, (0, 1, 2), has_aux=True))(*args)
  (want_value, want_sts), want = jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(*args)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(sts, want_sts, rtol=1e-5)
  np.testing.assert_allclose(want_sts, g[valid].sum() * ref_sts(a[valid], b[valid], y[valid],
                                                                w=(2.0, 0.5, 5.0, 0.0)),
                             rtol=1e-4)
  for x, w in zip(got, want):
    np.testing.assert_allclose(x, w, rtol=1e-4, atol=1e-5)


def test_bf16_and_extreme_inputs_stay_finite():
  q, pos, neg = _ir_inputs(50)
  bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, pos, neg)]
  y = np.random.default_rng(51).uniform(0, 5, B).astype(np.float32)
  vg = jax.value_and_grad(  # tiny temperature, huge rows
      lambda u, v: jnp.sum(losses.contrib.codiemb_sts(u, v, y, temperature=1e-4)), argnums=(0, 1))
  f = jax.jit(lambda u, v, bf: (vg(u, v), losses.contrib.codiemb_sts_terms(u, v, jnp.ones(B)),
                                losses.contrib.codiemb_ir(*bf, temperature=1e-4)))
  (v, grads), t, got = f(q * 1e4, pos[:, 0], bf)
  assert np.isfinite(v) and all(np.all(np.isfinite(x)) for x in grads)
  assert float(t["pearson"]) == 1.0 and float(t["pro"]) == 0.0       # constant gold scores
  assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
  np.testing.assert_allclose(got, ref_ir(q, pos, neg, 1e-4, np.ones(B, bool)), rtol=2e-2)


def test_bad_inputs_name_the_argument():
  q, pos, neg = _ir_inputs(0)
  with pytest.raises(ValueError, match="'positives'"):
    losses.contrib.codiemb_ir(q, pos[:5], neg)
  with pytest.raises(ValueError, match="'negatives'"):
    losses.contrib.codiemb_ir(q, pos, neg[:, :, :3])
  with pytest.raises(ValueError, match="'positive_valid'"):
    losses.contrib.codiemb_ir(q, pos, neg, positive_valid=np.ones((B, 2), bool))
  with pytest.raises(ValueError, match="'temperature'"):
    losses.contrib.codiemb_ir(q, pos, neg, temperature=0.0)
  with pytest.raises(TypeError, match="'query'"):
    losses.contrib.codiemb_ir(q.astype(np.int32), pos, neg)
  with pytest.raises(ValueError, match="'scores'"):
    losses.contrib.codiemb_sts(q, q, np.ones(3, np.float32))
  with pytest.raises(TypeError, match="'scores'"):
    losses.contrib.codiemb_sts(q, q, np.ones(B, np.int32))
  with pytest.raises(ValueError, match="'b'"):
    losses.contrib.codiemb_sts(q, q[:4], np.ones(B, np.float32))
