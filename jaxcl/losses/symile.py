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
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, product
from jaxcl.losses import _common as c

NEGATIVES = ("n", "n_squared")


def symile(modalities: Sequence[ArrayLike], *, temperature: float | jax.Array,
           negatives: str = "n", rng: jax.Array | None = None,
           axis_name: str | tuple[str, ...] | None = None, normalize: bool = True,
           valid: ArrayLike | None = None, impl: str = "dense", block_size: int = 1024,
           precision: jax.lax.PrecisionLike = None) -> jax.Array:
  """Symile loss over ``M >= 2`` modalities, contrasted with the multilinear inner product.

  For each local sample ``i``, with ``r^m`` modality ``m``'s rows (L2-normalised unless
  ``normalize=False``) and temperature ``T``::

      l_i = (1/M) sum_m [ -MIP(r^1_i, ..., r^M_i) / T + log sum_{c in C_m(i)} exp(<r^m_i, c> / T) ]
      MIP(x_1, ..., x_M) = sum_d prod_m x_{m,d}

  The candidates ``C_m(i)`` of anchor modality ``m`` are elementwise products of one row of
  each other modality, from the valid rows of the global batch (every device along
  ``axis_name``):

  * ``negatives="n"`` (``O(N)``): one random permutation ``pi_m'`` of the global batch per
    non-anchor modality, drawn from ``rng`` (the same on every device); candidate ``j != i``
    is ``prod_{m' != m} r^{m'}_{pi_m'(j)}``, plus the true positive ``prod_{m' != m} r^{m'}_i``.
    Accidental false negatives are possible, as in the reference.
  * ``negatives="n_squared"``: every combination of non-anchor rows (``N^(M-1)`` candidates,
    the positive among them; memory ``O(N^(M-1) D)``); deterministic.

  With ``M = 2`` and ``"n_squared"`` this is :func:`jaxcl.losses.clip_loss`. From Saporta et
  al., "Contrasting with Symile", arXiv 2411.01053.

  Per-example convention: entry ``i`` of the ``[B_local]`` result is ``l_i``, the mean over
  the ``M`` anchor modalities (0 for a padded sample); the mean over the global batch is the
  reference's loss (under padding, reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    modalities: sequence of ``M >= 2`` arrays ``[B, D]`` (any float dtype, equal shapes); row
      ``i`` of each is the same sample.
    temperature: softmax temperature ``T`` (required; Python float > 0 or traced scalar; use
      a learnable one: MIPs of unit vectors are small).
    negatives: ``"n"`` (one permuted candidate list per anchor modality) or ``"n_squared"``
      (every combination).
    rng: a ``jax.random`` key for the permutations of ``negatives="n"`` (required there,
      unused for ``"n_squared"``).
    axis_name: mesh axis name(s) inside ``jax.shard_map``; all modalities are gathered along
      it. ``None``: single device.
    normalize: L2-normalise every modality first (idempotent for normalised inputs; the
      reference leaves this to the caller).
    valid: ``[B]`` bool; a padded sample gives loss 0 and its rows are in no candidate.
      ``None``: every row is valid.
    impl: similarity kernel, ``"dense"``, ``"blockwise"``, ``"ring"`` or ``"auto"`` (see
      :func:`jaxcl.kernels.contrastive_lse`).
    block_size: key-block size of the blockwise / ring kernels.
    precision: ``precision`` of the similarity product ``<r^m_i, prod_{m' != m} r^{m'}_j>``
      (as in :func:`jaxcl.losses.info_nce`); each anchor modality's positive is taken from
      the same product as its candidates (``"n_squared"``: the kernel's positive sum; ``"n"``:
      the positive *is* the extra candidate), so the value stays >= 0 at any precision.

  Returns:
    ``[B_local]`` float32 per-sample losses ``l_i`` (0 on padded samples).

  Example:
    Three modalities all equal to ``I_2``, ``T = 1``, ``"n_squared"``: ``MIP(e_i, e_i, e_i) =
    1``; of the 4 candidates ``e_j * e_j'`` only ``(i, i)`` has ``<e_i, c> = 1``, the other
    three 0. Each modality's term is ``-1 + log(e + 3) = log(1 + 3/e) = 0.7437``. With two
    modalities it is CLIP's ``log(1 + e^-1) = 0.3133``.

    >>> import jax.numpy as jnp, jaxcl
    >>> r = jnp.eye(2)
    >>> per = jaxcl.losses.symile([r, r, r], temperature=1.0, negatives="n_squared")
    >>> [round(float(x), 4) for x in per]
    [0.7437, 0.7437]
    >>> per = jaxcl.losses.symile([r, r], temperature=1.0, negatives="n_squared")
    >>> [round(float(x), 4) for x in per]
    [0.3133, 0.3133]
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
