"""The trainer's configuration schema and its validation.

Every recipe in ``configs/`` starts from :func:`default_config` and overrides fields, so a
misspelt key is an error at the line that sets it (the ConfigDict is locked). :func:`validate`
repeats the check for configs built from scratch and checks everything that can be known
before any compilation: known keys, loss / optimiser names and kwargs (and the ranges of the
loss's temperatures and other plainly bounded kwargs, :func:`check_loss_values`), dataset name,
and that the global batch divides over devices and processes.

Example:
  >>> from jaxcl.train import config as cfg
  >>> c = cfg.default_config(); c.data.name = "mnist1d"
  >>> c.batch_size = 7
  >>> cfg.check_batch(c, num_devices=8, num_processes=1)  # doctest: +IGNORE_EXCEPTION_DETAIL
  Traceback (most recent call last):
  ConfigError: config.batch_size=7 is not divisible by the number of devices (8) ...
"""
from __future__ import annotations

import inspect

import ml_collections
import numpy as np

# Sub-dicts whose keys are the keyword arguments of a function chosen by another field: they
# are checked against that function's signature instead of against the schema.
FREE_FORM = ("augment.params", "model.encoder_kwargs", "loss.kwargs", "views.local_params",
             "augment.modalities", "model.modalities")
OPTIMIZERS = ("lars", "adamw", "sgd")


class ConfigError(ValueError):
  """A configuration problem found before training starts."""


