"""COCONUT: class-incremental learning with experience replay, NSPT and the multimodal term.

Cappellazzo, Fini, Yang, Falavigna, Brutti, Raj, "Continual Contrastive Spoken Language
Understanding", Findings of ACL 2024, arXiv 2310.02699 (methods.md section 11). The classes
are split into ``num_tasks`` tasks of ``classes_per_task`` classes (``class_order``, default
ascending ids) learnt one after the other; task ``t`` is one run of the shared trainer
(:func:`jaxcl.train.train`) in ``workdir/task_<t>`` with

* the **data** of :class:`ReplayBatches`: every global batch holds ``B - replay_batch`` rows of
  the current task's training classes and ``replay_batch`` rows of the replay buffer (all ``B``
  current rows on the first task, when the buffer is empty). After task ``t`` the buffer gains
  the first ``buffer_per_class`` training rows (stored order, :func:`jaxcl.data.count_indices`)
  of each of its classes: a deterministic selection that does not depend on the seed;
* the **objective** of :func:`coconut_objective`: the CE of a linear classifier head on the
  head output ``z`` (the ``classifier`` objective, over all ``C`` outputs, both views), plus
  ``nspt_weight * nspt`` (anchors: the rehearsal rows, view 0; the teacher's embeddings of the
  same view 0 inputs) plus ``mm_weight * coconut_mm`` between views 0 and 1 of the current rows
  (:mod:`jaxcl.losses.coconut`; the hypothesised, unverified forms of methods.md);
* the **teacher**: the model at the task's start (after task ``t - 1``), frozen, kept as the
  objective's state (``TrainState.objective_state``, replicated, checkpointed) and applied in
  inference mode to the view-0 inputs inside the step (``ParamObjective.takes_encoder``);
* a **warm start** (``train(..., warm_start=)``): the task begins from the previous task's
  final parameters, head and teacher snapshot; the optimiser state and the learning-rate
  schedule (``config.optim``, over ``config.num_steps`` steps per task) start afresh.

Every task's trainer run keeps ``config.seed`` (the views' keys, the fresh state that the warm
start overwrites); its batches are drawn with ``seed + 1000 t`` (:func:`task_seed`).

The rehearsal flag reaches the objective through the labels: a batch row's ``y`` is its class
``+ C * is_replayed`` (``C`` the dataset's class count); the objective decodes ``y % C`` and
``y >= C``.

After every task the head classifies the test rows of every task seen so far among the classes
seen so far (class-incremental: no task id at test time), giving the accuracy matrix
``A[t][j]`` (after task ``t``, on task ``j``); reported: the **average accuracy** after the
last task ``mean_j A[T-1][j]`` and the **average forgetting**
``mean_{j < T-1} (max_{t < T-1} A[t][j] - A[T-1][j])`` (Chaudhry et al., arXiv 1801.10112),
plus a linear probe / kNN of the final encoder on all classes (:mod:`jaxcl.eval`). Plain
experience replay (ER) is ``nspt_weight = mm_weight = 0``. Everything goes to
``workdir/coconut.json``; re-running resumes (finished tasks are restored, not retrained).

Paper-vs-proxy (not pinned down in the paper or not applicable): the paper's seq2seq SLU model
(audio encoder + text decoder, CE on transcripts) becomes an MLP encoder + projection head +
linear classifier; its text modality for the MM term becomes a second augmented view of the
same input (two-view proxy, one shared encoder); the CE runs over all ``C`` head outputs during
training (unseen classes are pushed down, as in a fixed-size head), the evaluation masks the
unseen ones.

Example:
  ``python -m jaxcl.main --config=configs/coconut_digits.py --workdir=runs/coconut_digits``
  (``jaxcl.main`` dispatches here when the config has a ``coconut`` block.)
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcl import jsonio

SEED_STRIDE = 1000  # task t (0-based) draws its batches with seed + SEED_STRIDE * t


def task_seed(config, task):
  return config.seed + SEED_STRIDE * task


def default_coconut() -> ml_collections.ConfigDict:
  """The ``config.coconut`` block: the class-incremental protocol and COCONUT's terms."""
  m = ml_collections.ConfigDict()
  m.num_tasks = 5
  m.classes_per_task = 2
  m.class_order = ()          # class ids in task order; () = 0, 1, ..., C-1
  m.buffer_per_class = 20     # rows of each finished class kept for replay
  m.replay_batch = 32         # buffer rows in every global batch (from the second task on)
  m.nspt_weight = 1.0         # l1 (0: off)
  m.mm_weight = 1.0           # l2 (0: off)
  m.temperature = 0.1         # T of both contrastive terms
  m.probe = True              # linear probe + kNN of the final encoder on all the tasks' classes
  return m


