"""A synthetic heterogeneous graph with known structure: papers (targets), authors and venues.

Generated from a seed (host-side NumPy), a stochastic block model biased by class, as the CPU
proxy of MEOW / AdaMEOW (methods.md ``meow``; ACM-style paper-author-venue graphs)::

    y_p        = balanced classes 0..C-1 (permuted)            papers p = 0..N-1
    class(a)   = a mod C,  class(v) = v mod C                   authors, venues
    author_k(p) ~ an author of class y_p with prob. author_homophily, else uniform (k < A_p)
    venue(p)    ~ a venue of class y_p with prob. venue_homophily, else uniform
    x_p = signal * mu_{y_p} + eps,  x_a = signal * mu_{class(a)} + eps,  x_v likewise
    (mu_c ~ N(0, I_F / F) * sqrt(F), eps ~ N(0, I_F))

Every paper has exactly ``authors_per_paper`` author slots (a repeated draw counts twice) and
one venue, so the edge counts (hence compiled shapes) do not depend on the seed. The two
meta-paths are P-A-P (papers sharing an author) and P-V-P (papers in the same venue):
:func:`metapaths` builds them with :func:`jaxcl.graph.metapath_adjacency`.

Splits: ``train_per_class`` labelled papers per class for the probe's fit (the usual "20 per
class" protocol), ``val_fraction`` of the rest for model selection, the remainder for test.

Example:
  >>> g = make_hetero(0, num_papers=120, num_authors=30, num_venues=6, train_per_class=5)
  >>> g.x_paper.shape, g.paper_author.shape, g.paper_venue.shape
  ((120, 32), (120, 3), (120,))
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class HeteroGraph(NamedTuple):
  x_paper: np.ndarray       # [N, F] float32
  x_author: np.ndarray      # [A, F] float32
  x_venue: np.ndarray       # [V, F] float32
  labels: np.ndarray        # [N] int32
  paper_author: np.ndarray  # [N, A_p] int32 author of each slot
  paper_venue: np.ndarray   # [N] int32
  author_class: np.ndarray  # [A] int32
  venue_class: np.ndarray   # [V] int32
  train: np.ndarray         # paper indices, int32
  val: np.ndarray
  test: np.ndarray
  num_classes: int


def _pick(rng, own_class, classes, n_classes, homophily, size):
  """Per row: a member of ``own_class`` with probability ``homophily``, else a uniform one."""
  members = [np.flatnonzero(classes == c) for c in range(n_classes)]
  out = rng.integers(0, len(classes), size=size)
  same = rng.random(size) < homophily
  for c in range(n_classes):
    rows = (own_class[:, None] == c) & same if out.ndim == 2 else (own_class == c) & same
    out[rows] = rng.choice(members[c], size=int(rows.sum()))
  return out.astype(np.int32)


def make_hetero(seed, *, num_papers=1200, num_classes=3, num_authors=400, num_venues=30,
                authors_per_paper=3, author_homophily=0.7, venue_homophily=0.6,
                feature_dim=32, signal=0.15, train_per_class=20, val_fraction=0.2):
  """The graph of the module docstring (a :class:`HeteroGraph`), deterministic in ``seed``."""
  fn = "make_hetero"
  for name, v, lo in (("num_papers", num_papers, 2), ("num_classes", num_classes, 2),
                      ("num_authors", num_authors, 1), ("num_venues", num_venues, 1),
                      ("authors_per_paper", authors_per_paper, 1), ("feature_dim", feature_dim, 1),
                      ("train_per_class", train_per_class, 1)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
      raise ValueError(f"{fn}: '{name}' must be an int >= {lo}, got {v!r}")
  if num_authors < num_classes or num_venues < num_classes:
    raise ValueError(f"{fn}: 'num_authors' and 'num_venues' must be >= 'num_classes' "
                     f"({num_classes}), got {num_authors} and {num_venues}")
  for name, v in (("author_homophily", author_homophily), ("venue_homophily", venue_homophily),
                  ("val_fraction", val_fraction)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"{fn}: '{name}' must lie in [0, 1], got {v!r}")
  if num_papers < num_classes * (train_per_class + 1):
    raise ValueError(f"{fn}: 'num_papers' ({num_papers}) must exceed num_classes * "
                     f"(train_per_class + 1) = {num_classes * (train_per_class + 1)}")
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_papers) % num_classes).astype(np.int32)
  author_class = (np.arange(num_authors) % num_classes).astype(np.int32)
  venue_class = (np.arange(num_venues) % num_classes).astype(np.int32)
  pa = _pick(rng, labels, author_class, num_classes, author_homophily,
             (num_papers, authors_per_paper))
  pv = _pick(rng, labels, venue_class, num_classes, venue_homophily, (num_papers,))
  mu = rng.standard_normal((num_classes, feature_dim))
  feats = lambda cls: (signal * mu[cls] + rng.standard_normal((len(cls), feature_dim))).astype(
      np.float32)
  x_paper, x_author, x_venue = feats(labels), feats(author_class), feats(venue_class)
  order = rng.permutation(num_papers)
  train = np.concatenate([order[labels[order] == c][:train_per_class]
                          for c in range(num_classes)])
  rest = np.setdiff1d(order, train, assume_unique=True)
  rest = rest[rng.permutation(len(rest))]
  n_val = int(round(val_fraction * len(rest)))
  return HeteroGraph(x_paper, x_author, x_venue, labels, pa, pv, author_class, venue_class,
                     np.sort(train).astype(np.int32), np.sort(rest[:n_val]).astype(np.int32),
                     np.sort(rest[n_val:]).astype(np.int32), num_classes)


def incidence(g: HeteroGraph):
  """Dense count matrices ``A_PA [N, A]`` and ``A_PV [N, V]`` (float32)."""
  n = len(g.labels)
  pa = np.zeros((n, len(g.x_author)), np.float32)
  np.add.at(pa, (np.repeat(np.arange(n), g.paper_author.shape[1]), g.paper_author.ravel()), 1.0)
  pv = np.zeros((n, len(g.x_venue)), np.float32)
  pv[np.arange(n), g.paper_venue] = 1.0
  return pa, pv


def metapaths(g: HeteroGraph):
  """``{"PAP", "PVP"}``: binary meta-path adjacencies without self-loops, ``[N, N]``."""
  from jaxcl import graph  # pylint: disable=g-import-not-at-top
  pa, pv = incidence(g)
  return {name: np.asarray(graph.metapath_adjacency([a, a.T], binarize=True, drop_self=True))
          for name, a in (("PAP", pa), ("PVP", pv))}
