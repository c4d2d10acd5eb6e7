"""SSACL table integration on synthetic data-lake tables: a self-supervised pair classifier
(with or without adversarial positives), then integrable-set discovery by community detection
(methods.md ``table_integration``; Ji et al., arXiv 2412.00324; code rmitbggroup/Robin).

Data (:mod:`jaxcl.data.tables`): a *training* table (its entity ids are never used for
training: self-supervised) and held-out *test* tables of other entities at one or more noise
strengths. Tuples are featurised by character-3-gram hashing and embedded by
:class:`jaxcl.models.tuples.PairModel` (``encode``; its symmetric ``classify`` head is the
matcher).

Training (own jitted optax loop, explicit :class:`TIState`, ``lax.scan``): before training a pool
of ``pool`` SSACL augmentations per training tuple (each a composition of ``aug_ops`` random
operations) is drawn on the host
(:func:`jaxcl.data.tables.augment`; a fixed pool keeps the loop one compiled scan); each step
takes ``batch`` anchors, ``n_pos`` positives from each anchor's pool (with replacement) and
``n_neg`` random *other* training tuples as negatives (which may be true duplicates -- the
self-supervised label noise of the method), and minimises :func:`jaxcl.losses.contrib.ssacl_loss`
(``w_adv = 0``: the arm without adversarial positives; ``w_adv > 0``: FGSM positives at radius
``epsilon`` with the corrected ``+`` sign). Adam, constant rate (in the optimiser state).

Evaluation on each test table: every tuple pair's ``p(a, b)``; **pairwise** precision / recall /
F1 of ``p > threshold`` against same-entity pairs and the average precision; then the graph of
predicted integrable pairs (edge weight ``p``) is partitioned by Louvain community detection
(``networkx.community.louvain_communities``, seeded; every tuple is a node, so singletons are
sets) and scored by **set-level** F1 (a predicted set counts only when it equals a true entity's
set of tuples exactly) and by the pairwise F1 of the co-clustered pairs (``cluster_pair_f1``).

``python -m jaxcl.main --config=configs/table_integration_synthetic.py --workdir=runs/ti``
writes ``workdir/table_integration.json``.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcl import jsonio
from jaxcl import losses
from jaxcl.data import tables
from jaxcl.models.tuples import PairModel


class TIState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array


def check(cfg):
  """Clear errors for the recipe block (``config.table_integration``)."""
  for name in ("hash_dim", "hidden", "dim", "head_hidden", "batch", "n_pos", "pool",
               "pgd_steps", "aug_ops"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.table_integration.{name} must be an int >= 1, got {v!r}")
  for name in ("steps", "n_neg"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      raise ValueError(f"config.table_integration.{name} must be an int >= 0, got {v!r}")
  if not cfg.lr > 0:
    raise ValueError(f"config.table_integration.lr must be > 0, got {cfg.lr!r}")
  if not cfg.w_adv >= 0 or not cfg.epsilon >= 0:
    raise ValueError(f"config.table_integration.w_adv and .epsilon must be >= 0, got "
                     f"{cfg.w_adv!r}, {cfg.epsilon!r}")
  if not 0 < cfg.threshold < 1:
    raise ValueError(f"config.table_integration.threshold must be in (0, 1), got "
                     f"{cfg.threshold!r}")


def make_data(config, seed):
  """Training table (seed-derived), its augmentation pool, and the test tables (one per noise
  in ``config.data.test_noises``), all as hashed features."""
  d, cfg = config.data, config.table_integration
  train = tables.make_table(10_000 + seed, d.train_entities, mean_copies=d.mean_copies,
                            noise=d.noise)
  rng = np.random.default_rng(20_000 + seed)
  augs = []
  for t in train.tuples:
    for _ in range(cfg.pool):
      a = t
      for _ in range(cfg.aug_ops):
        a = tables.augment(a, rng, train.tuples)
      augs.append(a)
  n = len(train.tuples)
  x = tables.hash_ngrams(train.tuples, cfg.hash_dim)
  xa = tables.hash_ngrams(augs, cfg.hash_dim).reshape(n, cfg.pool, cfg.hash_dim)
  tests = {}
  for k, noise in enumerate(d.test_noises):
    t = tables.make_table(30_000 + 100 * seed + k, d.test_entities, mean_copies=d.mean_copies,
                          noise=float(noise))
    tests[f"{noise:g}"] = (t, tables.hash_ngrams(t.tuples, cfg.hash_dim))
  return {"x": jnp.asarray(x), "x_aug": jnp.asarray(xa), "train": train, "tests": tests}


def _model(cfg):
  return PairModel(hidden=cfg.hidden, dim=cfg.dim, head_hidden=cfg.head_hidden)


def loss_fn(params, x, x_aug, rng, hyper, cfg):
  model = _model(cfg)
  n = x.shape[0]
  k_a, k_p, k_n = jax.random.split(rng, 3)
  idx = jax.random.choice(k_a, n, (cfg.batch,), replace=False)
  pidx = jax.random.randint(k_p, (cfg.batch, cfg.n_pos), 0, cfg.pool)
  nidx = (idx[:, None] + jax.random.randint(k_n, (cfg.batch, cfg.n_neg), 1, n)) % n
  enc = lambda v: model.apply(params, v, method=PairModel.encode)
  classify = lambda a, b: model.apply(params, a, b, method=PairModel.classify)
  e = enc(x[idx])
  ep = enc(x_aug[idx[:, None], pidx])
  en = enc(x[nidx])
  # w_adv and epsilon are traced (``hyper``): one compile serves every arm; the adversarial
  # positive is computed (and weighted by 0) for the w_adv = 0 arm too, so the arms cost the same.
  _, (nce, adv) = losses.contrib.ssacl_loss(classify, e, ep, en, epsilon=hyper["epsilon"], w_adv=1.0,
                                    pgd_steps=cfg.pgd_steps, return_terms=True)
  loss = jnp.mean(nce + hyper["w_adv"] * adv)
  return loss, {"loss": loss, "nce": jnp.mean(nce), "adv": jnp.mean(adv)}


def optimizer(lr):
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init_state(rng, cfg) -> TIState:
  params = _model(cfg).init(rng, jnp.zeros((1, cfg.hash_dim), jnp.float32))
  return TIState(params, optimizer(cfg.lr).init(params), jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "num_steps"))
def run_steps(state: TIState, x, x_aug, rng, hyper, cfg, num_steps):
  """``num_steps`` steps in one ``lax.scan``: the new state and the per-step metrics."""
  tx = optimizer(0.0)   # the rate lives in state.opt_state

  def step(st, _):
    key = jax.random.fold_in(rng, st.step)
    (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(st.params, x, x_aug, key, hyper,
                                                          cfg)
    updates, opt_state = tx.update(g, st.opt_state, st.params)
    return TIState(optax.apply_updates(st.params, updates), opt_state, st.step + 1), m

  return jax.lax.scan(step, state, None, length=num_steps)


def _static(cfg):
  d = cfg.to_dict()
  d["lr"] = d["w_adv"] = d["epsilon"] = 0.0   # traced: the optimiser state / ``hyper``
  return ml_collections.FrozenConfigDict(d)


def pair_probs(params, x, cfg):
  """``[N, N]`` integrability probabilities of every tuple pair of a table (rows padded to a
  multiple of 128 so that tables of different sizes share one compile)."""
  n = x.shape[0]
  pad = -n % 128
  x = jnp.pad(jnp.asarray(x, jnp.float32), ((0, pad), (0, 0)))
  return _pair_probs(params, x, (cfg.hidden, cfg.dim, cfg.head_hidden))[:n, :n]


@functools.partial(jax.jit, static_argnames=("dims",))
def _pair_probs(params, x, dims):
  model = PairModel(*dims)
  e = model.apply(params, x, method=PairModel.encode)
  n, d = e.shape
  a = jnp.broadcast_to(e[:, None], (n, n, d)).reshape(n * n, d)
  b = jnp.broadcast_to(e[None], (n, n, d)).reshape(n * n, d)
  return jax.nn.sigmoid(model.apply(params, a, b, method=PairModel.classify)).reshape(n, n)


def pair_prf(pred_pairs, true_pairs):
  """Precision, recall, F1 of a set of unordered pairs against the true pairs (0 when empty)."""
  tp = len(pred_pairs & true_pairs)
  p = tp / len(pred_pairs) if pred_pairs else 0.0
  r = tp / len(true_pairs) if true_pairs else 0.0
  return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def true_pairs(entity):
  ent = np.asarray(entity)
  return {(i, j) for i in range(len(ent)) for j in range(i + 1, len(ent)) if ent[i] == ent[j]}


def set_f1(pred_sets, entity):
  """Set-level F1: a predicted set is correct when it equals a true entity's tuple set."""
  if not pred_sets:
    raise ValueError("set_f1: 'pred_sets' must be non-empty")
  truth = {}
  for i, e in enumerate(np.asarray(entity).tolist()):
    truth.setdefault(e, set()).add(i)
  true_sets = {frozenset(s) for s in truth.values()}
  hit = sum(1 for s in pred_sets if frozenset(s) in true_sets)
  p, r = hit / len(pred_sets), hit / len(true_sets)
  return 2 * p * r / (p + r) if p + r else 0.0