def default_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with its default."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 256          # global batch, over all devices of all processes
  c.num_steps = 1000
  c.log_every = 50

  c.data = ml_collections.ConfigDict()
  c.data.name = ""            # one of jaxcl.data's datasets (mnist1d, digits, cifar10, ...)
  c.data.data_dir = ml_collections.config_dict.placeholder(str)
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.worker_count = 0
  c.data.in_memory = True     # embedded datasets: read once, serve from memory (same order)
  c.data.classes = ()         # train and evaluate on these class labels only; () = all
  c.data.per_class = 0        # few-shot: first N training examples of each class; 0 = all
  c.data.imbalance = 1.0      # long tail: class c keeps n_max * imbalance^(-c/(C-1)); 1 = off
  c.data.allow_repeats = False  # allow config.batch_size > the training examples (batches
                                # then repeat examples: false negatives of their own copies)

  c.augment = ml_collections.ConfigDict()
  c.augment.kind = ""         # "" = the dataset's kind (signal1d, image, tabular)
  c.augment.params = ml_collections.ConfigDict()  # kwargs of jaxcl.augment.make_view_fn
  c.augment.modalities = ml_collections.ConfigDict()  # multimodal data: {modality: params}

  c.views = ml_collections.ConfigDict()
  c.views.num = 2             # K >= 2 augmented views per example (pair losses: pairwise mean)
  c.views.num_local = 0       # extra multi-crop "local" views after the K global ones (SwAV)
  c.views.local_params = ml_collections.ConfigDict()  # augment.params overrides for local views

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = ml_collections.ConfigDict()  # kwargs of jaxcl.models.build_encoder
  c.model.head_hidden = 256
  c.model.head_out = 128
  c.model.head_layers = 2     # 0: no projection head, z = h (fine-tuning objectives)
  c.model.head_bn = True
  c.model.towers = 1          # N > 1: N independent encoder + head towers on the same input,
                              # h and z concatenated (jaxcl.models.MultiTower; SepCLR)
  # Multimodal data: {modality: {"encoder": name, "encoder_kwargs": {...}}} overrides of the
  # per-modality towers (jaxcl.train.step.modality_towers); one tower per modality always.
  c.model.modalities = ml_collections.ConfigDict()
  # Multimodal: z also holds every modality's projected patch / token locals after the globals,
  # [B, M + M*L, D] (jaxcl.models.MultiModalLocals; TCL's LMI); token encoders only.
  c.model.locals = False
  # Multimodal: one tower shared by every modality (bi-encoder; the modalities must have one
  # kind and shape, e.g. query / document token blocks of a text-pair dataset).
  c.model.shared_tower = False
  # Pretrained weights copied into every BERT encoder of the model when training starts from
  # scratch (not on resume): "" (off) | "minilm" (all-MiniLM-L6-v2; needs jaxcl[text]).
  c.model.pretrained = ""

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "nt_xent"     # a jaxcl.losses function with an adapter (jaxcl/train/objectives.py)
  c.loss.kwargs = ml_collections.ConfigDict({"temperature": 0.5})

  c.momentum = ml_collections.ConfigDict()  # MoCo teacher (jaxcl/train/momentum.py)
  c.momentum.ema = 0.0        # EMA decay m of the key encoder of view 1; 0 = off
  c.momentum.cosine = False   # m follows BYOL's cosine schedule from momentum.ema to 1
  c.momentum.teacher_views = "key"  # "key": the teacher encodes view 1 only (MoCo); "all":
                                    # every view by both networks (BYOL / BECLR)

  c.queue = ml_collections.ConfigDict()  # MoCo queue (jaxcl/queue.py)
  c.queue.size = 0            # past global-batch keys as shared negatives; 0 = off

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"      # lars | adamw | sgd
  c.optim.lr = 1e-3           # peak learning rate of the warmup-cosine schedule
  c.optim.warmup_steps = 100
  c.optim.end_lr_factor = 0.0
  c.optim.weight_decay = 1e-4
  c.optim.momentum = 0.9      # sgd / lars
  c.optim.lars_trust = 1e-3
  c.optim.clip_norm = 0.0     # 0 = no clipping

  c.sharding = ml_collections.ConfigDict()
  c.sharding.fsdp = False     # shard big parameters (and their optimiser state) over 'data'
  c.sharding.fsdp_min_size = 1 << 18

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 500
  c.checkpoint.keep = 2
  c.checkpoint.use_async = True

  c.nonfinite = ml_collections.ConfigDict()  # the step's finiteness guard (jaxcl/train/step.py)
  c.nonfinite.max_skips = 0   # non-finite steps skipped (not applied) before the run stops

  c.init = ml_collections.ConfigDict()  # fine-tuning: start from another run's weights
  c.init.workdir = ""         # a finished run's workdir (its latest checkpoint); "" = off
  c.init.modules = ("encoder",)  # top-level model modules copied (params + BatchNorm stats)

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0            # 0 = only at the end
  c.eval.at_end = True
  c.eval.baselines = True     # also probe the raw inputs and the randomly initialised encoder
  c.eval.knn_k = 20
  c.eval.knn_temperature = 0.07
  c.eval.probe_steps = 200
  c.eval.probe_l2 = (1e-6, 1e-5, 1e-4, 1e-3)
  c.eval.probe_val_fraction = 0.1
  c.eval.batch_size = 1024

  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ""
  c.distributed.num_processes = 0
  c.distributed.process_id = -1

  c.plots = True
  c.progress = True

  c.debug = ml_collections.ConfigDict()
  c.debug.nan_at_step = -1    # test hook: the loss becomes NaN at this step
  c.debug.sigkill_at_step = -1  # test hook: SIGKILL self after this step (checkpoints flushed)
  return c


def _walk(c, prefix=""):
  for key, value in c.items():
    path = f"{prefix}{key}"
    yield path, value
    if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
      yield from _walk(value, path + ".")


def check_keys(config, schema=None):
  """Every key of ``config`` must exist in the schema (free-form sub-dicts excepted)."""
  schema = default_config() if schema is None else schema
  known = {p for p, _ in _walk(schema)}
  for path, _ in _walk(config):
    if path not in known:
      raise ConfigError(f"unknown config key 'config.{path}'")


def check_kwargs(fn, kwargs, where, reserved=()):
  """``kwargs`` must be accepted by ``fn`` (unless it takes ``**kwargs``)."""
  params = inspect.signature(fn).parameters
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return
  for key in kwargs:
    if key not in params or key in reserved:
      raise ConfigError(f"unknown key 'config.{where}.{key}': {fn.__name__} takes "
                        f"{sorted(k for k in params if k not in reserved)}")


