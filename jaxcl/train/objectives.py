"""Objective adapters: one calling convention for every loss the trainer can run.

The step encodes ``K = config.views.num`` views of each local example into ``z [B_local, K, D]``
and calls ``objective(z, labels, rng, axis_name) -> [B_local]``. :func:`make_objective` builds
that function from ``config.loss.name`` and ``config.loss.kwargs`` by the loss's kind:

* ``pair`` (``fn(a, b, ...)``: nt_xent, dcl, dclw, info_nce, clip_loss, siglip_loss,
  truncated_info_nce, mochi_loss): views 0 and 1 when ``K == 2``; for ``K > 2`` the pairwise-sum
  baseline of Koromilas et al. (arXiv 2507.06979, "pwe")::

      L_i = 1 / C(K,2) * sum_{v < w} fn(z[:, v], z[:, w])_i

* ``views`` (``fn(views [B, K, D], ...)``: mv_info_nce, mv_dhel, mv_average): all ``K`` views
  at once;
* ``labels`` (``fn(features [B, K, D], labels, ...)``: supcon, supremix): the batch labels too;
* ``prototypes`` (swav_loss): a :class:`ParamObjective` that owns learnable prototypes
  ``C [num_prototypes, D]`` (extra ``config.loss.kwargs``: ``num_prototypes``,
  ``freeze_prototypes_steps``); the first ``config.views.num`` views are SwAV's global
  (assigned) crops, the rest its local crops (``config.views.num_local``);
* ``beclr`` (beclr_loss): a :class:`ParamObjective` owning the student's predictor and, when
  ``dyce_memory > 0``, the DyCE memories as objective *state*; it needs the EMA teacher's
  embeddings of both views (``config.momentum.teacher_views = "all"``, :data:`TEACHER_VIEWS`).
* ``classifier`` (softmax_cross_entropy): a :class:`ParamObjective` that owns a linear
  classifier ``W [num_classes, D], b`` on ``z`` (extra ``config.loss.kwargs``: ``num_classes``,
  required); cross-entropy of every view's logits against the labels, mean over views (the
  supervised CE baseline, :func:`classifier_objective`).
* ``gated`` (hydra): a :class:`ParamObjective` that owns Hydra's class-pair gate (label
  embeddings + gate MLP) and its learnable temperature (extra ``config.loss.kwargs``:
  ``num_classes``, required, ``partners``, ``gate_embed_dim``, ``gate_hidden``,
  ``learn_temperature``; :func:`hydra_objective`).
* ``label_embedding`` (label_contrast): a :class:`ParamObjective` that owns learnable label
  embeddings ``E [num_classes, D]``, the candidates of every view's rows (extra
  ``config.loss.kwargs``: ``num_classes``, required; :func:`label_contrast_objective`).
* ``dat`` (dat_loss): a :class:`ParamObjective` with ``takes_encoder``: ``z`` are the model's
  class logits; it runs the PGD sampler / attack of :mod:`jaxcl.pgd` through the model and keeps
  the T curriculum as its state (:func:`dat_objective`).

An objective with learnable parameters of its own is a :class:`ParamObjective`: the trainer
keeps its parameters in ``TrainState.objective_params`` (replicated), calls ``project`` on them
before every step (no gradient), passes them to ``apply`` inside ``shard_map``, differentiates
and updates them with the model's optimiser, and skips their update for the first
``freeze_steps`` steps.

A loss whose signature has ``rng`` gets the per-step key (``fold_in(rng, pair)`` per view pair),
the same on every device, so sharded runs draw what a single device would.

Example:
  >>> import jax, jax.numpy as jnp
  >>> obj = make_objective("nt_xent", {"temperature": 0.5}, num_views=3)
  >>> z = jax.random.normal(jax.random.key(0), (4, 3, 8))
  >>> obj(z, jnp.zeros(4, jnp.int32), jax.random.key(1), None).shape
  (4,)
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jaxcl.losses._common import as_int, check_int


def loss_function(name):
  """The objective ``name`` of :mod:`jaxcl.losses` (the core) or :mod:`jaxcl.losses.contrib`;
  None when neither exports it."""
  import jaxcl.losses
  for space in (jaxcl.losses, jaxcl.losses.contrib):
    if name in space.__all__ and name != "contrib":
      return getattr(space, name)
  return None

KINDS = {
    "nt_xent": "pair", "dcl": "pair", "dclw": "pair", "info_nce": "pair", "clip_loss": "pair",
    "siglip_loss": "pair", "truncated_info_nce": "pair", "mochi_loss": "pair",
    "mv_info_nce": "views", "mv_dhel": "views", "mv_average": "views",
    "supcon": "labels", "supremix": "labels",
    "swav_loss": "prototypes",
    "beclr_loss": "beclr",
}

# Losses that need the momentum teacher's embeddings of every view (config.momentum.
# teacher_views = "all"): ``z`` is then ``[B, 2K, D]``, the online views then the teacher's.
TEACHER_VIEWS = {"beclr_loss": "all"}
# Supervised CE baseline: a learnable linear classifier on z (classifier_objective).
KINDS["softmax_cross_entropy"] = "classifier"

# Pair losses that take a queue of past keys (config.queue.size > 0) as shared negatives, and
# the argument that receives it: the objective is then called with ``queue=[M, D]``.
QUEUE_ARGS = {"info_nce": "negatives", "mochi_loss": "queue"}
# SwAV's queue (past embeddings of global crop 1) only joins the Sinkhorn of the codes.
QUEUE_ARGS["swav_loss"] = "queue_scores"

# config.loss.kwargs that configure the objective's own parameters, not the loss function.
OBJECTIVE_KWARGS = {"prototypes": {"num_prototypes": 30, "freeze_prototypes_steps": 0},
                    # BECLR: predictor bottleneck (0 = D // 4) and the DyCE memory (0 = off).
                    "beclr": {"predictor_hidden": 0, "dyce_memory": 0, "dyce_clusters": 8,
                              "dyce_top_k": 5, "dyce_order": "insert_first",
                              "dyce_start_steps": 0}}
OBJECTIVE_KWARGS["classifier"] = {"num_classes": None}  # required: the dataset's classes
# Hydra / SimLAP: learnable label embeddings + gate MLP (+ scale) (hydra_objective).
KINDS["hydra"] = "gated"
OBJECTIVE_KWARGS["gated"] = {"num_classes": None, "partners": "arbitrary", "gate_embed_dim": 512,
                             "gate_hidden": 1024, "learn_temperature": True}
# Input-label contrast (primer): learnable label embeddings E [C, D] as the candidates
# (label_contrast_objective).
KINDS["label_contrast"] = "label_embedding"
OBJECTIVE_KWARGS["label_embedding"] = {"num_classes": None}  # required: the dataset's classes
# Core-tuning (fine-tuning): a linear classifier (no bias) and the contrastive head g on the
# encoder features z = h (config.model.head_layers = 0) (core_tuning_objective).
KINDS["core_tuning"] = "finetune"
OBJECTIVE_KWARGS["finetune"] = {"num_classes": None, "contrast_dim": 256, "contrast_hidden": 0}
# LaSO (jaxcl/losses/laso.py): the op networks + multi-label classifier on z, multi-hot labels
# [B, C] from a multi_label dataset; label columns >= num_labels are not classified
# (laso_objective).
KINDS["laso_loss"] = "laso"
OBJECTIVE_KWARGS["laso"] = {"num_labels": None, "layers": 1}
# SepCLR: z = [c | s] (config.model.towers = 2) and the background / target flag from the
# labels (labels < background_classes = background), both views (jaxcl/losses/sepclr.py).
KINDS["sepclr"] = "labels"
# Lexical specialization (jaxcl/losses/lexical.py): label-based NT-Xent (PML semantics) over all
# K columns of z (a synonym pair: z [B, 2, D] from the shared tower), positives = same label.
KINDS["label_nt_xent"] = "labels"
# DAT (jaxcl/losses/dat.py): z = the classifier's logits; the objective runs the PGD sampler and
# attack through the model (takes_encoder) and keeps the T curriculum as state (dat_objective).
KINDS["dat_loss"] = "dat"
OBJECTIVE_KWARGS["dat"] = {"num_classes": None, "stage1_steps": 0, "sample_steps_start": 0,
                           "sample_steps_max": 20, "sample_step_size": 0.2,
                           "sample_init": "uniform", "auc_threshold": 0.8, "auc_window": 8,
                           "adv_steps": 10, "adv_step_size": 0.25, "adv_eps": 1.0,
                           "box": (0.0, 1.0)}
# cMIM / A-MIM (jaxcl/losses/cmim.py): z = [mean | logvar]; the objective owns the MLP decoder and
# reconstructs the input view 0 (takes_encoder; cmim_objective).
KINDS["cmim"] = "mim"
OBJECTIVE_KWARGS["mim"] = {"input_dim": None, "decoder_hidden": (256, 256)}
# Improved CLIP baselines / CL2L (jaxcl/losses/improved_vlp.py): multimodal z [B, K*M, D]
# (column v*M + m); owns the learnable logit scales, the separate heads of the local views and
# of the SimCLR image add-on (vlp_objective).
KINDS["cl2l_loss"] = "vlp"
OBJECTIVE_KWARGS["vlp"] = {"learn_temperature": True, "max_scale": 100.0, "local_views": "all",
                           "head_hidden": 0, "head_out": 0, "ssl_weight": 0.0,
                           "ssl_temperature": 0.1, "num_modalities": 2, "image_modality": 0,
                           "text_modality": 1}
# TCL (jaxcl/losses/tcl.py): CMA + IMC + LMI with momentum distillation; the EMA teacher on every
# view, locals from config.model.locals; owns the learnable temperature (tcl_objective).
KINDS["tcl_loss"] = "tcl"
TEACHER_VIEWS["tcl_loss"] = "all"
OBJECTIVE_KWARGS["tcl"] = {"learn_temperature": True, "min_temperature": 0.001,
                           "max_temperature": 0.5, "alpha_warmup_steps": 0,
                           "num_modalities": 2, "image_modality": 0, "text_modality": 1}


@dataclasses.dataclass(frozen=True)
class ParamObjective:
  """An objective with learnable parameters (SwAV prototypes, a CLIP temperature, ...).

  Attributes:
    apply: ``(params, z [B_local, K, D], labels, rng, axis_name) -> [B_local]``.
    init: ``(rng, dim) -> params`` for embeddings of width ``dim``.
    project: ``params -> params`` applied before every step, outside the gradient.
    freeze_steps: the parameters are not updated during the first ``freeze_steps`` steps.
    health: optional ``(params, z, axis_name) -> {name: scalar}`` diagnostics, identical on
      every device (logged with the step's metrics).
    init_state: optional ``(dim) -> state``: non-differentiable state of the objective (BECLR's
      DyCE memory), kept replicated in ``TrainState.objective_state`` and checkpointed; then
      ``apply(..., state=state)`` returns ``(per_example, new_state)``, the new state
      identical on every device.
    takes_encoder: when true, ``apply`` also gets ``inputs`` (the K local views, a tuple of
      ``[B_local, ...]`` arrays, the rows of ``z``) and ``encode(x, train=False) ->
      (features, z)``: the model under the current parameters, differentiable (input-space
      objectives: JEM / PGD samples, reconstruction by a decoder). ``train=True`` runs the
      model in training mode and discards its BatchNorm statistics.
  """
  apply: Callable[..., jax.Array]
  init: Callable[[jax.Array, int], Any]
  project: Callable[[Any], Any] = lambda params: params
  freeze_steps: int = 0
  health: Optional[Callable[..., dict]] = None
  init_state: Optional[Callable[[int], Any]] = None
  takes_encoder: bool = False


def takes_rng(fn):
  return "rng" in inspect.signature(fn).parameters


def reserved_kwargs(name, fn):
  """Arguments the adapter supplies, so a config may not set them."""
  out = ("axis_name",) + (("rng",) if takes_rng(fn) else ())
  if KINDS.get(name) == "prototypes":
    out += ("num_global", "queue_scores", "valid")
  if KINDS.get(name) == "beclr":
    out += ("valid",)
  if KINDS.get(name) == "classifier":
    out += ("logits", "labels", "valid")
  if KINDS.get(name) == "gated":
    out += ("labels", "partner_labels", "gates", "valid")
  if KINDS.get(name) == "dat":
    out += ("real_logits", "sample_logits", "adv_logits", "labels", "valid")
  if KINDS.get(name) == "label_embedding":
    out += ("label_embeddings", "labels", "valid")
  if KINDS.get(name) == "finetune":
    out += ("classifier", "head", "labels", "valid")
  if KINDS.get(name) == "mim":
    out += ("x", "logits", "z", "mean", "logvar", "valid")
  if KINDS.get(name) == "laso":
    out += ("params", "features", "labels", "partners", "valid")
  if KINDS.get(name) == "m3col":
    out += ("mixed", "fixed", "lam", "partner", "valid")
  if KINDS.get(name) == "tcl":
    out += ("image", "text", "image_m", "text_m", "image_locals", "text_locals",
            "image_local_valid", "text_local_valid", "image_queue", "text_queue", "valid")
  if KINDS.get(name) == "vlp":
    out += ("image", "text", "image_local", "text_local", "valid")
  if KINDS.get(name) == "symile":
    out += ("modalities", "valid")
  if KINDS.get(name) == "codiemb":
    out += ("z", "task", "scores", "valid")
  if KINDS.get(name) == "whitened":
    out += ("project", "valid")
  return out + (("labels",) if KINDS.get(name) == "labels" else ())


def objective_kwargs(name):
  """``{key: default}`` of the config.loss.kwargs that belong to the objective, not the loss."""
  return dict(OBJECTIVE_KWARGS.get(KINDS.get(name), {}))


def class_count(value, fn):
  """``num_classes`` of an objective that embeds the labels: an int >= 2 (not a bool)."""
  from jaxcl.losses._common import as_int
  n = as_int(value)
  if n is None or n < 2:
    raise ValueError(f"{fn}: 'num_classes' must be an int >= 2 (the dataset's number of "
                     f"classes), got {value!r}")
  return n


def make_objective(name, kwargs, num_views, num_global_views=None):
  """``objective(z [B, K, D], labels [B], rng, axis_name) -> [B]`` for ``jaxcl.losses.<name>``
  (a :class:`ParamObjective` for the ``prototypes`` kind, whose first ``num_global_views``
  views, default all, get codes)."""
  import jaxcl.losses
  if name not in KINDS:
    raise ValueError(f"loss {name!r} has no trainer adapter (supported: {sorted(KINDS)})")
  if num_views < 2:
    raise ValueError(f"num_views must be >= 2, got {num_views}")
  if KINDS[name] == "prototypes":
    return swav_objective(kwargs, num_views, num_global_views or num_views)
  if KINDS[name] == "beclr":
    return beclr_objective(kwargs, num_views)
  if KINDS[name] == "classifier":
    return classifier_objective(kwargs)
  if KINDS[name] == "gated":
    return hydra_objective(kwargs)
  if KINDS[name] == "dat":
    return dat_objective(kwargs)
  if KINDS[name] == "label_embedding":
    return label_contrast_objective(kwargs)
  if KINDS[name] == "finetune":
    return core_tuning_objective(kwargs)
  if KINDS[name] == "mim":
    return cmim_objective(kwargs)
  if KINDS[name] == "laso":
    return laso_objective(kwargs)
  if KINDS[name] == "m3col":
    return m3col_objective(kwargs, num_views, num_global_views)
  if KINDS[name] == "vlp":
    return vlp_objective(kwargs)
  if KINDS[name] == "tcl":
    return tcl_objective(kwargs, num_views)
  if KINDS[name] == "symile":
    return symile_objective(kwargs, num_views, num_global_views)
  if KINDS[name] == "codiemb":
    return codiemb_objective(kwargs, num_views)
  if KINDS[name] == "whitened":
    return whitenedcse_objective(kwargs)
  if KINDS[name] == "scaled_pair":
    own = {k: kwargs[k] for k in OBJECTIVE_KWARGS["scaled_pair"] if k in kwargs}
    kwargs = {k: v for k, v in dict(kwargs).items() if k not in own}
    if own.get("learn_temperature") or own.get("learn_bias"):
      return scaled_pair_objective(name, kwargs, **own)
  fn = functools.partial(loss_function(name), **dict(kwargs))
  kind, with_rng = KINDS[name], takes_rng(fn.func)

  def objective(z, labels, rng, axis_name, queue=None):
    extra = lambda i: {"rng": jax.random.fold_in(rng, i)} if with_rng else {}
    if queue is not None:  # MoCo: the queue joins every pair's negatives
      rng_extra = extra
      extra = lambda i: {**rng_extra(i), QUEUE_ARGS[name]: queue}
    if kind == "views":
      return fn(z, axis_name=axis_name, **extra(0))
    if kind == "labels":
      return fn(z, labels, axis_name=axis_name, **extra(0))
    return pairwise_mean(fn, z, axis_name, extra)

  return objective


def pairwise_mean(fn, z, axis_name, extra=lambda i: {}):
  """``mean_{v < w} fn(z[:, v], z[:, w])`` over the columns of ``z [B, K, D]`` (the "pwe"
  rule); one pair (K == 2) is returned as is, so two-view runs are unchanged bit for bit."""
  pairs = list(itertools.combinations(range(z.shape[1]), 2))
  per = [fn(z[:, v], z[:, w], axis_name=axis_name, **extra(i)) for i, (v, w) in enumerate(pairs)]
  return per[0] if len(per) == 1 else jnp.mean(jnp.stack(per), axis=0)


# CLIP / SigLIP: pair losses whose logit scale (SigLIP: and bias) may be learned, owned by the
# objective (scaled_pair_objective); off by default = the plain pair adapter.
KINDS["clip_loss"] = KINDS["siglip_loss"] = "scaled_pair"
OBJECTIVE_KWARGS["scaled_pair"] = {"learn_temperature": False, "learn_bias": False,
                                   "max_scale": 100.0}


def temperature_params(temperature, bias=None):
  """``{"log_scale": log(1 / temperature)[, "bias": bias]}`` (float32 scalars)."""
  out = {"log_scale": jnp.log(jnp.float32(1.0 / temperature))}
  if bias is not None:
    out["bias"] = jnp.float32(bias)
  return out


def scale_of(params, max_scale=None):
  """The temperature ``T = 1 / exp(log_scale)``, the scale clamped at ``max_scale``."""
  log_scale = params["log_scale"]
  if max_scale is not None:
    log_scale = jnp.minimum(log_scale, jnp.log(jnp.float32(max_scale)))
  return jnp.exp(-log_scale)


def cap_log_scale(params, max_scale, keys=("log_scale",)):
  """``params`` with the log-scales ``keys`` (those present) clamped at ``log(max_scale)``
  (CLIP's cap of the logit scale at 100); ``max_scale=None``: unchanged."""
  if max_scale is None:
    return params
  cap = jnp.log(jnp.float32(max_scale))
  return {**params, **{k: jnp.minimum(params[k], cap) for k in keys if k in params}}


def scaled_pair_objective(name, kwargs, *, learn_temperature=False, learn_bias=False,
                          max_scale=100.0):
  """A :class:`ParamObjective` for ``clip_loss`` / ``siglip_loss`` with a learnable logit scale
  ``exp(log_scale)`` (CLIP: init ``1 / temperature`` = 1 / 0.07, clamped at ``max_scale`` =
  100 by ``project``, Radford et al. 2021) and, for SigLIP, a learnable ``bias`` (init
  ``bias`` = -10, scale init 10: Zhai et al. 2023). Columns of ``z [B, C, D]``: the pwe mean
  over column pairs (two modalities / views: the loss itself)."""
  fn = loss_function(name)
  if learn_bias and name != "siglip_loss":
    raise ValueError(f"{name}: 'learn_bias' applies to siglip_loss only")
  if max_scale is not None and not max_scale > 0:
    raise ValueError(f"{name}: 'max_scale' must be > 0 or None, got {max_scale!r}")
  defaults = inspect.signature(fn).parameters
  t0 = kwargs.pop("temperature", defaults["temperature"].default)
  b0 = kwargs.pop("bias", defaults["bias"].default) if name == "siglip_loss" else None

  def init(rng, dim):
    del rng, dim
    p = temperature_params(t0, b0 if learn_bias else None)
    return p if learn_temperature else {k: v for k, v in p.items() if k != "log_scale"}

  def args(params):
    t = scale_of(params, max_scale) if learn_temperature else t0
    out = {"temperature": t}
    if name == "siglip_loss":
      out["bias"] = params["bias"] if learn_bias else b0
    return out

  def project(params):
    return cap_log_scale(params, max_scale)

  def apply(params, z, labels, rng, axis_name):
    del labels, rng
    return pairwise_mean(functools.partial(fn, **kwargs, **args(params)), z, axis_name)

  def health(params, z, axis_name):
    del z, axis_name
    a = args(params)
    return {"logit_scale": 1.0 / a["temperature"],
            **({"logit_bias": a["bias"]} if name == "siglip_loss" else {})}

  return ParamObjective(apply=apply, init=init, project=project, health=health)


def swav_objective(kwargs, num_views, num_global):
  """SwAV (Caron et al., arXiv 2006.09882) with its prototypes ``C [K, D]`` as objective
  parameters: scores ``S^v = normalize(z^v) C.T`` for every view, codes from the first
  ``num_global`` views (Sinkhorn over the global batch), swapped prediction over all others
  (:func:`jaxcl.losses.swav_loss`). ``C`` starts as unit Gaussian rows, is re-normalised to
  unit rows before every step and is used as is inside the step, so (as in the official code,
  which normalises the weight in place under ``no_grad``) its gradient is not projected.

  ``queue`` (``[M, D]``, the trainer's replicated FIFO of past crop-1 embeddings,
  ``config.queue.size``): its scores with the current prototypes are prepended to every
  assigned crop's scores before the Sinkhorn, and their codes dropped (methods.md: queue
  before batch). Unlike the official code, one queue (crop 1's) serves both assigned crops,
  slots never written yet hold random unit vectors, and it is used from step 0.

  Health: ``swav/code_entropy`` (mean entropy of the codes of view 0, nats; ln K when
  uniform) and ``swav/used_prototypes`` (prototypes that are the arg-max prediction of at
  least one view-0 row of the global batch; few means collapse).
  """
  import jaxcl.losses
  from jaxcl import collectives, sinkhorn
  from jaxcl.losses import _common as c
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("swav_loss").items()}
  num_prototypes, freeze = int(own["num_prototypes"]), int(own["freeze_prototypes_steps"])
  if num_prototypes < 2:
    raise ValueError(f"swav: 'num_prototypes' must be >= 2, got {num_prototypes}")
  if not 1 <= num_global <= num_views:
    raise ValueError(f"swav: {num_global} global views out of {num_views}")
  loss = functools.partial(jaxcl.losses.swav_loss, num_global=num_global, **kw)

  def scores(params, z):
    return jaxcl.losses.prototype_scores(c.l2_normalize(z), params["prototypes"],
                                         normalize=False)

  def apply(params, z, labels, rng, axis_name, queue=None):
    del labels, rng
    queue_scores = None
    if queue is not None:
      # The replicated [M, D] queue is split over the devices so that the psum'd Sinkhorn
      # counts each stored row once (codes do not depend on the row order).
      n = collectives.axis_size(axis_name)
      if queue.shape[0] % n:
        raise ValueError(f"swav: queue size {queue.shape[0]} is not divisible by {n} devices")
      m = queue.shape[0] // n
      mine = jax.lax.dynamic_slice_in_dim(queue, collectives.axis_index(axis_name) * m, m)
      queue_scores = jnp.stack([scores(params, mine)] * num_global)
    return loss([scores(params, z[:, v]) for v in range(z.shape[1])], axis_name=axis_name,
                queue_scores=queue_scores)

  def init(rng, dim):
    return {"prototypes": jax.random.normal(rng, (num_prototypes, dim), jnp.float32)}

  def health(params, z, axis_name):
    s = scores(params, z[:, 0])
    q = sinkhorn.sinkhorn_knopp(s, epsilon=kw.get("epsilon", 0.05),
                                num_iters=kw.get("sinkhorn_iters", 3), axis_name=axis_name)
    ent = -jnp.sum(q * jnp.log(jnp.maximum(q, 1e-30)))
    n = collectives.psum(jnp.float32(q.shape[0]), axis_name)
    hits = collectives.psum(jnp.sum(jax.nn.one_hot(jnp.argmax(s, -1), num_prototypes), 0),
                            axis_name)
    return {"swav/code_entropy": collectives.psum(ent, axis_name) / n,
            "swav/used_prototypes": jnp.sum(hits > 0).astype(jnp.float32)}

  return ParamObjective(apply=apply, init=init, project=jaxcl.losses.normalize_prototypes,
                        freeze_steps=freeze, health=health)


def classifier_objective(kwargs):
  """Supervised cross-entropy (the CE baseline of Khosla et al., arXiv 2004.11362) as a
  :class:`ParamObjective`: a linear classifier ``W [num_classes, D]``, ``b [num_classes]`` on
  the model's output embedding ``z`` (not normalised), every view's rows classified::

      L_i = 1/K sum_v softmax_cross_entropy(z[i, v] W.T + b, y_i)

  (:func:`jaxcl.losses.contrib.softmax_cross_entropy`, float32 logits). ``num_classes`` (required,
  ``config.loss.kwargs``) must cover the dataset's labels; ``W`` starts as ``N(0, 1/D)``, ``b``
  at 0; no projection, no freezing. The probe still reads the encoder output ``h``.
  """
  import math
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("softmax_cross_entropy").items()}
  num_classes = class_count(own["num_classes"], "classifier")
  loss = functools.partial(jaxcl.losses.contrib.softmax_cross_entropy, **kw)

  def logits(params, zv):
    return jnp.einsum("bd,cd->bc", zv.astype(jnp.float32), params["w"],
                      preferred_element_type=jnp.float32) + params["b"]

  def apply(params, z, labels, rng, axis_name):
    del rng
    per = [loss(logits(params, z[:, v]), labels, axis_name=axis_name)
           for v in range(z.shape[1])]
    return jnp.mean(jnp.stack(per), axis=0)

  def init(rng, dim):
    return {"w": jax.random.normal(rng, (num_classes, dim), jnp.float32) / math.sqrt(dim),
            "b": jnp.zeros((num_classes,), jnp.float32)}

  return ParamObjective(apply=apply, init=init)


