"""DCL's analysis (Yeh et al., arXiv 2110.06848, methods.md §1): the NT-Xent gradient is the
DCL gradient times the negative-positive coupling multiplier.

For one anchor ``a = (i, v)`` with ``P = exp(s(a, p(a)))`` and ``U = sum_{b: sample(b) != i}
exp(s(a, b))``::

    NT_a  = -log P + log(P + U),   DCL_a = -log P + log U
    grad NT_a = -(1 - P/(P+U)) grad log P + (U/(P+U)) grad log U = q_a * grad DCL_a,
    q_a = U / (P + U) = 1 - softmax probability of the positive,

w.r.t. every input (both views' embeddings, the temperature). This holds per *anchor*.
jaxcl's per-example value averages the two anchors of a sample, ``(NT_(i,0) + NT_(i,1)) / 2``,
so ``grad nt_xent_i = (q_(i,0) grad DCL_(i,0) + q_(i,1) grad DCL_(i,1)) / 2``: a single
multiplier per example only when ``q_(i,0) = q_(i,1)``, e.g. when the second view is a mirror
image (``z2 = z1 R`` with a symmetric orthogonal ``R``) of the first. Both statements are
tested; ``q`` is computed in float64 NumPy from its definition.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import losses
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c
from tests import ssl_reference as ref

B, D, T = 6, 5, 0.3


def coupling(z1, z2, temperature):
  """``q_a`` for the ``2B`` anchors (view 0 rows, then view 1 rows), float64 loops."""
  u = np.concatenate([ref.unit(z1), ref.unit(z2)])
  b = len(z1)
  out = np.zeros(2 * b)
  for a in range(2 * b):
    i = a % b
    pos = np.exp(u[a] @ u[(a + b) % (2 * b)] / temperature)
    neg = sum(np.exp(u[a] @ u[j] / temperature) for j in range(2 * b) if j % b != i)
    out[a] = neg / (pos + neg)
  return out


def anchor_terms(z1, z2, temperature, decoupled):
  """The ``2B`` anchor losses through the shared kernel with the library's candidate masks."""
  b = z1.shape[0]
  valid = jnp.ones((b,), bool)
  u = jnp.concatenate([c.l2_normalize(z1), c.l2_normalize(z2)])
  tags = c.concat_tags(c.row_tags(b, None, view=0, valid=valid),
                       c.row_tags(b, None, view=1, valid=valid))
  lse = contrastive_lse(u, u, 1.0 / temperature, q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=True,
                                                 exclude_same_sample=decoupled)).lse
  pos = jnp.sum(u[:b] * u[b:], axis=-1) / temperature
  return lse - jnp.concatenate([pos, pos])


def _views(seed):
  rng = np.random.default_rng(seed)
  z1 = rng.normal(size=(B, D))
  return z1.astype(np.float32), (z1 + 0.4 * rng.normal(size=(B, D))).astype(np.float32)


def test_per_anchor_gradient_is_coupling_times_dcl_gradient():
  z1, z2 = _views(0)
  nt = lambda a, b, t: anchor_terms(a, b, t, decoupled=False)
  dc = lambda a, b, t: anchor_terms(a, b, t, decoupled=True)
  # The anchor terms are the library's: their pairwise means are nt_xent and dcl.
  for terms, lib in ((nt, losses.nt_xent), (dc, losses.dcl)):
    per = terms(z1, z2, T)
    np.testing.assert_allclose(0.5 * (per[:B] + per[B:]), lib(z1, z2, temperature=T),
                               rtol=1e-5)
  q = coupling(z1, z2, T)
  assert np.all((q > 0) & (q < 1))
  jac = lambda f: jax.jit(jax.jacrev(f, argnums=(0, 1, 2)))(z1, z2, jnp.float32(T))
  for g_nt, g_dcl in zip(jac(nt), jac(dc)):
    g_nt, g_dcl = np.asarray(g_nt, np.float64), np.asarray(g_dcl, np.float64)
    want = q.reshape((-1,) + (1,) * (g_dcl.ndim - 1)) * g_dcl
    np.testing.assert_allclose(g_nt, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
  # q_a differs between the two anchors of a sample here, so the per-example library values
  # have no single multiplier (next test).
  assert np.max(np.abs(q[:B] - q[B:])) > 1e-3


def test_library_per_example_gradient_with_mirrored_views():
  rng = np.random.default_rng(1)
  v = ref.unit(rng.normal(size=D))
  mirror = np.eye(D) - 2 * np.outer(v, v)                       # symmetric and orthogonal
  z1 = rng.normal(size=(B, D))
  z2 = z1 @ mirror
  z1, z2 = z1.astype(np.float32), z2.astype(np.float32)
  q = coupling(z1, z2, T)
  np.testing.assert_allclose(q[:B], q[B:], rtol=1e-6)             # both anchors alike
  jac = lambda f: jax.jit(jax.jacrev(lambda a, b: f(a, b, temperature=T), argnums=(0, 1)))(
      z1, z2)
  for g_nt, g_dcl in zip(jac(losses.nt_xent), jac(losses.dcl)):
    g_nt, g_dcl = np.asarray(g_nt, np.float64), np.asarray(g_dcl, np.float64)
    want = q[:B, None, None] * g_dcl
    np.testing.assert_allclose(g_nt, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_coupling_shrinks_with_the_batch():
  # The paper's point: with few negatives (small batch) and easy positives, q << 1 and the
  # NT-Xent gradient is damped relative to DCL's.
  rng = np.random.default_rng(2)
  z1 = rng.normal(size=(128, 16))
  z2 = z1 + 0.2 * rng.normal(size=z1.shape)
  small = coupling(z1[:4], z2[:4], 0.1).mean()
  large = coupling(z1, z2, 0.1).mean()
  assert small < 0.5 * large, (small, large)
