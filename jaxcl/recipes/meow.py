"""MEOW / AdaMEOW and the plain-InfoNCE baseline on a heterogeneous graph: full-batch training
of a small meta-path encoder with its own jitted optax loop (not the image trainer).

Yu & Li, SDM 2023, arXiv 2212.13847 (MEOW); Yu et al., TKDE 2024 (AdaMEOW); code
jianxiangyu/MEOW (methods.md ``meow``). Data: :mod:`jaxcl.data.hetero` (papers = target nodes,
meta-paths P-A-P and P-V-P). Encoder (``code_meow/module/meow.py``, simplified)::

    coarse:  h_c = elu(x W_0c),   z_c = elu(A_mean h_c W_1c)       A_mean = (A_PAP + A_PVP) / 2
    fine:    per meta-path m:  h_m = elu(x W_0f + ctx_m W_m),  g_m = unit(elu(A_m h_m W_1m))
             ctx_PAP = mean of the paper's author features, ctx_PVP = its venue's features
             z_f = sum_m beta_m g_m,  beta = softmax_m mean_i q . tanh(W_a g_m,i + b_a)
    projections: p = tanh(W_p z + b_p) (shared by both views; L2-normalised in the losses)

``A_m`` are the GCN-normalised meta-path graphs ``D^-1/2 (A + I) D^-1/2`` as padded edge lists
(:mod:`jaxcl.graph`: ``metapath_adjacency`` then ``segment_sum`` message passing); the meta-path
contexts are fixed mean aggregations (``spmm`` of the row-normalised paper-author / paper-venue
incidences), computed once. Not reproduced (documented simplifications): PathSim pruning to
``nei_max`` neighbours, the masked-feature / masked-edge copies of the fine view, early
stopping on the training loss (a fixed step budget instead).

Objectives (``config.meow.method``), all over all ``N`` target nodes:

* ``infonce``: :func:`jaxcl.losses.info_nce` (coarse anchors, fine positives, every fine row a
  negative, weight 1, the positive in the denominator);
* ``meow``: per step, spherical k-means (:mod:`jaxcl.kmeans`, k-means++ then ``kmeans_iters``
  Lloyd steps, one rng per step) of the detached fine projections for each ``K`` in
  ``cluster_ks``; :func:`jaxcl.losses.contrib.meow_info_nce` with ``w_ij = T - #co-clusterings`` plus
  ``lambda_proto`` times the mean over clusterings of :func:`jaxcl.losses.contrib.proto_nce` (PCL
  concentrations, :func:`jaxcl.losses.contrib.concentration`);
* ``adameow``: :func:`jaxcl.losses.contrib.adameow_info_nce` (fine anchors, coarse candidates, weights
  ``sigmoid(MLP(z_f,i + z_c,j))`` learned jointly); ``weight_norm = "mean"`` (default) rescales
  each row's weights to mean 1 (the guard against the all-zero collapse); ``None`` is the
  released code's unconstrained form. The mean raw weight is logged (``train/weight_mean``).

Optimiser: Adam (rate in its state: one compile for a whole lr grid) at a constant rate for
``steps`` full-graph steps. Evaluation: frozen ``z_f`` (primary) and ``z_c`` (pre-projection),
standardised, scikit-learn ``LogisticRegression`` fitted on the 20-per-class training papers;
macro- and micro-F1 on the validation and test papers. ``train`` writes ``workdir/meow.json``.

``python -m jaxcl.main --config=configs/meow_synthetic.py --workdir=runs/meow``
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
from jaxcl import graph, kmeans, losses
from jaxcl.data import hetero

METHODS = ("infonce", "meow", "adameow")
METAPATHS = ("PAP", "PVP")
PAD = 8192


class MeowState(NamedTuple):
  """Explicit training state: parameters (encoder + AdaMEOW's weight MLP), Adam state, step."""
  params: Any
  opt_state: Any
  step: jax.Array


def check(cfg):
  """Clear errors for the recipe block (``config.meow``)."""
  if cfg.method not in METHODS:
    raise ValueError(f"config.meow.method must be one of {METHODS}, got {cfg.method!r}")
  for name in ("dim", "steps", "kmeans_iters", "block_size"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
      raise ValueError(f"config.meow.{name} must be an int >= 1, got {v!r}")
  if not cfg.lr > 0 or not cfg.temperature > 0 or cfg.lambda_proto < 0:
    raise ValueError(f"config.meow.lr and .temperature must be > 0 and .lambda_proto >= 0, got "
                     f"{cfg.lr!r}, {cfg.temperature!r}, {cfg.lambda_proto!r}")
  ks = tuple(cfg.cluster_ks)
  if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in ks):
    raise ValueError(f"config.meow.cluster_ks must be a non-empty list of ints >= 2, got {ks!r}")
  if cfg.weight_norm not in losses.meow.WEIGHT_NORMS:
    raise ValueError(f"config.meow.weight_norm must be one of {losses.meow.WEIGHT_NORMS}, got "
                     f"{cfg.weight_norm!r}")


def _gcn_edges(a):
  """``D^-1/2 (A + I) D^-1/2`` of a dense binary ``[N, N]`` as padded edges."""
  n = a.shape[0]
  e = graph.from_dense(np.asarray(a, np.float32) + np.eye(n, dtype=np.float32))
  return graph.pad(graph.normalize(e, "sym"), PAD)


def build_inputs(g: hetero.HeteroGraph):
  """Features, fixed meta-path contexts and the normalised meta-path graphs (device arrays)."""
  mps = hetero.metapaths(g)
  n = len(g.labels)
  k = g.paper_author.shape[1]
  pa = graph.normalize(graph.edges(np.repeat(np.arange(n), k), g.paper_author.ravel(),
                                   (n, len(g.x_author))), "row")
  pv = graph.edges(np.arange(n), g.paper_venue, (n, len(g.x_venue)))
  adjs = [_gcn_edges(mps[m]) for m in METAPATHS]
  mean = graph.Edges(jnp.concatenate([a.rows for a in adjs]),
                     jnp.concatenate([a.cols for a in adjs]),
                     jnp.concatenate([a.weights / len(adjs) for a in adjs]), (n, n))
  return {"x": jnp.asarray(g.x_paper),
          "ctx": [graph.spmm(pa, g.x_author), graph.spmm(pv, g.x_venue)],
          "adj": adjs, "adj_mean": mean}


def init_params(rng, feat_dim, dim, hidden=16):
  glorot = jax.nn.initializers.glorot_uniform()
  ks = iter(jax.random.split(rng, 16))
  w = lambda i, o: glorot(next(ks), (i, o))
  z = lambda o: jnp.zeros((o,), jnp.float32)
  m = len(METAPATHS)
  return {"c0": w(feat_dim, dim), "c0b": z(dim), "c1": w(dim, dim),
          "f0": w(feat_dim, dim), "f0b": z(dim), "ctx": [w(feat_dim, dim) for _ in range(m)],
          "f1": [w(dim, dim) for _ in range(m)],
          "att": w(dim, dim), "attb": z(dim), "q": glorot(next(ks), (dim, 1))[:, 0],
          "proj": w(dim, dim), "projb": z(dim),
          "mlp": losses.contrib.init_weight_mlp(next(ks), dim, hidden)}


def _unit(x):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))