def loss_fn(config):
  from jaxcl.train import objectives
  name = config.loss.name
  fn = objectives.loss_function(name)
  if fn is None:
    raise ConfigError(f"config.loss.name={name!r} is not a jaxcl.losses or jaxcl.losses.contrib "
                      f"function (with a trainer objective: {', '.join(sorted(objectives.KINDS))})")
  if name not in objectives.KINDS:
    raise ConfigError(f"config.loss.name={name!r} has no trainer objective adapter "
                      f"(supported: {', '.join(sorted(objectives.KINDS))})")
  own = objectives.objective_kwargs(name)
  check_kwargs(fn, {k: v for k, v in config.loss.kwargs.items() if k not in own},
               "loss.kwargs", reserved=objectives.reserved_kwargs(name, fn))
  return fn


# Loss hyper-parameters whose range is plain from the name, checked on the configured values of
# config.loss.kwargs before anything runs (the losses check them only when the step is traced,
# after the workdir exists, and an infinite temperature passes their "> 0" check).
# Every name ending in "temperature" (not learn_temperature) is a temperature: finite, > 0.
POSITIVE_KWARGS = ("epsilon", "sigma", "window", "bin_width", "max_scale", "adv_eps")
NONNEGATIVE_KWARGS = ("eps", "weight")  # and every name ending in "_weight"
COUNT_KWARGS = {"sinkhorn_iters": 1, "num_prototypes": 2, "num_groups": 1, "num_negatives": 1}
UNIT_KWARGS = {"quantile": ("(0, 1]", lambda v: 0 < v <= 1),
               "label_smoothing": ("[0, 1)", lambda v: 0 <= v < 1),
               "mix_prob": ("[0, 1]", lambda v: 0 <= v <= 1)}


def _is_number(v):
  import numbers
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_loss_values(config):
  """Ranges of the configured ``config.loss.kwargs`` (after :func:`loss_fn` accepted their
  names): temperatures finite and > 0, the other names above in their range, and every number
  (also inside a tuple) finite. ``None`` (a default that switches the option off) passes."""
  import math
  from jaxcl.train import objectives
  name, kw = config.loss.name, dict(config.loss.kwargs)
  for key, v in kw.items():
    where = f"config.loss.kwargs.{key}={v!r}"
    if v is None:
      continue
    temperature = key.endswith("temperature") and key != "learn_temperature"
    ranged = (temperature or key in POSITIVE_KWARGS or key in COUNT_KWARGS or key in UNIT_KWARGS
              or key in NONNEGATIVE_KWARGS or key.endswith("_weight"))
    if ranged and not _is_number(v):
      raise ConfigError(f"{where}: must be a number (loss {name!r})")
    for x in (v if isinstance(v, (tuple, list)) else (v,)):
      if _is_number(x) and not math.isfinite(x):
        raise ConfigError(f"{where}: must be finite (loss {name!r})")
    if temperature or key in POSITIVE_KWARGS:
      if not v > 0:
        raise ConfigError(f"{where}: must be > 0 (loss {name!r})")
    elif key in NONNEGATIVE_KWARGS or key.endswith("_weight"):
      if not v >= 0:
        raise ConfigError(f"{where}: must be >= 0 (loss {name!r})")
    elif key in COUNT_KWARGS:
      if v != int(v) or v < COUNT_KWARGS[key]:
        raise ConfigError(f"{where}: must be an int >= {COUNT_KWARGS[key]} (loss {name!r})")
    elif key in UNIT_KWARGS:
      text, ok = UNIT_KWARGS[key]
      if not ok(v):
        raise ConfigError(f"{where}: must be in {text} (loss {name!r})")
  own = objectives.objective_kwargs(name)  # the objective's defaults (TCL's clamp range)
  lo = kw.get("min_temperature", own.get("min_temperature"))
  hi = kw.get("max_temperature", own.get("max_temperature"))
  if _is_number(lo) and _is_number(hi) and lo > hi:
    raise ConfigError(f"config.loss.kwargs.min_temperature={lo!r} must be <= "
                      f"config.loss.kwargs.max_temperature={hi!r} (loss {name!r})")


def num_views(config):
  """Views per example the step makes: ``views.num`` global + ``views.num_local`` local."""
  return config.views.num + config.views.num_local