def _check(config, num_classes):
  from jaxcl.train.config import ConfigError
  m = config.coconut
  unknown = set(m.keys()) - set(default_coconut().keys())
  if unknown:
    raise ConfigError(f"unknown config key(s) {sorted('config.coconut.' + k for k in unknown)}")
  if m.num_tasks < 1 or m.classes_per_task < 1:
    raise ConfigError(f"config.coconut.num_tasks ({m.num_tasks}) and classes_per_task "
                      f"({m.classes_per_task}) must be >= 1")
  order = tuple(m.class_order) or tuple(range(num_classes))
  need = m.num_tasks * m.classes_per_task
  if (len(set(order)) != len(order) or any(not 0 <= k < num_classes for k in order)
      or len(order) < need):
    raise ConfigError(f"config.coconut.class_order={tuple(m.class_order)} must list >= {need} "
                      f"distinct class ids in [0, {num_classes})")
  if m.buffer_per_class < 0 or not 0 <= m.replay_batch < config.batch_size:
    raise ConfigError(f"config.coconut.buffer_per_class ({m.buffer_per_class}) must be >= 0 "
                      f"and replay_batch ({m.replay_batch}) in [0, batch_size="
                      f"{config.batch_size})")
  if m.nspt_weight < 0 or m.mm_weight < 0 or not m.temperature > 0:
    raise ConfigError(f"config.coconut.nspt_weight / mm_weight must be >= 0 and temperature "
                      f"> 0, got {m.nspt_weight}, {m.mm_weight}, {m.temperature}")
  if config.loss.name != "softmax_cross_entropy":
    raise ConfigError(f"config.coconut needs config.loss.name='softmax_cross_entropy' (the "
                      f"classifier head), got {config.loss.name!r}")


def task_classes(config, num_classes):
  """``[(c, ...), ...]``: the classes of every task, in order."""
  m = config.coconut
  order = tuple(m.class_order) or tuple(range(num_classes))
  k = m.classes_per_task
  return [tuple(int(c) for c in order[t * k:(t + 1) * k]) for t in range(m.num_tasks)]


def buffer_rows(labels, classes, per_class):
  """Positions (in ``labels``) of the buffer rows of ``classes``: the first ``per_class`` of
  each in stored order."""
  from jaxcl import data
  labels = np.asarray(labels)
  rows = np.flatnonzero(np.isin(labels, classes))
  if not per_class or not len(rows):
    return rows[:0]
  return rows[data.count_indices(labels[rows], per_class=per_class, where="coconut buffer")]


class ReplayBatches:
  """Resumable iterator of per-process rows of experience-replay global batches.

  Global batch ``k`` (a pure function of ``seed`` and ``k``): ``B - R`` rows of ``x`` drawn
  without replacement and ``R = replay_batch`` rows of the buffer (with replacement only when
  it holds fewer than ``R``; ``R = 0`` when it is empty), in a random order, all from
  ``np.random.default_rng([seed, k])``. Labels: ``y`` for current rows, ``y + num_classes`` for
  replayed ones. Each process serves rows ``[p B / P, (p + 1) B / P)``. The state ``{"step"}``
  (JSON) is what the trainer's checkpoints store.
  """

  def __init__(self, x, y, buffer_x, buffer_y, *, global_batch_size, replay_batch, num_classes,
               seed, process_index=None, process_count=None):
    if process_index is None or process_count is None:
      process_index, process_count = jax.process_index(), jax.process_count()
    self.x, self.y = np.asarray(x), np.asarray(y, np.int32)
    self.bx, self.by = np.asarray(buffer_x), np.asarray(buffer_y, np.int32)
    if len(self.x) == 0:
      raise ValueError("ReplayBatches: no current rows")
    if global_batch_size <= 0 or global_batch_size % process_count:
      raise ValueError(f"ReplayBatches: 'global_batch_size' ({global_batch_size}) must be a "
                       f"positive multiple of the number of processes ({process_count})")
    self.global_batch_size = int(global_batch_size)
    self.replay = int(replay_batch) if len(self.bx) else 0
    if not 0 <= self.replay < self.global_batch_size:
      raise ValueError(f"ReplayBatches: 'replay_batch' ({replay_batch}) must be in [0, "
                       f"{self.global_batch_size})")
    self.num_classes, self.seed = int(num_classes), int(seed)
    self.local = self.global_batch_size // process_count
    self.offset = process_index * self.local
    self.step = 0

  def global_batch(self, step):
    rng = np.random.default_rng([self.seed, step])
    n_new = self.global_batch_size - self.replay
    new = rng.choice(len(self.x), n_new, replace=len(self.x) < n_new)
    x, y = self.x[new], self.y[new]
    if self.replay:
      old = rng.choice(len(self.bx), self.replay, replace=len(self.bx) < self.replay)
      x = np.concatenate([x, self.bx[old]])
      y = np.concatenate([y, self.by[old] + self.num_classes])
    order = rng.permutation(self.global_batch_size)
    return x[order], y[order]

  def __iter__(self):
    return self

  def __next__(self):
    x, y = self.global_batch(self.step)
    self.step += 1
    sl = slice(self.offset, self.offset + self.local)
    return {"x": x[sl], "y": y[sl]}

  def get_state(self):
    return {"step": self.step, "seed": self.seed, "global_batch_size": self.global_batch_size}

  def set_state(self, state):
    if (state["seed"], state["global_batch_size"]) != (self.seed, self.global_batch_size):
      raise ValueError(f"ReplayBatches.set_state: state of seed {state['seed']} / batch "
                       f"{state['global_batch_size']} given to an iterator of seed {self.seed} "
                       f"/ batch {self.global_batch_size}")
    self.step = int(state["step"])


