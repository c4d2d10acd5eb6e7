"""Log-domain Sinkhorn: SwAV's equipartitioned codes and a cost-based entropic OT solver.

``sinkhorn_knopp`` (SwAV, Caron et al., arXiv 2006.09882, ``distributed_sinkhorn`` in
facebookresearch/swav ``main_swav.py``). For prototype scores ``S`` (``[B, K]``, ``B`` rows of
the *global* batch) the official code iterates on ``M = exp(S.T / eps)``::

    M <- M / sum(M)
    repeat num_iters:  M_k. <- M_k. / sum_b M_kb / K      (each prototype gets mass 1/K)
                       M_.b <- M_.b / sum_k M_kb / B      (each sample gets mass 1/B)
    codes = (B * M).T                                      (each row sums to 1)

Here the same iteration runs on ``L = log M`` with log-sum-exps (float32 whatever the input
dtype, max-subtracted, so ``exp(S / 0.05)`` never overflows in bf16/fp16); the first global
rescale is a constant that the first prototype step cancels, so it is dropped. With
``axis_name`` (inside ``shard_map``) the per-prototype sums run over the global batch
(``pmax``/``psum`` through :mod:`jaxcl.collectives`) and ``B`` is the global number of valid
rows, so every device returns its rows of the single-device codes.

``entropic_ot`` solves ``min_P <P, C> - eps H(P)`` s.t. ``P 1 = a``, ``P.T 1 = b`` with the
log-domain (potential) Sinkhorn updates, as used by BECLR's OpTA (Poulakakis-Daktylidis &
Jamali-Rad, arXiv 2402.02444, ``utils/optimal_transport.py``)::

    f_i = eps log a_i - eps LSE_j((g_j - C_ij) / eps)
    g_j = eps log b_j - eps LSE_i((f_i - C_ij) / eps)
    P_ij = exp((f_i + g_j - C_ij) / eps)

A fixed number of iterations (jit-friendly) replaces BECLR's stopping threshold; after the last
``g`` update the column marginals are exact and the row marginals converge. ``opta`` is the
barycentric map BECLR applies to support prototypes.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl import sinkhorn
  >>> s = jax.random.normal(jax.random.key(0), (8, 4))
  >>> q = sinkhorn.sinkhorn_knopp(s)
  >>> bool(jnp.allclose(q.sum(-1), 1.0, atol=1e-5))
  True
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.losses import _common as c


def _global_logsumexp_rows(x, valid, axis_name):
  """``log sum_b exp(x_bk)`` over the valid rows of the global batch, per column ``k``."""
  xm = jnp.where(valid[:, None], x, -jnp.inf)
  m = collectives.pmax(jnp.max(xm, axis=0), axis_name)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  total = collectives.psum(jnp.sum(jnp.where(valid[:, None], jnp.exp(x - m), 0.0), axis=0),
                           axis_name)
  return m + jnp.log(total)


def sinkhorn_knopp(scores, *, epsilon=0.05, num_iters=3, axis_name=None, valid=None,
                   num_discard=0):
  """SwAV codes: equipartitioned soft assignments of the global batch to ``K`` prototypes.

  Args:
    scores: ``[B_local, K]`` prototype scores ``z @ C.T`` (any float dtype).
    epsilon: entropic regularisation (SwAV 0.05; the README suggests 0.03 against collapse).
    num_iters: Sinkhorn iterations (SwAV 3), each a prototype step then a sample step.
    axis_name: mesh axis name(s); sums over samples run over the global batch.
    valid: ``[B_local]`` bool; padded rows take no mass and get all-zero codes.
    num_discard: leading local rows (e.g. SwAV's queue) that take part in the
      equipartition but are not returned.

  Returns:
    ``[B_local - num_discard, K]`` float32 codes (rows sum to 1), stop-gradient.
  """
  fn = "sinkhorn_knopp"
  scores = c.embeddings("scores", scores, fn, what="[batch, prototypes]")
  c.check_positive("epsilon", epsilon, fn)
  if not isinstance(num_iters, int) or num_iters < 1:
    raise ValueError(f"{fn}: 'num_iters' must be an int >= 1, got {num_iters!r}")
  if not 0 <= num_discard < scores.shape[0]:
    raise ValueError(f"{fn}: 'num_discard' must be in [0, {scores.shape[0]}), got {num_discard}")
  b_local, k = scores.shape
  valid = c.valid_mask(valid, b_local, fn)
  x = jax.lax.stop_gradient(scores).astype(jnp.float32) / jnp.float32(epsilon)
  b_total = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
  log_k, log_b = jnp.log(jnp.float32(k)), jnp.log(b_total)

  def step(_, x):
    x = x - (_global_logsumexp_rows(x, valid, axis_name) + log_k)[None, :]
    return x - (jax.nn.logsumexp(x, axis=1, keepdims=True) + log_b)

  x = jax.lax.fori_loop(0, num_iters, step, x)
  codes = jnp.where(valid[:, None], jnp.exp(x + log_b), 0.0)
  return jax.lax.stop_gradient(codes[num_discard:])


def _log_marginal(p, n, name, fn):
  if p is None:
    return jnp.full((n,), -jnp.log(jnp.float32(n)))
  p = jnp.asarray(p, jnp.float32)
  if p.shape != (n,):
    raise ValueError(f"{fn}: '{name}' must have shape ({n},), got {tuple(p.shape)}")
  return jnp.log(p)


def entropic_ot(cost, *, epsilon, num_iters=100, a=None, b=None):
  """Entropic optimal transport plan for ``cost`` ``[n, m]`` (log-domain Sinkhorn).

  Args:
    cost: ``[n, m]`` float cost matrix.
    epsilon: entropic regularisation (absolute, in the units of ``cost``).
    num_iters: number of (f, g) update pairs.
    a, b: ``[n]`` / ``[m]`` marginals (each summing to 1); uniform when None. Zero entries
      get no mass.

  Returns:
    ``[n, m]`` float32 transport plan ``P`` with ``P.T 1 = b`` (exact) and ``P 1 ~= a``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxcl import sinkhorn
    >>> p = sinkhorn.entropic_ot(jnp.array([[0., 1.], [1., 0.]]), epsilon=0.1)
    >>> [round(float(v), 3) for v in p.ravel()]
    [0.5, 0.0, 0.0, 0.5]
  """
  fn = "entropic_ot"
  cost = c.embeddings("cost", cost, fn, what="[n, m]").astype(jnp.float32)
  c.check_positive("epsilon", epsilon, fn)
  if not isinstance(num_iters, int) or num_iters < 1:
    raise ValueError(f"{fn}: 'num_iters' must be an int >= 1, got {num_iters!r}")
  n, m = cost.shape
  log_a = _log_marginal(a, n, "a", fn)
  log_b = _log_marginal(b, m, "b", fn)
  eps = jnp.asarray(epsilon, jnp.float32)

  def step(_, fg):
    f, g = fg
    f = eps * log_a - eps * jax.nn.logsumexp((g[None, :] - cost) / eps, axis=1)
    g = eps * log_b - eps * jax.nn.logsumexp((f[:, None] - cost) / eps, axis=0)
    return f, g

  f, g = jax.lax.fori_loop(0, num_iters, step, (jnp.zeros((n,)), jnp.zeros((m,))))
  return jnp.exp((f[:, None] + g[None, :] - cost) / eps)


def opta(prototypes, queries, *, epsilon=0.1, num_iters=100, num_passes=1):
  """BECLR's OpTA: transport support prototypes onto the query features.

  Cost ``C_ij = ||P_i - Z_j||^2 / max(C)``; plan ``pi`` with uniform marginals; the aligned
  prototypes are the barycentric map ``P_hat = diag(pi 1)^-1 pi Z``. ``num_passes > 1``
  repeats the alignment starting from the previous ``P_hat`` (the paper's iterated OpTA; the
  number of passes and ``epsilon`` are open items in BECLR).

  Args:
    prototypes: ``[n_way, D]`` per-class support means.
    queries: ``[n_query, D]`` query features.

  Returns:
    ``[n_way, D]`` float32 aligned prototypes.
  """
  fn = "opta"
  p = c.embeddings("prototypes", prototypes, fn).astype(jnp.float32)
  z = c.embeddings("queries", queries, fn).astype(jnp.float32)
  c.check_same("prototypes", p, "queries", z, 1, fn, "feature size")
  for _ in range(num_passes):
    cost = jnp.sum((p[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    cost = cost / jnp.maximum(jnp.max(cost), c.EPS)
    plan = entropic_ot(cost, epsilon=epsilon, num_iters=num_iters)
    p = (plan @ z) / jnp.sum(plan, axis=1, keepdims=True)
  return p