def num_modalities(config):
  """Modalities per example (1 unless ``config.data.name`` is a multimodal dataset)."""
  import jaxcl.data
  name = config.data.name
  try:
    info = jaxcl.data.info(name) if name else None
  except ValueError:  # unknown: dataset_info() reports it
    return 1
  if info is None:
    return 1
  return max(1, len(info.modalities))


def make_objective(config):
  """The validated ``objective(z [B, K*M, D], labels, rng, axis_name) -> [B]`` of the config
  (``M`` modalities of a multimodal dataset, else 1)."""
  from jaxcl.train import objectives
  loss_fn(config)
  try:
    return objectives.make_objective(config.loss.name, config.loss.kwargs,
                                     num_views(config) * num_modalities(config),
                                     num_global_views=config.views.num)
  except ValueError as e:
    raise ConfigError(f"config.loss: {e}") from e


def check_momentum(config):
  from jaxcl.train import objectives
  if not 0.0 <= config.momentum.ema < 1.0:
    raise ConfigError(f"config.momentum.ema must be in [0, 1) (0 = off), got "
                      f"{config.momentum.ema}")
  size, name = config.queue.size, config.loss.name
  if config.momentum.teacher_views not in ("key", "all"):
    raise ConfigError(f"config.momentum.teacher_views must be 'key' or 'all', got "
                      f"{config.momentum.teacher_views!r}")
  need = objectives.TEACHER_VIEWS.get(name)
  if need and (config.momentum.ema <= 0 or config.momentum.teacher_views != need):
    raise ConfigError(f"config.loss.name={name!r} needs the momentum teacher on every view: "
                      f"set config.momentum.ema > 0 (e.g. 0.996) and "
                      f"config.momentum.teacher_views='{need}'")
  if config.momentum.teacher_views == "all" and not need:
    raise ConfigError(f"config.momentum.teacher_views='all': loss {name!r} does not take "
                      f"teacher embeddings of every view (losses that do: "
                      f"{', '.join(sorted(objectives.TEACHER_VIEWS))})")
  if size < 0:
    raise ConfigError(f"config.queue.size must be >= 0 (0 = off), got {size}")
  if size and name not in objectives.QUEUE_ARGS:
    raise ConfigError(f"config.queue.size={size}: loss {name!r} takes no queue (losses with "
                      f"a queue: {', '.join(sorted(objectives.QUEUE_ARGS))})")
  if size and size < config.batch_size:
    raise ConfigError(f"config.queue.size={size} must be >= config.batch_size="
                      f"{config.batch_size} (a whole global batch is enqueued per step)")
  if size and objectives.QUEUE_ARGS[name] in config.loss.kwargs:
    raise ConfigError(f"config.loss.kwargs.{objectives.QUEUE_ARGS[name]} is the queue's "
                      f"argument (set by config.queue)")


def check_classes(config, info):
  classes = tuple(config.data.classes)
  if not classes:
    return
  if info.is_regression:
    raise ConfigError(f"config.data.classes={classes}: dataset {info.name!r} has regression "
                      f"targets, not classes")
  bad = [k for k in classes if not isinstance(k, int) or not 0 <= k < info.num_classes]
  if bad or len(set(classes)) != len(classes):
    raise ConfigError(f"config.data.classes={classes} must be distinct class ids in "
                      f"[0, {info.num_classes}) of dataset {info.name!r}")


def check_train_subset(config, info):
  """``config.data.per_class`` / ``config.data.imbalance`` (the training split's few-shot /
  long-tail subset, :func:`jaxcl.data.count_indices`)."""
  n, r = config.data.per_class, config.data.imbalance
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ConfigError(f"config.data.per_class must be an int >= 0 (0 = all), got {n!r}")
  if isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 1.0:
    raise ConfigError(f"config.data.imbalance must be a number >= 1 (1 = off), got {r!r}")
  if (n or r != 1.0) and info.is_regression:
    raise ConfigError(f"config.data.per_class / config.data.imbalance need class labels; "
                      f"dataset {info.name!r} has regression targets")