def coconut_objective(config, num_classes, example_shape):
  """The task objective (a ``ParamObjective``): the classifier head's CE (its parameters are
  the objective's) + ``nspt_weight * nspt`` + ``mm_weight * coconut_mm``; the frozen teacher's
  variables are the objective's state (returned unchanged). ``labels`` are ``y + C *
  is_replayed`` (:class:`ReplayBatches`)."""
  import jaxcl.losses
  from jaxcl.train import objectives
  from jaxcl.train.step import build_model, init_variables
  m = config.coconut
  w1, w2, t = float(m.nspt_weight), float(m.mm_weight), float(m.temperature)
  head = objectives.classifier_objective({"num_classes": num_classes})
  model = build_model(config.model, bn_axis_name=None)  # the teacher: inference mode

  def teacher_embed(teacher, x):
    variables = {"params": teacher["params"]}
    if teacher["batch_stats"]:
      variables["batch_stats"] = teacher["batch_stats"]
    return jax.lax.stop_gradient(model.apply(jax.lax.stop_gradient(variables), x,
                                             train=False)[1])

  def apply(params, z, labels, rng, axis_name, *, state, inputs, encode):
    del encode
    y, old = labels % num_classes, labels >= num_classes
    per = head.apply(params, z, y, rng, axis_name)
    if w1:
      zt = teacher_embed(state, inputs[0])
      per = per + w1 * jaxcl.losses.contrib.nspt(z[:, 0], zt, y, old, temperature=t,
                                         axis_name=axis_name)
    if w2:
      per = per + w2 * jaxcl.losses.contrib.coconut_mm(z[:, 0], z[:, 1], y, ~old, temperature=t,
                                               axis_name=axis_name)
    return per, state

  def init_state(dim):
    del dim  # placeholder variables; the recipe's warm start puts the task-start snapshot here
    params, stats = init_variables(model, jax.random.PRNGKey(0), example_shape)
    return {"params": params, "batch_stats": stats}

  return objectives.ParamObjective(apply=apply, init=head.init, init_state=init_state,
                                   takes_encoder=True)


def task_config(config, task, seen):
  """The trainer config of ``task`` (0-based): without ``coconut``, the classes seen so far as
  ``data.classes``, no final trainer evaluation (the recipe evaluates). The seed stays
  ``config.seed`` (the warm start replaces the initial parameters anyway; one seed = one
  compiled state initialisation for all tasks); the task's batches use ``task_seed``."""
  del task
  c = config.copy_and_resolve_references()
  with c.unlocked():
    if "coconut" in c:
      del c["coconut"]
  c.data.classes = tuple(sorted(seen))
  c.eval.at_end = False
  return c


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def warm_start(previous):
  """``state -> state``: the previous task's parameters, BatchNorm statistics and head, and
  the teacher = a copy of those parameters (for the first task, ``previous=None``: the
  teacher = the fresh student). Optimiser state, step and RNG stay the fresh ones."""

  def fn(state):
    src = state if previous is None else previous
    new = state.replace(params=_copy(src.params), batch_stats=_copy(src.batch_stats),
                        objective_params=_copy(src.objective_params))
    return new.replace(objective_state={"params": _copy(src.params),
                                        "batch_stats": _copy(src.batch_stats)})

  return fn


def head_logits(parts, state, x, batch_size=1024):
  """``[N, C]`` classifier-head logits of ``x`` (eval mode)."""
  from jaxcl.recipes.mcl import features
  z = features(parts, state, x, "embedding", batch_size)
  p = jax.device_get(state.objective_params)
  return np.asarray(z, np.float32) @ np.asarray(p["w"]).T + np.asarray(p["b"])