def beclr_objective(kwargs, num_views):
  """BECLR (arXiv 2402.02444) as the trainer runs it: ``z [B, 4, D]`` holds the student's
  projections of views 1, 2 then the EMA teacher's (``config.momentum.teacher_views='all'``);
  the objective owns the student's predictor ``p = W2 relu(W1 z + b1) + b2`` (bottleneck
  ``predictor_hidden``, default ``D // 4``; the reference's predictor has BatchNorm, this one
  does not) and, with ``dyce_memory > 0``, three DyCE memories (:mod:`jaxcl.beclr`) as its
  state, one each for the teacher projections, the predictions and the student projections,
  as the reference code keeps them.

  DyCE per step (reference order ``insert_first``): the global batch of view 1 then of view 2
  is written into each memory, then every row gets the ``dyce_top_k`` nearest members of its
  nearest centre; the loss (:func:`jaxcl.losses.contrib.beclr_loss`) runs over the ``B (1 + k)``
  enhanced rows, pairing the ``j``-th neighbour of view 1's row ``i`` with the ``j``-th
  neighbour of view 2's row ``i`` (the reference code's pairing). A neighbour row counts only
  when all six arrays have it, the memories have been clustered (full once) and at least
  ``dyce_start_steps`` steps have run. The returned ``[B_local]`` values are each sample's
  enhanced rows' sum scaled so that their global mean is the loss over the valid rows.
  """
  import jaxcl.losses
  from jaxcl import beclr, collectives
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("beclr_loss").items()}
  if num_views != 2:
    raise ValueError(f"beclr_loss: BECLR takes 2 views, got {num_views}")
  hidden, memory = int(own["predictor_hidden"]), int(own["dyce_memory"])
  clusters, top_k, order = int(own["dyce_clusters"]), int(own["dyce_top_k"]), own["dyce_order"]
  start = int(own["dyce_start_steps"])
  if hidden < 0 or memory < 0 or start < 0:
    raise ValueError("beclr_loss: 'predictor_hidden', 'dyce_memory' and 'dyce_start_steps' "
                     f"must be >= 0, got {hidden}, {memory}, {start}")
  if memory and not (1 <= clusters <= memory and 1 <= top_k <= memory):
    raise ValueError(f"beclr_loss: 'dyce_clusters' ({clusters}) and 'dyce_top_k' ({top_k}) "
                     f"must be in [1, dyce_memory={memory}]")
  if order not in beclr.ORDERS:
    raise ValueError(f"beclr_loss: 'dyce_order' must be one of {beclr.ORDERS}, got {order!r}")
  loss = functools.partial(jaxcl.losses.contrib.beclr_loss, **kw)
  names = ("teacher", "prediction", "projection")

  def predict(params, z):
    h = jax.nn.relu(z @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]

  def init(rng, dim):
    h = hidden or max(dim // 4, 1)
    k1, k2 = jax.random.split(rng)
    lecun = lambda k, n, m: jax.random.normal(k, (n, m), jnp.float32) / jnp.sqrt(n)
    return {"w1": lecun(k1, dim, h), "b1": jnp.zeros((h,), jnp.float32),
            "w2": lecun(k2, h, dim), "b2": jnp.zeros((dim,), jnp.float32)}

  def init_state(dim):
    return {n: beclr.dyce_init(memory, dim, clusters) for n in names}

  def enhance(mem, views, rng, started, axis_name):
    """Both views of one array through one memory: rows, validity, new memory."""
    insert = lambda m: functools.reduce(
        lambda m, iv: beclr.dyce_insert(m, jax.lax.stop_gradient(iv[1]),
                                        jax.random.fold_in(rng, iv[0]), axis_name=axis_name),
        enumerate(views), m)
    if order == "insert_first":
      mem = insert(mem)
    looked = [beclr.dyce_lookup(mem, v, top_k=top_k) for v in views]
    if order == "lookup_first":
      mem = insert(mem)
    rows, valid = [], []
    for v, (nbrs, ok) in zip(views, looked):
      rows.append(jnp.concatenate([v.astype(jnp.float32),
                                   jnp.swapaxes(nbrs, 0, 1).reshape(-1, v.shape[1])]))
      valid.append(jnp.concatenate([jnp.ones((v.shape[0],), bool), ok.T.reshape(-1) & started]))
    return rows, valid, mem

  def apply(params, z, labels, rng, axis_name, state=None):
    del labels
    zs1, zs2, zt1, zt2 = (z[:, v] for v in range(4))
    p1, p2 = predict(params, zs1), predict(params, zs2)
    if not memory:
      return loss(p1, p2, zt1, zt2, zs1, zs2, axis_name=axis_name)
    b = z.shape[0]
    b_global = collectives.psum(jnp.float32(b), axis_name)
    # Rows written before this step: 2 views x global batch per step.
    started = state["teacher"].count >= start * 2 * b_global.astype(jnp.int32)
    arrays = {"teacher": (zt1, zt2), "prediction": (p1, p2), "projection": (zs1, zs2)}
    rows, valid, new = {}, None, {}
    for i, n in enumerate(names):
      rows[n], ok, new[n] = enhance(state[n], arrays[n], jax.random.fold_in(rng, i), started,
                                    axis_name)
      valid = ok[0] & ok[1] if valid is None else valid & ok[0] & ok[1]
    per = loss(*rows["prediction"], *rows["teacher"], *rows["projection"], axis_name=axis_name,
               valid=valid)
    n_valid = collectives.psum(jnp.sum(valid.astype(jnp.float32)), axis_name)
    per_sample = jnp.sum(per.reshape(1 + top_k, b), axis=0) * b_global / n_valid
    return per_sample, new

  return ParamObjective(apply=apply, init=init, init_state=init_state if memory else None)


def hydra_objective(kwargs):
  """Hydra / SimLAP (Wu et al., arXiv 2410.18200) as a :class:`ParamObjective` that owns the
  class-pair gate: label embeddings ``E [num_classes, gate_embed_dim]`` and the gate MLP
  (:func:`jaxcl.losses.contrib.init_hydra_gates`), plus, with ``learn_temperature`` (default, as the
  reference's learnable scale ``exp(theta)``), ``theta = log(1 / temperature)`` initialised
  from ``config.loss.kwargs.temperature`` (default 0.1). Per step::

      y2 = hydra_partners(y, partners, rng)        # over the global batch, same on every device
      g  = hydra_gates(params, y, y2)              # sigmoid(MLP((E[y] + E[y2]) / 2))
      L  = hydra(z, y, y2, g, temperature=exp(-theta))

  Extra ``config.loss.kwargs``: ``num_classes`` (required, the dataset's classes),
  ``partners`` (``identical`` / ``distinct`` / ``arbitrary``), ``gate_embed_dim``,
  ``gate_hidden``, ``learn_temperature``; the rest go to :func:`jaxcl.losses.contrib.hydra`
  (``variant``, ``symmetric``, ...). Health: ``hydra/temperature`` and, over the gates of the
  ``C`` identical pairs ``(c, c)``, ``hydra/gate_mean`` (mean gate value) and
  ``hydra/gate_entropy`` (mean Bernoulli entropy, nats; ``ln 2`` when undecided).
  """
  import math
  import jaxcl.losses
  import importlib
  hydra_lib = importlib.import_module("jaxcl.losses.hydra")  # the module (contrib.hydra is the function)
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("hydra").items()}
  num_classes = class_count(own["num_classes"], "hydra")
  mode = own["partners"]
  if mode not in hydra_lib.PARTNER_MODES:
    raise ValueError(f"hydra: 'partners' must be one of {hydra_lib.PARTNER_MODES}, got {mode!r}")
  embed_dim, hidden = int(own["gate_embed_dim"]), int(own["gate_hidden"])
  if embed_dim < 1 or hidden < 1:
    raise ValueError(f"hydra: 'gate_embed_dim' and 'gate_hidden' must be >= 1, got "
                     f"{embed_dim}, {hidden}")
  learn = bool(own["learn_temperature"])
  t0 = float(kw.pop("temperature", 0.1))
  if not t0 > 0:
    raise ValueError(f"hydra: 'temperature' must be > 0, got {t0}")
  loss = functools.partial(jaxcl.losses.contrib.hydra, **kw)

  def temperature(params):
    return jnp.exp(-params["log_scale"]) if learn else t0

  def apply(params, z, labels, rng, axis_name):
    y2 = jaxcl.losses.contrib.hydra_partners(labels, mode, rng=rng, num_classes=num_classes,
                                     axis_name=axis_name)
    g = jaxcl.losses.contrib.hydra_gates(params["gate"], labels, y2)
    return loss(z, labels, y2, g, temperature=temperature(params), axis_name=axis_name)

  def init(rng, dim):
    params = {"gate": jaxcl.losses.contrib.init_hydra_gates(rng, num_classes, dim, embed_dim=embed_dim,
                                                    hidden=hidden)}
    if learn:
      params["log_scale"] = jnp.asarray(math.log(1.0 / t0), jnp.float32)
    return params

  def health(params, z, axis_name):
    del z, axis_name
    c = jnp.arange(num_classes)
    g = jaxcl.losses.contrib.hydra_gates(params["gate"], c, c)
    p = jnp.clip(g, 1e-6, 1 - 1e-6)
    entropy = -(p * jnp.log(p) + (1 - p) * jnp.log1p(-p))
    return {"hydra/temperature": jnp.asarray(temperature(params), jnp.float32),
            "hydra/gate_mean": jnp.mean(g), "hydra/gate_entropy": jnp.mean(entropy)}

  return ParamObjective(apply=apply, init=init, health=health)


