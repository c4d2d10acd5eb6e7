"""MoCHi: per-query synthetic hard negatives vs a float64 loop reference built from the same
random draws; gradient with the synthetic points held fixed; sharded == single device."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from jaxcl.losses import mochi as mochi_lib
from tests import ssl_reference as ref

B, D, NH, S1, S2, T = 8, 5, 4, 3, 2, 0.2
KW = dict(num_hard=NH, num_mix=S1, num_mix_query=S2, temperature=T)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("b",))
def _draws(rng, b=B):
  return mochi_lib.mochi_draws(rng, jnp.arange(b), num_hard=NH, num_mix=S1, num_mix_query=S2)


@functools.partial(jax.jit, static_argnames=("kw",))
def _loss(q, k, rng, queue=None, kw=tuple(KW.items())):
  return losses.contrib.mochi_loss(q, k, rng=rng, queue=queue, **dict(kw))


@pytest.mark.parametrize("with_queue", [False, True])
def test_value_matches_loop_reference(with_queue):
  q, k = _data(0, B, D), _data(1, B, D)
  queue = _data(2, 3, D) if with_queue else None
  rng = jax.random.key(3)
  synthetic = ref.mochi_synthetic(q, k, queue, _draws(rng), NH)
  got = _loss(q, k, rng, queue)
  assert got.dtype == jnp.float32 and got.shape == (B,)
  np.testing.assert_allclose(got, ref.mochi(q, k, T, synthetic, queue), rtol=1e-5, atol=1e-6)


def test_gradient_treats_synthetic_points_as_constants():
  q, k, queue = _data(4, B, D), _data(5, B, D), _data(6, 3, D)
  rng = jax.random.key(7)
  synthetic = ref.mochi_synthetic(q, k, queue, _draws(rng), NH)     # frozen at the base point
  g = np.random.default_rng(8).uniform(0.5, 1.5, size=B)
  grads = jax.jit(jax.grad(lambda a, b: jnp.sum(g * _loss(a, b, rng, queue)), argnums=(0, 1)))(
      q, k)
  fns = [lambda x: g @ ref.mochi(x, k, T, synthetic, queue),
         lambda x: g @ ref.mochi(q, x, T, synthetic, queue)]
  for got, x, f, seed in zip(grads, (q, k), fns, (9, 10)):
    direction = np.random.default_rng(seed).normal(size=x.shape)
    np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                               ref.fd_directional(f, x, direction), rtol=2e-4)


def test_inactive_or_no_mixing_is_plain_info_nce():
  q, k, queue = _data(11, B, D), _data(12, B, D), _data(13, 3, D)
  want = jax.jit(lambda a, b: losses.info_nce(a, b, temperature=T, negatives=queue))(q, k)
  off = _loss(q, k, jax.random.key(0), queue, kw=tuple(dict(KW, active=False).items()))
  none = _loss(q, k, jax.random.key(0), queue,
               kw=tuple(dict(KW, num_mix=0, num_mix_query=0).items()))
  np.testing.assert_allclose(off, want, rtol=1e-6)
  np.testing.assert_allclose(none, want, rtol=1e-6)
  assert np.all(np.asarray(_loss(q, k, jax.random.key(0), queue)) > np.asarray(want))


def test_draws_follow_the_paper():
  d = _draws(jax.random.key(14), b=64)
  assert np.all((d.first >= 0) & (d.first < NH) & (d.second >= 0) & (d.second < NH))
  assert np.all(d.first != d.second)
  assert np.all((d.alpha >= 0) & (d.alpha < 1))
  assert np.all((d.beta >= 0) & (d.beta < 0.5)) and float(d.beta.max()) > 0.4
  assert len({tuple(r) for r in np.asarray(d.alpha)}) == 64      # per-row draws differ


def test_sharded_equals_single_device():
  b = 16                                                          # 2 rows per device
  q, k, queue = _data(15, b, D), _data(16, b, D), _data(17, 4, D)
  valid = np.ones(b, bool)
  valid[[2, 11]] = False
  g = np.random.default_rng(18).uniform(0.5, 1.5, size=b).astype(np.float32)
  rng = jax.random.key(19)
  kw = dict(KW, num_hard=6)

  def body(a, c, v, w, qu):
    per = losses.contrib.mochi_loss(a, c, rng=rng, queue=qu, valid=v, axis_name="data", **kw)
    return jax.lax.psum(jnp.sum(w * per), "data")

  total = ref.shard(body, (P("data"),) * 4 + (P(),), P())
  single = lambda a, c: jnp.sum(g * losses.contrib.mochi_loss(a, c, rng=rng, queue=queue, valid=valid,
                                                      **kw))
  value, got = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(q, k, valid, g, queue)
  want_value, want = jax.jit(jax.value_and_grad(single, argnums=(0, 1)))(q, k)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for a, b_ in zip(got, want):
    np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_argument():
  q, k = _data(0, B, D), _data(1, B, D)
  with pytest.raises(ValueError, match="'num_hard'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), num_hard=B)         # pool has B - 1
  with pytest.raises(ValueError, match="'num_mix'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), num_mix=-1)
  with pytest.raises(ValueError, match="'queue'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), queue=_data(2, 3, D + 1), **KW)
  with pytest.raises(TypeError, match="'query'"):
    losses.contrib.mochi_loss(q.astype(np.int32), k, rng=jax.random.key(0), **KW)
  with pytest.raises(ValueError, match="'key'"):
    losses.contrib.mochi_loss(q, k[:3], rng=jax.random.key(0), **KW)


# ------------------------------------------------------------- mine="queue" (the paper's pool)
QKW = dict(KW, mine="queue")


def test_queue_mining_value_and_gradient_match_loop_reference():
  q, k, queue = _data(20, B, D), _data(21, B, D), _data(22, 6, D)
  rng = jax.random.key(23)
  synthetic = ref.mochi_synthetic(q, k, queue, _draws(rng), NH, mine_batch=False)
  loss = lambda a, b: _loss(a, b, rng, queue, kw=tuple(QKW.items()))
  np.testing.assert_allclose(loss(q, k), ref.mochi(q, k, T, synthetic, queue), rtol=1e-5,
                             atol=1e-6)
  # Mining from the queue alone differs from mining batch + queue on this data.
  assert not np.allclose(loss(q, k), _loss(q, k, rng, queue), rtol=1e-4)
  g = np.random.default_rng(24).uniform(0.5, 1.5, size=B)
  grads = jax.jit(jax.grad(lambda a, b: jnp.sum(g * loss(a, b)), argnums=(0, 1)))(q, k)
  fns = [lambda x: g @ ref.mochi(x, k, T, synthetic, queue),
         lambda x: g @ ref.mochi(q, x, T, synthetic, queue)]
  for got, x, f, seed in zip(grads, (q, k), fns, (25, 26)):
    direction = np.random.default_rng(seed).normal(size=x.shape)
    np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                               ref.fd_directional(f, x, direction), rtol=2e-4)


def test_queue_mining_sharded_equals_single_device():
  b = 16
  q, k, queue = _data(27, b, D), _data(28, b, D), _data(29, 6, D)
  g = np.random.default_rng(30).uniform(0.5, 1.5, size=b).astype(np.float32)
  rng = jax.random.key(31)

  def body(a, c, w, qu):
    per = losses.contrib.mochi_loss(a, c, rng=rng, queue=qu, axis_name="data", **QKW)
    return jax.lax.psum(jnp.sum(w * per), "data")

  total = ref.shard(body, (P("data"),) * 3 + (P(),), P())
  single = lambda a, c: jnp.sum(g * losses.contrib.mochi_loss(a, c, rng=rng, queue=queue, **QKW))
  value, got = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(q, k, g, queue)
  want_value, want = jax.jit(jax.value_and_grad(single, argnums=(0, 1)))(q, k)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for a, b_ in zip(got, want):
    np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)


def test_queue_mining_bad_inputs_name_the_argument():
  q, k = _data(0, B, D), _data(1, B, D)
  with pytest.raises(ValueError, match="'queue'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), **QKW)
  with pytest.raises(ValueError, match="'num_hard'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), queue=_data(2, 3, D), **QKW)  # NH=4 > 3
  with pytest.raises(ValueError, match="'mine'"):
    losses.contrib.mochi_loss(q, k, rng=jax.random.key(0), **dict(KW, mine="batch"))
