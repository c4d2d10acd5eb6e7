"""Multistage Contrastive Learning (MCL): k-means between stages, same-cluster negatives.

Zhang, Lan, Qu, Cheng, Feng, Hooi, "Learning the Unlearned: Mitigating Feature Suppression in
Contrastive Learning", ECCV 2024, arXiv 2402.11816. Stage ``s = 1..S`` trains a fresh encoder
with the shared trainer (:func:`jaxcl.train.train`) and the config's ordinary loss; from
stage 2 on its negatives come only from the anchor's pseudo-cluster::

    l_i = -log  e^{s(z_i, z_i+)/T} / ( e^{s(z_i, z_i+)/T} + sum_{j != i, pi_s(j) = pi_s(i)} e^{s(z_i, z_j)/T} )

    pi_s(i) = (c_1(i), ..., c_{s-1}(i))   (cumulative, the paper)   or   c_{s-1}(i)   (the code)

where ``c_t`` are the k-means clusters (``mcl.num_clusters``, spherical k-means of
:mod:`jaxcl.kmeans`) of stage ``t``'s L2-normalised training-set features. Stage 1 is plain
contrastive learning. ``mcl.mechanism``:

* ``"sampler"`` (the reference code): every global batch is drawn from one pseudo-cluster
  (:class:`jaxcl.data.grouped.GroupedBatches`, identical on every device and process), and
  the loss is unchanged;
* ``"mask"``: ordinary uniform batches, the pseudo-label is the batch's ``y`` and the loss
  gets ``group_ids=y`` (negatives masked by pseudo-cluster inside the kernel).

The final representation is the concatenation of all stages' features; the driver reports the
linear probe and kNN of every stage and of the concatenation for the dataset's label and for
each of its ``extra_labels`` (``digits_easy``: the easy feature), plus the agreement (NMI) of
each clustering with those labels, in ``workdir/mcl.json``.

Stage ``s`` lives in ``workdir/stage_<s>``; re-running resumes (finished stages are
restored, not retrained).

Example:
  ``python -m jaxcl.main --config=configs/mcl_digits.py --workdir=runs/mcl_digits``
  (``jaxcl.main`` dispatches here when the config has an ``mcl`` block.)
"""
from __future__ import annotations

import functools
import inspect
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcl import jsonio

MECHANISMS = ("sampler", "mask")
FEATURES = ("encoder", "embedding")
SEED_STRIDE = 1000  # stage s trains with seed + SEED_STRIDE * (s - 1)


def default_mcl() -> ml_collections.ConfigDict:
  """The ``config.mcl`` block: stage settings on top of the trainer's config."""
  m = ml_collections.ConfigDict()
  m.num_stages = 2
  m.num_clusters = 5          # K of the k-means between stages (paper default 10)
  m.cumulative = True         # paper: tuple of all previous stages' clusters; False: code
  m.mechanism = "sampler"     # "sampler" (cluster-homogeneous batches) | "mask" (group_ids)
  m.cluster_on = "embedding"  # features clustered: "embedding" (head output) | "encoder"
  m.eval_on = "encoder"       # features probed and concatenated
  m.kmeans_iters = 50
  return m


def _check(config):
  from jaxcl.train.config import ConfigError
  m = config.mcl
  unknown = set(m.keys()) - set(default_mcl().keys())
  if unknown:
    raise ConfigError(f"unknown config key(s) {sorted('config.mcl.' + k for k in unknown)}")
  if m.num_stages < 1 or m.num_clusters < 1:
    raise ConfigError(f"config.mcl.num_stages ({m.num_stages}) and num_clusters "
                      f"({m.num_clusters}) must be >= 1")
  if m.mechanism not in MECHANISMS:
    raise ConfigError(f"config.mcl.mechanism={m.mechanism!r} is not one of {MECHANISMS}")
  for key in ("cluster_on", "eval_on"):
    if m[key] not in FEATURES:
      raise ConfigError(f"config.mcl.{key}={m[key]!r} is not one of {FEATURES}")


def stage_config(config, stage):
  """The trainer config of ``stage`` (1-based): ``config`` without ``mcl``, its own seed, and
  no final trainer evaluation (the driver evaluates every stage itself)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    if "mcl" in c:
      del c["mcl"]
  c.seed = config.seed + SEED_STRIDE * (stage - 1)
  c.eval.at_end = False
  return c


def pseudo_labels(clusters, num_clusters, cumulative=True):
  """``[N]`` int32 pseudo-labels ``0..G-1`` from the list of per-stage cluster arrays: the
  tuple of all of them (``cumulative``) or the last one, numbered in sorted tuple order."""
  clusters = [np.asarray(c, np.int64) for c in clusters]
  if not clusters:
    raise ValueError("pseudo_labels: no clustering yet (stage 1 has none)")
  if not cumulative:
    clusters = clusters[-1:]
  code = np.zeros_like(clusters[0])
  for c in clusters:
    code = code * num_clusters + c
  return np.unique(code, return_inverse=True)[1].astype(np.int32).reshape(-1)


def cluster(features, num_clusters, seed, num_iters=50):
  """Spherical k-means (k-means++ seeds from ``seed``) of ``features``; ``[N]`` int32."""
  from jaxcl import kmeans
  res = kmeans.kmeans(jnp.asarray(features), num_clusters, jax.random.PRNGKey(seed),
                      num_iters=num_iters, metric="cosine")
  return np.asarray(res.assignments)


def grouped_objective(config):
  """``objective(z, labels, rng, axis_name)`` calling the two-view loss with
  ``group_ids=labels`` (the ``"mask"`` mechanism; the batch's ``y`` is the pseudo-label)."""
  from jaxcl.train.config import ConfigError, loss_fn
  fn = loss_fn(config)
  if config.views.num != 2 or "group_ids" not in inspect.signature(fn).parameters:
    raise ConfigError(f"config.mcl.mechanism='mask' needs a two-view loss with 'group_ids' "
                      f"and views.num=2 (got {config.loss.name!r}, {config.views.num} views)")
  loss = functools.partial(fn, **dict(config.loss.kwargs))

  def objective(z, labels, rng, axis_name):
    del rng
    return loss(z[:, 0], z[:, 1], group_ids=labels, axis_name=axis_name)

  return objective


def restore(config, stage_dir, objective=None):
  """``(state, parts)``: the latest train state of a stage, restored into ``setup``'s layout
  (``objective``: the one the stage trained with, when not the config's)."""
  import orbax.checkpoint as ocp
  from jaxcl.train import checkpoint as ckpt
  from jaxcl.train import trainer
  parts = trainer.setup(config, objective=objective)
  mngr = ckpt.manager(os.path.abspath(os.path.join(stage_dir, "checkpoints")), use_async=False)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        parts["state"])
  state = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))["state"]
  mngr.close()
  return state, parts