# Objective kinds whose learnable parameters embed the class labels (the CE classifier,
# Hydra's label-embedding gate): config.loss.kwargs.num_classes must cover the dataset's.
# (label_embedding: primer's label_contrast; dat: z are the logits of num_classes classes;
# finetune: core_tuning's classifier)
LABEL_EMBEDDING_KINDS = ("classifier", "gated", "label_embedding", "dat", "finetune")


def check_label_embedding(config, info):
  """An objective that embeds the class labels needs a classification dataset whose labels
  ``num_classes`` covers."""
  from jaxcl.train import objectives
  if objectives.KINDS.get(config.loss.name) not in LABEL_EMBEDDING_KINDS:
    return
  n = config.loss.kwargs.get("num_classes")
  if info.is_regression:
    raise ConfigError(f"config.loss.name={config.loss.name!r} needs class labels; dataset "
                      f"{info.name!r} is a regression task")
  if isinstance(n, int) and not isinstance(n, bool) and n < info.num_classes:
    raise ConfigError(f"config.loss.kwargs.num_classes={n} is smaller than the "
                      f"{info.num_classes} classes of dataset {info.name!r}")


def check_init(config):
  """``config.init`` (fine-tuning from another run's checkpoint): the checkpoint itself is read
  (and its modules' shapes checked) when training starts. ``config.model.pretrained`` names
  known weights and excludes ``config.init.workdir``."""
  name = config.model.get("pretrained", "")
  if name:
    from jaxcl.models.pretrained import PRETRAINED
    if name not in PRETRAINED:
      raise ConfigError(f"config.model.pretrained={name!r}: known weights: {PRETRAINED} "
                        f"('' = off)")
    if "init" in config and config.init.workdir:
      raise ConfigError("config.model.pretrained and config.init.workdir both set: choose one "
                        "starting point")
  if "init" not in config:
    return
  w, mods = config.init.workdir, config.init.modules
  if not isinstance(w, str):
    raise ConfigError(f"config.init.workdir must be a path string ('' = off), got {w!r}")
  if isinstance(mods, str) or not mods or not all(isinstance(m, str) and m for m in mods):
    raise ConfigError(f"config.init.modules must be a non-empty tuple of module names (e.g. "
                      f"('encoder',)), got {mods!r}")


# Objective kinds that take the multi-hot [B, C] label sets of a multi_label dataset (LaSO).
MULTI_LABEL_KINDS = ("laso",)


def check_multi_label(config, info):
  """A ``multi_label`` dataset (``y`` multi-hot ``[C]`` rows) goes with a multi-label objective
  and without the built-in probe / kNN evaluation and class-subset options (they need one class
  id per example), and vice versa."""
  from jaxcl.train import objectives
  kind = objectives.KINDS.get(config.loss.name)
  if kind in MULTI_LABEL_KINDS and not info.multi_label:
    raise ConfigError(f"config.loss.name={config.loss.name!r} needs multi-hot label sets: "
                      f"dataset {info.name!r} has one class per example (multi-label: "
                      f"{_multi_label_datasets()})")
  if not info.multi_label:
    return
  if kind not in MULTI_LABEL_KINDS:
    names = [k for k, v in objectives.KINDS.items() if v in MULTI_LABEL_KINDS]
    raise ConfigError(f"config.data.name={info.name!r} has multi-hot label sets; loss "
                      f"{config.loss.name!r} takes one class per example (multi-label "
                      f"losses: {names})")
  if config.eval.at_end or config.eval.every:
    raise ConfigError(f"config.eval: the built-in probe / kNN evaluation needs one class per "
                      f"example; dataset {info.name!r} is multi-label: set config.eval.at_end="
                      f"False and config.eval.every=0 (evaluate the objective's outputs "
                      f"instead, e.g. experiments/laso.py)")
  if tuple(config.data.classes) or config.data.per_class or config.data.imbalance != 1.0:
    raise ConfigError(f"config.data.classes / per_class / imbalance select by class id; "
                      f"dataset {info.name!r} is multi-label")


def _multi_label_datasets():
  import jaxcl.data
  return [n for n in jaxcl.data.DATASETS if jaxcl.data.info(n).multi_label]


