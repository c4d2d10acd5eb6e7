"""MMHCL (Xu et al., "MMHCL: Multi-Modal Hypergraph Contrastive Learning for Recommendation",
arXiv 2504.16576; code Xu107/MMHCL) and its LightGCN + BPR baseline: full-batch graph training
with its own small jitted optax loop (not the image trainer).

Model (methods.md ``mmhcl``; the reference's ``Models.py`` / ``main.py``). Free embedding tables
(Xavier-uniform, ``dim``): ``E_u, E_i`` for the user-item graph and, for MMHCL, ``E_uu, E_ii``::

    U_1, I_1 = LightGCN(A_ui, [E_u; E_i], L = ui_layers)       (first order, layer mean)
    U_2 = A_uu^{u_layers} E_uu,   A_uu = D^-1 (R R^T - diag)    (u2u hypergraph, items = edges)
    I_2 = A_ii^{i_layers} E_ii,   A_ii = D^-1/2 H H^T D^-1/2,   H = [kNN_k(f_1) | kNN_k(f_2)]
    U = U_1 + unit(U_2),   I = I_1 + unit(I_2)                   (fusion; LightGCN: U = U_1)

    L = BPR(U, I) + reg * (|u|^2 + |i+|^2 + |i-|^2) / (2 B)
        + lambda_i * GRACE(I_v, I_2) + lambda_u * GRACE(U_v, U_2)

``view = "fused"`` (the code): ``U_v, I_v = U, I``; ``view = "first_order"`` (the paper's text,
first- vs second-order MI): ``U_v, I_v = U_1, I_1``. GRACE is the full-node InfoNCE over all
users / all items (:func:`jaxcl.losses.contrib.grace_loss`, anchors in the first view, inter- and
intra-view negatives, ``T = 0.6``) through the one blockwise kernel. BPR batches: ``batch_size``
users drawn uniformly, one training positive each and one uniform negative outside the user's
training items (the first of 8 draws that is not a positive). Hypergraphs and LightGCN run as
``segment_sum`` message passing (:mod:`jaxcl.graph`); the hypergraph adjacencies are applied
factored (``H (H^T x)``), never formed.

Optimiser: Adam at a constant ``lr`` (the reference: 1e-4 with a 0.96-per-50-epochs decay over
hundreds of GPU epochs; the CPU budget needs a larger rate, tuned on the validation split with
the same grid for both methods by the study). Defaults otherwise the reference's: dim 64,
``L = 2``, ``L_u = 3``, ``L_i = 2``, ``topk = 5``, ``lambda_i = 0.07``, ``lambda_u = 0.03``,
``reg = 1e-3``, ``B = 1024``.

Evaluation: Recall@20 / NDCG@20 over all items with the user's training items removed (and the
validation items for the test split), for all users and for the sparse users (``<= sparse_max``
training interactions: the cold-start claim). No checkpoints (a run is seconds); ``train``
writes ``workdir/mmhcl.json`` and the final embeddings ``workdir/embeddings.npz``.

``python -m jaxcl.main --config=configs/mmhcl_synthetic.py --workdir=runs/mmhcl``
"""
from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcl import jsonio
from jaxcl import losses
from jaxcl.data.recsys import make_recsys
from jaxcl.eval import recsys as metrics
from jaxcl import graph

METHODS = ("lightgcn", "mmhcl")
VIEWS = ("fused", "first_order")
PAD = 4096


