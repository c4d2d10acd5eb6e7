"""Optimisers (LARS, AdamW, SGD) with a linear-warmup cosine schedule.

``lr(t) = peak * t / warmup`` for ``t < warmup``, then
``end + (peak - end) * (1 + cos(pi * (t - warmup) / (T - warmup))) / 2`` (Loshchilov & Hutter,
SGDR, arXiv 1608.03983; SimCLR uses LARS, You et al., arXiv 1708.03888). Weight decay and the
LARS trust ratio skip biases and normalisation scales (rank < 2 parameters), as in SimCLR.

Example:
  >>> import ml_collections, jax.numpy as jnp
  >>> from jaxcl.train.config import default_config
  >>> tx, sched = make_optimizer(default_config().optim, num_steps=10)
  >>> float(sched(0))
  0.0
"""
from __future__ import annotations

import jax
import optax


def make_schedule(optim, num_steps):
  warmup = min(int(optim.warmup_steps), max(num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1), end_value=optim.lr * optim.end_lr_factor)


def decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(optim, num_steps):
  """Returns ``(optax transformation, schedule)`` for ``config.optim``."""
  sched = make_schedule(optim, num_steps)
  if optim.name == "adamw":
    tx = optax.adamw(sched, weight_decay=optim.weight_decay, mask=decay_mask)
  elif optim.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
                     optax.sgd(sched, momentum=optim.momentum or None))
  elif optim.name == "lars":
    tx = optax.lars(sched, weight_decay=optim.weight_decay, weight_decay_mask=decay_mask,
                    trust_coefficient=optim.lars_trust, trust_ratio_mask=decay_mask,
                    momentum=optim.momentum)
  else:
    raise ValueError(f"config.optim.name={optim.name!r} is not one of lars, adamw, sgd")
  if optim.clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optim.clip_norm), tx)
  return tx, sched