def label_contrast_objective(kwargs):
  """Input-label contrast (Rethmeier & Augenstein, arXiv 2102.12982) as a
  :class:`ParamObjective` that owns the label embeddings ``E [num_classes, D]`` (``N(0, 1/D)``
  at init, no projection, no freezing), every view's rows scored against them::

      L_i = 1/K sum_v label_contrast(z[:, v], E, y)_i

  (:func:`jaxcl.losses.contrib.label_contrast`; view ``v`` gets ``fold_in(rng, v)`` for sampled
  negatives). ``num_classes`` (required, ``config.loss.kwargs``) must cover the dataset's
  labels; the other kwargs (``form``, ``temperature``, ``normalize``, ``num_negatives``) go to
  the loss. The probe still reads the encoder output ``h``.
  """
  import math
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("label_contrast").items()}
  num_classes = class_count(own["num_classes"], "label_contrast")
  loss = functools.partial(jaxcl.losses.contrib.label_contrast, **kw)

  def apply(params, z, labels, rng, axis_name):
    per = [loss(z[:, v], params["label_embeddings"], labels, axis_name=axis_name,
                rng=None if rng is None else jax.random.fold_in(rng, v))
           for v in range(z.shape[1])]
    return jnp.mean(jnp.stack(per), axis=0)

  def init(rng, dim):
    return {"label_embeddings": jax.random.normal(rng, (num_classes, dim), jnp.float32)
                                / math.sqrt(dim)}

  return ParamObjective(apply=apply, init=init)


