"""MCLRec's meta contrast and margin regulariser (Qin et al., "Meta-optimized Contrastive
Learning for Sequential Recommendation", SIGIR 2023, arXiv 2304.07763; code QinHsiu/MCLRec,
``mclrec.py``: ``meta_contrast``, ``meta_contrast_rl_1``, ``meta_rl``).

Two views ``a, b [N, D]`` (global batch), rows ``u = [a; b]`` (2N anchors), dot-product logits
``s(r, k) = <u_r, u_k> / T`` (no normalisation: ``sim = "dot"``), positive ``p_r = s(r, pair(r))``
(``pair`` = the same sample in the other view), negatives ``n_{r,k}``: the other ``2N - 2`` rows,
hardest ``m_r = max_k n_{r,k}``::

    R(a, b) = mean_r [p_r - min(p_r, m_r)]_+  +  mean_{r,k} [max(p_r, m_r) - n_{r,k}]_+

(``meta_contrast_rl_1``: the first term is ``[p - m]_+``, penalising a positive above the hardest
negative; the second pulls every negative up towards ``max(p, m)``: "avoid too similar pairs").
With the encoder's two augmented views ``h0, h1`` and the learnable augmenters' outputs
``h2 = A1(h0)``, ``h3 = A2(h1)``::

    L_meta = NT(h0, h3) + NT(h1, h2) + NT(h2, h3)
             + margin_weight * [R(h0, h3) + R(h1, h2) + R(h2, h3)]       (margin_weight = 0.1)

``NT`` is SimCLR's NT-Xent with dot-product logits at ``T = 1`` (:func:`jaxcl.losses.nt_xent`,
``normalize=False``: the one kernel); ``R`` uses the regulariser's own ``margin_temperature``
(the code's ``tau``; 1 in the reference runs).

Per-example returns: value ``i`` is the mean of its two anchor rows, so the global mean is the
published loss (``nn.CrossEntropyLoss`` / ``torch.mean`` over the 2N rows). ``R`` is a max and
hinges, not a softmax, so it is computed densely on the gathered keys (``[2B_local, 2N]``
logits); under ``axis_name`` the keys are gathered and value and gradient equal the
single-device ones. Padded rows (``valid``) are neither anchors nor negatives; an anchor without
any negative has ``R = 0``.

Example:
  >>> import jax, jaxcl
  >>> a = jax.random.normal(jax.random.key(0), (6, 4)); b = a + 0.1
  >>> float(jaxcl.losses.contrib.margin_regularizer(a, b).mean()) >= 0
  True
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.losses import _common as c
from jaxcl.losses.ntxent import nt_xent


def margin_regularizer(a, b, *, temperature=1.0, axis_name=None, valid=None):
  """``R(a, b)`` per example ``[B_local]`` (module docstring); dot-product logits / T."""
  a, b = c.paired("margin_regularizer", "a", a, "b", b, temperature)
  bl = a.shape[0]
  valid = c.valid_mask(valid, bl, "margin_regularizer")
  scale = c.inv_temperature(temperature)
  q = jnp.concatenate([a, b]).astype(jnp.float32)                      # [2B_local, D]
  ka = collectives.all_gather(a.astype(jnp.float32), axis_name)
  kb = collectives.all_gather(b.astype(jnp.float32), axis_name)
  n = ka.shape[0]
  k = jnp.concatenate([ka, kb])                                        # [2N, D]
  kvalid = collectives.all_gather(valid, axis_name)
  kvalid = jnp.concatenate([kvalid, kvalid])
  g = collectives.global_row_index(bl, axis_name)
  self_idx = jnp.concatenate([g, g + n])
  pos_idx = jnp.concatenate([g + n, g])
  s = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32) * scale
  cols = jnp.arange(2 * n)
  neg = kvalid[None] & (cols[None] != self_idx[:, None]) & (cols[None] != pos_idx[:, None])
  p = jnp.take_along_axis(s, pos_idx[:, None], axis=1)[:, 0]
  m = jnp.max(jnp.where(neg, s, -jnp.inf), axis=1)
  count = jnp.sum(neg, axis=1)
  has = count > 0
  m = jnp.where(has, m, p)
  hinge_pos = jax.nn.relu(p - jnp.minimum(p, m))
  hinge_neg = jnp.sum(jnp.where(neg, jax.nn.relu(jnp.maximum(p, m)[:, None] - s), 0.0), axis=1)
  row = jnp.where(has, hinge_pos + hinge_neg / jnp.maximum(count, 1), 0.0)
  return c.finalize(0.5 * (row[:bl] + row[bl:]), valid)


def mclrec_meta_loss(h0, h1, h2, h3, *, temperature=1.0, margin_weight=0.1,
                     margin_temperature=1.0, axis_name=None, valid=None, impl="dense",
                     block_size=1024):
  """``L_meta`` per example ``[B_local]`` (module docstring): three dot-product NT-Xent terms
  between the data-augmented views ``h0, h1`` and the augmenter outputs ``h2 = A1(h0)``,
  ``h3 = A2(h1)``, plus ``margin_weight`` times their margin regularisers."""
  for name, x in (("h1", h1), ("h2", h2), ("h3", h3)):
    c.paired("mclrec_meta_loss", "h0", h0, name, x, temperature)
  c.check_temperature(margin_temperature, "mclrec_meta_loss", "margin_temperature")
  kw = dict(axis_name=axis_name, valid=valid)
  pairs = ((h0, h3), (h1, h2), (h2, h3))
  out = sum(nt_xent(x, y, temperature=temperature, normalize=False, impl=impl,
                    block_size=block_size, **kw) for x, y in pairs)
  if margin_weight:
    out = out + margin_weight * sum(
        margin_regularizer(x, y, temperature=margin_temperature, **kw) for x, y in pairs)
  return out
