"""The training loop: validate, build, resume, train, checkpoint, evaluate, plot.

``train(config, workdir)`` is everything ``python -m jaxcl.main`` does. Order of work:

1. ``jax.distributed.initialize`` if multi-process; every check, before any directory,
   checkpoint or compilation (:func:`setup`): the config (:func:`jaxcl.train.config.validate`,
   the values of ``loss.kwargs`` included), the data source and the batch against the
   training examples (:func:`jaxcl.train.config.check_data`, unless ``iterator=`` is given),
   the model traced on the data's shape (:func:`jaxcl.train.config.check_model`);
2. mesh over all devices, model / optimiser / sharded state, data iterator;
3. resume from the newest readable checkpoint in ``workdir/checkpoints`` (state *and* data
   position; :func:`jaxcl.train.checkpoint.restore_latest`), dropping what an interrupted run
   logged after it (``metrics.jsonl``, TensorBoard, ``eval.json`` history);
4. train, logging to ``metrics.jsonl`` / TensorBoard / tqdm, saving every
   ``checkpoint.every`` steps and evaluating every ``eval.every`` steps. A step whose loss,
   gradient norm or updated state is NaN / Inf is not applied (the step's on-device guard,
   :func:`jaxcl.train.step.guard_nonfinite`); after ``config.nonfinite.max_skips`` such
   skipped steps (default 0) the next one stops the run with :class:`NonFiniteLossError`
   naming the step and the quantity. Only finite states are ever saved, so checkpoint
   retention (``checkpoint.keep``) never drops the last finite checkpoint. SIGTERM / SIGINT
   during the loop (:mod:`jaxcl.train.preemption`) stop it at the next step boundary, agreed
   by every process: a checkpoint of that step is saved and awaited, ``preempted at step N``
   printed and :class:`jaxcl.train.Preempted` raised; ``python -m jaxcl.main`` exits with
   ``128 + signal``: **143** for SIGTERM, **130** for SIGINT. Rerunning resumes from step N;
5. final evaluation of the raw inputs, the random encoder and the trained encoder
   (``eval.json``, Markdown table), plots.

Example:
  >>> from configs import simclr_mnist1d  # doctest: +SKIP
  >>> train(simclr_mnist1d.get_config(), "runs/x")  # doctest: +SKIP
"""
from __future__ import annotations

import functools
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import jsonio
from jaxcl.train import checkpoint as ckpt
from jaxcl.train import config as cfg
from jaxcl.train import distributed, logger, momentum, preemption
from jaxcl.train.optim import make_optimizer
from jaxcl.train.sharding import global_batch, make_mesh
from jaxcl.train.step import build_model, create_state, init_variables, make_train_step


class NonFiniteLossError(FloatingPointError):
  """The loss, the gradient norm or the updated state became NaN or Inf (more often than
  ``config.nonfinite.max_skips`` allows); the run stopped without applying or saving it."""