def task_accuracies(logits, y, tasks, upto):
  """Accuracy on each task ``0..upto`` among the classes of tasks ``0..upto``."""
  seen = np.array(sorted(c for t in tasks[:upto + 1] for c in t))
  pred = seen[np.argmax(logits[:, seen], axis=1)]
  return [float(np.mean(pred[np.isin(y, t)] == y[np.isin(y, t)])) for t in tasks[:upto + 1]]


def continual_metrics(acc):
  """``(average accuracy after the last task, average forgetting)`` from the lower-triangular
  accuracy matrix ``acc[t][j]`` (``j <= t``)."""
  last = len(acc) - 1
  avg = float(np.mean(acc[last]))
  if last == 0:
    return avg, 0.0
  forget = [max(acc[t][j] for t in range(j, last)) - acc[last][j] for j in range(last)]
  return avg, float(np.mean(forget))


def train(config, workdir):
  """Runs every task and evaluates; returns (and writes to ``workdir/coconut.json``) the
  results."""
  from jaxcl import data
  from jaxcl.eval import evaluate
  from jaxcl.recipes.mcl import features, restore
  from jaxcl.train import trainer
  info = data.info(config.data.name)
  _check(config, info.num_classes)
  m = config.coconut
  tr = data.load_arrays(config.data.name, config.data.train_split, data_dir=config.data.data_dir)
  te = data.load_arrays(config.data.name, config.data.eval_split, data_dir=config.data.data_dir)
  tasks = task_classes(config, info.num_classes)
  os.makedirs(workdir, exist_ok=True)
  buffer, previous, acc, records = np.zeros((0,), np.int64), None, [], []
  for t, classes in enumerate(tasks):
    seen = [k for ts in tasks[:t + 1] for k in ts]
    c = task_config(config, t, seen)
    cur = np.flatnonzero(np.isin(tr["y"], classes))
    it = ReplayBatches(tr["x"][cur], tr["y"][cur], tr["x"][buffer], tr["y"][buffer],
                       global_batch_size=c.batch_size, replay_batch=m.replay_batch,
                       num_classes=info.num_classes, seed=task_seed(config, t))
    objective = coconut_objective(config, info.num_classes, info.shape)
    task_dir = os.path.join(workdir, f"task_{t}")
    trainer.train(c, task_dir, iterator=it, objective=objective, warm_start=warm_start(previous))
    state, parts = restore(c, task_dir, objective)
    logits = head_logits(parts, state, te["x"], c.eval.batch_size)
    acc.append(task_accuracies(logits, te["y"], tasks, t))
    records.append({"task": t, "classes": list(classes), "steps": c.num_steps,
                    "current_rows": int(len(cur)), "buffer_rows": int(len(buffer)),
                    "accuracy": acc[-1]})
    buffer = np.concatenate([buffer, buffer_rows(tr["y"], classes, m.buffer_per_class)])
    previous = state
  avg, forget = continual_metrics(acc)
  results = {"tasks": [list(k) for k in tasks], "accuracy": acc, "average_accuracy": avg,
             "forgetting": forget, "records": records}
  if m.probe:
    seen = sorted(k for ts in tasks for k in ts)
    tr_s, te_s = data.subset_arrays(tr, seen), data.subset_arrays(te, seen)
    probe = evaluate.evaluate_features(features(parts, state, tr_s["x"], "encoder"), tr_s["y"],
                                       features(parts, state, te_s["x"], "encoder"), te_s["y"],
                                       info.num_classes, config.eval, config.seed)
    results.update(linear_probe=probe["linear_probe"], knn=probe["knn"])
  if jax.process_index() == 0:
    jsonio.write_json(os.path.join(workdir, "coconut.json"), results, indent=1)
    print(markdown(results), flush=True)
  return results


def markdown(results):
  """The accuracy matrix (after task t, rows; on task j, columns) and the summary line."""
  n = len(results["tasks"])
  head = ["after task"] + [f"task {j} {tuple(results['tasks'][j])}" for j in range(n)]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for t, row in enumerate(results["accuracy"]):
    cells = [f"{100 * a:.1f}%" for a in row] + ["-"] * (n - len(row))
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
  lines.append("")
  line = (f"average accuracy {100 * results['average_accuracy']:.2f}%, average forgetting "
          f"{100 * results['forgetting']:.2f}%")
  if "linear_probe" in results:
    line += (f", final encoder linear probe {100 * results['linear_probe']:.2f}% / kNN "
             f"{100 * results['knn']:.2f}%")
  lines.append(line)
  return "\n".join(lines)
