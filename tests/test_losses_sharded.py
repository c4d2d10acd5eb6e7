"""Acceptance 2: inside ``jax.shard_map`` every loss equals the single-device call on the full batch.

For each objective (with ``sample_ids``, ``valid`` padding and hard negatives where it takes
them) a replicated linear projection ``W`` is applied before the loss, and we compare, to 1e-5:

* the per-example values, reassembled from the shards, with the single-device values;
* the gradient of the global mean loss w.r.t. ``W``:
  (a) ``jax.grad`` outside the ``shard_map`` of the mean of its output;
  (b) inside the ``shard_map``, from the *local* mean loss.

What (b) gives depends on how ``W`` enters (JAX 0.10, ``check_vma=True`` by default): ``W`` is
passed with ``P()`` so it is *unvarying*; multiplying it with the varying local rows inserts an
implicit ``pcast(..., to='varying')`` (formerly ``pvary``) whose transpose is a ``psum``. So
``jax.grad`` of the local mean w.r.t. an unvarying ``W`` already returns the sum over devices of
the local gradients, ``n_dev * grad(global mean)``, identical on every device (a further
``pmean`` is a no-op). The issue's recipe, "local mean, then ``pmean`` of the gradient", is
right when the gradient is per device: differentiate w.r.t. ``pcast(W, axis, to='varying')``
(or run with ``check_vma=False``); then ``pmean`` gives ``grad(global mean)``. Both relations
are asserted below, so a change of JAX semantics or a gather without the right transpose fails.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses

B, DIN, DOUT, M = 16, 6, 5, 2
RTOL = 1e-5


def _normal(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


IDS = np.array([0, 1, 2, 3, 0, 5, 6, 1, 8, 9, 10, 3, 12, 13, 14, 15], np.int32)  # dups across devices
VALID = np.ones(B, bool)
VALID[[3, 10, 15]] = False                                            # padding on several devices
LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3, 0, 1, 4, 5, 0, 2, 6, 1], np.int32)  # 4, 5, 6 alone
W0 = _normal(0, DIN, DOUT)
X1, X2 = _normal(1, B, DIN), _normal(2, B, DIN)
X2 = X2 + X1
HARD = _normal(3, B, M, DIN)
SHARED = _normal(4, 3, DIN)
VIEWS = _normal(5, B, 3, DIN)
MODS = _normal(6, B, DIN)
RNG = jax.random.key(11)


# name -> (fn(W, *batch_args, *replicated_args, axis_name), batch_args, replicated_args)
CASES = {
    "info_nce_hard": (
        lambda W, q, k, n, ids, v, axis_name=None: losses.info_nce(
            q @ W, k @ W, negatives=n @ W, sample_ids=ids, valid=v, temperature=0.05,
            axis_name=axis_name),
        [X1, X2, HARD, IDS, VALID], []),
    "info_nce_shared": (
        lambda W, q, k, ids, v, n, axis_name=None: losses.info_nce(
            q @ W, k @ W, negatives=n @ W, sample_ids=ids, valid=v, temperature=0.1,
            axis_name=axis_name),
        [X1, X2, IDS, VALID], [SHARED]),
    "clip_loss": (
        lambda W, a, b, ids, v, axis_name=None: losses.clip_loss(
            a @ W, b @ W, sample_ids=ids, valid=v, axis_name=axis_name),
        [X1, X2, IDS, VALID], []),
    "nt_xent": (
        lambda W, a, b, ids, v, axis_name=None: losses.nt_xent(
            a @ W, b @ W, sample_ids=ids, valid=v, axis_name=axis_name),
        [X1, X2, IDS, VALID], []),
    "dcl": (
        lambda W, a, b, ids, v, axis_name=None: losses.dcl(
            a @ W, b @ W, sample_ids=ids, valid=v, axis_name=axis_name),
        [X1, X2, IDS, VALID], []),
    "dclw": (
        lambda W, a, b, ids, v, axis_name=None: losses.dclw(
            a @ W, b @ W, sample_ids=ids, valid=v, axis_name=axis_name),
        [X1, X2, IDS, VALID], []),
    "siglip_loss": (
        lambda W, a, b, ids, v, axis_name=None: losses.siglip_loss(
            a @ W, b @ W, temperature=0.3, bias=-2.0, sample_ids=ids, valid=v,
            axis_name=axis_name),
        [X1, X2, IDS, VALID], []),
    "supcon": (
        lambda W, f, labels, v, axis_name=None: losses.supcon(
            f[:, :2] @ W, labels, base_temperature=0.07, valid=v, axis_name=axis_name),
        [VIEWS, LABELS, VALID], []),
    "mv_info_nce": (
        lambda W, f, v, axis_name=None: losses.mv_info_nce(f @ W, valid=v, axis_name=axis_name),
        [VIEWS, VALID], []),
    "mv_dhel": (
        lambda W, f, v, axis_name=None: losses.mv_dhel(f @ W, valid=v, axis_name=axis_name),
        [VIEWS, VALID], []),
    "mv_average": (
        lambda W, f, v, axis_name=None: losses.mv_average(f @ W, valid=v, axis_name=axis_name),
        [VIEWS, VALID], []),
    # Two modalities for "n": jax.random.permutation is slow to compile (each of the M(M-1)
    # permutations, in each traced copy of the loss); the reference tests cover M = 3.
    "symile_n": (
        lambda W, a, b, v, axis_name=None: losses.symile(
            [a @ W, b @ W], temperature=0.1, negatives="n", rng=RNG, valid=v,
            axis_name=axis_name),
        [X1, X2, VALID], []),
    "symile_n_squared": (
        lambda W, a, b, c, v, axis_name=None: losses.symile(
            [a @ W, b @ W, c @ W], temperature=0.1, negatives="n_squared", valid=v,
            axis_name=axis_name),
        [X1, X2, MODS, VALID], []),
}


@functools.lru_cache(maxsize=None)
def _mesh(shape):
  names = ("d",) if len(shape) == 1 else ("a", "b")
  mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
  return mesh, names[0] if len(shape) == 1 else names


def _per_example_and_mean_grad(f, W):
  """Per-example values and the gradient of their mean w.r.t. ``W`` from one trace."""
  per, vjp = jax.vjp(f, W)
  return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0], per.dtype))[0]


def _compare(name, mesh_shape, check_unvarying=False):
  fn, batch, rep = CASES[name]
  mesh, axis = _mesh(mesh_shape)
  n_dev = int(np.prod(mesh_shape))
  specs = (P(),) + (P(axis),) * len(batch) + (P(),) * len(rep)

  def sharded_per_example(W, *args):
    return jax.shard_map(lambda W, *a: fn(W, *a, axis_name=axis), mesh=mesh, in_specs=specs,
                         out_specs=P(axis))(W, *args)

  def inside_grads(W, *args):
    local_mean = lambda W: jnp.mean(fn(W, *args, axis_name=axis))
    g_pmean = jax.lax.pmean(jax.grad(local_mean)(jax.lax.pcast(W, axis, to="varying")), axis)
    # Unvarying W: the implicit pvary's transpose psums, giving n_dev * the global gradient.
    g_unvarying = jax.grad(local_mean)(W) if check_unvarying else g_pmean * n_dev
    return g_pmean, g_unvarying

  @jax.jit
  def everything(W, *args):
    single, g_single = _per_example_and_mean_grad(lambda W: fn(W, *args), W)
    sharded, g_outer = _per_example_and_mean_grad(lambda W: sharded_per_example(W, *args), W)
    g_pmean, g_unvarying = jax.shard_map(inside_grads, mesh=mesh, in_specs=specs,
                                         out_specs=(P(), P()))(W, *args)
    return single, sharded, g_single, g_outer, g_pmean, g_unvarying

  single, sharded, g_single, g_outer, g_pmean, g_unvarying = everything(W0, *batch, *rep)
  single, g_single = np.asarray(single), np.asarray(g_single)
  assert single.shape == (B,) and np.all(np.isfinite(single))
  assert np.all(single[~VALID] == 0) and np.all(single[VALID] != 0)
  np.testing.assert_allclose(sharded, single, rtol=RTOL, atol=1e-6)
  gtol = dict(rtol=RTOL, atol=RTOL * np.abs(g_single).max())
  assert np.abs(g_single).max() > 0
  np.testing.assert_allclose(g_outer, g_single, **gtol)
  np.testing.assert_allclose(g_pmean, g_single, **gtol)
  np.testing.assert_allclose(np.asarray(g_unvarying) / n_dev, g_single, **gtol)


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_equals_single_device_8(name):
  _compare(name, (8,), check_unvarying=name in ("info_nce_hard", "info_nce_shared"))


@pytest.mark.parametrize("name", ["info_nce_hard", "dclw", "siglip_loss", "supcon", "symile_n"])
def test_sharded_equals_single_device_2x4_tuple_axis(name):
  _compare(name, (2, 4), check_unvarying=name == "dclw")


def test_issue_recipe_with_check_vma_disabled():
  # Without vma typing nothing is psummed implicitly: each device's jax.grad of its local mean
  # is its own contribution, and pmean of those is the gradient of the global mean.
  fn, batch, _ = CASES["info_nce_hard"]
  mesh, axis = _mesh((8,))

  def inside(W, *args):
    g = jax.grad(lambda W: jnp.mean(fn(W, *args, axis_name=axis)))(W)
    return jax.lax.pmean(g, axis)

  g = jax.jit(jax.shard_map(inside, mesh=mesh, in_specs=(P(),) + (P(axis),) * len(batch),
                            out_specs=P(), check_vma=False))(W0, *batch)
  g_single = jax.jit(jax.grad(lambda W: jnp.mean(fn(W, *batch))))(W0)
  np.testing.assert_allclose(g, g_single, rtol=RTOL, atol=RTOL * np.abs(g_single).max())
