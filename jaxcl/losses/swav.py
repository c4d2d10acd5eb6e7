"""SwAV: swapped prediction of Sinkhorn codes over 2 global + k local crops.

Equation (Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv 2006.09882; official ``main_swav.py``). ``V`` crops, the first
``num_global`` of which get codes; ``S^v = z^v C.T`` (``z`` and prototype rows ``C``
L2-normalised), ``q^s = sinkhorn_knopp(S^s)`` (stop-gradient, equipartition over the global
batch), ``p^v = softmax(S^v / T)``::

    swav_b = (1/num_global) sum_{s < num_global} (1/(V-1)) sum_{v != s} -sum_k q^s_bk log p^v_bk

The mean over the global batch of the returned ``[B_local]`` values is the official loss
(``loss /= len(crops_for_assign)`` after ``subloss / (V - 1)`` averaged over the batch).

Queue: with ``queue_scores`` (``[num_global, Q_local, K]``, stored queue embeddings times the
*current* prototypes, one queue per assigned crop as in the official code), the queue rows are
prepended, take part in the equipartition (sums over ``Q + B`` global rows) and their codes are
discarded.

Distributed semantics: codes use the global batch through :func:`jaxcl.sinkhorn.sinkhorn_knopp`
(``psum`` of the Sinkhorn sums; each device's queue rows count too, as in the official
per-GPU queue); the cross-entropy is per row. Sharded equals single-device.

The cross-entropy is a softmax over *prototypes*, not over samples, so it does not go through
:func:`jaxcl.kernels.contrastive_lse`; the scores themselves come from :func:`prototype_scores`
(the kernel's float32 product).

Training recipe (the trainer's job): re-normalise the prototypes before every step
(:func:`normalize_prototypes`), freeze them for the first epoch
(:func:`freeze_prototypes_until`, last in the optax chain), T = 0.1, eps = 0.05, 3 iterations.

Example:
  >>> import jax, jaxcl
  >>> crops = [jax.random.normal(jax.random.key(i), (8, 16)) for i in range(4)]
  >>> protos = jax.random.normal(jax.random.key(9), (10, 16))
  >>> scores = [jaxcl.losses.prototype_scores(z, protos) for z in crops]
  >>> jaxcl.losses.swav_loss(scores).shape
  (8,)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxcl import sinkhorn
from jaxcl.kernels import logits
from jaxcl.losses import _common as c


def prototype_scores(z: ArrayLike, prototypes: ArrayLike, *,
                     normalize: bool = True) -> jax.Array:
  """SwAV's prototype scores: cosine similarity of every row with every prototype.

  For local row ``b`` and prototype ``k`` (rows ``C_k`` of ``prototypes``)::

      S_bk = <z_b, C_k> / (|z_b| |C_k|)        (normalize=False: <z_b, C_k>)

  Per row, no reduction: the ``[B_local, K]`` result feeds :func:`swav_loss` (one array per
  crop). Computed as the kernels' float32 product.

  Args:
    z: ``[B, D]`` embeddings of one crop (any float dtype).
    prototypes: ``[K, D]`` prototype vectors.
    normalize: L2-normalise ``z`` and the prototype rows first.

  Returns:
    ``[B, K]`` float32 scores.

  Example:
    ``z = [3, 4]`` normalises to ``[0.6, 0.8]``; the prototypes ``[1, 0]`` and ``[0, 2]`` to
    ``e_1`` and ``e_2``, so the scores are ``[0.6, 0.8]``:

    >>> import jax.numpy as jnp, jaxcl
    >>> z, protos = jnp.array([[3.0, 4.0]]), jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> s = jaxcl.losses.prototype_scores(z, protos)
    >>> [round(float(x), 4) for x in s[0]]
    [0.6, 0.8]
  """
  fn = "prototype_scores"
  z = c.embeddings("z", z, fn)
  prototypes = c.embeddings("prototypes", prototypes, fn, what="[prototypes, dim]")
  c.check_same("z", z, "prototypes", prototypes, 1, fn, "feature size")
  return logits(c.prepare(z, normalize), c.prepare(prototypes, normalize), 1.0)


def _stack(name, x, fn):
  if isinstance(x, (list, tuple)):
    if not x:
      raise ValueError(f"{fn}: '{name}' must not be empty")
    for i, s in enumerate(x):
      c.embeddings(f"{name}[{i}]", s, fn, what="[batch, prototypes]")
    shapes = {tuple(s.shape) for s in x}
    if len(shapes) != 1:
      raise ValueError(f"{fn}: every entry of '{name}' must have the same shape, got "
                       f"{sorted(shapes)}")
    return jnp.stack([jnp.asarray(s) for s in x])
  return c.embeddings(name, x, fn, rank=3, what="[crops, batch, prototypes]")


def swav_loss(scores_per_crop: ArrayLike | Sequence[ArrayLike], *,
              temperature: float | jax.Array = 0.1, epsilon: float = 0.05,
              sinkhorn_iters: int = 3, num_global: int = 2,
              axis_name: str | tuple[str, ...] | None = None,
              queue_scores: ArrayLike | Sequence[ArrayLike] | None = None,
              valid: ArrayLike | None = None) -> jax.Array:
  """SwAV swapped-prediction loss: each crop predicts the Sinkhorn codes of the global crops.

  With ``V`` crops of scores ``S^v`` ``[B, K]`` (:func:`prototype_scores`), the first
  ``num_global`` of which get codes, and temperature ``T``::

      l_b = (1/num_global) sum_{s < num_global} (1/(V-1)) sum_{v != s} -sum_k q^s_bk log p^v_bk
      p^v = softmax_k(S^v / T),      q^s = sinkhorn_knopp(S^s, epsilon, sinkhorn_iters)

  The codes ``q^s`` are stop-gradient soft assignments, equipartitioned over the valid rows of
  the global batch (every device along ``axis_name``, :func:`jaxcl.sinkhorn.sinkhorn_knopp`).
  With ``queue_scores`` (``[num_global, Q_local, K]``, stored queue embeddings times the
  *current* prototypes, one queue per assigned crop as in the official code) the queue rows
  take part in the equipartition and their codes are discarded. The softmax is over
  prototypes, not samples.

  Per-example convention: entry ``b`` of the ``[B_local]`` result is ``l_b`` (0 for a padded
  row); the mean over the global batch is the official ``main_swav.py`` loss (under padding,
  reduce with :func:`jaxcl.losses.global_mean`).

  Args:
    scores_per_crop: ``V`` arrays ``[B_local, K]`` (or one ``[V, B_local, K]``) of prototype
      scores; the first ``num_global`` crops are the assigned (global) ones.
    temperature: softmax temperature ``T`` of the predictions (SwAV 0.1).
    epsilon: Sinkhorn entropic regularisation (SwAV 0.05).
    sinkhorn_iters: Sinkhorn iterations (SwAV 3).
    num_global: number of leading crops that get codes (SwAV's ``crops_for_assign``).
    axis_name: mesh axis name(s) inside ``jax.shard_map``: the equipartition is over the
      global batch. ``None``: single device.
    queue_scores: optional ``[num_global, Q_local, K]`` queue scores (or ``num_global``
      arrays ``[Q_local, K]``).
    valid: ``[B_local]`` bool; padded rows get loss 0 and take no Sinkhorn mass. ``None``:
      every row is valid.

  Returns:
    ``[B_local]`` float32 per-example losses ``l_b`` (0 on padded rows).

  Example:
    Two crops with scores ``I_2`` (two samples, two prototypes), ``T = 1``: Sinkhorn on
    ``exp(I / 0.05)`` gives codes one-hot on the diagonal up to ``e^-20``, and
    ``p = softmax([1, 0]) = [e, 1] / (e + 1)``, so each row is
    ``-log(e / (e + 1)) = log(1 + e^-1) = 0.3133``:

    >>> import jax.numpy as jnp, jaxcl
    >>> s = jnp.eye(2)
    >>> [round(float(x), 4) for x in jaxcl.losses.swav_loss([s, s], temperature=1.0)]
    [0.3133, 0.3133]
  """
  fn = "swav_loss"
  s = _stack("scores_per_crop", scores_per_crop, fn)
  v, b, k = s.shape
  if not isinstance(num_global, int) or not 1 <= num_global <= v:
    raise ValueError(f"{fn}: 'num_global' must be an int in [1, {v}], got {num_global!r}")
  if v < 2:
    raise ValueError(f"{fn}: 'scores_per_crop' needs at least 2 crops, got {v}")
  c.check_temperature(temperature, fn)
  valid = c.valid_mask(valid, b, fn)
  if queue_scores is not None:
    queue_scores = _stack("queue_scores", queue_scores, fn)
    if queue_scores.shape[0] != num_global or queue_scores.shape[2] != k:
      raise ValueError(f"{fn}: 'queue_scores' must have shape [{num_global}, Q, {k}], got "
                       f"{tuple(queue_scores.shape)}")
  log_p = jax.nn.log_softmax(s.astype(jnp.float32) * c.inv_temperature(temperature), axis=-1)
  total = jnp.zeros((b,), jnp.float32)
  for a in range(num_global):
    rows, row_valid, n_queue = s[a], valid, 0
    if queue_scores is not None:
      n_queue = queue_scores.shape[1]
      rows = jnp.concatenate([queue_scores[a].astype(rows.dtype), rows])
      row_valid = jnp.concatenate([jnp.ones((n_queue,), bool), valid])
    q = sinkhorn.sinkhorn_knopp(rows, epsilon=epsilon, num_iters=sinkhorn_iters,
                                axis_name=axis_name, valid=row_valid, num_discard=n_queue)
    others = jnp.array([u for u in range(v) if u != a])
    ce = -jnp.sum(q[None] * log_p[others], axis=-1)          # [V - 1, B]
    total = total + jnp.mean(ce, axis=0)
  return c.finalize(total / num_global, valid)


def _is_prototype(path, name):
  return any(name == getattr(p, "key", getattr(p, "name", None)) for p in path)


def normalize_prototypes(params: Any, *, name: str = "prototypes", axis: int = -1) -> Any:
  """Re-normalises prototype vectors to unit norm (SwAV does this before every step).

  Every prototype vector ``C_k`` (a slice along ``axis``) becomes::

      C_k <- C_k / max(|C_k|, 1e-6)        (computed in float32, cast back to the dtype)

  ``params`` is either the prototype matrix itself or a pytree in which every leaf whose
  path contains the key ``name`` is a prototype matrix; other leaves are returned unchanged.

  Args:
    params: a prototype array, or a pytree of parameters holding them.
    name: the path key that marks prototype leaves in a pytree.
    axis: the feature axis: ``-1`` for ``[K, D]`` rows, ``0`` for a ``flax.linen.Dense``
      kernel ``[D, K]``.

  Returns:
    ``params`` with every prototype vector at unit norm, dtypes kept.

  Example:
    ``[3, 4] / 5 = [0.6, 0.8]``; in a pytree with ``axis=0`` each column of ones ``[3, 2]``
    becomes ``1/sqrt(3)`` (squared norm 1):

    >>> import jax.numpy as jnp
    >>> [round(float(x), 4) for x in normalize_prototypes(jnp.array([[3.0, 4.0]]))[0]]
    [0.6, 0.8]
    >>> p = normalize_prototypes({"prototypes": {"kernel": jnp.ones((3, 2))}}, axis=0)
    >>> round(float(jnp.sum(p["prototypes"]["kernel"][:, 0] ** 2)), 5)
    1.0
  """
  norm = lambda x: c.l2_normalize(x, axis=axis).astype(x.dtype)
  if isinstance(params, jax.Array) or hasattr(params, "shape"):
    return norm(params)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: norm(x) if _is_prototype(path, name) else x, params)


class FreezeState(NamedTuple):
  count: jax.Array


def freeze_prototypes_until(step_threshold: int, *, name="prototypes"):
  """optax transformation zeroing the updates of prototype leaves for the first steps.

  Leaves whose path contains the key ``name`` get zero updates while the step count is below
  ``step_threshold`` (SwAV: one epoch, ``freeze_prototypes_niters``). Put it *last* in the
  chain so weight decay is frozen too and the prototypes do not move at all, as in the
  official code (which drops their gradient). Unlike the official code, the inner optimizer's
  moment estimates still see the prototype gradients during the freeze.

  Example:
    >>> import optax, jax.numpy as jnp
    >>> tx = optax.chain(optax.sgd(0.1), freeze_prototypes_until(1))
    >>> params = {"prototypes": jnp.ones(2), "w": jnp.ones(2)}
    >>> u, _ = tx.update(params, tx.init(params), params)
    >>> [round(float(u["prototypes"][0]), 5), round(float(u["w"][0]), 5)]
    [0.0, -0.1]
  """
  import optax  # the trainer's optimiser library (jaxcl[train]); the core install has no optax

  def init_fn(params):
    del params
    return FreezeState(jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    frozen = state.count < step_threshold
    updates = jax.tree_util.tree_map_with_path(
        lambda path, u: jnp.where(frozen, jnp.zeros_like(u), u) if _is_prototype(path, name)
        else u, updates)
    return updates, FreezeState(optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