def encode(params, inputs):
  """``{"z_c", "z_f", "p_c", "p_f"}`` ``[N, D]`` (module docstring)."""
  x = inputs["x"]
  h_c = jax.nn.elu(x @ params["c0"] + params["c0b"])
  z_c = jax.nn.elu(graph.spmm(inputs["adj_mean"], h_c @ params["c1"]))
  gs = []
  for ctx, w_ctx, w1, adj in zip(inputs["ctx"], params["ctx"], params["f1"], inputs["adj"]):
    h = jax.nn.elu(x @ params["f0"] + ctx @ w_ctx + params["f0b"])
    gs.append(_unit(jax.nn.elu(graph.spmm(adj, h @ w1))))
  g = jnp.stack(gs)                                                     # [M, N, D]
  score = jnp.mean(jnp.tanh(g @ params["att"] + params["attb"]) @ params["q"], axis=1)
  beta = jax.nn.softmax(score)
  z_f = jnp.einsum("m,mnd->nd", beta, g)
  proj = lambda z: jnp.tanh(z @ params["proj"] + params["projb"])
  return {"z_c": z_c, "z_f": z_f, "p_c": proj(z_c), "p_f": proj(z_f), "beta": beta}


def clusterings(z, rng, ks, num_iters):
  """Spherical k-means of ``z`` for each ``K`` in ``ks``: ``[(centroids, assignments)]``."""
  z = jax.lax.stop_gradient(z)
  out = []
  for t, k in enumerate(ks):
    res = kmeans.kmeans(z, k, jax.random.fold_in(rng, t), num_iters=num_iters, metric="cosine")
    out.append((res.centroids, res.assignments))
  return out


def loss_fn(params, inputs, rng, cfg):
  e = encode(params, inputs)
  kw = dict(temperature=cfg.temperature)
  out = {}
  if cfg.method == "infonce":
    total = jnp.mean(losses.info_nce(e["p_c"], e["p_f"], impl=cfg.impl,
                                     block_size=cfg.block_size, **kw))
  elif cfg.method == "meow":
    cl = clusterings(e["p_f"], rng, tuple(cfg.cluster_ks), cfg.kmeans_iters)
    assign = jnp.stack([a for _, a in cl], axis=1)
    info = jnp.mean(losses.contrib.meow_info_nce(e["p_c"], e["p_f"], assign, impl=cfg.impl,
                                         block_size=cfg.block_size, **kw))
    proto = jnp.mean(jnp.stack([
        jnp.mean(losses.contrib.proto_nce(e["p_c"], mu, a, losses.contrib.concentration(
            e["p_f"], mu, a, temperature=cfg.temperature)))
        for mu, a in cl]))
    out.update(info=info, proto=proto)
    total = info + cfg.lambda_proto * proto
  else:
    per, wmean = losses.contrib.adameow_info_nce(e["p_f"], e["p_c"], params["mlp"],
                                         normalize_weights=cfg.weight_norm,
                                         block_size=cfg.ada_block, return_weights=True, **kw)
    total = jnp.mean(per)
    out["weight_mean"] = jnp.mean(wmean)
  out["loss"] = total
  return total, out