def laso_objective(kwargs):
  """LaSO (Alfassy et al., arXiv 1902.09811) as a :class:`ParamObjective` that owns the three
  label-set operation networks and the multi-label classifier (:func:`jaxcl.losses.contrib.init_laso`,
  ``layers`` residual layers each) on the embedding ``z`` of view 0 (the other views are not
  used; LaSO pairs *different* rows of the batch)::

      L_i = laso_loss(params, z[:, 0], labels[:, :num_labels])_i

  ``labels`` must be the multi-hot ``[B, C]`` label sets of a ``multi_label`` dataset
  (``multilabel_protos``); the classifier covers labels ``0 .. num_labels - 1`` (required,
  ``config.loss.kwargs``), later columns (labels never seen in training) are dropped. The other
  kwargs (``pairing``, ``weights``, ``detach_classifier``, ``norm``) go to
  :func:`jaxcl.losses.contrib.laso_loss`; ``pairing="permutation"`` draws from the step's key.
  """
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("laso_loss").items()}
  num_labels = check_int(own["num_labels"], 1, message="laso: 'num_labels' must be an int >= 1 "
                         "(the labels the classifier covers)")
  layers = check_int(own["layers"], 0, message="laso: 'layers' must be an int >= 0")
  if "weights" in kw:
    kw["weights"] = dict(kw["weights"])
    jaxcl.losses.laso.check_weights(kw["weights"], "laso")
  loss = functools.partial(jaxcl.losses.contrib.laso_loss, **kw)

  def apply(params, z, labels, rng, axis_name):
    if labels.ndim != 2 or labels.shape[1] < num_labels:
      raise ValueError(f"laso: labels must be multi-hot label sets [B, C >= num_labels="
                       f"{num_labels}] (a multi_label dataset, e.g. multilabel_protos), got "
                       f"shape {tuple(labels.shape)}")
    return loss(params, z[:, 0], labels[:, :num_labels], rng=rng, axis_name=axis_name)

  def init(rng, dim):
    return jaxcl.losses.contrib.init_laso(rng, dim, num_labels, layers=layers)

  return ParamObjective(apply=apply, init=init)


