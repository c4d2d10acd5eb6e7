"""Hard-negative truncated InfoNCE (Wang & Liu): float64 loop reference, gradient with the
selection frozen, quantile parametrisation, sharded == single device."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from tests import ssl_reference as ref

B, D = 8, 5
VALID = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("t", "n", "quantile"))
def _loss(q, k, valid=None, t=0.5, n=None, quantile=None):
  return losses.contrib.truncated_info_nce(q, k, temperature=t, num_negatives=n, quantile=quantile,
                                   valid=valid)


@pytest.mark.parametrize("n,quantile,valid", [(3, None, None), (None, 0.5, None),
                                               (6, None, VALID), (1, None, VALID)])
def test_value_matches_loop_reference(n, quantile, valid):
  q, k = _data(0, B, D), _data(1, B, D)
  got = _loss(q, k, valid, n=n, quantile=quantile)
  kept = n if n is not None else int(np.ceil(quantile * (B - 1)))
  assert got.dtype == jnp.float32 and got.shape == (B,)
  np.testing.assert_allclose(got, ref.truncated(q, k, 0.5, kept, valid), rtol=1e-5, atol=1e-6)


def test_quantile_one_is_info_nce():
  q, k = _data(2, B, D), _data(3, B, D)
  want = jax.jit(lambda a, b: losses.info_nce(a, b, temperature=0.5))(q, k)
  np.testing.assert_allclose(_loss(q, k, quantile=1.0), want, rtol=1e-6)


def test_gradient_matches_finite_differences_with_frozen_selection():
  q, k = _data(4, B, D), _data(5, B, D)
  qn, kn = ref.unit(q), ref.unit(k)
  hard_sets = [sorted([j for j in range(B) if j != i], key=lambda j: -(qn[i] @ kn[j]))[:3]
               for i in range(B)]
  g = np.random.default_rng(6).uniform(0.5, 1.5, size=B)
  grads = jax.jit(jax.grad(lambda a, b: jnp.sum(g * _loss(a, b, n=3)), argnums=(0, 1)))(q, k)
  fns = [lambda x: g @ ref.truncated(x, k, 0.5, 3, hard_sets=hard_sets),
         lambda x: g @ ref.truncated(q, x, 0.5, 3, hard_sets=hard_sets)]
  for got, x, f, seed in zip(grads, (q, k), fns, (7, 8)):
    direction = np.random.default_rng(seed).normal(size=x.shape)
    np.testing.assert_allclose(np.sum(np.asarray(got, np.float64) * direction),
                               ref.fd_directional(f, x, direction), rtol=2e-4)


def test_sharded_equals_single_device():
  b = 16
  q, k = _data(9, b, D), _data(10, b, D)
  valid = np.ones(b, bool)
  valid[[5, 12]] = False
  g = np.random.default_rng(11).uniform(0.5, 1.5, size=b).astype(np.float32)

  def body(a, c, v, w):
    per = losses.contrib.truncated_info_nce(a, c, num_negatives=4, valid=v, axis_name="data")
    return jax.lax.psum(jnp.sum(w * per), "data")

  total = ref.shard(body, (P("data"),) * 4, P())
  single = lambda a, c: jnp.sum(g * losses.contrib.truncated_info_nce(a, c, num_negatives=4,
                                                              valid=valid))
  value, got = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(q, k, valid, g)
  want_value, want = jax.jit(jax.value_and_grad(single, argnums=(0, 1)))(q, k)
  np.testing.assert_allclose(value, want_value, rtol=1e-5)
  for a, b_ in zip(got, want):
    np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-6)


def test_bad_inputs_name_the_argument():
  q, k = _data(0, B, D), _data(1, B, D)
  with pytest.raises(ValueError, match="'num_negatives' and 'quantile'"):
    losses.contrib.truncated_info_nce(q, k)
  with pytest.raises(ValueError, match="'num_negatives'"):
    losses.contrib.truncated_info_nce(q, k, num_negatives=B)
  with pytest.raises(ValueError, match="'quantile'"):
    losses.contrib.truncated_info_nce(q, k, quantile=0.0)
  with pytest.raises(ValueError, match="'key'"):
    losses.contrib.truncated_info_nce(q, k[:, :2], num_negatives=2)
