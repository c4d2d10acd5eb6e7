"""Synthetic item sequences with known structure (the CPU proxy of MCLRec, methods.md ``mclrec``).

A sparse first-order Markov chain over ``num_items`` items (ids ``1..num_items``; 0 is padding)
in ``num_clusters`` equal item clusters, with per-user interest drift::

    successors:  every item a has ``branch`` successors S_a (half drawn from a's own cluster),
                 weights P[a, s] ~ Dirichlet(1) over S_a
    user u:      start / end cluster preferences g0_u, g1_u ~ N(0, I_C) * drift_scale,
                 at step t of L: w_u(t) = softmax((1 - t / (L - 1)) g0_u + t / (L - 1) g1_u)
    next item:   with prob. ``noise`` a uniform random click; otherwise
                 x_{t+1} ~ P[x_t, :] * w_u(t)[cluster(:)]  (renormalised over S_{x_t})
    first item:  uniform within a cluster drawn from w_u(0)

so the next item is predictable from the last one (the chain), the user's current interest
(the drift, readable from the recent history) and not at all for the noise clicks. Every user
has exactly ``length`` items; leave-one-out: the last item is the test target, the one before
it the validation target, and every prefix of the first ``length - 2`` items predicts its next
item for training (RecBole's sequential protocol).

Example:
  >>> d = make_sequences(0, num_users=8, num_items=40, length=6, num_clusters=4, branch=8)
  >>> d.items.shape, int(d.items.min()) >= 1, int(d.items.max()) <= 40
  ((8, 6), True, True)
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Sequences:
  """``items [U, length]`` int32 item ids in ``1..num_items`` and the generating structure."""
  num_items: int
  items: np.ndarray
  clusters: np.ndarray      # [num_items + 1] cluster of each id (entry 0 unused, -1)
  transition: np.ndarray    # [num_items + 1, num_items + 1] the chain's P (row / column 0 unused)
  noise_click: np.ndarray   # [U, length] bool: the item was a uniform random click

  @property
  def num_users(self):
    return self.items.shape[0]


def make_sequences(seed: int, *, num_users: int = 2000, num_items: int = 500, length: int = 20,
                   num_clusters: int = 10, branch: int = 16, noise: float = 0.2,
                   drift_scale: float = 2.0) -> Sequences:
  """Generates the set (module docstring) deterministically from ``seed``."""
  for name, v, lo in (("num_users", num_users, 1), ("num_items", num_items, 2),
                      ("length", length, 3), ("num_clusters", num_clusters, 1),
                      ("branch", branch, 1)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"make_sequences: '{name}' must be an int >= {lo}, got {v!r}")
  if num_items % num_clusters or branch > num_items // num_clusters:
    raise ValueError(f"make_sequences: 'num_items' ({num_items}) must be a multiple of "
                     f"'num_clusters' ({num_clusters}) with >= 'branch' ({branch}) per cluster")
  if not 0.0 <= noise <= 1.0:
    raise ValueError(f"make_sequences: 'noise' must be in [0, 1], got {noise!r}")
  rng = np.random.default_rng(seed)
  n, c = num_items, num_clusters
  clusters = np.concatenate([[-1], rng.permutation(np.repeat(np.arange(c), n // c))])
  members = [np.flatnonzero(clusters == k) for k in range(c)]
  trans = np.zeros((n + 1, n + 1))
  for a in range(1, n + 1):
    own = members[clusters[a]]
    k_own = (branch + 1) // 2
    succ = list(rng.choice(own, k_own, replace=False))
    rest = np.setdiff1d(np.arange(1, n + 1), succ)
    succ += list(rng.choice(rest, branch - k_own, replace=False))
    trans[a, succ] = rng.dirichlet(np.ones(branch))
  g0 = rng.normal(size=(num_users, c)) * drift_scale
  g1 = rng.normal(size=(num_users, c)) * drift_scale
  items = np.zeros((num_users, length), np.int32)
  noisy = rng.random((num_users, length)) < noise
  onehot = np.eye(c)[clusters[1:]]                      # [n, C]
  for t in range(length):
    frac = t / (length - 1)
    g = (1 - frac) * g0 + frac * g1
    w = np.exp(g - g.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)                        # [U, C]
    if t == 0:
      k = (rng.random((num_users, 1)) > np.cumsum(w, 1)).sum(1)
      k = np.minimum(k, c - 1)
      nxt = np.array([rng.choice(members[kk]) for kk in k])
    else:
      p = trans[items[:, t - 1], 1:] * (w @ onehot.T)   # [U, n]
      p /= p.sum(1, keepdims=True)
      nxt = 1 + (rng.random((num_users, 1)) > np.cumsum(p, 1)).sum(1)
      nxt = np.minimum(nxt, n)
    uniform = rng.integers(1, n + 1, num_users)
    items[:, t] = np.where(noisy[:, t], uniform, nxt)
  return Sequences(num_items=n, items=items, clusters=clusters, transition=trans,
                   noise_click=noisy)


def left_pad(seqs, max_len: int) -> np.ndarray:
  """``[N, max_len]`` int32: each sequence's last ``max_len`` items, right-aligned, 0-padded."""
  out = np.zeros((len(seqs), max_len), np.int32)
  for r, s in enumerate(seqs):
    s = np.asarray(s)[-max_len:]
    if len(s):
      out[r, max_len - len(s):] = s
  return out


