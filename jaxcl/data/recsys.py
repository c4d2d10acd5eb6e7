"""A synthetic multimodal recommendation set with known structure, generated from a seed.

The CPU proxy of MMHCL (methods.md ``mmhcl``): users and items share ``num_clusters`` latent
interest clusters in ``R^latent_dim``::

    item i:  c_i ~ U{K},  v_i = unit(mu_{c_i} + item_noise * g_i),  g ~ N(0, (4 / latent_dim) I)
    user u:  a_u ~ U{K} (and, with prob. 1/2, a second interest b_u),
             w_u = unit(mu_{a_u} + 0.5 mu_{b_u} + user_noise * g_u)
    activity n_u = clip(round(LogNormal), min_interactions, num_items / 4), mean ~ mean_interactions
    items of u: n_u draws without replacement from softmax(beta <w_u, v_i>)  (Gumbel top-k)

so the density is ``mean_interactions / num_items`` (1.5 % by default) and activity is heavy-
tailed (many sparse users). Each user's items are shuffled and split into test
(``max(1, round(test_frac n_u))``), validation (``max(1, round(val_frac n_u))``) and training
(the rest, >= 1). Two item "modalities" are different noisy random projections of the item
latents, ``f^m_i = v_i W_m + modality_noise_m * g``, ``W_m ~ N(0, 1/latent_dim)``: side
information about the item clusters that the interactions of rarely-bought items lack.

Example:
  >>> d = make_recsys(0, num_users=50, num_items=40, mean_interactions=6)
  >>> d.num_users, d.num_items, len(d.features), d.features[0].shape
  (50, 40, 2, (40, 64))
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class RecSys:
  """Interactions as (user, item) index arrays per split, plus the generating structure."""
  num_users: int
  num_items: int
  train: Tuple[np.ndarray, np.ndarray]
  val: Tuple[np.ndarray, np.ndarray]
  test: Tuple[np.ndarray, np.ndarray]
  features: Tuple[np.ndarray, ...]
  item_cluster: np.ndarray
  user_cluster: np.ndarray
  item_latent: np.ndarray
  user_latent: np.ndarray

  def train_counts(self):
    return np.bincount(self.train[0], minlength=self.num_users)

  def matrix(self, split):
    """Dense ``[U, I]`` bool interactions of ``split`` ("train", "val", "test")."""
    u, i = getattr(self, split)
    m = np.zeros((self.num_users, self.num_items), bool)
    m[u, i] = True
    return m


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_recsys(seed, *, num_users=1000, num_items=800, num_clusters=8, latent_dim=16,
                mean_interactions=12.0, activity_sigma=0.8, min_interactions=3, beta=6.0,
                item_noise=0.6, user_noise=0.6, modality_dims=(64, 32),
                modality_noise=(0.2, 0.4), val_frac=0.1, test_frac=0.2) -> RecSys:
  """The data set of the module docstring, a pure function of ``seed`` and the arguments."""
  if num_users < 1 or num_items < 4 * min_interactions:
    raise ValueError(f"make_recsys: need num_users >= 1 and num_items >= 4 * min_interactions, "
                     f"got num_users={num_users}, num_items={num_items}")
  if len(modality_dims) != len(modality_noise):
    raise ValueError(f"make_recsys: 'modality_dims' and 'modality_noise' must have the same "
                     f"length, got {len(modality_dims)} and {len(modality_noise)}")
  if min_interactions < 3:
    raise ValueError(f"make_recsys: 'min_interactions' must be >= 3 (one train, one val and one "
                     f"test item per user), got {min_interactions}")
  rng = np.random.default_rng([seed, 8])
  mu = _unit(rng.normal(size=(num_clusters, latent_dim)))
  item_cluster = rng.integers(num_clusters, size=num_items)
  v = _unit(mu[item_cluster] + item_noise * rng.normal(size=(num_items, latent_dim)) /
            np.sqrt(latent_dim) * 2)
  a = rng.integers(num_clusters, size=num_users)
  b = rng.integers(num_clusters, size=num_users)
  second = rng.random(num_users) < 0.5
  w = _unit(mu[a] + 0.5 * second[:, None] * mu[b] +
            user_noise * rng.normal(size=(num_users, latent_dim)) / np.sqrt(latent_dim) * 2)
  s = activity_sigma
  n = np.round(rng.lognormal(np.log(mean_interactions) - s * s / 2, s, size=num_users))
  n = np.clip(n, min_interactions, num_items // 4).astype(int)
  logits = beta * w @ v.T
  gumbel = -np.log(-np.log(rng.uniform(1e-12, 1.0, size=logits.shape)))
  order = np.argsort(-(logits + gumbel), axis=1)
  splits = {"train": ([], []), "val": ([], []), "test": ([], [])}
  for u in range(num_users):
    items = order[u, :n[u]]            # already in a random (Gumbel) order
    nt = max(1, int(round(test_frac * n[u])))
    nv = max(1, int(round(val_frac * n[u])))
    for name, part in (("test", items[:nt]), ("val", items[nt:nt + nv]),
                       ("train", items[nt + nv:])):
      splits[name][0].append(np.full(len(part), u, np.int32))
      splits[name][1].append(part.astype(np.int32))
  cat = {k: (np.concatenate(us), np.concatenate(its)) for k, (us, its) in splits.items()}
  feats = tuple((v @ rng.normal(size=(latent_dim, f)) / np.sqrt(latent_dim) +
                 sigma * rng.normal(size=(num_items, f))).astype(np.float32)
                for f, sigma in zip(modality_dims, modality_noise))
  return RecSys(num_users, num_items, cat["train"], cat["val"], cat["test"], feats,
                item_cluster.astype(np.int32), a.astype(np.int32), v.astype(np.float32),
                w.astype(np.float32))