def cmim_objective(kwargs):
  """cMIM / A-MIM (Livne, arXiv 2411.10548 / 2509.21511; MIM arXiv 1910.03175) as a
  :class:`ParamObjective` that owns the decoder ``p(x|z)`` (an MLP, Bernoulli logits,
  :func:`jaxcl.losses.contrib.init_mim_decoder`; ``decoder_hidden`` widths) and gets the input views
  (``takes_encoder``). The model's output ``z[:, 0]`` (view 0) is the posterior
  ``[mean | logvar]`` (``config.model.head_out`` = 2 x latent, even); per step::

      z_i    = mean_i + exp(logvar_i / 2) eps_i      eps_i from fold_in(rng, global row i)
      L_i    = cmim(x_i, decoder(z_i), z_i, mean_i, logvar_i)      x = inputs[0], flattened

  (:func:`jaxcl.losses.contrib.cmim`: A-MIM + ``contrastive_weight`` x the posterior InfoNCE over the
  global batch; ``contrastive_weight=0`` is A-MIM). Only view 0 is used: no augmentation is
  needed (set the views to the identity; ``views.num = 2`` is the trainer's minimum, view 1 is
  encoded and ignored). ``input_dim`` (required) is the flattened input size the decoder
  outputs. Health: ``cmim/logvar`` (mean posterior log-variance over the global batch).
  """
  import importlib
  lib = importlib.import_module("jaxcl.losses.cmim")  # the module (contrib.cmim is the function)
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("cmim").items()}
  input_dim = check_int(own["input_dim"], 1, message="cmim: 'input_dim' must be an int >= 1 (the "
                        "flattened input size the decoder reconstructs)")
  hidden = tuple(own["decoder_hidden"])
  if not all(isinstance(h, int) and h >= 1 for h in hidden):
    raise ValueError(f"cmim: 'decoder_hidden' must be widths >= 1, got {hidden!r}")
  loss = functools.partial(lib.cmim, **kw)

  def init(rng, dim):
    if dim % 2:
      raise ValueError(f"cmim: the model's output width must be even ([mean | logvar], "
                       f"config.model.head_out = 2 x latent), got {dim}")
    return lib.init_mim_decoder(rng, dim // 2, input_dim, hidden=hidden)

  def apply(params, z, labels, rng, axis_name, *, inputs, encode):
    del labels, encode
    x = inputs[0].reshape(inputs[0].shape[0], -1)
    if x.shape[1] != input_dim:
      raise ValueError(f"cmim: 'input_dim' is {input_dim} but the inputs have "
                       f"{x.shape[1]} values per example")
    mean, logvar = lib.split_posterior(z[:, 0])
    zs = lib.posterior_sample(mean, logvar, rng, axis_name)
    return loss(x, lib.mim_decoder(params, zs), zs, mean, logvar, axis_name=axis_name)

  def health(params, z, axis_name):
    del params
    from jaxcl import collectives
    _, logvar = lib.split_posterior(z[:, 0])
    n = collectives.psum(jnp.float32(logvar.size), axis_name)
    return {"cmim/logvar": collectives.psum(jnp.sum(logvar), axis_name) / n}

  return ParamObjective(apply=apply, init=init, health=health, takes_encoder=True)


def core_tuning_objective(kwargs):
  """Core-tuning (Zhang et al., arXiv 2102.06605) as a :class:`ParamObjective` that owns the
  fine-tuning heads: the linear classifier ``W [num_classes, D]`` (no bias, as the reference;
  ``U(+-1/sqrt(D))``) and the contrastive head ``g = Linear(D, contrast_hidden) - ReLU -
  Linear(contrast_hidden, contrast_dim)`` (:func:`jaxcl.losses.contrib.init_contrast_head`; reference
  ``D`` and 256; ``contrast_hidden=0`` means ``D``), both on ``z``, which the recipe makes the
  encoder features (``config.model.head_layers = 0``: no projection head, ``z = h``, as the
  reference's classifier and contrastor sit on the backbone features). Every view's rows are
  rows of the batch (sample-major, so the global row order does not depend on the device
  count), each with its sample's label::

      L_i = 1/K sum_v core_tuning(z.reshape(B K, D), repeat(y, K), W, g, rng)_(i, v)

  (:func:`jaxcl.losses.contrib.core_tuning`; with ``K = 2`` a sample's other view is one of its
  positives). Extra ``config.loss.kwargs``: ``num_classes`` (required), ``contrast_dim``,
  ``contrast_hidden``; the rest go to the loss (``eta``, ``temperature``, ``mixup``,
  ``focal``, ``reproduce_code``, ...), so ``eta=0, mixup=False`` is the CE fine-tuning
  baseline with the same classifier. The probe still reads the encoder output ``h``.
  """
  import math
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("core_tuning").items()}
  num_classes = class_count(own["num_classes"], "core_tuning")
  out, hidden = int(own["contrast_dim"]), int(own["contrast_hidden"])
  if out < 1 or hidden < 0:
    raise ValueError(f"core_tuning: 'contrast_dim' must be >= 1 and 'contrast_hidden' >= 0 "
                     f"(0 = the feature size), got {out}, {hidden}")
  loss = functools.partial(jaxcl.losses.contrib.core_tuning, **kw)

  def apply(params, z, labels, rng, axis_name):
    b, k, d = z.shape
    head = functools.partial(jaxcl.losses.contrib.contrast_head, params["head"])
    per = loss(z.reshape(b * k, d), jnp.repeat(labels, k), params["classifier"], head, rng=rng,
               axis_name=axis_name)
    return jnp.mean(per.reshape(b, k), axis=1)

  def init(rng, dim):
    k1, k2 = jax.random.split(rng)
    w = jax.random.uniform(k1, (num_classes, dim), jnp.float32, -1.0, 1.0) / math.sqrt(dim)
    return {"classifier": w,
            "head": jaxcl.losses.contrib.init_contrast_head(k2, dim, hidden=hidden, out=out)}

  return ParamObjective(apply=apply, init=init)


def dat_objective(kwargs):
  """Dual Adversarial Training (arXiv 2510.13872, :func:`jaxcl.losses.contrib.dat_loss`) as a
  :class:`ParamObjective` with ``takes_encoder``: the model is the classifier (``z [B, K, C]``
  = its logits, so ``config.model.head_out`` must equal ``num_classes``; no parameters of its
  own) and the objective runs, inside the step, through ``encode`` (the model under the
  current parameters):

  1. contrastive samples: OOD starts (``sample_init``: ``uniform`` noise in ``box`` or the
     batch's digits with shuffled pixels, :func:`jaxcl.pgd.ood_starts`) paired with the batch
     labels, ``T`` steps of class-conditional L2-normalised ascent (``sample_step_size``,
     ``eps = inf``, model in inference mode, no gradient through the samples);
  2. adversarial rows: untargeted L2-PGD on the CE of view 1 (``adv_steps``,
     ``adv_step_size``, ``adv_eps``; ``adv_steps = 0``: clean view 1, plain CE);
  3. ``dat_loss(z[:, 0], f(samples), f(adv rows), y)`` (``bce_weight``, ``clf_weight`` in
     ``config.loss.kwargs``; ``bce_weight = 0``: no sampler at all, PGD-AT / CE).

  Two stages in one run: for the first ``stage1_steps`` steps the EBM term is off (weight 0,
  ``T = 0``: PGD-AT), then DAT starts from that classifier (the reference's stage 2 initialised
  from an adversarially trained checkpoint; here its optimiser state carries over).

  The T curriculum is the objective's state (replicated, checkpointed): ``T`` starts at
  ``sample_steps_start``; every stage-2 step records the AUC of ``LSE f`` on the global
  batch's real rows vs its samples; when the last ``auc_window`` batches' mean AUC since ``T``
  last changed is >= ``auc_threshold``, ``T += 1`` (up to ``sample_steps_max``) and the window
  restarts (the reference: a deque of batch AUCs holding ``min_imgs_per_threshold`` images,
  0.8). ``T`` is traced, so the sampler is a ``while_loop`` and no recompilation happens.
  State: ``{"steps", "T", "aucs" [auc_window], "count", "auc"}`` (the last batch AUC).
  """
  import jaxcl.losses
  from jaxcl import collectives, pgd
  from jaxcl.losses import dat as dat_lib
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("dat_loss").items()}
  num_classes = class_count(own["num_classes"], "dat")
  ints = {k: own[k] for k in ("stage1_steps", "sample_steps_start", "sample_steps_max",
                              "auc_window", "adv_steps")}
  for k, v in ints.items():
    lo = 1 if k == "auc_window" else 0
    ints[k] = check_int(v, lo, message=f"dat: {k!r} must be an int >= {lo}")
  t_start, t_max, window = ints["sample_steps_start"], ints["sample_steps_max"], ints["auc_window"]
  if t_start > t_max:
    raise ValueError(f"dat: 'sample_steps_start' ({t_start}) > 'sample_steps_max' ({t_max})")
  for k in ("sample_step_size", "adv_step_size", "adv_eps"):
    if not float(own[k]) > 0:
      raise ValueError(f"dat: {k!r} must be > 0, got {own[k]!r}")
  if own["sample_init"] not in pgd.OOD_KINDS:
    raise ValueError(f"dat: 'sample_init' must be one of {pgd.OOD_KINDS}, got "
                     f"{own['sample_init']!r}")
  box = tuple(float(v) for v in own["box"])
  if len(box) != 2 or not box[0] < box[1]:
    raise ValueError(f"dat: 'box' must be (lo, hi) with lo < hi, got {own['box']!r}")
  threshold = float(own["auc_threshold"])
  bce_weight = float(kw.pop("bce_weight", 1.0))
  loss = functools.partial(jaxcl.losses.contrib.dat_loss, **kw)
  ebm, adv_steps, stage1 = bce_weight > 0, ints["adv_steps"], ints["stage1_steps"]

  def init(rng, dim):
    del rng
    if dim != num_classes:
      raise ValueError(f"dat: the model's output z is the classifier's logits, so its width "
                       f"(config.model.head_out = {dim}) must equal num_classes ({num_classes})")
    return {}

  def init_state(dim):
    del dim
    return dat_lib.curriculum_init(t_start, window)

  def apply(params, z, labels, rng, axis_name, *, state, inputs, encode):
    del params
    x_real, x_clf = inputs[0], inputs[min(1, len(inputs) - 1)]
    if adv_steps:
      x_adv = pgd.attack_ce(lambda x: encode(x, train=True)[1], x_clf, labels, steps=adv_steps,
                            step_size=float(own["adv_step_size"]),
                            eps=float(own["adv_eps"]), box=box)
      adv_logits = encode(x_adv, train=True)[1]
    else:
      adv_logits = z[:, min(1, z.shape[1] - 1)]
    new = dict(state, steps=state["steps"] + 1)
    if not ebm:
      return loss(None, None, adv_logits, labels), new
    stage2 = state["steps"] >= stage1
    t = jnp.where(stage2, state["T"], 0)
    index = collectives.global_row_index(x_real.shape[0], axis_name)
    x0 = pgd.ood_starts(rng, x_real, index, own["sample_init"], box)
    samples = pgd.sample_class_conditional(lambda x: encode(x, train=False)[1], x0, labels,
                                           steps=t, step_size=float(own["sample_step_size"]),
                                           box=box)
    sample_logits = encode(samples, train=True)[1]
    real_logits = z[:, 0]
    per = loss(real_logits, sample_logits, adv_logits, labels,
               bce_weight=jnp.where(stage2, bce_weight, 0.0))
    energy = lambda lg: jax.lax.stop_gradient(dat_lib.lse_energy(lg))
    batch_auc = pgd.auc(energy(real_logits), energy(sample_logits), axis_name)
    upd = dat_lib.curriculum_update(new, batch_auc, threshold=threshold, max_steps=t_max)
    new = jax.tree.map(lambda a, b: jnp.where(stage2, a, b), upd, new)
    return per, new

  return ParamObjective(apply=apply, init=init, init_state=init_state, takes_encoder=True)


VLP_LOCAL_VIEWS = ("all", "rest", "none")


