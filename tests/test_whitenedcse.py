"""WhitenedCSE: float64 loop references for the SGW head (value, gradient with W frozen) and the
multi-positive InfoNCE, identity group covariance, shuffle invariance, sharded == single."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from tests import ssl_reference as ref

B, K, D, G = 16, 3, 8, 2


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _perms(rng, nc, d):
  return [np.asarray(jax.random.permutation(jax.random.fold_in(rng, i), d)) for i in range(nc)]


def ref_sgw(x, perms, chunk, g, eps, frozen=None, method="zca", valid=None):
  """Loop SGW in float64; ``frozen``: the x whose covariances give W (stop-gradient check)."""
  x = np.asarray(x, np.float64)
  xs = x if frozen is None else np.asarray(frozen, np.float64)
  valid = np.ones(len(x), bool) if valid is None else valid
  out = np.zeros_like(x)
  s = x.shape[1] // g
  for c, perm in enumerate(perms):
    rows = np.where(chunk == c)[0]
    stat = rows[valid[rows]]
    for gi in range(g):
      ch = perm[gi * s:(gi + 1) * s]
      mean_w = xs[stat][:, ch].mean(0)
      xc_w = xs[stat][:, ch] - mean_w
      cov = xc_w.T @ xc_w / len(stat) + eps * np.eye(s)
      if method == "zca":
        lam, u = np.linalg.eigh(cov)
        w = u @ np.diag(lam ** -0.5) @ u.T
      else:
        w = np.linalg.inv(np.linalg.cholesky(cov)).T
      out[np.ix_(rows, ch)] = (x[rows][:, ch] - x[stat][:, ch].mean(0)) @ w
  return out


def ref_info_nce(q, k, t, valid):
  q, k = ref.unit(q), ref.unit(k)
  out = np.zeros(len(q))
  for i in range(len(q)):
    if valid[i]:
      out[i] = -q[i] @ k[i] / t + ref.lse([q[i] @ k[j] / t for j in range(len(k)) if valid[j]])
  return out


def ref_loss(z, t=0.05, valid=None):
  valid = np.ones(len(z), bool) if valid is None else valid
  return sum(ref_info_nce(z[:, 0], z[:, j], t, valid) for j in range(1, z.shape[1]))


def _view_chunks(b, k):
  return np.tile(np.arange(k), b)


def test_sgw_matches_loop_reference_and_whitens():
  x = _data(0, B * K, D) * np.linspace(0.5, 3, D) + 1.0
  rng = jax.random.key(3)
  chunk = _view_chunks(B, K)
  f = lambda a, method: losses.contrib.shuffled_group_whitening(
      a, rng, num_groups=G, chunk_ids=chunk, num_chunks=K, eps=0.0, method=method)
  outs = jax.jit(lambda a: (f(a, "zca"), f(a, "cholesky")))(x)
  perms = _perms(rng, K, D)
  s = D // G
  for got, method in zip(outs, ("zca", "cholesky")):
    np.testing.assert_allclose(got, ref_sgw(x, perms, chunk, G, 0.0, method=method), atol=2e-4)
    _check_identity(got, perms, chunk, s)


def _check_identity(got, perms, chunk, s):
  for c, perm in enumerate(perms):
    for gi in range(len(perm) // s):
      xg = np.asarray(got, np.float64)[chunk == c][:, perm[gi * s:(gi + 1) * s]]
      np.testing.assert_allclose(xg.mean(0), 0.0, atol=1e-5)
      np.testing.assert_allclose(xg.T @ xg / len(xg), np.eye(s), atol=2e-4)


def test_sgw_gradient_matches_reference_with_frozen_whitener():
  x = _data(1, B * K, D)
  rng, chunk = jax.random.key(4), _view_chunks(B, K)
  valid = np.ones(B * K, bool)
  valid[[2, 7]] = False
  w = _data(2, B * K, D)
  f = lambda a: jnp.sum(w * losses.contrib.shuffled_group_whitening(
      a, rng, num_groups=G, chunk_ids=chunk, num_chunks=K, eps=1e-3, valid=valid))
  got = np.asarray(jax.jit(jax.grad(f))(x), np.float64)
  perms = _perms(rng, K, D)
  fr = lambda a: np.sum(w * ref_sgw(a, perms, chunk, G, 1e-3, frozen=x, valid=valid))
  direction = np.random.default_rng(5).normal(size=x.shape)
  np.testing.assert_allclose(np.sum(got * direction), ref.fd_directional(fr, x, direction),
                             rtol=2e-4)


def test_one_group_zca_is_shuffle_invariant_and_scale_free():
  x = _data(6, 32, D)
  f = lambda a, shuffle: losses.contrib.shuffled_group_whitening(a, jax.random.key(0), num_groups=1,
                                                         eps=0.0, shuffle=shuffle)
  base, shuffled, big, y16 = jax.jit(lambda a, a16: (
      f(a, False), f(a, True), f(a * 1e4 + 3e4, False), f(a16, False)))(
          x, jnp.asarray(x, jnp.bfloat16))
  np.testing.assert_allclose(shuffled, base, atol=1e-4)
  np.testing.assert_allclose(big, base, atol=2e-3)                       # extreme scale
  assert y16.dtype == jnp.float32 and np.all(np.isfinite(y16))
  np.testing.assert_allclose(y16, base, atol=0.1)


def test_loss_matches_loop_reference_value_and_gradient():
  z = _data(7, B, K, D)
  valid = np.ones(B, bool)
  valid[5] = False
  f = jax.jit(lambda a: losses.contrib.whitenedcse_loss(a, valid=valid))
  np.testing.assert_allclose(f(z), ref_loss(z, valid=valid), rtol=2e-5, atol=1e-5)
  g = np.random.default_rng(8).uniform(0.5, 1.5, B)
  got = np.asarray(jax.jit(jax.grad(lambda a: jnp.sum(g * f(a))))(z), np.float64)
  direction = np.random.default_rng(9).normal(size=z.shape)
  np.testing.assert_allclose(np.sum(got * direction),
                             ref.fd_directional(lambda a: g @ ref_loss(a, valid=valid), z,
                                                direction), rtol=2e-4)


def test_sharded_equals_single_device(chunking="code"):
  """Whitening statistics psum'd over the mesh + gathered negatives: value and gradient;
  the full objective (code chunking, padded rows) against the loop references."""
  z = _data(12, B, K, D)
  valid = np.ones(B, bool)
  valid[[3, 12]] = False
  g = np.random.default_rng(13).uniform(0.5, 1.5, B).astype(np.float32)
  rng = jax.random.key(14)
  kw = {"num_groups": G, "chunking": chunking, "project": jnp.tanh}

  def body(a, v, w):
    whitened = losses.contrib.whitenedcse(a, rng, valid=v, axis_name="data", **kw)
    return jax.lax.psum(jnp.sum(w * whitened), "data")

  total = ref.shard(body, (P("data"),) * 3, P())
  single = lambda a: jnp.sum(g * losses.contrib.whitenedcse(a, rng, valid=valid, **kw))
  value, got = jax.jit(jax.value_and_grad(total))(z, valid, g)
  want_value, want = jax.jit(jax.value_and_grad(single))(z)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4)
  # the single-device objective == SGW -> tanh -> InfoNCE terms, from the loop references
  chunk = np.arange(B * K) // B                                   # the code's contiguous thirds
  white = ref_sgw(z.reshape(B * K, D), _perms(rng, K, D), chunk, G, 1e-5,
                  valid=np.repeat(valid, K))
  want_ref = g @ ref_loss(np.tanh(white).reshape(B, K, D), valid=valid)
  np.testing.assert_allclose(want_value, want_ref, rtol=1e-4)


def test_bad_inputs_name_the_argument():
  x, rng = _data(0, 8, 6), jax.random.key(0)
  sgw = losses.contrib.shuffled_group_whitening
  with pytest.raises(ValueError, match="'num_groups'"):
    sgw(x, rng, num_groups=4)
  with pytest.raises(ValueError, match="'method'"):
    sgw(x, rng, num_groups=2, method="svd")
  with pytest.raises(ValueError, match="'eps'"):
    sgw(x, rng, num_groups=2, eps=-1.0)
  with pytest.raises(ValueError, match="'chunk_ids'"):
    sgw(x, rng, num_groups=2, chunk_ids=np.zeros(3, np.int32))
  with pytest.raises(TypeError, match="'x'"):
    sgw(np.ones((8, 6), np.int32), rng, num_groups=2)
  z = _data(0, 4, 3, 6)
  with pytest.raises(ValueError, match="'chunking'"):
    losses.contrib.whitenedcse(z, rng, num_groups=2, chunking="rows")
  with pytest.raises(ValueError, match="'views'"):
    losses.contrib.whitenedcse_loss(z[:, :1])
  with pytest.raises(ValueError, match="'views'"):
    losses.contrib.whitenedcse(z[0], rng)