def features(parts, state, x, which, batch_size=1024):
  """``[N, D]`` encoder features or head embeddings of ``x`` (eval mode, all devices)."""
  from jaxcl.eval.evaluate import encode
  model = parts["eval_model"]
  variables = {"params": state.params,
               **({"batch_stats": state.batch_stats} if state.batch_stats else {})}
  out = 0 if which == "encoder" else 1
  return encode(lambda v, xb: model.apply(v, xb, train=False)[out], variables, x,
                parts["mesh"], batch_size)


def _unit(f):
  f = np.asarray(f, np.float32).reshape(len(f), -1)
  return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def train(config, workdir):
  """Runs every stage and evaluates; returns (and writes to ``workdir/mcl.json``) the results."""
  from jaxcl import data
  from jaxcl.data.grouped import GroupedBatches
  from jaxcl.eval import evaluate
  from jaxcl.train import trainer
  from sklearn.metrics import normalized_mutual_info_score
  _check(config)
  m = config.mcl
  info = data.info(config.data.name)
  train_arr = data.load_arrays(config.data.name, config.data.train_split,
                               data_dir=config.data.data_dir)
  test_arr = data.load_arrays(config.data.name, config.data.eval_split,
                              data_dir=config.data.data_dir)
  labels = {"label": info.num_classes, **dict(info.extra_labels)}
  key_of = lambda name: "y" if name == "label" else name
  os.makedirs(workdir, exist_ok=True)
  clusters, feats, stages = [], [], []
  for s in range(1, m.num_stages + 1):
    c = stage_config(config, s)
    stage_dir = os.path.join(workdir, f"stage_{s}")
    record = {"stage": s, "steps": c.num_steps}
    if s == 1:
      trainer.train(c, stage_dir)
    else:
      groups = pseudo_labels(clusters, m.num_clusters, m.cumulative)
      if m.mechanism == "sampler":
        it = GroupedBatches(train_arr["x"], train_arr["y"], groups,
                            global_batch_size=c.batch_size, seed=c.seed)
        trainer.train(c, stage_dir, iterator=it)
      else:
        it = GroupedBatches(train_arr["x"], groups, np.zeros_like(groups),
                            global_batch_size=c.batch_size, seed=c.seed)
        trainer.train(c, stage_dir, iterator=it, objective=grouped_objective(c))
      sizes = np.bincount(groups)
      record.update(num_groups=int(len(sizes)), group_sizes=sizes.tolist(),
                    batches_per_epoch=it.batches_per_epoch,
                    rows_per_epoch=it.batches_per_epoch * c.batch_size)
    state, parts = restore(c, stage_dir)
    ftr = features(parts, state, train_arr["x"], m.eval_on, c.eval.batch_size)
    fte = features(parts, state, test_arr["x"], m.eval_on, c.eval.batch_size)
    feats.append((ftr, fte))
    if s < m.num_stages:
      fc = ftr if m.cluster_on == m.eval_on else features(parts, state, train_arr["x"],
                                                          m.cluster_on, c.eval.batch_size)
      clusters.append(cluster(fc, m.num_clusters, c.seed, m.kmeans_iters))
      record["cluster_nmi"] = {
          name: float(normalized_mutual_info_score(train_arr[key_of(name)], clusters[-1]))
          for name in labels}
    stages.append(record)

  def probe(ftr, fte):
    out = {}
    for name, k in labels.items():
      r = evaluate.evaluate_features(ftr, train_arr[key_of(name)], fte, test_arr[key_of(name)],
                                     k, config.eval, config.seed)
      out[name] = {"linear_probe": r["linear_probe"], "knn": r["knn"]}
    return out

  reps = {f"stage {s + 1}": probe(*f) for s, f in enumerate(feats)}
  if len(feats) > 1:  # each stage's rows L2-normalised so no stage dominates by scale
    reps["concat"] = probe(np.concatenate([_unit(f[0]) for f in feats], 1),
                           np.concatenate([_unit(f[1]) for f in feats], 1))
  results = {"stages": stages, "representations": reps, "labels": list(labels)}
  if jax.process_index() == 0:
    jsonio.write_json(os.path.join(workdir, "mcl.json"), results, indent=1)
    print(markdown(results), flush=True)
  return results


def markdown(results):
  """One row per representation: linear probe / kNN (%) for every label."""
  names = results["labels"]
  head = ["representation"] + [f"{n} {m}" for n in names for m in ("probe", "kNN")]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for rep, r in results["representations"].items():
    cells = [f"{100 * r[n][m]:.2f}%" for n in names for m in ("linear_probe", "knn")]
    lines.append(f"| {rep} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