def communities(prob, threshold, seed):
  """Louvain communities of the graph of pairs with ``prob > threshold`` (weight ``prob``)."""
  import networkx as nx  # pylint: disable=g-import-not-at-top
  n = prob.shape[0]
  g = nx.Graph()
  g.add_nodes_from(range(n))
  iu, ju = np.nonzero(np.triu(prob > threshold, 1))
  g.add_weighted_edges_from((int(i), int(j), float(prob[i, j])) for i, j in zip(iu, ju))
  return [set(c) for c in nx.community.louvain_communities(g, weight="weight", seed=seed)]


def evaluate(prob, entity, threshold, seed):
  from sklearn.metrics import average_precision_score  # pylint: disable=g-import-not-at-top
  prob = np.asarray(prob, np.float64)
  prob = (prob + prob.T) / 2
  n = prob.shape[0]
  iu, ju = np.triu_indices(n, 1)
  ent = np.asarray(entity)
  y = ent[iu] == ent[ju]
  s = prob[iu, ju]
  truth = true_pairs(ent)
  pred = {(int(i), int(j)) for i, j, v in zip(iu, ju, s) if v > threshold}
  p, r, f = pair_prf(pred, truth)
  sets = communities(prob, threshold, seed)
  co = {(min(i, j), max(i, j)) for c in sets for i in c for j in c if i < j}
  return {"pair_precision": p, "pair_recall": r, "pair_f1": f,
          "pair_ap": float(average_precision_score(y, s)),
          "set_f1": set_f1(sets, ent), "cluster_pair_f1": pair_prf(co, truth)[2],
          "num_sets": len(sets)}