def vlp_objective(kwargs):
  """Improved CLIP baselines (Fini et al., arXiv 2305.08675; :func:`jaxcl.losses.contrib.cl2l_loss`)
  on a two-modality dataset: ``z [B, K*M, D]``, column ``v*M + m`` (view ``v``, modality
  ``m``; ``image_modality`` / ``text_modality`` of ``num_modalities``). The objective owns:

  * ``log_scale`` (global CLIP term, init ``log(1 / temperature)``) and ``local_log_scale``
    (local terms, init ``log(1 / local_temperature)``), learned when ``learn_temperature``,
    clamped at ``log(max_scale)`` by ``project`` (CLIP's 100);
  * the separate projectors of the local views, one per modality, ``h = g_m(z)`` with
    ``g = Linear(D, head_hidden) - ReLU - Linear(head_hidden, head_out)``
    (:func:`jaxcl.losses.contrib.contrast_head`; 0 = ``D``). They sit on the model's projection ``z``
    (the only output the step hands to an objective), not on the encoder features as in the
    reference (its ``--separate-proj`` MLP on the backbone output): the local terms' gradient
    reaches the encoder through the shared head too;
  * with ``ssl_weight > 0``, the SimCLR add-on's head (same shape) on the image column:
    ``ssl_weight * nt_xent(g_ssl(z_img^{K-2}), g_ssl(z_img^{K-1}), ssl_temperature)`` on the
    last two views (SLIP-style intra-modal image-image contrast; SLIP's weight 1, T 0.1).

  Per step::

      u, v = z[:, image], z[:, text]                       (view 0: the global pair)
      h^I_a, h^T_a = g_I(z^a[:, image]), g_T(z^a[:, text])  for a in the local views
      L = cl2l_loss(u, v, h^I, h^T, T=exp(-log_scale), T_h=exp(-local_log_scale))
          [+ ssl_weight * nt_xent(...)]

  ``local_views``: ``"all"`` (every view is a local view, ``m = K``; view 0 is also the
  global pair: with ``K = 2`` the reference's ``m = 2``), ``"rest"`` (views ``1 .. K-1``, the
  reference's separate weak global view when the step makes ``K = m + 1`` views) or
  ``"none"`` (``m = 0``: plain CLIP on view 0, the baseline, no local heads). Other
  ``config.loss.kwargs`` (``label_smoothing``, ``reduction``, ``impl``, ...) go to the loss.
  Health: ``vlp/logit_scale``, ``vlp/local_logit_scale`` (with local views).
  """
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("cl2l_loss").items()}
  fn = "cl2l_loss"
  local_views = own["local_views"]
  if local_views not in VLP_LOCAL_VIEWS:
    raise ValueError(f"{fn}: 'local_views' must be one of {VLP_LOCAL_VIEWS}, got "
                     f"{local_views!r}")
  ints = {k: check_int(own[k], 0, message=f"{fn}: {k!r} must be an int >= 0")
          for k in ("head_hidden", "head_out", "num_modalities", "image_modality",
                    "text_modality")}
  n_mod, mi, mt = ints["num_modalities"], ints["image_modality"], ints["text_modality"]
  if n_mod < 2 or not (mi < n_mod and mt < n_mod and mi != mt):
    raise ValueError(f"{fn}: 'image_modality' ({mi}) and 'text_modality' ({mt}) must be two "
                     f"different modalities of 'num_modalities' ({n_mod}) >= 2")
  ssl_weight, ssl_t = float(own["ssl_weight"]), float(own["ssl_temperature"])
  if ssl_weight < 0 or not ssl_t > 0:
    raise ValueError(f"{fn}: 'ssl_weight' must be >= 0 and 'ssl_temperature' > 0, got "
                     f"{ssl_weight}, {ssl_t}")
  max_scale = own["max_scale"]
  if max_scale is not None and not float(max_scale) > 0:
    raise ValueError(f"{fn}: 'max_scale' must be > 0 or None, got {max_scale!r}")
  learn = bool(own["learn_temperature"])
  t0 = float(kw.pop("temperature", 0.07))
  th0 = float(kw.pop("local_temperature", 0.1))
  if not (t0 > 0 and th0 > 0):
    raise ValueError(f"{fn}: 'temperature' and 'local_temperature' must be > 0, got {t0}, "
                     f"{th0}")
  loss = functools.partial(jaxcl.losses.contrib.cl2l_loss, **kw)
  with_local = local_views != "none"

  def temps(params):
    if not learn:
      return t0, th0
    return (scale_of({"log_scale": params["log_scale"]}, max_scale),
            scale_of({"log_scale": params["local_log_scale"]}, max_scale) if with_local
            else th0)

  def head(p, x):
    return jaxcl.losses.contrib.contrast_head(p, x)

  def apply(params, z, labels, rng, axis_name):
    del labels, rng
    if z.shape[1] % n_mod:
      raise ValueError(f"{fn}: z has {z.shape[1]} columns, not a multiple of "
                       f"num_modalities={n_mod} (views x modalities)")
    k = z.shape[1] // n_mod
    col = lambda v, m: z[:, v * n_mod + m]
    views = {"all": range(k), "rest": range(1, k), "none": range(0)}[local_views]
    if with_local and not views:
      raise ValueError(f"{fn}: local_views='rest' needs >= 2 views per example, got {k}")
    t, th = temps(params)
    extra = {}
    if with_local:
      extra = dict(
          image_local=jnp.stack([head(params["image_head"], col(v, mi)) for v in views], 1),
          text_local=jnp.stack([head(params["text_head"], col(v, mt)) for v in views], 1),
          local_temperature=th)
    per = loss(col(0, mi), col(0, mt), temperature=t, axis_name=axis_name, **extra)
    if ssl_weight > 0:
      if k < 2:
        raise ValueError(f"{fn}: the SimCLR add-on (ssl_weight > 0) needs >= 2 views, got {k}")
      g = lambda v: head(params["ssl_head"], col(v, mi))
      per = per + ssl_weight * jaxcl.losses.nt_xent(g(k - 2), g(k - 1), temperature=ssl_t,
                                                    axis_name=axis_name)
    return per

  def init(rng, dim):
    hidden, out = ints["head_hidden"] or dim, ints["head_out"] or dim
    k1, k2, k3 = jax.random.split(rng, 3)
    p = {}
    if learn:
      p["log_scale"] = temperature_params(t0)["log_scale"]
      if with_local:
        p["local_log_scale"] = temperature_params(th0)["log_scale"]
    mk = lambda key: jaxcl.losses.contrib.init_contrast_head(key, dim, hidden=hidden, out=out)
    if with_local:
      p["image_head"], p["text_head"] = mk(k1), mk(k2)
    if ssl_weight > 0:
      p["ssl_head"] = mk(k3)
    return p

  def project(params):
    return cap_log_scale(params, max_scale, ("log_scale", "local_log_scale"))

  def health(params, z, axis_name):
    del z, axis_name
    t, th = temps(params)
    out = {"vlp/logit_scale": 1.0 / jnp.asarray(t, jnp.float32)}
    if with_local:
      out["vlp/local_logit_scale"] = 1.0 / jnp.asarray(th, jnp.float32)
    return out

  return ParamObjective(apply=apply, init=init, project=project, health=health)


# M3CoL (jaxcl/losses/m3col.py): fusion + unimodal classifiers on the modalities' z, plus a
# cross-modal term (M3Co mixup contrastive -> SoftCLIP at a step, or CLIP, or none); mixes each
# modality's inputs through the model (takes_encoder), the step count is its state.
KINDS["m3co_loss"] = "m3col"
OBJECTIVE_KWARGS["m3col"] = {"num_classes": None, "contrastive": "m3co", "after": "softclip",
                             "switch_step": -1, "weight": 0.1, "unimodal": True,
                             "head_hidden": 64, "mix": "input", "beta": 0.15, "mix_prob": 0.5,
                             "soft_temperature": 0.125, "num_modalities": 0,
                             "modality_sizes": ()}
M3COL_TERMS = ("none", "clip", "m3co", "softclip")


