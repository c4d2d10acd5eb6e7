"""COCONUT's two contrastive terms for class-incremental learning with experience replay.

Cappellazzo, Fini, Yang, Falavigna, Brutti, Raj, "Continual Contrastive Spoken Language
Understanding", Findings of ACL 2024, arXiv 2310.02699. No reference code was found (the
authors' CL_SLU repository is their earlier rehearsal + KD paper). The full objective is

    L = L_CE (on the current task's rows and the replayed rows) + l1 * L_NSPT + l2 * L_MM

**The formulas below are the hypothesised forms of methods.md section 11 (loss names and
intent confirmed from the abstract and a public summary; the exact denominators, the
temperature and the weights are unverified against the paper's text).**

``nspt`` -- Negative-Student, Positive-Teacher. Anchors: the *rehearsal* rows ``i in R`` of
the batch, embedded by the current (student) network, ``s_i``. Positives: every row ``p`` of
the global batch with the anchor's class, embedded by the frozen previous-task *teacher*,
``t_p`` (the anchor's own teacher embedding included). Negatives: every row ``n`` of another
class, embedded by the *student*, ``s_n``. With ``x^ = x / ||x||`` and ``T`` the temperature::

    L_i = -1/|P(i)| sum_{p in P(i)} <s^_i, t^_p>/T
          + log( sum_{p in P(i)} exp(<s^_i, t^_p>/T) + sum_{n in N(i)} exp(<s^_i, s^_n>/T) )

    L_NSPT = 1/|R| sum_{i in R} L_i                 (0 when the batch has no rehearsal row)

The teacher is frozen: its embeddings are ``stop_gradient``-ed inside.

``coconut_mm`` -- the multimodal term: a supervised contrast between two modalities (in the
paper pooled audio features and text features of the transcript; here any two embeddings of
the same rows, e.g. two views) on the *current task's* rows ``C`` only, both directions::

    L^{ab}_i = -1/|P(i)| sum_{p in P(i)} <a^_i, b^_p>/T + log sum_{j in C} exp(<a^_i, b^_j>/T)
    P(i) = {p in C : y_p = y_i}                     (the row's own other modality included)

    L_MM = 1/|C| sum_{i in C} (L^{ab}_i + L^{ba}_i) / 2     (0 without current rows)

Choices where the paper is not pinned down (methods.md section 11): positives inside the NSPT
denominator (the hypothesised form above, SupCon ``L_out`` style); every same-class row of the
batch a positive (in class-incremental learning those are rehearsal rows); the MM candidates
restricted to the current rows (rehearsal rows are NSPT's business); class-level (not
instance-level) MM positives; mean over anchors, not over the batch.

Per-example values: the normalisers ``|R|`` / ``|C|`` run over the *global* batch (``psum``),
so neither loss decomposes into independent per-example terms. The value returned for row
``i`` is ``B_global * L_i / |R|`` for an anchor and 0 otherwise; its mean over the global batch
is the loss above. Both terms are one :func:`jaxcl.kernels.contrastive_lse` call per direction:
row tags (global sample index, student/teacher source, label, anchor/candidate validity) and a
mask function, no ``B x N`` mask stored (``impl=`` honoured).

Distributed semantics: keys (student and teacher rows, or the other modality) and their tags
are gathered along ``axis_name``; anchors stay local; the anchor counts are ``psum``-ed. Value
and gradient equal the single-device call on the full batch.

Recommendation: use both with a replay buffer (:mod:`jaxcl.recipes.coconut`, where the teacher
is the model snapshot at the task's start); ``T = 0.1`` and ``l1 = l2 = 1`` are this library's
untuned defaults, not the paper's (not found).

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  >>> s, t, b = (jax.random.normal(k, (6, 8)) for k in (k1, k2, k3))
  >>> y = jnp.array([0, 1, 0, 1, 2, 3])
  >>> old = jnp.array([True, True, True, True, False, False])   # rehearsal rows
  >>> both = jax.jit(lambda s, t, b: (jaxcl.losses.contrib.nspt(s, t, y, old),
  ...                                  jaxcl.losses.contrib.coconut_mm(s, b, y, ~old)))
  >>> [v.shape for v in both(s, t, b)]
  [(6,), (6,)]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c

STUDENT, TEACHER = 0, 1  # the "view" tag of a key row: who embedded it


def _flag(name, x, b, fn):
  x = jnp.asarray(x)
  if x.shape != (b,):
    raise ValueError(f"{fn}: '{name}' must have shape ({b},), got {tuple(x.shape)}")
  if x.dtype != jnp.bool_:
    raise TypeError(f"{fn}: '{name}' must be a bool array, got dtype {x.dtype}")
  return x


def _per_example(loss, anchor, axis_name):
  """``B_global * loss_i / |anchors|`` on anchors, 0 elsewhere (global mean = anchor mean)."""
  b = loss.shape[0]
  count = collectives.psum(jnp.sum(anchor.astype(jnp.float32)), axis_name)
  n_global = b * collectives.axis_size(axis_name)
  return c.finalize(n_global * loss / jnp.maximum(count, 1.0), anchor)


def _supervised_terms(res):
  """``lse - mean positive logit`` (0 where a row has no positive or no candidate)."""
  ok = (res.pos_count > 0) & jnp.isfinite(res.lse)
  mean_pos = res.pos_sum / jnp.where(ok, res.pos_count, 1.0)
  return jnp.where(ok, res.lse - mean_pos, 0.0), ok


def nspt(student, teacher, labels, rehearsal, *, temperature=0.1, axis_name=None,
         normalize=True, valid=None, impl="dense", block_size=1024):
  """Negative-Student Positive-Teacher loss (see the module docstring). Returns ``[B_local]``.

  Args:
    student: ``[B, D]`` current-model embeddings of the batch rows (any float dtype).
    teacher: ``[B, D]`` frozen-teacher embeddings of the same rows (no gradient reaches it).
    labels: ``[B]`` int class labels.
    rehearsal: ``[B]`` bool, true for the rows replayed from the buffer (the anchors).
    temperature: ``T`` (> 0; a traced scalar is allowed).
    axis_name: mesh axis name(s) inside ``shard_map``.
    normalize: L2-normalise the rows first.
    valid: ``[B]`` bool padding mask: padded rows are neither anchors nor keys.
    impl, block_size: kernel implementation.

  Returns:
    ``[B_local]`` float32: ``B_global * L_i / |R|`` on rehearsal rows, 0 elsewhere.
  """
  fn = "nspt"
  student, teacher = c.paired(fn, "student", student, "teacher", teacher, temperature)
  b = student.shape[0]
  labels = c.labels_array(labels, b, fn)
  rehearsal = _flag("rehearsal", rehearsal, b, fn)
  valid = c.valid_mask(valid, b, fn)
  scale = c.inv_temperature(temperature)
  u_s = c.prepare(student, normalize)
  u_t = c.prepare(jax.lax.stop_gradient(teacher), normalize)
  keys = jnp.concatenate([u_s, u_t])
  k_tags = c.concat_tags(c.row_tags(b, axis_name, view=STUDENT, valid=valid, label=labels),
                         c.row_tags(b, axis_name, view=TEACHER, valid=valid, label=labels))
  q_tags = c.row_tags(b, axis_name, view=STUDENT, valid=valid, label=labels)

  def positive(qt, kt):
    return kt["valid"] & (kt["view"] == TEACHER) & (kt["label"] == qt["label"])

  def candidate(qt, kt):
    negative = kt["valid"] & (kt["view"] == STUDENT) & (kt["label"] != qt["label"])
    return positive(qt, kt) | negative

  res = contrastive_lse(u_s, keys, scale, q_tags=q_tags, k_tags=k_tags, mask_fn=candidate,
                        pos_fn=positive, axis_name=axis_name, impl=impl, block_size=block_size)
  loss, ok = _supervised_terms(res)
  return _per_example(loss, valid & rehearsal & ok, axis_name)


def coconut_mm(a, b, labels, current, *, temperature=0.1, axis_name=None, normalize=True,
               valid=None, impl="dense", block_size=1024):
  """COCONUT's multimodal supervised contrast on the current task's rows, both directions
  (see the module docstring). Returns ``[B_local]``.

  Args:
    a, b: ``[B, D]`` embeddings of the same rows in the two modalities (or two views).
    labels: ``[B]`` int class labels.
    current: ``[B]`` bool, true for the current task's rows (anchors and candidates).
    temperature, axis_name, normalize, valid, impl, block_size: as :func:`nspt`.

  Returns:
    ``[B_local]`` float32: ``B_global * (L^ab_i + L^ba_i) / (2 |C|)`` on current rows, else 0.
  """
  fn = "coconut_mm"
  a, b_ = c.paired(fn, "a", a, "b", b, temperature)
  n = a.shape[0]
  labels = c.labels_array(labels, n, fn)
  current = _flag("current", current, n, fn)
  valid = c.valid_mask(valid, n, fn)
  scale = c.inv_temperature(temperature)
  rows = valid & current
  tags = c.row_tags(n, axis_name, view=0, valid=rows, label=labels)

  def candidate(qt, kt):
    return kt["valid"]

  def positive(qt, kt):
    return kt["valid"] & (kt["label"] == qt["label"])

  terms, oks = [], []
  for q, k in ((a, b_), (b_, a)):
    res = contrastive_lse(c.prepare(q, normalize), c.prepare(k, normalize), scale, q_tags=tags,
                          k_tags=tags, mask_fn=candidate, pos_fn=positive, axis_name=axis_name,
                          impl=impl, block_size=block_size)
    loss, ok = _supervised_terms(res)
    terms.append(loss)
    oks.append(ok)
  return _per_example(0.5 * (terms[0] + terms[1]), rows & oks[0] & oks[1], axis_name)