def fit(config, seed, data=None):
  """One run: ``(state, metrics)``; metrics keyed ``<metric>@<test noise>`` plus ``train/*``."""
  cfg = config.table_integration
  check(cfg)
  t0 = time.time()
  data = make_data(config, seed) if data is None else data
  rng_init, rng_train = jax.random.split(jax.random.key(seed))
  state = init_state(rng_init, cfg)
  out = {}
  if cfg.steps:
    hyper = {"w_adv": jnp.float32(cfg.w_adv), "epsilon": jnp.float32(cfg.epsilon)}
    state, hist = run_steps(state, data["x"], data["x_aug"], rng_train, hyper, _static(cfg),
                            cfg.steps)
    last = max(1, cfg.steps // 10)
    out = {f"train/{k}": float(jnp.mean(v[-last:])) for k, v in hist.items()}
    if not np.isfinite(out["train/loss"]):
      raise FloatingPointError(f"table_integration: non-finite loss {out['train/loss']}")
  for noise, (t, x) in data["tests"].items():
    prob = pair_probs(state.params, x, cfg)
    for k, v in evaluate(prob, t.entity, cfg.threshold, seed).items():
      out[f"{k}@{noise}"] = v
  out["wall_s"] = round(time.time() - t0, 2)
  return state, out


def train(config, workdir):
  """``python -m jaxcl.main`` entry (``config.recipe = "table_integration"``)."""
  _, out = fit(config, config.seed)
  os.makedirs(workdir, exist_ok=True)
  jsonio.write_json(os.path.join(workdir, "table_integration.json"),
                    {"config": config.to_dict(), "metrics": out}, indent=1)
  print("table_integration: " + ", ".join(
      f"{k} {v:.4f}" for k, v in out.items() if k.startswith(("pair_f1", "set_f1"))), flush=True)
  return out
