"""Symile: contrastive learning for M >= 2 modalities with the multilinear inner product.

Saporta et al., "Contrasting with Symile: Simple Model-Agnostic Representation Learning for
Unlimited Modalities", arXiv 2411.01053 (reference: rajesh-lab/symile, ``symile/loss.py``).
With ``MIP(r_1, ..., r_M) = sum_d prod_m r_{m,d}`` and logits ``MIP / T``::

    symile_i = (1/M) sum_m [ -MIP(r^1_i, ..., r^M_i)/T + log sum_{c in C_m(i)} exp MIP(r^m_i, c)/T ]

For anchor modality ``m``, the candidates ``C_m(i)`` are products of the other modalities:

* ``negatives="n"`` (O(N)): one random permutation ``pi_m'`` of the global batch per
  non-anchor modality (drawn from the explicit ``rng`` key, never global RNG state); candidate
  ``j`` is ``prod_{m' != m} r^{m'}_{pi_m'(j)}`` for ``j != i``, plus the true positive (the
  reference overwrites the diagonal with it). Accidental false negatives are possible, as in
  the reference.
* ``negatives="n_squared"``: every combination of non-anchor rows (``N^(M-1)`` candidates, the
  positive among them). Memory ``O(N^(M-1) D)``; deterministic.

The reference does not normalise inside the loss (callers normalise); here
``normalize=True`` (the jaxcl convention) L2-normalises each modality, which is idempotent
for already-normalised inputs. Use a learnable temperature: MIPs of unit vectors are small.

Distributed semantics: all modalities are gathered along ``axis_name``; the permutations are
of the *global* batch and every device draws the same ones from the same ``rng``, so the
sharded loss equals the single-device loss. Anchors are the local rows.

Example:
  >>> import jax, jaxcl
  >>> ks = jax.random.split(jax.random.key(0), 3)
  >>> mods = [jax.random.normal(k, (8, 4)) for k in ks]
  >>> jaxcl.losses.symile(mods, temperature=0.1, negatives="n_squared").shape
  (8,)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, product
from jaxcl.losses import _common as c

NEGATIVES = ("n", "n_squared")


def symile(modalities, *, temperature, negatives="n", rng=None, axis_name=None, normalize=True,
           valid=None, impl="dense", block_size=1024, precision=None):
  """Symile loss over ``M >= 2`` modalities (sequence of ``[B, D]`` arrays). ``[B_local]``.

  ``precision``: of the similarity product ``<r^m_i, prod_{m' != m} r^{m'}_j>``
  (:func:`jaxcl.losses.info_nce`); each anchor modality's positive is taken from the same
  product as its candidates (``"n_squared"``: the kernel's positive sum; ``"n"``: the positive
  *is* the extra candidate), so the value stays >= 0 at any precision.
  """
  fn = "symile"
  if not isinstance(modalities, (list, tuple)) or len(modalities) < 2:
    n_given = len(modalities) if isinstance(modalities, (list, tuple)) else type(modalities)
    raise ValueError(f"{fn}: 'modalities' must be a sequence of at least 2 arrays, got {n_given}")
  mods = [c.embeddings(f"modalities[{i}]", x, fn) for i, x in enumerate(modalities)]
  for i, x in enumerate(mods[1:], 1):
    c.check_same("modalities[0]", mods[0], f"modalities[{i}]", x, 0, fn, "batch size")
    c.check_same("modalities[0]", mods[0], f"modalities[{i}]", x, 1, fn, "feature size")
  c.check_temperature(temperature, fn)
  c.check_precision(precision, fn)
  if negatives not in NEGATIVES:
    raise ValueError(f"{fn}: 'negatives' must be one of {NEGATIVES}, got {negatives!r}")
  if negatives == "n" and rng is None:
    raise ValueError(f"{fn}: 'rng' (a jax.random key) is required when negatives='n'")
  b = mods[0].shape[0]
  n_mod = len(mods)
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  r = [c.prepare(x, normalize) for x in mods]
  r_glob = [collectives.all_gather(x, axis_name) for x in r]
  valid_glob = collectives.all_gather(valid, axis_name)
  n = r_glob[0].shape[0]
  rows = collectives.global_row_index(b, axis_name)

  total = 0.0
  keep = valid
  for m in range(n_mod):
    others = [i for i in range(n_mod) if i != m]
    kw = dict(impl=impl, block_size=block_size, precision=precision)
    if negatives == "n":
      # MIP(r_i, ...) = <r^m_i, prod_{m' != m} r^{m'}_i>, through the one product.
      own = functools.reduce(jnp.multiply, [r[o] for o in others])
      pos = scale * product("id,id->i", r[m], own, precision)
      keys_rng = jax.random.fold_in(rng, m)
      perms = [jax.random.permutation(jax.random.fold_in(keys_rng, o), n) for o in others]
      # This device's slice of the global candidate list; the kernel gathers it.
      local = [p[rows] for p in perms]
      keys = functools.reduce(jnp.multiply, [r_glob[o][ix] for o, ix in zip(others, local)])
      key_valid = functools.reduce(jnp.logical_and, [valid_glob[ix] for ix in local])
      q_tags = {"sample": rows}
      k_tags = {"sample": rows, "valid": key_valid}
      res = contrastive_lse(
          r[m], keys, scale, q_tags=q_tags, k_tags=k_tags,
          mask_fn=lambda qt, kt: kt["valid"] & (qt["sample"] != kt["sample"]),
          extra_logits=pos[:, None], axis_name=axis_name, **kw)
    else:
      # Candidate c = (j_1, ..., j_{M-1}) of global rows; the positive is (i, ..., i).
      keys, key_valid = r_glob[others[0]], valid_glob
      for o in others[1:]:
        keys = (keys[:, None, :] * r_glob[o][None, :, :]).reshape(-1, keys.shape[-1])
        key_valid = (key_valid[:, None] & valid_glob[None, :]).reshape(-1)
      combo, n_other = jnp.arange(keys.shape[0], dtype=jnp.int32), len(others)
      k_tags = {"valid": key_valid, **{f"row{t}": (combo // n ** (n_other - 1 - t)) % n
                                       for t in range(n_other)}}
      res = contrastive_lse(r[m], keys, scale, q_tags={"sample": rows}, k_tags=k_tags,
                            mask_fn=lambda qt, kt: kt["valid"], pos_fn=_own_combination,
                            axis_name=None, **kw)
      pos = res.pos_sum
    keep = keep & jnp.isfinite(res.lse)
    total = total + (res.lse - pos)
  return c.finalize(total / n_mod, keep)


def _own_combination(qt, kt):
  """The key of the anchor's own rows in every other modality."""
  hit = kt["valid"]
  for name in kt:
    if name.startswith("row"):
      hit = hit & (kt[name] == qt["sample"])
  return hit