def check_batch(config, num_devices, num_processes):
  b = config.batch_size
  if b <= 0 or b % num_devices:
    raise ConfigError(f"config.batch_size={b} is not divisible by the number of devices "
                      f"({num_devices}); use a multiple of {num_devices}")
  if b % num_processes:
    raise ConfigError(f"config.batch_size={b} is not divisible by the number of processes "
                      f"({num_processes})")


# What each encoder of jaxcl.models takes per example (named in the shape-mismatch error; the
# ViTs patch images or signals alike).
ENCODER_INPUTS = {"mlp": "any shape (flattened)", "cnn1d": "signals [length, channels]",
                  "resnet18": "images [H, W, C]", "resnet50": "images [H, W, C]",
                  "text_transformer": "token ids [length]",
                  "bert": "token ids [length]", "bert_moe": "token ids [length]"}


def check_model(config, model, info, batch=2):
  """Traces ``model`` (``(h, z) = model.apply(...)``, the eval-mode model) on ``batch``
  examples of the dataset's shape with ``jax.eval_shape``: nothing is compiled or allocated.
  The encoder must take the examples, and ``h`` / ``z`` keep the batch (``[B, F]`` / ``[B, D]``
  for single-modality data). A 2-D encoder on 1-D signals (or the reverse) otherwise fails
  inside the first step, after the workdir exists, or trains on mixed-up rows."""
  import jax
  import jax.numpy as jnp
  enc = config.model.encoder
  what = (f"config.model.encoder={enc!r}" if not info.modalities else
          f"config.model.encoder={enc!r} / config.model.modalities")
  takes = f", {enc!r} takes {ENCODER_INPUTS[enc]}" if enc in ENCODER_INPUTS else ""
  where = (f"dataset {info.name!r}: its examples have shape {tuple(info.shape)} ({info.kind})"
           f"{takes}")
  x = jax.ShapeDtypeStruct((batch,) + tuple(info.shape), jnp.float32)
  try:
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    h, z = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  except Exception as e:  # pylint: disable=broad-except  (whatever the module raises)
    first = (str(e).strip().splitlines() or [""])[0]
    raise ConfigError(f"{what} does not fit {where} (tracing a batch of {batch}: "
                      f"{type(e).__name__}: {first})") from e
  shapes = [tuple(a.shape) for a in jax.tree.leaves((h, z))]
  flat = not info.modalities
  if (any(not s or s[0] != batch for s in shapes)
      or flat and (len(h.shape) != 2 or len(z.shape) != 2)):
    raise ConfigError(f"{what} does not fit {where}; a batch of {batch} gives features h "
                      f"{_shapes(h)} and embeddings z {_shapes(z)} (expected [{batch}, F] and "
                      f"[{batch}, D])")


def _shapes(tree):
  import jax
  leaves = [tuple(a.shape) for a in jax.tree.leaves(tree)]
  return leaves[0] if len(leaves) == 1 else leaves


def check_data(config, info, *, num_processes=1):
  """The data the config's loader will read, before any side effect: a tfds dataset that is not
  embedded must be prepared in the data dir (its files only: no tfds call, never a download;
  the evaluation's split too when the run evaluates), and the global batch must not exceed the
  training examples (``config.data.allow_repeats=True`` allows it: batches then repeat
  examples, and a copy is a false negative of the other). A runtime dataset
  (:func:`jaxcl.data.catalog.register`) has no files: its batches come through
  ``train(iterator=)``. Not for runs given an ``iterator``."""
  from jaxcl.data import catalog, loader
  name, c = info.name, config.data
  if name not in catalog.DATASETS:
    raise ConfigError(f"config.data.name={name!r} is a runtime dataset (jaxcl.data.catalog."
                      f"register) with no files to read: pass its batches with "
                      f"jaxcl.train.train(config, workdir, iterator=...)")
  if not info.embedded:
    splits = (c.train_split,) + ((c.eval_split,) if config.eval.at_end or config.eval.every
                                 else ())
    try:
      loader.check_prepared(name, tuple(dict.fromkeys(splits)), data_dir=c.data_dir)
    except FileNotFoundError as e:
      raise ConfigError(f"config.data.name={name!r}: {e}") from e
  if c.get("allow_repeats", False):
    return
  n, kept = _train_rows(config, info)
  b, p = config.batch_size, num_processes
  if b // p > n // p:  # each process reads n // p of the rows (ShardByJaxProcess), b // p a step
    per = f" ({n // p} per process, {b // p} per process and step)" if p > 1 else ""
    raise ConfigError(f"config.batch_size={b} is larger than the {n} training examples of "
                      f"dataset {name!r} (split {c.train_split!r}{kept}){per}: every batch would "
                      f"repeat examples, and a repeated example is a false negative of its own "
                      f"copy; use config.batch_size <= {n // p * p} or set "
                      f"config.data.allow_repeats=True")


