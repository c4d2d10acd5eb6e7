"""MoCHi: InfoNCE with per-query synthetic hard negatives mixed from the hardest negatives.

Equation (Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", arXiv
2010.01028). ``s(a, b) = <a, b> / T`` on L2-normalised rows; for query ``q_i`` with positive
``k_i``, negative pool ``P_i`` (every other key of the global batch, plus the optional queue)
and ``Q_i`` = the ``num_hard`` elements of ``P_i`` with the largest ``<q_i, n>``::

    h_m  = normalize(a_m n_a + (1 - a_m) n_b),  n_a != n_b in Q_i,  a_m ~ U(0, 1)     (type 1)
    h'_m = normalize(b_m q_i + (1 - b_m) n_c),  n_c in Q_i,          b_m ~ U(0, 0.5)   (type 2)
    mochi_i = -s(q_i, k_i) + log( sum_{n in P_i + {k_i}} e^{s(q_i, n)}
                                  + sum_m e^{s(q_i, sg h_m)} + sum_m e^{s(q_i, sg h'_m)} )

The synthetic points (and the copy of ``q_i`` mixed into type 2) are stop-gradient, per
query, and only enter as extra logits of :func:`jaxcl.kernels.contrastive_lse` -- the
gradient flows through ``q_i`` in ``<q_i, h>``. ``beta`` multiplies the query (< 50%), as in
the paper (the unofficial davidsvy/hard-negative-mixing README says otherwise in prose, its
code agrees with the paper). The two type-1 parents are distinct members of ``Q_i``.

The paper's pool is a MoCo queue; here the pool is the all-gathered global batch of keys
(fresh features, ``B_global - 1`` negatives per query) plus the optional ``queue`` ``[M, D]``
(stale features, replicated on every device, stop-gradient). ``mine="queue"`` mines ``Q_i``
from the queue alone, as the paper does (the other keys of the batch stay negatives of the
log-sum-exp either way; MoCo would see them one step later, once enqueued). Use ``active`` (a bool or
traced scalar) to switch mixing off during a warm-up without recompiling.

Distributed semantics: keys and their tags are gathered; the random draws of row ``i`` come
from ``fold_in(rng, global_row_index(i))``, so with the same ``rng`` on every device the sharded
call equals the single-device call on the full batch (value and gradient). Mining forms the
``B_local x (B_global + M)`` similarity matrix for ``lax.top_k`` (the memory-constant kernels
apply to the log-sum-exp, not to the mining).

Example:
  >>> import jax, jaxcl
  >>> q = jax.random.normal(jax.random.key(0), (8, 16)); k = q + 0.1
  >>> jaxcl.losses.contrib.mochi_loss(q, k, rng=jax.random.key(1), num_hard=4, num_mix=3,
  ...                         num_mix_query=2).shape
  (8,)
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


class MixDraws(NamedTuple):
  """Per-row random draws; indices are ranks in the row's hardest-first top-``num_hard``."""
  first: jax.Array          # [B, num_mix] int32
  second: jax.Array         # [B, num_mix] int32, != first
  alpha: jax.Array          # [B, num_mix] U(0, 1), weight of ``first``
  partner: jax.Array        # [B, num_mix_query] int32
  beta: jax.Array           # [B, num_mix_query] U(0, 0.5), weight of the query


def mochi_draws(rng, rows, *, num_hard, num_mix, num_mix_query):
  """Draws of every row from ``fold_in(rng, row)`` (``rows``: ``[B]`` global row indices)."""
  def one(row):
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.fold_in(rng, row), 5)
    first = jax.random.randint(k1, (num_mix,), 0, num_hard)
    # Distinct second parent: a non-zero offset modulo num_hard.
    second = (first + jax.random.randint(k2, (num_mix,), 1, max(num_hard, 2))) % num_hard
    alpha = jax.random.uniform(k3, (num_mix,))
    partner = jax.random.randint(k4, (num_mix_query,), 0, num_hard)
    beta = jax.random.uniform(k5, (num_mix_query,), maxval=0.5)
    return MixDraws(first, second, alpha, partner, beta)
  return jax.vmap(one)(rows)


def mochi_negatives(q, pool, pool_ok, draws: MixDraws, num_hard: int):
  """Synthetic negatives ``[B, num_mix + num_mix_query, D]`` and their validity ``[B, .]``.

  ``q``: ``[B, D]`` normalised queries; ``pool``: ``[P, D]`` normalised candidates;
  ``pool_ok``: ``[B, P]`` bool, which candidates are negatives of each row. Stop-gradient.
  """
  q, pool = jax.lax.stop_gradient(q), jax.lax.stop_gradient(pool)
  sims = jnp.where(pool_ok, logits(q, pool, 1.0), -jnp.inf)
  top, idx = jax.lax.top_k(sims, num_hard)
  hard, hard_ok = pool[idx], jnp.isfinite(top)                     # [B, N, D], [B, N]
  take = lambda a, i: jnp.take_along_axis(a, i[..., None], axis=1)
  take_ok = lambda i: jnp.take_along_axis(hard_ok, i, axis=1)
  a = draws.alpha[..., None]
  mix1 = a * take(hard, draws.first) + (1 - a) * take(hard, draws.second)
  bq = draws.beta[..., None]
  mix2 = bq * q[:, None, :] + (1 - bq) * take(hard, draws.partner)
  h = c.l2_normalize(jnp.concatenate([mix1, mix2], axis=1))
  ok = jnp.concatenate([take_ok(draws.first) & take_ok(draws.second), take_ok(draws.partner)],
                       axis=1)
  return jax.lax.stop_gradient(h), ok


