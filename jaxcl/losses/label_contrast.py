"""Input-label contrast: inputs scored against learned label embeddings (softmax or binary NCE).

Equations (the input-label contrast of Rethmeier & Augenstein's survey, "A Primer on
Contrastive Pretraining in Language Processing", ACM CSUR 2023, arXiv 2102.12982, section
"input-label contrast"), with ``s(x_i, c) = <z_i, e_c> / T`` (rows of ``z`` and of the label
embeddings ``E [C, D]`` L2-normalised unless ``normalize=False``) and true label ``y_i``:

``form="softmax"`` (InfoNCE of the input against all ``C`` label embeddings, the true label's
embedding is the positive)::

    L_i = -s(x_i, y_i) + log sum_{c=0}^{C-1} exp s(x_i, c)

``form="binary"`` (binary NCE / negative sampling: the true label is a positive pair, every
other label, or ``num_negatives`` of them drawn uniformly without replacement from the
``C - 1`` wrong labels with the explicit ``rng``, a negative pair)::

    L_i = -log sigmoid(s(x_i, y_i)) - sum_{c in N_i} log sigmoid(-s(x_i, c))

With ``normalize=False`` and ``T = 1`` the softmax form is exactly the softmax cross-entropy of
a bias-free linear classifier ``z E.T`` (logit ``c`` is ``<z_i, e_c>``).

The softmax form goes through :func:`jaxcl.kernels.contrastive_lse` (queries = inputs, keys =
label embeddings, positive tag = the label); the binary form through the same similarity
product (:func:`jaxcl.kernels.logits`) and a softplus per pair.

Distributed semantics: ``label_embeddings`` are shared (replicated on every device, e.g. the
trainer's objective parameters), never gathered; every row's loss depends only on that row, so
``axis_name`` is accepted for the common calling convention and needs no communication. The
sampled negatives of a row are drawn from ``fold_in(rng, global row index)``, so a sharded call
draws what the single-device call on the full batch draws. Per-example ``[B_local]`` values;
their global mean is the loss.

Labels must lie in ``[0, C)``: concrete labels out of range are an error naming ``'labels'``;
traced ones give NaN on their (valid) row. Padded rows (``valid=False``) give 0 and no gradient.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (4, 8))
  >>> e = jax.random.normal(jax.random.key(1), (3, 8))
  >>> y = jnp.array([0, 2, 1, 0])
  >>> jaxcl.losses.contrib.label_contrast(z, e, y, temperature=0.1).shape
  (4,)
  >>> jaxcl.losses.contrib.label_contrast(z, e, y, form="binary", temperature=0.1, num_negatives=1,
  ...                             rng=jax.random.key(2)).shape
  (4,)
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse, logits
from jaxcl.losses import _common as c

FORMS = ("softmax", "binary")


def _negative_mask(rng, labels, num_classes, num_negatives, axis_name):
  """``[B, C]`` bool: ``num_negatives`` wrong labels per row, uniform without replacement,
  drawn from ``fold_in(rng, global row index)``."""
  rows = collectives.global_row_index(labels.shape[0], axis_name)
  noise = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(rng, i), (num_classes,)))(rows)
  true = jax.nn.one_hot(labels, num_classes, dtype=bool)
  noise = jnp.where(true, jnp.inf, noise)  # the true label is never drawn
  rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
  return (rank < num_negatives) & ~true


def label_contrast(z, label_embeddings, labels, *, form="softmax", temperature=0.1,
                   normalize=True, num_negatives=None, rng=None, valid=None, axis_name=None,
                   impl="dense"):
  """Input-label contrast of ``z [B, D]`` against ``label_embeddings [C, D]`` (see the module
  docstring for both equations). Returns ``[B_local]`` float32.

  Args:
    z: ``[B, D]`` input embeddings (any float dtype; logits in float32).
    label_embeddings: ``[C, D]`` one embedding per class, shared by all devices (not gathered).
    labels: ``[B]`` ints in ``[0, C)``, the true label of each row.
    form: ``"softmax"`` (InfoNCE over all ``C`` labels) or ``"binary"`` (sigmoid per pair).
    temperature: ``T``, Python float > 0 or traced scalar (gets its gradient).
    normalize: L2-normalise the rows of ``z`` and ``label_embeddings`` first (cosine scores).
    num_negatives: binary form only: ``None`` = all ``C - 1`` wrong labels are negatives;
      an int ``k`` in ``[1, C - 1]`` samples ``k`` of them per row (needs ``rng``).
    rng: PRNG key for the sampled negatives (binary form with ``num_negatives``).
    valid: ``[B]`` bool; padded rows give loss 0 and no gradient.
    axis_name: mesh axis name(s) inside ``shard_map``; accepted, nothing is gathered.
    impl: kernel implementation of the softmax form (see :func:`jaxcl.kernels.contrastive_lse`).
  """
  fn = "label_contrast"
  z = c.embeddings("z", z, fn)
  e = c.embeddings("label_embeddings", label_embeddings, fn, what="[classes, dim]")
  c.check_same("z", z, "label_embeddings", e, 1, fn, "feature size")
  b, k = z.shape[0], e.shape[0]
  if k < 2:
    raise ValueError(f"{fn}: 'label_embeddings' needs at least 2 classes, got shape "
                     f"{tuple(e.shape)}")
  if form not in FORMS:
    raise ValueError(f"{fn}: 'form' must be one of {FORMS}, got {form!r}")
  c.check_temperature(temperature, fn)
  labels = c.labels_array(labels, b, fn)
  valid = c.valid_mask(valid, b, fn)
  if num_negatives is not None:
    if form != "binary":
      raise ValueError(f"{fn}: 'num_negatives' applies to form='binary' only, got form={form!r}")
    num_negatives = c.check_int(num_negatives, 1, k - 1, message=(
        f"{fn}: 'num_negatives' must be an int in [1, {k - 1}] (C - 1 wrong labels) or None "
        "(all)"))
    if rng is None:
      raise ValueError(f"{fn}: 'rng' is required to sample 'num_negatives' negative labels")
  in_range = c.check_label_range(fn, labels, valid, k, "the rows of 'label_embeddings'")
  y = jnp.clip(labels, 0, k - 1)
  scale = c.inv_temperature(temperature)
  q, keys = c.prepare(z, normalize), c.prepare(e, normalize)
  if form == "softmax":
    res = contrastive_lse(q, keys, scale, q_tags={"label": y},
                          k_tags={"label": jnp.arange(k, dtype=jnp.int32)},
                          pos_fn=lambda qt, kt: qt["label"] == kt["label"],
                          axis_name=None, impl=impl)  # label embeddings are shared: no gather
    per = res.lse - res.pos_sum
  else:
    s = logits(q, keys, scale)
    pos = jax.nn.one_hot(y, k, dtype=bool)
    neg = ~pos if num_negatives is None else _negative_mask(rng, y, k, num_negatives, axis_name)
    # -log sigmoid(s) = softplus(-s); -log sigmoid(-s) = softplus(s).
    per = (jnp.sum(jnp.where(pos, jax.nn.softplus(-s), 0.0), axis=-1)
           + jnp.sum(jnp.where(neg, jax.nn.softplus(s), 0.0), axis=-1))
  return c.finalize(jnp.where(in_range, per, jnp.nan), valid)