def check(cfg):
  """Clear errors for the recipe block (``config.mmhcl``)."""
  if cfg.method not in METHODS:
    raise ValueError(f"config.mmhcl.method must be one of {METHODS}, got {cfg.method!r}")
  if cfg.view not in VIEWS:
    raise ValueError(f"config.mmhcl.view must be one of {VIEWS}, got {cfg.view!r}")
  for name in ("dim", "batch_size", "steps", "topk", "k"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.mmhcl.{name} must be an int >= 1, got {v!r}")
  if not cfg.lr > 0 or not cfg.temperature > 0:
    raise ValueError(f"config.mmhcl.lr and .temperature must be > 0, got {cfg.lr!r}, "
                     f"{cfg.temperature!r}")


def build_graphs(data, topk):
  """``{"ui", "uu", "ii"}`` operators and the BPR sampler's tables from the training split."""
  u, i = data.train
  nu, ni = data.num_users, data.num_items
  order = np.lexsort((i, u))
  counts = np.bincount(u, minlength=nu)
  # Edge lists padded (weight 0) to a multiple of PAD: one compiled step for every seed.
  r = graph.pad(graph.edges(u, i, (nu, ni)), PAD)
  return {
      "ui": graph.normalize(graph.pad(graph.bipartite(u, i, nu, ni), PAD), "sym"),
      "uu": graph.hypergraph_adjacency(r, norm="row", drop_self=True),   # = u2u_hypergraph
      "ii": graph.i2i_hypergraph([jnp.asarray(f) for f in data.features], topk),
      "items": jnp.asarray(np.pad(i[order], (0, -len(i) % PAD)), jnp.int32),
      "indptr": jnp.asarray(np.concatenate([[0], np.cumsum(counts)]), jnp.int32),
      "seen": jnp.asarray(data.matrix("train")),
  }


def init_params(rng, num_users, num_items, dim, method):
  xavier = jax.nn.initializers.xavier_uniform()
  k = jax.random.split(rng, 4)
  p = {"user": xavier(k[0], (num_users, dim)), "item": xavier(k[1], (num_items, dim))}
  if method == "mmhcl":
    p["user_uu"] = xavier(k[2], (num_users, dim))
    p["item_ii"] = xavier(k[3], (num_items, dim))
  return p


def _unit(x):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))


def embed(params, graphs, cfg):
  """Final user / item embeddings (and, for MMHCL, the first- and second-order parts)."""
  nu = params["user"].shape[0]
  x = graph.lightgcn(graphs["ui"], jnp.concatenate([params["user"], params["item"]]),
                         num_layers=cfg.ui_layers)
  u1, i1 = x[:nu], x[nu:]
  if cfg.method == "lightgcn":
    return {"user": u1, "item": i1}
  u2 = graph.propagate(graphs["uu"], params["user_uu"], num_layers=cfg.u_layers)
  i2 = graph.propagate(graphs["ii"], params["item_ii"], num_layers=cfg.i_layers)
  return {"user": u1 + _unit(u2), "item": i1 + _unit(i2), "user_1": u1, "item_1": i1,
          "user_2": u2, "item_2": i2}


@functools.partial(jax.jit, static_argnames=("batch_size",))
def sample_batch(rng, graphs, batch_size):
  """``(users, pos, neg)`` ``[B]``: uniform users, a uniform training positive each, a
  uniform negative outside the user's training items (first of 8 draws)."""
  ku, kp, kn = jax.random.split(rng, 3)
  nu, ni = graphs["seen"].shape
  users = jax.random.randint(ku, (batch_size,), 0, nu)
  lo, hi = graphs["indptr"][users], graphs["indptr"][users + 1]
  off = jnp.floor(jax.random.uniform(kp, (batch_size,)) * (hi - lo)).astype(jnp.int32)
  pos = graphs["items"][lo + jnp.minimum(off, hi - lo - 1)]
  cand = jax.random.randint(kn, (batch_size, 8), 0, ni)
  ok = ~graphs["seen"][users[:, None], cand]
  neg = jnp.take_along_axis(cand, jnp.argmax(ok, axis=1)[:, None], axis=1)[:, 0]
  return users, pos, neg


def loss_fn(params, graphs, batch, cfg):
  e = embed(params, graphs, cfg)
  users, pos, neg = batch
  u, p, n = e["user"][users], e["item"][pos], e["item"][neg]
  bpr = jnp.mean(losses.contrib.bpr_loss(u, p, n))
  reg = cfg.reg * 0.5 * (jnp.sum(u * u) + jnp.sum(p * p) + jnp.sum(n * n)) / users.shape[0]
  out = {"bpr": bpr, "reg": reg}
  total = bpr + reg
  if cfg.method == "mmhcl":
    view = "" if cfg.view == "fused" else "_1"
    kw = dict(temperature=cfg.temperature, impl=cfg.impl, block_size=cfg.block_size)
    out["cl_item"] = jnp.mean(losses.contrib.grace_loss(e["item" + view], e["item_2"], **kw))
    out["cl_user"] = jnp.mean(losses.contrib.grace_loss(e["user" + view], e["user_2"], **kw))
    total = total + cfg.lambda_i * out["cl_item"] + cfg.lambda_u * out["cl_user"]
  out["loss"] = total
  return total, out


