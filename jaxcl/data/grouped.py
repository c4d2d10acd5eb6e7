"""Group-homogeneous global batches: every step's whole global batch comes from one group.

This is the sampler of Multistage Contrastive Learning (Zhang et al., "Learning the Unlearned:
Mitigating Feature Suppression in Contrastive Learning", ECCV 2024, arXiv 2402.11816; the
reference code's ``MCL_batch_sampler_DDP``): with a pseudo-label (k-means cluster of the
previous stages) per training example as its group, an unchanged contrastive loss over the
gathered global batch sees only same-cluster negatives.

Order of epoch ``e`` (a pure function of ``seed``, ``e``, the groups and the batch size):

1. the members of group ``g`` are permuted with ``default_rng([seed, e, g])`` and cut into
   ``floor(n_g / B)`` batches of ``B = global_batch_size`` rows (the remainder is dropped);
2. the batches are interleaved round-robin over the groups (sorted group ids): the first batch
   of every group that has one, then the second, ...

Each process serves rows ``[p * B / P, (p + 1) * B / P)`` of every global batch, so the global
batch -- and its group -- is the same whatever the number of processes and devices. The state
``{"epoch", "batch"}`` (JSON) resumes at the next batch, like the grain loaders of
:mod:`jaxcl.data.loader`, and is what the trainer's checkpoints store.

Example:
  >>> import numpy as np
  >>> from jaxcl.data.grouped import GroupedBatches
  >>> x = np.arange(12, dtype=np.float32)[:, None]
  >>> it = GroupedBatches(x, np.zeros(12, np.int32), groups=np.arange(12) % 2,
  ...                     global_batch_size=3, seed=0, process_index=0, process_count=1)
  >>> b = next(it); sorted(set(b["group"].tolist())), b["x"].shape
  ([0], (3, 1))
"""
from __future__ import annotations

import numpy as np


def epoch_batches(groups, global_batch_size, seed, epoch):
  """``[num_batches, B]`` int64 dataset indices of epoch ``epoch`` (see the module docstring)."""
  groups = np.asarray(groups)
  per_group = []
  for g in np.unique(groups):
    members = np.flatnonzero(groups == g)
    perm = np.random.default_rng([seed, epoch, int(g)]).permutation(members)
    n = len(perm) // global_batch_size
    per_group.append(perm[:n * global_batch_size].reshape(n, global_batch_size))
  rounds = max(len(p) for p in per_group)
  order = [p[r] for r in range(rounds) for p in per_group if r < len(p)]
  return np.stack(order)


class GroupedBatches:
  """Resumable iterator of per-process rows of group-homogeneous global batches.

  Args:
    x: ``[N, ...]`` inputs.
    y: ``[N]`` labels served as ``"y"`` (the digit, or the pseudo-labels when the loss masks
      negatives by group itself).
    groups: ``[N]`` integer group (pseudo-cluster) of every example.
    global_batch_size: rows per step over all processes.
    seed: non-negative int; the order is a pure function of it.
    process_index, process_count: this process's slice (default: JAX's).

  Yields ``{"x", "y", "group", "index"}`` (``index``: dataset row). ``get_state()`` /
  ``set_state()`` exchange a JSON-able dict.
  """

  def __init__(self, x, y, groups, *, global_batch_size, seed, process_index=None,
               process_count=None):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index, process_count = jax.process_index(), jax.process_count()
    self.x, self.y = np.asarray(x), np.asarray(y)
    self.groups = np.asarray(groups)
    n = len(self.x)
    if self.y.shape[:1] != (n,) or self.groups.shape != (n,):
      raise ValueError(f"GroupedBatches: 'y' and 'groups' must have shape ({n},), got "
                       f"{self.y.shape} and {self.groups.shape}")
    if not np.issubdtype(self.groups.dtype, np.integer):
      raise TypeError(f"GroupedBatches: 'groups' must be integers, got {self.groups.dtype}")
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise ValueError(f"GroupedBatches: 'global_batch_size' ({global_batch_size}) must be a "
                       f"positive multiple of the number of processes ({process_count})")
    largest = int(np.bincount(np.unique(self.groups, return_inverse=True)[1]).max())
    if largest < global_batch_size:
      raise ValueError(f"GroupedBatches: no group has 'global_batch_size' "
                       f"({global_batch_size}) members (largest: {largest}); lower the batch "
                       f"or use fewer clusters")
    self.global_batch_size, self.seed = int(global_batch_size), int(seed)
    self.local = self.global_batch_size // process_count
    self.offset = process_index * self.local
    self.epoch, self.batch = 0, 0
    self._cached = (None, None)

  def _plan(self, epoch):
    if self._cached[0] != epoch:
      self._cached = (epoch, epoch_batches(self.groups, self.global_batch_size, self.seed, epoch))
    return self._cached[1]

  @property
  def batches_per_epoch(self):
    return len(self._plan(0))

  def __iter__(self):
    return self

  def __next__(self):
    plan = self._plan(self.epoch)
    if self.batch >= len(plan):
      self.epoch, self.batch = self.epoch + 1, 0
      plan = self._plan(self.epoch)
    idx = plan[self.batch, self.offset:self.offset + self.local]
    self.batch += 1
    return {"x": self.x[idx], "y": self.y[idx], "group": self.groups[idx], "index": idx}

  def get_state(self):
    return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
            "global_batch_size": self.global_batch_size}

  def set_state(self, state):
    if (state["seed"], state["global_batch_size"]) != (self.seed, self.global_batch_size):
      raise ValueError(f"GroupedBatches.set_state: state of seed {state['seed']} / batch "
                       f"{state['global_batch_size']} given to an iterator of seed {self.seed} "
                       f"/ batch {self.global_batch_size}")
    self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
