"""Label-based NT-Xent (pytorch-metric-learning ``NTXentLoss`` semantics), the objective of
lexical specialization (Green, Ponzetto, Glavas, "Massively Multilingual Lexical
Specialization of Multilingual Transformers", ACL 2023, arXiv 2208.01018; reference code
tommaso-green/babelbert ``models/model.py``: ``NTXentLoss(temperature=0.07)`` on the word
vectors of a batch of synonym pairs, labels = synset ids).

The ``V`` views of ``B`` samples are ``R = B * V`` rows ``u_a`` (L2-normalised), row ``a`` with
label ``y_a`` (its sample's label), ``s(a, b) = <u_a, u_b> / T``. Every *ordered* positive pair
``(a, p)``, ``p != a`` with ``y_p = y_a`` (any view, any sample: other pairs of the same synset
in the batch are positives too), has one term in which it competes only with the anchor's
negatives ``N(a) = {n : y_n != y_a}`` (the other positives are *not* in its denominator; SupCon's
``L_out`` puts them there, :func:`jaxcl.losses.supcon`)::

    l_ap = -log[ exp s(a, p) / (exp s(a, p) + sum_{n in N(a)} exp s(a, n)) ]
         = softplus( log sum_{n in N(a)} exp s(a, n) - s(a, p) )

    L = 1 / |{(a, p)}| * sum_{(a, p)} l_ap          (PML's mean over positive pairs)

With exactly two rows per label (each synset once in the batch, ``V = 2``) ``L`` is SimCLR's
NT-Xent over the ``2B`` rows (:func:`jaxcl.losses.nt_xent`). A positive pair whose anchor has no
negative contributes 0 (its term is ``log exp s - s``), as in PML, and counts in the mean.

Per-example values: the normaliser runs over the *global* batch, so the loss does not decompose
into independent per-example terms (as Hydra's). The value returned for sample ``i`` is
``B_global * sum_{anchors a of i} sum_p l_ap / |{(a, p)}|``; its mean over the global batch is
``L`` (0 when the batch holds no positive pair at all).

Kernel: the negatives' log-sum-exp is :func:`jaxcl.kernels.contrastive_lse` with label / validity
tags (``impl=`` honoured); the per-positive denominator needs each positive logit on its own,
which the kernel does not return (only their sum), so the ``[R_local, R_global]`` logits are also
formed densely for the softplus terms (as :func:`jaxcl.losses.contrib.hydra`).

Distributed semantics: rows, labels and validity are gathered along ``axis_name``; anchors are
the local rows; the positive-pair count is ``psum``-ed. Value and gradient equal the
single-device call on the full batch.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (4, 2, 8))
  >>> jaxcl.losses.contrib.label_nt_xent(z, jnp.array([0, 1, 0, 2])).shape
  (4,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c


def _negative(qt, kt):
  return kt["valid"] & (kt["label"] != qt["label"])


def _positive(qt, kt):
  self_ = (qt["sample"] == kt["sample"]) & (qt["view"] == kt["view"])
  return kt["valid"] & (kt["label"] == qt["label"]) & ~self_


def label_nt_xent(features, labels, *, temperature=0.07, axis_name=None, normalize=True,
                  valid=None, impl="dense", block_size=1024):
  """Label-based NT-Xent over every view of every sample (module docstring). ``[B_local]``.

  Args:
    features: ``[B, V, D]`` embeddings (``V >= 1``; lexical specialization: ``V = 2``, the two
      words of a synonym pair).
    labels: ``[B]`` int labels (synset ids); every other row with the same label is a positive.
    temperature: ``T`` (the paper's 0.07).
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise the rows first (cosine similarity, as PML's default distance).
    valid: ``[B]`` bool padding mask: padded rows are neither anchors nor candidates.
    impl, block_size: kernel implementation of the negatives' log-sum-exp.

  Returns:
    ``[B_local]`` float32; the global mean is ``L`` (see "Per-example values").
  """
  fn = "label_nt_xent"
  features = c.embeddings("features", features, fn, rank=3, what="[batch, views, dim]")
  c.check_temperature(temperature, fn)
  b, v, d = features.shape
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  u = c.prepare(features, normalize)
  rows = jnp.swapaxes(u, 0, 1).reshape(v * b, d)          # view-major rows (view w, sample i)
  tags = c.concat_tags(*[c.row_tags(b, axis_name, view=w, valid=valid, label=labels)
                         for w in range(v)])
  lse_neg = contrastive_lse(rows, rows, scale, q_tags=tags, k_tags=tags, mask_fn=_negative,
                            axis_name=axis_name, impl=impl, block_size=block_size).lse
  k_all = collectives.all_gather(rows, axis_name)
  kt = {n: collectives.all_gather(t, axis_name)[None, :] for n, t in tags.items()}
  qt = {n: t[:, None] for n, t in tags.items()}
  s = logits(rows, k_all, scale)
  pos = jnp.broadcast_to(_positive(qt, kt), s.shape)
  has_neg = jnp.isfinite(lse_neg)
  lse_safe = jnp.where(has_neg, lse_neg, 0.0)
  terms = jnp.where(pos & has_neg[:, None], jax.nn.softplus(lse_safe[:, None] - s), 0.0)
  anchor_ok = tags["valid"]
  per_anchor = jnp.where(anchor_ok, jnp.sum(terms, axis=1), 0.0)
  count = jnp.sum(jnp.where(anchor_ok[:, None], pos, False)).astype(jnp.float32)
  total = collectives.psum(count, axis_name)
  n_global = b * collectives.axis_size(axis_name)
  per_sample = jnp.sum(per_anchor.reshape(v, b), axis=0)
  return c.finalize(n_global * per_sample / jnp.maximum(total, 1.0), valid)