def _train_rows(config, info):
  """``(rows, what kept them)`` of the training split the loader serves: the split's size, or
  for ``classes`` / ``per_class`` / ``imbalance`` the count from the labels of an embedded
  dataset, as the loader selects them (other datasets: the split's size, an upper bound)."""
  from jaxcl.data import catalog, loader
  c = config.data
  n = info.splits[c.train_split]
  classes = tuple(c.classes)
  subset = [f"config.data.{k}={v!r}" for k, v, off in (("classes", classes, ()),
                                                       ("per_class", c.per_class, 0),
                                                       ("imbalance", c.imbalance, 1.0))
            if v != off]
  if not subset or info.name not in catalog.EMBEDDED:
    return n, ""
  labels = loader.load_arrays(info.name, c.train_split, data_dir=c.data_dir)["y"]
  try:
    idx = (loader.class_indices(labels, classes, where="config.data.classes") if classes
           else np.arange(len(labels)))
    idx = idx[loader.count_indices(labels[idx], per_class=c.per_class, imbalance=c.imbalance,
                                   where="config.data")]
  except ValueError as e:
    raise ConfigError(str(e)) from e
  return len(idx), f", kept by {', '.join(subset)}"


def dataset_info(config):
  import jaxcl.data
  name = config.data.name
  if not name:
    raise ConfigError("config.data.name is not set: name a dataset of jaxcl.data")
  try:
    return jaxcl.data.info(name)
  except (KeyError, ValueError) as e:
    raise ConfigError(f"config.data.name={name!r}: unknown or missing dataset ({e})") from e


def validate(config, *, num_devices, num_processes):
  """All checks that need no compilation. Returns the dataset's ``DatasetInfo``."""
  check_keys(config)
  if config.optim.name not in OPTIMIZERS:
    raise ConfigError(f"config.optim.name={config.optim.name!r} is not one of {OPTIMIZERS}")
  for key in ("num_steps", "log_every"):
    if config[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0, got {config[key]}")
  if config.nonfinite.max_skips < 0:
    raise ConfigError(f"config.nonfinite.max_skips must be >= 0, got "
                      f"{config.nonfinite.max_skips}")
  multimodal = num_modalities(config) > 1
  if multimodal and (config.augment.kind or len(config.augment.params)):
    raise ConfigError("config.augment.kind / config.augment.params do not apply to multimodal "
                      "data: set per-modality view parameters in config.augment.modalities")
  if not multimodal and (len(config.augment.modalities) or len(config.model.modalities)):
    raise ConfigError("config.augment.modalities / config.model.modalities apply to multimodal "
                      f"datasets only ({config.data.name!r} has one modality)")
  if config.views.num < (1 if multimodal else 2):
    raise ConfigError(f"config.views.num must be >= {1 if multimodal else 2} views per example"
                      f"{' (multimodal data)' if multimodal else ''}, got {config.views.num}")
  if config.views.num_local < 0:
    raise ConfigError(f"config.views.num_local must be >= 0, got {config.views.num_local}")
  loss_fn(config)
  check_loss_values(config)
  check_momentum(config)
  check_batch(config, num_devices, num_processes)
  info = dataset_info(config)
  check_label_embedding(config, info)
  check_multi_label(config, info)
  check_classes(config, info)
  check_train_subset(config, info)
  check_init(config)
  for split in (config.data.train_split, config.data.eval_split):
    if info.splits and split not in info.splits:
      raise ConfigError(f"config.data: dataset {info.name!r} has no split {split!r} "
                        f"(splits: {list(info.splits)})")
  return info