def splits(data: Sequences, max_len: int):
  """``{"train", "val", "test"}: (inputs [N, max_len], targets [N])`` (leave-one-out; training
  = every prefix of the first ``length - 2`` items, at least one item long)."""
  x = data.items
  length = x.shape[1]
  tr_in, tr_y = [], []
  for u in range(x.shape[0]):
    for t in range(1, length - 2):
      tr_in.append(x[u, :t])
      tr_y.append(x[u, t])
  return {"train": (left_pad(tr_in, max_len), np.asarray(tr_y, np.int32)),
          "val": (left_pad(x[:, :-2], max_len), x[:, -2].copy()),
          "test": (left_pad(x[:, :-1], max_len), x[:, -1].copy())}


# CL4SRec's augmentations (Xie et al., "Contrastive Learning for Sequential Recommendation",
# arXiv 2010.14395), on device, on one left-padded row ``x [L]`` with ``n`` items (0 = pad), from
# explicit uniform draws so that they can be checked against loops. RecBole's rounding: a crop
# keeps ``max(1, floor(eta n))`` items (never empty), a mask hides ``floor(gamma n)`` items, a
# reorder shuffles ``floor(beta n)`` consecutive items; start positions ``floor(u (n - len + 1))``.

def _count(x):
  return jnp.sum(x > 0).astype(jnp.int32)


def crop_row(x, u, eta):
  """The contiguous ``max(1, floor(eta n))`` items from start ``floor(u (n - c + 1))``,
  re-left-padded."""
  length, n = x.shape[0], _count(x)
  c = jnp.minimum(jnp.maximum(1, jnp.floor(eta * n).astype(jnp.int32)), n)
  s = jnp.minimum(jnp.floor(u * (n - c + 1)).astype(jnp.int32), n - c)
  j = jnp.arange(length)
  src = jnp.clip(j + c - n + s, 0, length - 1)
  return jnp.where(j >= length - c, x[src], 0)


def mask_row(x, scores, gamma, token):
  """``floor(gamma n)`` items (those with the smallest ``scores [L]``) replaced by ``token``."""
  n, valid = _count(x), x > 0
  k = jnp.floor(gamma * n).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(jnp.where(valid, scores, jnp.inf)))
  return jnp.where(valid & (rank < k), token, x)


def reorder_row(x, u, scores, beta):
  """``floor(beta n)`` consecutive items from start ``floor(u (n - r + 1))`` put in the order of
  their ``scores`` (a uniform shuffle for uniform scores in [0, 1))."""
  length, n = x.shape[0], _count(x)
  r = jnp.floor(beta * n).astype(jnp.int32)
  s = jnp.minimum(jnp.floor(u * (n - r + 1)).astype(jnp.int32), n - r)
  lo = length - n + s
  j = jnp.arange(length)
  inside = (j >= lo) & (j < lo + r)
  key = jnp.where(inside, lo + jnp.clip(scores, 0.0, 0.999) * r, j.astype(jnp.float32))
  return x[jnp.argsort(key)]


def cl4srec_augment(rng, seqs, *, crop=0.5, mask=0.5, reorder=0.8, mask_token):
  """One augmented view of every row of ``seqs [B, L]``: crop / mask / reorder chosen uniformly
  per row (CL4SRec), each with its own draws."""
  b, length = seqs.shape
  k_op, k_u, k_s = jax.random.split(rng, 3)
  op = jax.random.randint(k_op, (b,), 0, 3)
  u = jax.random.uniform(k_u, (b,))
  scores = jax.random.uniform(k_s, (b, length))

  def one(x, o, uu, sc):
    views = jnp.stack([crop_row(x, uu, crop), mask_row(x, sc, mask, mask_token),
                       reorder_row(x, uu, sc, reorder)])
    return views[o]

  return jax.vmap(one)(seqs.astype(jnp.int32), op, u, scores)
