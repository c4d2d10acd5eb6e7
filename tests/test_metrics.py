"""jaxcl.metrics against the float64 loop references, sharded == single device, traced labels."""
import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses, metrics
from tests import reference as ref

B, D = 16, 6
Z1 = np.random.default_rng(0).normal(size=(B, D)).astype(np.float32)
Z2 = Z1 + 0.5 * np.random.default_rng(1).normal(size=(B, D)).astype(np.float32)
LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 0, 4, 1, 5, 2, 6, 7, 0, 8], np.int32)


def test_alignment():
  for alpha in (1, 2, 3):
    np.testing.assert_allclose(metrics.alignment(Z1, Z2, alpha), ref.alignment(Z1, Z2, alpha),
                               rtol=1e-5)
  # Scale invariance (normalised inside) and zero for identical inputs.
  np.testing.assert_allclose(metrics.alignment(3 * Z1, Z2 * 0.1), ref.alignment(Z1, Z2), rtol=1e-5)
  assert float(metrics.alignment(Z1, 2 * Z1)) == pytest.approx(0.0, abs=1e-6)


def test_alignment_gradient_finite_at_identical_pairs():
  for alpha in (1, 2):
    g = jax.grad(lambda a: metrics.alignment(a, Z1, alpha))(Z1)
    assert np.all(np.isfinite(g))


def test_uniformity_value_and_gradient():
  for t in (1, 2):
    np.testing.assert_allclose(metrics.uniformity(Z1, t), ref.uniformity(Z1, t), rtol=1e-5)
  got = np.asarray(jax.grad(lambda z: metrics.uniformity(z))(Z1), np.float64)
  coords = [(i, i % D) for i in range(B)]
  want = ref.fd_coords(lambda z: ref.uniformity(z), Z1, coords)
  np.testing.assert_allclose([got[c] for c in coords], want, rtol=1e-3,
                             atol=1e-4 * np.abs(want).max())


def test_tolerance():
  np.testing.assert_allclose(metrics.tolerance(Z1, LABELS), ref.tolerance(Z1, LABELS),
                             rtol=1e-5)
  # No pair shares a label: 0 by definition.
  assert float(metrics.tolerance(Z1, np.arange(B, dtype=np.int32))) == 0.0
  # One class: the mean cosine over all i != j.
  np.testing.assert_allclose(metrics.tolerance(Z1, np.zeros(B, np.int32)),
                             ref.tolerance(Z1, np.zeros(B, np.int32)), rtol=1e-5, atol=1e-7)


def test_effective_rank():
  np.testing.assert_allclose(metrics.effective_rank(Z1), ref.effective_rank(Z1), rtol=1e-5)
  low = Z1[:, :2] @ np.random.default_rng(2).normal(size=(2, D)).astype(np.float32)
  np.testing.assert_allclose(metrics.effective_rank(low), ref.effective_rank(low), rtol=1e-4)
  assert float(metrics.effective_rank(low)) <= 2.0 + 1e-4
  # Equal singular values: the rank is the dimension.
  np.testing.assert_allclose(metrics.effective_rank(np.eye(D, dtype=np.float32)), D, rtol=1e-5)


def test_traced_labels_under_jit():
  tol = jax.jit(metrics.tolerance)
  np.testing.assert_allclose(tol(Z1, LABELS), ref.tolerance(Z1, LABELS), rtol=1e-5)
  # The same compiled function with other labels (no retrace needed: labels are data).
  other = np.zeros(B, np.int32)
  np.testing.assert_allclose(tol(Z1, other), ref.tolerance(Z1, other), rtol=1e-5, atol=1e-7)
  sup = jax.jit(lambda f, lab: losses.supcon(f, lab))
  f = np.stack([Z1, Z2], 1)
  np.testing.assert_allclose(sup(f, LABELS), ref.supcon(f, LABELS, 0.1), rtol=1e-5)


@pytest.mark.parametrize("mesh_shape", [(8,), (2, 4)])
def test_sharded_metrics_equal_single_device(mesh_shape):
  names = ("d",) if len(mesh_shape) == 1 else ("a", "b")
  mesh = jax.make_mesh(mesh_shape, names, axis_types=(AxisType.Auto,) * len(names))
  axis = names[0] if len(names) == 1 else names

  def local(z1, z2, labels):
    return (metrics.alignment(z1, z2, axis_name=axis), metrics.uniformity(z1, axis_name=axis),
            metrics.tolerance(z1, labels, axis_name=axis),
            metrics.effective_rank(z1, axis_name=axis))

  sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(axis),) * 3,
                                  out_specs=(P(),) * 4))(Z1, Z2, LABELS)
  single = (ref.alignment(Z1, Z2), ref.uniformity(Z1), ref.tolerance(Z1, LABELS),
            ref.effective_rank(Z1))
  for got, want in zip(sharded, single):
    np.testing.assert_allclose(got, want, rtol=1e-5)
