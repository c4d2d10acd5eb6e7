"""L2-normalised projected gradient steps in input space: adversarial attacks and the
class-conditional ascent sampler of JEM-style training (DAT, arXiv 2510.13872).

One step (the ``L2Step`` of the robustness library, which the DAT reference code uses)::

    g   = grad_x sum_i objective(x)_i                      # per-row objective, ascended
    x  <- x + step_size * g_i / (||g_i||_2 + 1e-10)        # row-wise L2-normalised step
    x  <- clip_[lo, hi](x0 + renorm_eps(x - x0))           # L2 ball of radius eps, data box

``renorm_eps`` scales rows with ``||x - x0|| > eps`` back onto the sphere (``eps = inf``: no
ball, only the box: the sampler). Starts are not randomised (the reference's default).

* :func:`l2_pgd`: the loop (``lax.fori_loop``; ``steps`` may be a traced integer, which runs a
  ``while_loop``); the starting point and the result are ``stop_gradient``-ed, so a loss built
  on the result never differentiates through the loop (the model's parameters get no gradient
  from how a sample was made, as in the reference's ``no_grad`` sampling);
* :func:`attack_ce`: untargeted L2-PGD ascent of the cross-entropy of the true label
  (``pgd_attack_xent``);
* :func:`sample_class_conditional`: ascent of the class logit ``f_y(x)`` from out-of-
  distribution starts, ``eps = inf`` (``pgd_attack`` with ``logsumexp_sampling: false``);
* :func:`ood_starts`: those starts, uniform noise in the box or the batch's images with their
  pixels shuffled, one key per row (``fold_in(rng, index[row])``) so that a sharded batch
  draws what one device would;
* :func:`auc`: the Mann-Whitney AUC of two score sets (the curriculum's real-vs-sample AUC).

``logits_fn(x) -> [B, C]`` is any differentiable function (the model under fixed parameters);
rows must be independent (no BatchNorm in training mode), since the step uses the gradient of
the row sum. Compute is float32 whatever the input dtype.

Example:
  >>> import jax, jax.numpy as jnp
  >>> w = jax.random.normal(jax.random.key(0), (64, 10))
  >>> x = jax.random.uniform(jax.random.key(1), (4, 64))
  >>> adv = attack_ce(lambda x: x @ w, x, jnp.arange(4), steps=5, step_size=0.25, eps=1.0)
  >>> bool(jnp.all(jnp.linalg.norm(adv - x, axis=1) <= 1.0 + 1e-5))
  True
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

NORM_EPS = 1e-10  # added to ||g|| as in the reference's L2Step
OOD_KINDS = ("uniform", "shuffle")


def _rows(x):
  return x.reshape(x.shape[0], -1)


def _row_norm(x):
  return jnp.sqrt(jnp.sum(jnp.square(_rows(x)), axis=1)).reshape((-1,) + (1,) * (x.ndim - 1))


def normalized_step(x, g, step_size):
  """``x + step_size * g / (||g|| + 1e-10)`` row by row."""
  return x + step_size * g / (_row_norm(g) + NORM_EPS)


def project(x, x0, eps, box=(0.0, 1.0)):
  """Rows of ``x`` into the L2 ball of radius ``eps`` around ``x0`` (``eps = inf``: none),
  then into the box ``[lo, hi]`` (``None``: no box)."""
  if not math.isinf(eps):
    d = x - x0
    n = _row_norm(d)
    x = x0 + d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-30))
  if box is not None:
    x = jnp.clip(x, box[0], box[1])
  return x


def _check(fn, steps, step_size, eps, box):
  if isinstance(steps, int) and steps < 0:
    raise ValueError(f"{fn}: 'steps' must be >= 0, got {steps}")
  if not step_size > 0:
    raise ValueError(f"{fn}: 'step_size' must be > 0, got {step_size}")
  if not eps > 0:
    raise ValueError(f"{fn}: 'eps' must be > 0 (inf = no ball), got {eps}")
  if box is not None and not box[0] < box[1]:
    raise ValueError(f"{fn}: 'box' must be (lo, hi) with lo < hi, got {box}")


def l2_pgd(objective, x, *, steps, step_size, eps=math.inf, box=(0.0, 1.0)):
  """``steps`` L2-normalised ascent steps of ``sum_i objective(x)_i`` from ``x``, projected on
  the ``eps``-ball around ``x`` and the ``box`` after each step (module docstring). Returns the
  result with ``stop_gradient`` (float32, the shape of ``x``)."""
  _check("l2_pgd", steps, step_size, eps, box)
  x0 = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  grad = jax.grad(lambda v: jnp.sum(objective(v).astype(jnp.float32)))

  def body(_, v):
    return project(normalized_step(v, grad(v), step_size), x0, eps, box)

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x0))


def _labels(labels, b, fn):
  labels = jnp.asarray(labels)
  if labels.shape != (b,) or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"{fn}: 'labels' must be integers of shape ({b},), got "
                     f"{labels.dtype}{tuple(labels.shape)}")
  return labels.astype(jnp.int32)


def attack_ce(logits_fn, x, labels, *, steps, step_size, eps, box=(0.0, 1.0)):
  """Untargeted L2-PGD: ascent of ``CE(logits_fn(x), y)`` within ``||x - x0|| <= eps``."""
  labels = _labels(labels, x.shape[0], "attack_ce")

  def ce(v):
    lg = logits_fn(v).astype(jnp.float32)
    return jax.nn.logsumexp(lg, -1) - jnp.take_along_axis(lg, labels[:, None], -1)[:, 0]

  return l2_pgd(ce, x, steps=steps, step_size=step_size, eps=eps, box=box)


def sample_class_conditional(logits_fn, x0, labels, *, steps, step_size, box=(0.0, 1.0)):
  """Ascent of the class logit ``f_{y_i}(x_i)`` from the starts ``x0`` (``eps = inf``)."""
  labels = _labels(labels, x0.shape[0], "sample_class_conditional")
  logit = lambda v: jnp.take_along_axis(logits_fn(v).astype(jnp.float32), labels[:, None],
                                        -1)[:, 0]
  return l2_pgd(logit, x0, steps=steps, step_size=step_size, eps=math.inf, box=box)


def ood_starts(rng, x, index, kind="uniform", box=(0.0, 1.0)):
  """Out-of-distribution starts shaped like ``x``: ``uniform`` noise in the box, or
  ``shuffle``: each row of ``x`` with its entries randomly permuted. Row ``i`` uses the key
  ``fold_in(rng, index[i])`` (``index``: the rows' global positions)."""
  if kind not in OOD_KINDS:
    raise ValueError(f"ood_starts: 'kind' must be one of {OOD_KINDS}, got {kind!r}")
  if rng is None:
    raise ValueError("ood_starts: needs an explicit 'rng' key")
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.asarray(index, jnp.int32))
  shape = x.shape[1:]
  if kind == "uniform":
    lo, hi = box
    return jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, lo, hi))(keys)
  flat = _rows(jnp.asarray(x, jnp.float32))
  return jax.vmap(lambda k, r: jax.random.permutation(k, r))(keys, flat).reshape(x.shape)


def auc(pos, neg, axis_name=None):
  """``P(pos > neg) + P(pos == neg) / 2`` over all pairs (the ROC AUC of ``pos`` vs ``neg``).

  Inside ``shard_map`` each device passes its local scores; the pairs are those of the global
  batch (``neg`` gathered, pair counts ``psum``-ed), and the result is replicated."""
  from jaxcl import collectives
  pos, neg = jnp.ravel(pos).astype(jnp.float32), jnp.ravel(neg).astype(jnp.float32)
  d = pos[:, None] - collectives.all_gather(neg, axis_name)[None, :]
  hits = jnp.sum((d > 0).astype(jnp.float32) + 0.5 * (d == 0).astype(jnp.float32))
  pairs = collectives.psum(jnp.float32(d.size), axis_name)
  return collectives.psum(hits, axis_name) / pairs