def optimizer(lr):
  """Adam with the rate in its state (one compiled loop for every lr of a grid)."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def init_state(rng, inputs, cfg) -> MeowState:
  params = init_params(rng, inputs["x"].shape[1], cfg.dim, cfg.weight_hidden)
  return MeowState(params, optimizer(cfg.lr).init(params), jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "num_steps"))
def run_steps(state: MeowState, inputs, rng, cfg, num_steps):
  """``num_steps`` full-batch steps in one ``lax.scan``; the new state and per-step metrics."""
  tx = optimizer(0.0)   # the rate lives in state.opt_state (inject_hyperparams)

  def step(st, _):
    key = jax.random.fold_in(rng, st.step)
    (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(st.params, inputs, key, cfg)
    updates, opt_state = tx.update(g, st.opt_state, st.params)
    return MeowState(optax.apply_updates(st.params, updates), opt_state, st.step + 1), m

  return jax.lax.scan(step, state, None, length=num_steps)


def _static(cfg):
  """The recipe block as a hashable static argument, without the lr (it is in the state)."""
  d = cfg.to_dict()
  d["lr"] = 0.0
  d["cluster_ks"] = tuple(d["cluster_ks"])
  return ml_collections.FrozenConfigDict(d)


def probe(emb, g: hetero.HeteroGraph, seed=0):
  """Macro / micro F1 of a logistic regression fitted on the training papers."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import f1_score  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  x = np.asarray(emb, np.float64)
  scaler = StandardScaler().fit(x[g.train])
  clf = LogisticRegression(max_iter=2000, random_state=seed).fit(
      scaler.transform(x[g.train]), g.labels[g.train])
  out = {}
  for split in ("val", "test"):
    idx = getattr(g, split)
    pred = clf.predict(scaler.transform(x[idx]))
    out[f"{split}/macro_f1"] = float(f1_score(g.labels[idx], pred, average="macro"))
    out[f"{split}/micro_f1"] = float(f1_score(g.labels[idx], pred, average="micro"))
  return out


def fit(cfg, g: hetero.HeteroGraph, seed, inputs=None):
  """Trains one run; returns ``(state, embeddings, metrics)`` (``steps = 0``: the untrained
  encoder)."""
  check(cfg)
  t0 = time.time()
  inputs = build_inputs(g) if inputs is None else inputs
  rng_init, rng_train = jax.random.split(jax.random.key(seed))
  state = init_state(rng_init, inputs, cfg)
  m = {}
  if cfg.steps:
    state, hist = run_steps(state, inputs, rng_train, _static(cfg), cfg.steps)
    last = max(1, cfg.steps // 10)
    m = {f"train/{k}": float(jnp.mean(v[-last:])) for k, v in hist.items()}
    m["train/loss_first"] = float(hist["loss"][0])
    if not np.isfinite(m["train/loss"]):
      raise FloatingPointError(f"meow: non-finite training loss {m['train/loss']}")
  emb = jax.tree.map(np.asarray, jax.jit(encode)(state.params, inputs))
  out = {**probe(emb["z_f"], g, seed),
         **{f"coarse_{k}": v for k, v in probe(emb["z_c"], g, seed).items()}, **m,
         "beta_pap": float(emb["beta"][0]), "wall_s": round(time.time() - t0, 2)}
  return state, emb, out


def data_from_config(config, seed=None):
  return hetero.make_hetero(config.seed if seed is None else seed, **config.data.to_dict())


def train(config, workdir):
  """``python -m jaxcl.main`` entry (``config.recipe = "meow"``): one run on the synthetic
  graph of ``config.data`` (generated from ``config.seed``); writes ``workdir/meow.json``."""
  g = data_from_config(config)
  _, emb, out = fit(config.meow, g, config.seed)
  os.makedirs(workdir, exist_ok=True)
  jsonio.write_json(os.path.join(workdir, "meow.json"),
                    {"config": config.to_dict(), "metrics": out}, indent=1)
  np.savez(os.path.join(workdir, "embeddings.npz"), z_f=emb["z_f"], z_c=emb["z_c"])
  print(f"meow: {config.meow.method} test macro-F1 {out['test/macro_f1']:.4f} (coarse "
        f"{out['coarse_test/macro_f1']:.4f}) ({out['wall_s']:.1f} s)", flush=True)
  return out