def mochi_loss(query, key, *, rng, num_hard=64, num_mix=64, num_mix_query=32, temperature=0.2,
               queue=None, mine="all", axis_name=None, normalize=True, valid=None,
               active=True, impl="dense", block_size=1024):
  """MoCHi(num_hard, num_mix, num_mix_query) InfoNCE, per example ``[B_local]``.

  Args:
    query: ``[B, D]`` anchors (online encoder).
    key: ``[B, D]`` positives (momentum encoder in MoCo; stop their gradient in the caller).
    rng: PRNG key, the same on every device.
    num_hard: ``N``, size of each query's hardest-negative set (``<= B_global + M - 1``).
    num_mix: ``s``, type-1 synthetic negatives per query.
    num_mix_query: ``s'``, type-2 synthetic negatives per query.
    temperature: ``T`` (MoCo-v2 0.2).
    queue: optional ``[M, D]`` extra negatives (stop-gradient), replicated on every device.
    mine: where ``Q_i`` comes from: ``"all"`` (the other keys of the global batch and the
      queue) or ``"queue"`` (the queue only, as in the paper; needs ``queue``).
    axis_name: mesh axis name(s) for the global batch inside ``shard_map``.
    normalize: L2-normalise ``query``, ``key`` and ``queue`` first.
    valid: ``[B]`` bool padding mask (padded rows: loss 0, in nobody's pool).
    active: bool or traced scalar; ``False`` drops the synthetic negatives (warm-up).
    impl, block_size: kernel implementation (see :func:`jaxcl.kernels.contrastive_lse`).
  """
  fn = "mochi_loss"
  query, key = c.paired(fn, "query", query, "key", key, temperature)
  for name, val in (("num_hard", num_hard), ("num_mix", num_mix),
                    ("num_mix_query", num_mix_query)):
    if not isinstance(val, int) or val < 0:
      raise ValueError(f"{fn}: '{name}' must be an int >= 0, got {val!r}")
  b = query.shape[0]
  n_queue = 0
  if queue is not None:
    queue = c.embeddings("queue", queue, fn, what="[queue, dim]")
    c.check_same("query", query, "queue", queue, 1, fn, "feature size")
    n_queue = queue.shape[0]
  if mine not in ("all", "queue"):
    raise ValueError(f"{fn}: 'mine' must be 'all' or 'queue', got {mine!r}")
  if mine == "queue" and queue is None:
    raise ValueError(f"{fn}: mine='queue' needs a 'queue'")
  n_pool = b * collectives.axis_size(axis_name) + n_queue
  lowest = 2 if num_mix > 0 else 1
  if mine == "queue" and num_mix + num_mix_query > 0 and not lowest <= num_hard <= n_queue:
    raise ValueError(f"{fn}: 'num_hard' must be in [{lowest}, {n_queue}] (queue size) for "
                     f"mixing with mine='queue', got {num_hard}")
  if num_mix + num_mix_query > 0 and not lowest <= num_hard <= n_pool - 1:
    raise ValueError(f"{fn}: 'num_hard' must be in [{lowest}, {n_pool - 1}] (global batch - 1 + "
                     f"queue) for mixing, got {num_hard}")
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  q, k = c.prepare(query, normalize), c.prepare(key, normalize)
  q_tags = c.row_tags(b, axis_name, view=0, valid=valid)
  k_tags = c.row_tags(b, axis_name, view=1, valid=valid)

  extra = []
  if queue is not None:
    queue = jax.lax.stop_gradient(c.prepare(queue, normalize))
    extra.append(logits(q, queue, scale))
  if num_mix + num_mix_query > 0:
    keys_all = collectives.all_gather(jax.lax.stop_gradient(k), axis_name)
    key_sample = collectives.all_gather(k_tags["sample"], axis_name)
    key_valid = collectives.all_gather(valid, axis_name)
    pool_ok = key_valid[None, :] & (key_sample[None, :] != q_tags["sample"][:, None])
    pool = keys_all
    if mine == "queue":
      pool, pool_ok = queue, jnp.ones((b, n_queue), bool)
    elif queue is not None:
      pool = jnp.concatenate([keys_all, queue])
      pool_ok = jnp.concatenate([pool_ok, jnp.ones((b, n_queue), bool)], axis=1)
    draws = mochi_draws(rng, q_tags["sample"], num_hard=num_hard, num_mix=num_mix,
                        num_mix_query=num_mix_query)
    h, ok = mochi_negatives(q, pool, pool_ok, draws, num_hard)
    syn = jnp.einsum("bd,bsd->bs", q, h, preferred_element_type=jnp.float32) * scale
    extra.append(jnp.where(ok & jnp.asarray(active, bool), syn, -jnp.inf))
  extra = jnp.concatenate(extra, axis=1) if extra else None

  res = contrastive_lse(q, k, scale, q_tags=q_tags, k_tags=k_tags,
                        mask_fn=c.candidate_mask(exclude_self=False), extra_logits=extra,
                        axis_name=axis_name, impl=impl, block_size=block_size)
  pos = jnp.sum(q * k, axis=-1) * scale
  return c.finalize(res.lse - pos, valid & jnp.isfinite(res.lse))