def m3col_objective(kwargs, num_columns, num_views=None):
  """M3CoL (Kumar et al., arXiv 2409.17777; ``model_med.py`` for 3 modalities) as a
  :class:`ParamObjective` that owns the classifiers (:func:`jaxcl.losses.contrib.init_m3col_heads`: a
  fusion head on the concatenated embeddings and one head per modality, ``head_hidden``
  units) and keeps the step count as its state. ``z [B, K*M, D]`` holds the ``M``
  modalities' embeddings of ``K`` views (column ``v*M + m``; ``M = num_modalities``, or
  ``num_columns // num_views``). Per example, with ``z_m = z[:, m]`` (view 0)::

      L_i = CE(fusion(z_1 | ... | z_M), y)_i  [+ sum_m CE(head_m(z_m), y)_i  if unimodal]
            + weight * sum_m term(m -> m+1 mod M)_i

  (CE terms averaged over the ``K`` views; the cross-modal pairs are cyclic, as the
  reference's ``(1,2), (2,3), (3,1)``; with two modalities ``(1,2), (2,1)``). ``term`` is
  ``contrastive`` before step ``switch_step`` and ``after`` from then on (``switch_step < 0``:
  never; the paper switches M3Co -> SoftCLIP after a third of the epochs); each of
  ``"none"``, ``"clip"`` (``clip_loss``, ``temperature``), ``"m3co"`` and ``"softclip"``
  (``soft_clip_loss``, ``soft_temperature``):

  * ``m3co``: a fresh mixing draw per modality (:func:`jaxcl.losses.contrib.m3co_mixing`, ``beta``,
    ``mix_prob``; global batch, one key); ``mix="input"`` (default; the paper's raw-input
    mixing for non-text modalities) mixes view 0's inputs ``x`` and encodes them
    (``encode(x~, train=True)``: with ``modality_sizes`` (the blocks' feature counts, in
    order) one forward of ``x`` with every block mixed by its own draw, else one forward
    per modality, whose tower then sees its own block mixed; token modalities cannot be
    mixed this way), ``mix="embedding"`` (the released code) mixes ``z_m`` itself; then
    ``m3co_loss(z~_m, z_{m+1}, lam, partner)``;
  * the switch is a ``lax.cond`` on the traced step count (state ``{"steps"}``), so nothing
    recompiles and the M3Co forward passes stop after it.

  Extra ``config.loss.kwargs``: ``num_classes`` (required), ``contrastive``, ``after``,
  ``switch_step``, ``weight`` (0.1, the reference's ``lambda_mixup``), ``unimodal``,
  ``head_hidden``, ``mix``, ``beta``, ``mix_prob``, ``soft_temperature``, ``num_modalities``,
  ``modality_sizes``;
  the rest (``temperature``, ``impl``, ...) go to :func:`jaxcl.losses.contrib.m3co_loss` (and
  ``temperature`` to CLIP).
  """
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("m3co_loss").items()}
  num_classes = class_count(own["num_classes"], "m3col")
  terms = (own["contrastive"], own["after"])
  for name, t in zip(("contrastive", "after"), terms):
    if t not in M3COL_TERMS:
      raise ValueError(f"m3col: {name!r} must be one of {M3COL_TERMS}, got {t!r}")
  if own["mix"] not in ("input", "embedding"):
    raise ValueError(f"m3col: 'mix' must be 'input' or 'embedding', got {own['mix']!r}")
  switch = check_int(own["switch_step"], -(1 << 62), message="m3col: 'switch_step' must be an "
                     "int (< 0: never)")
  hidden = own["head_hidden"]
  sizes = tuple(int(n) for n in own["modality_sizes"])
  m = own["num_modalities"] or (num_columns // (num_views or 1) if num_views else 0)
  if as_int(m) is None or m < 2 or num_columns % m:
    raise ValueError(f"m3col: needs >= 2 modalities (a multimodal dataset) dividing the "
                     f"{num_columns} columns of z, got num_modalities={m!r}")
  if sizes and (len(sizes) != m or min(sizes) < 1):
    raise ValueError(f"m3col: 'modality_sizes' must give the {m} modalities' feature counts "
                     f"(>= 1 each), got {sizes}")
  weight, unimodal = float(own["weight"]), bool(own["unimodal"])
  beta, prob = float(own["beta"]), float(own["mix_prob"])
  soft_t = float(own["soft_temperature"])
  temperature = kw.get("temperature", 0.1)
  loss = functools.partial(jaxcl.losses.contrib.m3co_loss, **kw)
  extra = {k: v for k, v in kw.items() if k in ("impl", "block_size")}
  pairs = [(i, (i + 1) % m) for i in range(m)]

  def init(rng, dim):
    return jaxcl.losses.contrib.init_m3col_heads(rng, m, dim, num_classes, hidden=hidden)

  def init_state(dim):
    del dim
    return {"steps": jnp.zeros((), jnp.int32)}

  def term(kind, z0, rng, inputs, encode, axis_name):
    if kind == "none" or weight == 0:
      return jnp.zeros((z0.shape[0],), jnp.float32)
    total = 0.0
    if kind == "m3co":
      draws = [jaxcl.losses.contrib.m3co_mixing(jax.random.fold_in(rng, i), z0.shape[0], beta=beta,
                                        prob=prob, axis_name=axis_name) for i in range(m)]
      if own["mix"] == "input" and sizes:
        blocks = encode(mix_blocks(inputs[0].reshape(z0.shape[0], -1), draws, axis_name),
                        train=True)[1]
    for i, (a, b) in enumerate(pairs):
      if kind == "clip":
        total = total + jaxcl.losses.clip_loss(z0[:, a], z0[:, b], temperature=temperature,
                                               axis_name=axis_name, **extra)
      elif kind == "softclip":
        total = total + jaxcl.losses.contrib.soft_clip_loss(z0[:, a], z0[:, b], temperature=soft_t,
                                                    axis_name=axis_name, **extra)
      else:
        lam, partner = draws[i]
        if own["mix"] == "input" and not sizes:
          x = jaxcl.losses.contrib.m3co_mix(inputs[0], lam, partner, axis_name=axis_name)
          mixed = encode(x, train=True)[1][:, a]
        elif own["mix"] == "input":
          mixed = blocks[:, a]
        else:
          mixed = jaxcl.losses.contrib.m3co_mix(z0[:, a], lam, partner, axis_name=axis_name)
        total = total + loss(mixed, z0[:, b], lam, partner, axis_name=axis_name)
    return weight * total

  def mix_blocks(x, draws, axis_name):
    """One input with block ``m`` mixed by draw ``m``: one forward gives every tower its own
    mixed block (the towers are independent)."""
    if sum(sizes) != x.shape[1]:
      raise ValueError(f"m3col: 'modality_sizes' {sizes} must add up to the {x.shape[1]} "
                       f"features of an example")
    offsets = [sum(sizes[:i]) for i in range(m)]
    return jnp.concatenate([jaxcl.losses.contrib.m3co_mix(x[:, o:o + n], *draws[i], axis_name=axis_name)
                            for i, (o, n) in enumerate(zip(offsets, sizes))], axis=1)

  def apply(params, z, labels, rng, axis_name, *, state, inputs, encode):
    k = z.shape[1] // m
    ce = 0.0
    for v in range(k):
      fused, uni = jaxcl.losses.contrib.m3col_heads(params, z[:, v * m:(v + 1) * m])
      ce = ce + jaxcl.losses.contrib.softmax_cross_entropy(fused, labels)
      if unimodal:
        for i in range(m):
          ce = ce + jaxcl.losses.contrib.softmax_cross_entropy(uni[:, i], labels)
    z0 = z[:, :m]
    before = lambda: term(terms[0], z0, rng, inputs, encode, axis_name)
    after = lambda: term(terms[1], z0, rng, inputs, encode, axis_name)
    if switch < 0 or terms[0] == terms[1]:
      con = before()
    elif switch == 0:
      con = after()
    else:
      con = jax.lax.cond(state["steps"] < switch, before, after)
    return ce / k + con, {"steps": state["steps"] + 1}

  return ParamObjective(apply=apply, init=init, init_state=init_state, takes_encoder=True)


def tcl_objective(kwargs, num_views):
  """TCL (Yang et al., arXiv 2202.10401; :func:`jaxcl.losses.contrib.tcl_loss`) on a multimodal
  dataset with the EMA teacher on every view (``config.momentum.teacher_views = "all"``,
  :data:`TEACHER_VIEWS`): ``z [B, 2*K*C, D]``, the ``K`` online views then the ``K`` teacher
  views, ``C`` columns per view: the ``M = num_modalities`` global embeddings (column
  ``m``) and, with ``config.model.locals`` (:class:`jaxcl.models.MultiModal`), then
  ``L`` locals per modality (columns ``M + m*L + p``; padded locals are zero vectors, so
  their validity is ``any(l != 0)``). Per step (``image_modality`` / ``text_modality``)::

      v, t   = online view 0's image / text globals
      v', t' = teacher view 1's (the other augmented image view, the same caption when text
               views are the identity; view 0 when K = 1) image / text globals
      l^I, l^T = teacher view 1's image patch / text token locals
      L = tcl_loss(v, t, v', t', image_locals=l^I, text_locals=l^T, alpha=alpha_t, T)

  The objective owns ``log_scale = log(1 / temperature)`` when ``learn_temperature``
  (the reference's learnable ``temp``, init 0.07), kept in ``[min_temperature,
  max_temperature]`` (0.001, 0.5 as the reference's clamp) by ``project``. With
  ``alpha_warmup_steps > 0`` the soft-target weight is ``alpha * min(1, step /
  alpha_warmup_steps)`` (the reference ramps over the first epoch), the step count being the
  objective's state. ``imc`` / ``lmi`` (in ``config.loss.kwargs``) select the terms:
  ``imc=False, lmi=False`` is ALBEF's ITC with momentum distillation. The trainer's single
  MoCo queue is not used (TCL keeps one per modality): negatives are the global batch.
  Health: ``tcl/temperature``.
  """
  import math
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("tcl_loss").items()}
  fn = "tcl_loss"
  ints = {k: check_int(own[k], 0, message=f"{fn}: {k!r} must be an int >= 0")
          for k in ("num_modalities", "image_modality", "text_modality", "alpha_warmup_steps")}
  m, im, tm, warm = (ints[k] for k in ("num_modalities", "image_modality", "text_modality",
                                       "alpha_warmup_steps"))
  if m < 2 or im >= m or tm >= m or im == tm:
    raise ValueError(f"{fn}: 'image_modality' ({im}) and 'text_modality' ({tm}) must be two "
                     f"different modalities of 'num_modalities' ({m} >= 2)")
  t_lo, t_hi = float(own["min_temperature"]), float(own["max_temperature"])
  t0 = float(kw.pop("temperature", 0.07))
  if not 0 < t_lo <= t0 <= t_hi:
    raise ValueError(f"{fn}: need 0 < min_temperature <= temperature <= max_temperature, got "
                     f"{t_lo}, {t0}, {t_hi}")
  learn = bool(own["learn_temperature"])
  alpha = float(kw.pop("alpha", 0.4))
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"{fn}: 'alpha' must be in [0, 1], got {alpha}")
  lmi = bool(kw.get("lmi", True))
  loss = functools.partial(jaxcl.losses.contrib.tcl_loss, **kw)
  if num_views % m:
    raise ValueError(f"{fn}: the step's {num_views} columns per example are not views x "
                     f"num_modalities={m}")
  kv = num_views // m  # the trainer passes K*M (views x modalities)
  teacher_view = min(1, kv - 1)

  def temperature(params):
    return scale_of(params) if learn else t0

  def columns(z):
    total = z.shape[1]
    if total % (2 * kv) or (total // (2 * kv)) % m:
      raise ValueError(f"{fn}: z has {total} columns; expected 2 (online, teacher) x {kv} views "
                       f"x {m} modalities x (1 + locals) (config.momentum.teacher_views='all')")
    c = total // (2 * kv)
    return c, c // m - 1

  def apply(params, z, labels, rng, axis_name, state=None):
    del labels, rng
    c, n_loc = columns(z)
    online, teach = z[:, :c], z[:, (kv + teacher_view) * c:(kv + teacher_view + 1) * c]
    extra = {}
    if lmi:
      if n_loc < 1:
        raise ValueError(f"{fn}: lmi=True needs local embeddings: set config.model.locals = "
                         "True (MultiModal appends patch / token locals), or lmi=False")
      for name, mod in (("image", im), ("text", tm)):
        loc = teach[:, m + mod * n_loc:m + (mod + 1) * n_loc]
        extra[f"{name}_locals"] = loc
        extra[f"{name}_local_valid"] = jnp.any(loc != 0, axis=-1)
    a = alpha
    new = state
    if state is not None:
      a = alpha * jnp.minimum(1.0, state["steps"].astype(jnp.float32) / warm)
      new = {"steps": state["steps"] + 1}
    per = loss(online[:, im], online[:, tm], teach[:, im], teach[:, tm], alpha=a,
               temperature=temperature(params), axis_name=axis_name, **extra)
    return per if state is None else (per, new)

  def init(rng, dim):
    del rng, dim
    return temperature_params(t0) if learn else {}

  def project(params):
    if not learn:
      return params
    lo, hi = math.log(1.0 / t_hi), math.log(1.0 / t_lo)
    return {**params, "log_scale": jnp.clip(params["log_scale"], lo, hi)}

  def health(params, z, axis_name):
    del z, axis_name
    return {"tcl/temperature": jnp.asarray(temperature(params), jnp.float32)}

  init_state = (lambda dim: {"steps": jnp.zeros((), jnp.int32)}) if warm else None
  return ParamObjective(apply=apply, init=init, project=project, health=health,
                        init_state=init_state)


# Symile (jaxcl/losses/symile.py): the M modalities of each view at once, with a learnable logit
# scale owned by the objective; form="clip_sum" is the reference's pairwise CLIP baseline (the
# sum of the C(M,2) symmetric pair losses) under the same scale (symile_objective).
KINDS["symile"] = "symile"
OBJECTIVE_KWARGS["symile"] = {"form": "symile", "learn_temperature": True, "max_scale": 100.0,
                              "num_modalities": 0}
SYMILE_FORMS = ("symile", "clip_sum")


def symile_objective(kwargs, num_columns, num_views=None):
  """Symile (Saporta et al., arXiv 2411.01053) for ``M >= 2`` modalities as a
  :class:`ParamObjective` that owns the logit scale ``exp(log_scale)`` (the reference's
  learnable ``logit_scale``; init ``1 / temperature``, default ``temperature = 0.1``, clamped at
  ``max_scale`` = 100 by ``project`` as CLIP; ``learn_temperature=False`` keeps it fixed).
  ``z [B, K*M, D]`` holds the modalities of ``K`` views (column ``v*M + m``; ``M =
  num_modalities``, or ``num_columns // num_views``)::

      form="symile":    L_i = 1/K sum_v symile([z[:, v*M + m] for m < M], T, rng_v)_i
      form="clip_sum":  L_i = 1/K sum_v sum_{m < m'} clip_loss(z[:, v*M + m], z[:, v*M + m'], T)_i

  (``rng_v = fold_in(rng, v)``: symile's ``negatives="n"`` permutations of the global batch).
  ``clip_sum`` is the *sum* over modality pairs, as the reference's baseline
  (``experiments/losses.py``); the *mean* (pwe) is ``clip_loss`` with ``learn_temperature``
  through the pair adapter. Extra ``config.loss.kwargs``: ``form``, ``learn_temperature``,
  ``max_scale``, ``num_modalities``; the rest (``temperature``, ``negatives``, ``normalize``,
  ``impl``, ``block_size``) go to :func:`jaxcl.losses.symile` (``clip_sum``: all but
  ``negatives`` to :func:`jaxcl.losses.clip_loss`).

  Missing modalities are a data convention (``symile_xor_missing``: an all-zero block plus an
  indicator feature), as in the reference: the tower embeds "missing" like any input and the
  loss is unchanged. Health: ``logit_scale``.
  """
  import itertools as it
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("symile").items()}
  form = own["form"]
  if form not in SYMILE_FORMS:
    raise ValueError(f"symile: 'form' must be one of {SYMILE_FORMS}, got {form!r}")
  m = as_int(own["num_modalities"])
  if m == 0:
    m = num_columns // (num_views or 1) if num_views else num_columns
  if m is None or m < 2 or num_columns % m:
    raise ValueError(f"symile: needs >= 2 modalities (a multimodal dataset) dividing the "
                     f"{num_columns} columns of z, got num_modalities={own['num_modalities']!r}")
  learn, max_scale = bool(own["learn_temperature"]), own["max_scale"]
  if max_scale is not None and not max_scale > 0:
    raise ValueError(f"symile: 'max_scale' must be > 0 or None, got {max_scale!r}")
  t0 = kw.pop("temperature", 0.1)
  if not float(t0) > 0:
    raise ValueError(f"symile: 'temperature' must be > 0, got {t0!r}")
  if form == "clip_sum":
    kw.pop("negatives", None)
    loss = functools.partial(jaxcl.losses.clip_loss, **kw)
  else:
    loss = functools.partial(jaxcl.losses.symile, **kw)
  pairs = list(it.combinations(range(m), 2))

  def temperature(params):
    return scale_of(params, max_scale) if learn else t0

  def init(rng, dim):
    del rng, dim
    return temperature_params(t0) if learn else {}

  def project(params):
    return cap_log_scale(params, max_scale)

  def apply(params, z, labels, rng, axis_name):
    del labels
    if z.shape[1] % m:
      raise ValueError(f"symile: z has {z.shape[1]} columns, not a multiple of "
                       f"num_modalities={m}")
    t, per = temperature(params), []
    for v in range(z.shape[1] // m):
      mods = [z[:, v * m + i] for i in range(m)]
      if form == "symile":
        per.append(loss(mods, temperature=t, axis_name=axis_name,
                        rng=None if rng is None else jax.random.fold_in(rng, v)))
      else:
        per.append(sum(loss(mods[i], mods[j], temperature=t, axis_name=axis_name)
                       for i, j in pairs))
    return per[0] if len(per) == 1 else jnp.mean(jnp.stack(per), axis=0)

  def health(params, z, axis_name):
    del z, axis_name
    return {"logit_scale": 1.0 / jnp.asarray(temperature(params), jnp.float32)}

  return ParamObjective(apply=apply, init=init, project=project, health=health)


# WhitenedCSE (jaxcl/losses/whitenedcse.py): views = K dropout passes of one text; the objective
# owns the train-only head SGW -> Linear(D, D) -> tanh of the reference (whitenedcse_objective).
KINDS["whitenedcse"] = "whitened"
OBJECTIVE_KWARGS["whitened"] = {"head": True, "whiten": True}


def whitenedcse_objective(kwargs):
  """WhitenedCSE (Zhuo et al., arXiv 2305.17746) as a :class:`ParamObjective`::

      x   = SGW(z)                  shuffled group whitening per view, global-batch statistics
      u   = tanh(x W + b)           the reference's train-only MLPLayer (head=True)
      L_i = sum_{k>=1} info_nce(u[:, 0], u[:, k])_i      (anchor view 0, K - 1 positives)

  ``z [B_local, K, D]`` are the K dropout views (``config.views.num``; the paper K = 3). Own
  kwargs: ``head`` (learn ``W [D, D] ~ N(0, 0.02^2)``, ``b = 0``: BERT's ``init_weights``, as
  the reference's ``cls.init_weights()`` gives its MLPLayer; False = no head) and ``whiten``
  (False: no SGW, so ``head=True, whiten=False`` with K = 2 is SimCSE's ``mlp_only_train`` head
  + InfoNCE). The rest go to :func:`jaxcl.losses.contrib.whitenedcse` (``num_groups``, ``temperature``,
  ``chunking``, ``eps``, ``method``, ``impl``). Under ``axis_name`` the whitening statistics
  are psum'd over the global batch and the permutations come from the step's loss key (the
  same on every device), so a sharded step equals the single-device one; negatives gathered.
  The head is train-only: evaluation reads the encoder's pooled embedding.
  """
  import jaxcl.losses
  kw = dict(kwargs)
  own = {k: kw.pop(k, d) for k, d in objective_kwargs("whitenedcse").items()}
  for k, v in own.items():
    if not isinstance(v, bool):
      raise ValueError(f"whitenedcse: {k!r} must be a bool, got {v!r}")
  if own["whiten"]:
    loss = functools.partial(jaxcl.losses.contrib.whitenedcse, **kw)
  else:
    keep = {k: kw[k] for k in ("temperature", "impl", "block_size") if k in kw}
    loss = lambda z, rng, project=None, axis_name=None: jaxcl.losses.contrib.whitenedcse_loss(
        z if project is None else project(z.reshape(-1, z.shape[-1])).reshape(z.shape),
        axis_name=axis_name, **keep)

  def project_fn(params):
    if not own["head"]:
      return None
    return lambda x: jnp.tanh(jnp.einsum("nd,de->ne", x.astype(jnp.float32), params["w"],
                                         preferred_element_type=jnp.float32) + params["b"])

  def apply(params, z, labels, rng, axis_name):
    del labels
    if z.shape[1] < 2:
      raise ValueError(f"whitenedcse: needs config.views.num >= 2 dropout views, got z of "
                       f"shape {tuple(z.shape)}")
    return loss(z, rng, project=project_fn(params), axis_name=axis_name)

  def init(rng, dim):
    if not own["head"]:
      return {}
    return {"w": 0.02 * jax.random.normal(rng, (dim, dim), jnp.float32),
            "b": jnp.zeros((dim,), jnp.float32)}

  return ParamObjective(apply=apply, init=init)


# CoDiEmb joint IR + STS (jaxcl/losses/codiemb_joint.py): z [B, M, D] (M texts of a row, one
# shared tower); the row's task and its STS gold scores ride in the labels (codiemb_labels), and
# each row gets the IR or the STS loss by its task (codiemb_objective).
KINDS["codiemb_joint"] = "codiemb"


def codiemb_objective(kwargs, num_columns):
  """``codiemb_joint(z, task, scores)`` with ``(task, scores) = codiemb_unpack_labels(labels,
  M // 2)`` (``M = num_columns``, even): IR rows get the multi-positive IR loss, STS rows the
  order-aware STS losses (``form="codiemb"``) or every pair one InfoNCE (``form="info_nce"``,
  the naive baseline). ``config.loss.kwargs`` go to :func:`jaxcl.losses.contrib.codiemb_joint`."""
  import jaxcl.losses
  if num_columns < 2 or num_columns % 2:
    raise ValueError(f"codiemb_joint: needs an even number >= 2 of texts per row (a multimodal "
                     f"text dataset with views.num = 1), got {num_columns} columns")
  loss = functools.partial(jaxcl.losses.contrib.codiemb_joint, **dict(kwargs))

  def objective(z, labels, rng, axis_name):
    del rng
    task, scores = jaxcl.losses.contrib.codiemb_unpack_labels(labels, z.shape[1] // 2)
    return loss(z, task, scores, axis_name=axis_name)

  return objective