def setup(config, *, devices=None, objective=None, check_data=False):
  """Validated pieces shared by training, the step tests and the notebook (``objective``
  replaces the config's objective adapter, e.g. MCL's group-masked loss). Every check runs
  before anything is compiled: :func:`jaxcl.train.config.validate`, with ``check_data`` the
  data the config's loader reads (:func:`jaxcl.train.config.check_data`), and the model traced
  on the data's shape (:func:`jaxcl.train.config.check_model`)."""
  info = cfg.validate(config, num_devices=len(devices) if devices else jax.device_count(),
                      num_processes=jax.process_count())
  if check_data:
    cfg.check_data(config, info, num_processes=jax.process_count())
  from jaxcl import augment
  mesh = make_mesh(devices)
  objective = objective or cfg.make_objective(config)
  try:
    if info.modalities:  # one view function per modality block
      view_fn = augment.make_multimodal_view_fn(info.modalities, config.augment.modalities)
    else:
      view_fn = augment.make_view_fn(config.augment.kind or info.kind,
                                     **dict(config.augment.params))
  except ValueError as e:
    raise cfg.ConfigError(f"config.augment: {e}") from e
  step_views = view_fn
  if config.views.num_local:  # multi-crop: K global views, then the local ones
    try:
      if info.modalities:  # multimodal: views.local_params = {modality: overrides}
        mods, over = dict(config.augment.modalities), dict(config.views.local_params)
        local_fn = augment.make_multimodal_view_fn(info.modalities, {
            n: {**dict(mods.get(n) or {}), **dict(over.get(n) or {})} for n in {**mods, **over}})
      else:
        local_fn = augment.make_view_fn(config.augment.kind or info.kind,
                                        **{**dict(config.augment.params),
                                           **dict(config.views.local_params)})
    except ValueError as e:
      raise cfg.ConfigError(f"config.views.local_params: {e}") from e
    step_views = (view_fn,) * config.views.num + (local_fn,) * config.views.num_local
  try:
    model = build_model(config.model, bn_axis_name="data", modalities=info.modalities)
    eval_model = build_model(config.model, bn_axis_name=None, modalities=info.modalities)
  except ValueError as e:
    raise cfg.ConfigError(f"config.model: {e}") from e
  # The model on the data's shape (jax.eval_shape), on the rows one device encodes per view.
  cfg.check_model(config, eval_model, info, batch=max(2, config.batch_size // mesh.size))
  tx, schedule = make_optimizer(config.optim, config.num_steps)
  rng = jax.random.PRNGKey(config.seed)
  state, shardings = create_state(mesh, eval_model, tx, rng, info.shape,
                                  fsdp=config.sharding.fsdp,
                                  fsdp_min_size=config.sharding.fsdp_min_size,
                                  objective=objective, momentum=config.momentum.ema > 0,
                                  queue_size=config.queue.size)
  ema_decay = functools.partial(momentum.decay, config.momentum.ema,
                                num_steps=config.num_steps, cosine=config.momentum.cosine)
  step = make_train_step(mesh, model, tx, objective, step_views, schedule, shardings,
                         num_views=cfg.num_views(config), nan_at_step=config.debug.nan_at_step,
                         ema_decay=ema_decay, teacher_views=config.momentum.teacher_views)
  return dict(info=info, mesh=mesh, model=model, eval_model=eval_model, view_fn=view_fn,
              tx=tx, schedule=schedule, state=state, shardings=shardings, step=step, rng=rng)


def _loader(config, split, shuffle=True):
  from jaxcl import data
  return data.make_loader(config.data.name, split, global_batch_size=config.batch_size,
                          seed=config.seed, shuffle=shuffle, num_epochs=None,
                          drop_remainder=True, data_dir=config.data.data_dir,
                          worker_count=config.data.worker_count, in_memory=config.data.in_memory,
                          classes=tuple(config.data.classes), **_train_subset(config, split))


def _train_subset(config, split):
  """``per_class`` / ``imbalance`` of the training split (other splits stay whole)."""
  if split != config.data.train_split:
    return {}
  return {"per_class": config.data.per_class, "imbalance": config.data.imbalance}


def _print0(*args):
  if jax.process_index() == 0:
    print(*args, flush=True)


def train(config, workdir, *, iterator=None, objective=None, warm_start=None):
  """Trains (resuming if ``workdir`` has checkpoints) and evaluates. Returns the eval dict.

  ``iterator`` (per-process batches ``{"x", "y"}`` with ``get_state``/``set_state``, e.g.
  MCL's cluster-homogeneous :class:`jaxcl.data.grouped.GroupedBatches`) replaces the config's
  loader and ``objective`` its objective adapter (see :func:`setup`). ``warm_start(state) ->
  state`` is applied once to the freshly initialised state when ``workdir`` has no checkpoint
  yet (not on resume), e.g. to start from another run's parameters (the tasks of
  :mod:`jaxcl.recipes.coconut`); it must keep the state's structure and is placed on its
  shardings. Off (``None``) by default. With ``config.init.workdir`` set (and no
  ``warm_start``) the top-level modules ``config.init.modules`` are copied from that run's
  latest checkpoint (:func:`jaxcl.train.checkpoint.restore_modules`: fine-tuning).
  """
  distributed.maybe_initialize(config.distributed)
  # Every check first (config, data source, model on the data's shape): nothing is written
  # or compiled before them.
  parts = setup(config, objective=objective, check_data=iterator is None)
  mesh, state = parts["mesh"], parts["state"]
  os.makedirs(workdir, exist_ok=True)
  iterator = _loader(config, config.data.train_split) if iterator is None else iterator
  mngr = ckpt.manager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                      keep=config.checkpoint.keep, use_async=config.checkpoint.use_async)
  init = config.get("init")
  if warm_start is None and init is not None and init.workdir:  # fine-tuning (config.init)
    warm_start = functools.partial(ckpt.restore_modules, init.workdir,
                                   modules=tuple(init.modules))
  elif warm_start is None and config.model.get("pretrained"):  # e.g. MiniLM into BERT towers
    from jaxcl.models import pretrained
    warm_start = pretrained.warm_start(config.model.pretrained)
  restored = ckpt.restore_latest(mngr, state, iterator)
  if restored is not None:
    state = restored
    _print0(f"resumed from step {int(state.step)} in {workdir}/checkpoints")
  elif warm_start is not None:
    state = jax.device_put(warm_start(state), parts["shardings"])
  start = int(state.step)
  evaluator = Evaluator(config, parts, workdir, start)
  writer = logger.MetricWriter(workdir, start=start)  # drops what was logged after `start`
  bar = logger.progress(config.num_steps, start, config.progress)
  train_step = parts["step"]
  t0, seen, skips, saved = time.time(), 0, 0, start
  stop = preemption.StopSignals().install()  # SIGTERM / SIGINT set a flag until the loop ends
  try:
    for step in range(start, config.num_steps):
      batch = next(iterator)
      batch = global_batch(mesh, {"x": batch["x"], "y": batch["y"]})
      state, metrics = train_step(state, batch)
      loss, flags = jax.device_get((metrics["loss"], metrics["nonfinite"]))  # the step's sync
      loss, done = float(loss), step + 1
      if flags:  # the step was not applied (jaxcl.train.step.guard_nonfinite)
        skips += 1
        what, detail = _nonfinite(flags, loss, float(metrics["grad_norm"]))
        if skips > config.nonfinite.max_skips:
          mngr.wait_until_finished()
          raise NonFiniteLossError(
              f"{what} at step {step} ({detail}): training stopped; the last good checkpoint "
              f"is step {mngr.latest_step()} in {workdir}/checkpoints (not overwritten)")
        _print0(f"step {step} skipped: {what} ({detail}; skip {skips} of "
                f"config.nonfinite.max_skips={config.nonfinite.max_skips})")
      seen += config.batch_size
      if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{seen / max(time.time() - t0, 1e-9):.0f}")
      if done % config.log_every == 0 or done == config.num_steps:
        now = time.time()
        scalars = {k: float(v) for k, v in metrics.items()}
        scalars["examples_per_s"] = seen / max(now - t0, 1e-9)
        writer.write(done, scalars)
        t0, seen = now, 0
      if done % config.checkpoint.every == 0 or done == config.num_steps:
        ckpt.save(mngr, done, state, iterator)
        saved = done
      if config.eval.every and done % config.eval.every == 0 and done != config.num_steps:
        evaluator.during(done, state)
      if done == config.debug.sigkill_at_step:  # test hook: die without any cleanup
        mngr.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
      signum = stop.requested()  # the same on every process
      if signum:  # preempted: checkpoint this step, wait for it, stop
        if saved != done:
          ckpt.save(mngr, done, state, iterator, force=True)
        mngr.wait_until_finished()
        error = preemption.Preempted(done, signum, f"{workdir}/checkpoints")
        _print0(str(error))
        raise error
  finally:
    stop.restore()
    if bar is not None:
      bar.close()
    mngr.wait_until_finished()
    writer.close()
  results = evaluator.final(state) if config.eval.at_end else {}
  mngr.close()
  return results


def _nonfinite(flags, loss, grad_norm):
  """``("non-finite loss (nan)", "loss nan, grad_norm nan; not finite: loss, grad_norm,
  params")``: the first of :data:`jaxcl.train.step.NONFINITE` set in ``flags``, then the
  step's scalars and every quantity that was not finite."""
  from jaxcl.train.step import NONFINITE
  names = [n for i, n in enumerate(NONFINITE) if flags >> i & 1]
  value = {"loss": f" ({loss})", "grad_norm": f" ({grad_norm})"}.get(names[0], "")
  return (f"non-finite {names[0]}{value}",
          f"loss {loss:.6g}, grad_norm {grad_norm:.6g}; not finite: {', '.join(names)}")


def _tolerance(feats, labels):
  """Wang & Liu's tolerance: mean cosine similarity of same-class test pairs (same rows as
  the other geometry metrics)."""
  from jaxcl import metrics
  from jaxcl.eval.evaluate import GEOMETRY_ROWS
  f = jnp.asarray(np.asarray(feats)[:GEOMETRY_ROWS], jnp.float32)
  return float(metrics.tolerance(f, jnp.asarray(np.asarray(labels)[:GEOMETRY_ROWS])))


class Evaluator:
  """Probe / kNN / geometry of the encoder features, history, ``eval.json`` and plots."""

  def __init__(self, config, parts, workdir, start=None):
    self.config, self.parts, self.workdir = config, parts, workdir
    self.path = os.path.join(workdir, "eval.json")
    # Resumed run: keep the curve measured up to the restored step ``start`` (later entries
    # will be measured again); a damaged file: a warning.
    saved = jsonio.read_json(self.path, default={})
    self.history = [h for h in (saved.get("history", []) if isinstance(saved, dict) else [])
                    if start is None or h.get("step", 0) <= start]
    self._data = None

  def data(self):
    if self._data is None:
      from jaxcl import data
      c = self.config.data
      self._data = tuple(data.subset_arrays(data.load_arrays(c.name, split, data_dir=c.data_dir),
                                            tuple(c.classes))
                         for split in (c.train_split, c.eval_split))
      # Few-shot / long-tail: the training split (probe and kNN fit) only; the test split whole.
      self._data = (data.train_subset_arrays(self._data[0], per_class=c.per_class,
                                             imbalance=c.imbalance, where="config.data"),
                    self._data[1])
    return self._data

  def _features(self, params, batch_stats, x):
    from jaxcl.eval.evaluate import encode
    model = self.parts["eval_model"]
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
    apply = lambda v, xb: model.apply(v, xb, train=False)[0]
    return encode(apply, variables, x, self.parts["mesh"], self.config.eval.batch_size)

  def _modality_features(self, params, batch_stats, x):
    """Per-modality ``(h_m, z_m)`` of a multimodal model (one encode pass, split after)."""
    from jaxcl.eval.evaluate import encode
    model = self.parts["eval_model"]
    variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}

    def apply(v, xb):
      outs = model.apply(v, xb, train=False, method="per_modality")
      return jnp.concatenate([a for o in outs for a in o], axis=-1)

    shapes = jax.eval_shape(lambda v, xb: model.apply(v, xb, train=False,
                                                      method="per_modality"),
                            variables, jax.ShapeDtypeStruct((2,) + tuple(x.shape[1:]),
                                                            jnp.float32))
    flat = encode(apply, variables, x, self.parts["mesh"], self.config.eval.batch_size)
    cuts = np.cumsum([a.shape[-1] for o in shapes for a in o])[:-1]
    parts = np.split(flat, cuts, axis=-1)
    return [(parts[2 * i], parts[2 * i + 1]) for i in range(len(shapes))]

  def _measure_multimodal(self, params, batch_stats):
    from jaxcl import data
    from jaxcl.eval import multimodal
    info = self.parts["info"]
    train, test = self.data()
    ftr = self._modality_features(params, batch_stats, train["x"])
    fte = self._modality_features(params, batch_stats, test["x"])
    prompts = data.prompts(info.name)
    prompt_z = None
    if prompts is not None:
      c, p = prompts.shape[:2]
      zp = self._modality_features(params, batch_stats, prompts.reshape(c * p, -1))[1][1]
      prompt_z = zp.reshape(c, p, -1)
    res = multimodal.evaluate_modalities(ftr, fte, train["y"], test["y"],
                                         [m.name for m in info.modalities], info.num_classes,
                                         self.config.eval, self.config.seed, prompt_z=prompt_z)
    return res, fte[0][0]

  def measure(self, params, batch_stats, geometry=True):
    from jaxcl.eval import evaluate
    if self.parts["info"].modalities:
      return self._measure_multimodal(params, batch_stats)
    train, test = self.data()
    ftr = self._features(params, batch_stats, train["x"])
    fte = self._features(params, batch_stats, test["x"])
    res = evaluate.evaluate_features(ftr, train["y"], fte, test["y"],
                                     self.parts["info"].num_classes, self.config.eval,
                                     self.config.seed)
    if geometry:
      key = jax.random.PRNGKey(self.config.seed + 1)
      x = jnp.asarray(test["x"][:evaluate.GEOMETRY_ROWS])
      from jaxcl.train.step import per_example_views
      idx = jnp.arange(len(x))
      views = jax.jit(functools.partial(per_example_views, self.parts["view_fn"]))
      v1 = views(jax.random.fold_in(key, 0), idx, x)
      v2 = views(jax.random.fold_in(key, 1), idx, x)
      res.update(evaluate.geometry(fte, self._features(params, batch_stats, np.asarray(v1)),
                                   self._features(params, batch_stats, np.asarray(v2))))
      if not self.parts["info"].is_regression:  # same-class pairs need class labels
        res["tolerance"] = _tolerance(fte, test["y"])
    return res, fte

  def during(self, step, state):
    from jaxcl.eval import evaluate
    res, _ = self.measure(state.params, state.batch_stats, geometry=False)
    self.history.append({"step": int(step), **res})
    self._write({})
    _print0(f"step {step}: {evaluate.summary_line(res)}")

  def final(self, state):
    from jaxcl.eval import evaluate, plots
    train, test = self.data()
    table = {}
    if self.config.eval.baselines:
      raw = evaluate.evaluate_features(train["x"], train["y"], test["x"], test["y"],
                                       self.parts["info"].num_classes, self.config.eval,
                                       self.config.seed)
      flat = np.asarray(test["x"]).reshape(len(test["x"]), -1)
      raw.update(evaluate.geometry(flat))
      if not self.parts["info"].is_regression:
        raw["tolerance"] = _tolerance(flat, test["y"])
      if self.parts["info"].modalities:  # per-modality raw blocks (token ids as numbers)
        from jaxcl.data import split_modalities
        mods = self.parts["info"].modalities
        for m, btr, bte in zip(mods, split_modalities(train["x"], mods),
                               split_modalities(test["x"], mods)):
          r = evaluate.evaluate_features(btr, train["y"], bte, test["y"],
                                         self.parts["info"].num_classes, self.config.eval,
                                         self.config.seed)
          raw[f"probe_{m.name}"], raw[f"knn_{m.name}"] = r["linear_probe"], r["knn"]
      table["raw inputs"] = raw
      params, stats = init_variables(self.parts["eval_model"], self.parts["rng"],
                                     self.parts["info"].shape)
      table["random encoder"], _ = self.measure(params, stats)
    trained, feats = self.measure(state.params, state.batch_stats)
    name = f"{self.config.loss.name} encoder (step {int(state.step)})"
    table[name] = trained
    self.history = [h for h in self.history if h["step"] != int(state.step)]
    self.history.append({"step": int(state.step), **trained})
    self._write(table)
    if self.parts["info"].modalities:
      from jaxcl.eval import multimodal
      md = multimodal.markdown_table(table, [m.name for m in self.parts["info"].modalities])
    else:
      md = evaluate.markdown_table(table, k=self.config.eval.knn_k)
    _print0(f"\n{self.config.data.name} test results\n{md}")
    # The curves and the class-coloured embedding plot are drawn for class labels only.
    if self.config.plots and jax.process_index() == 0 and not self.parts["info"].is_regression:
      baselines = {k: v for k, v in table.items() if k != name}
      plots.write_all(self.workdir, logger.read_metrics(self.workdir), self.history, baselines,
                      feats, test["y"])
    return {"final": table, "history": self.history, "markdown": md}

  def _write(self, table):
    if jax.process_index() != 0:
      return
    jsonio.write_json(self.path, {"final": table, "history": self.history}, indent=2)