def optimizer(lr):
  """Adam with the rate in its state (one compiled step for every lr of a grid)."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


@functools.partial(jax.jit, static_argnames=("cfg", "num_steps"))
def run_steps(params, opt_state, graphs, rng, cfg, num_steps):
  """``num_steps`` training steps in one ``lax.scan``; returns the new state and the mean
  metrics."""
  tx = optimizer(cfg.lr)

  def step(carry, key):
    params, opt_state = carry
    batch = sample_batch(key, graphs, cfg.batch_size)
    (_, m), g = jax.value_and_grad(loss_fn, has_aux=True)(params, graphs, batch, cfg)
    updates, opt_state = tx.update(g, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), m

  (params, opt_state), m = jax.lax.scan(step, (params, opt_state),
                                        jax.random.split(rng, num_steps))
  return params, opt_state, jax.tree.map(jnp.mean, m)


class _Static:
  """The recipe block as a hashable static argument (the lr is excluded: it lives in the
  optimiser state)."""

  def __init__(self, cfg):
    self._d = {k: v for k, v in cfg.items() if k not in ("lr",)}
    self._d["lr"] = 0.0

  def __getattr__(self, k):
    try:
      return self._d[k]
    except KeyError as e:
      raise AttributeError(k) from e

  def _key(self):
    return tuple(sorted((k, v if not isinstance(v, list) else tuple(v))
                        for k, v in self._d.items()))

  def __hash__(self):
    return hash(self._key())

  def __eq__(self, other):
    return isinstance(other, _Static) and self._key() == other._key()


def evaluate(emb, data, k=20, sparse_max=5):
  """Recall@k / NDCG@k on the validation and test splits, all / sparse / active users."""
  scores = emb["user"] @ emb["item"].T
  train, val, test = data.matrix("train"), data.matrix("val"), data.matrix("test")
  counts = data.train_counts()
  groups = {"all": np.ones(data.num_users, bool), "sparse": counts <= sparse_max,
            "active": counts > sparse_max}
  out = {}
  for split, exclude, relevant in (("val", train, val), ("test", train | val, test)):
    res = metrics.summarize(*metrics.topk_metrics(scores, exclude, relevant, k), groups)
    out.update({f"{split}/{name}": v for name, v in res.items()})
  return out


def fit(cfg, data, seed):
  """Trains one run; returns ``(params, embeddings, metrics dict)``."""
  check(cfg)
  t0 = time.time()
  graphs = build_graphs(data, cfg.topk)
  rng_init, rng_train = jax.random.split(jax.random.key(seed))
  params = init_params(rng_init, data.num_users, data.num_items, cfg.dim, cfg.method)
  opt_state = optimizer(cfg.lr).init(params)
  static = _Static(cfg)
  params, opt_state, m = run_steps(params, opt_state, graphs, rng_train, static, cfg.steps)
  m = {f"train/{k}": float(v) for k, v in m.items()}
  if not np.isfinite(m["train/loss"]):
    raise FloatingPointError(f"mmhcl: non-finite training loss {m['train/loss']}")
  emb = jax.jit(embed, static_argnames=("cfg",))(params, graphs, static)
  emb = jax.tree.map(np.asarray, emb)
  out = {**evaluate(emb, data, cfg.k, cfg.sparse_max), **m,
         "wall_s": round(time.time() - t0, 2)}
  return params, emb, out


def data_from_config(config, seed=None):
  return make_recsys(config.seed if seed is None else seed, **config.data.to_dict())


def train(config, workdir):
  """``python -m jaxcl.main`` entry (``config.recipe = "mmhcl"``): one run on the synthetic
  set of ``config.data`` (generated from ``config.seed``); writes ``workdir/mmhcl.json``."""
  data = data_from_config(config)
  _, emb, out = fit(config.mmhcl, data, config.seed)
  os.makedirs(workdir, exist_ok=True)
  jsonio.write_json(os.path.join(workdir, "mmhcl.json"),
                    {"config": config.to_dict(), "metrics": out}, indent=1)
  np.savez(os.path.join(workdir, "embeddings.npz"), user=emb["user"], item=emb["item"])
  print(f"mmhcl: {config.mmhcl.method} test recall@{config.mmhcl.k} "
        f"{out['test/recall_all']:.4f} (sparse users {out['test/recall_sparse']:.4f}), "
        f"ndcg {out['test/ndcg_all']:.4f} ({out['wall_s']:.1f} s)", flush=True)
  return out
