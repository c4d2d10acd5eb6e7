"""MCLRec (Qin et al., "Meta-optimized Contrastive Learning for Sequential Recommendation",
SIGIR 2023, arXiv 2304.07763; code QinHsiu/MCLRec) and its baselines SASRec and CL4SRec, with
their own small jitted optax loop (not the image trainer).

Encoder: :class:`jaxcl.models.SASRec` (``h`` = last position). Views: CL4SRec's crop / mask /
reorder (:func:`jaxcl.data.sequences.cl4srec_augment`, one op per sequence, rates 0.5 / 0.5 /
0.8 as MCLRec's yaml) give ``h0, h1``; MCLRec's augmenters ``A1, A2`` = MLP ``d -> d/2 -> d/4 ->
d`` with GELU and an L2-normalised output (the reference's ``Extractor`` 64-32-16-64) give
``h2 = A1(h0)``, ``h3 = A2(h1)``::

    L_rec  = CE over all items of h @ E_item^T                (next item; loss_type CE)
    L_cl   = NT(h0, h1; tau, dot)                             (jaxcl.losses.nt_xent, normalize=False)
    L_meta = jaxcl.losses.contrib.mclrec_meta_loss(h0, h1, h2, h3)    (3 NT-Xent + 0.1 * margin terms)

    method "sasrec":  L_rec
    method "cl4srec": L_rec + lambda L_cl
    method "mclrec":  per batch (the reference trainer, joint = 0), on the same augmented views:
        (1) encoder   <- Adam on L_rec + lambda L_cl + beta L_meta   (augmenters frozen)
        (2) augmenter <- its own Adam on lambda L_cl + L_meta         (encoder frozen)
        (3) encoder   <- Adam on L_rec + lambda L_cl + beta L_meta   (fresh dropout)

The two optimisers are ``optax.multi_transform``s over the one parameter tree
``{"encoder", "augmenter"}``: Adam on their own partition, ``set_to_zero`` on the other, so one
never touches the other's parameters or moments (torch's two optimisers over disjoint groups);
each step differentiates only its own partition. The paper's bi-level meta-gradient is not what
the code does (first order, no gradient through the encoder update); this follows the code.
beta: the README's 0.1 (the yaml has 0.01); lambda = 0.1 (CL4SRec's; the README's MCLRec runs
use 0.03), tau = 1, dot similarity, the same lambda / tau for CL4SRec and MCLRec.

Budget: ``steps`` batches of ``batch_size`` training prefixes drawn uniformly with replacement;
MCLRec makes three updates per batch (as the reference: same data, ~3x the compute). No early
stopping. Evaluation: HR@10 / NDCG@10 of the held-out last item (test) and the one before
(validation), full ranking over all items, history not removed (items may repeat in a chain),
through :func:`jaxcl.eval.recsys.topk_metrics` (one relevant item: Recall = HR).

``python -m jaxcl.main --config=configs/mclrec_synthetic.py --workdir=runs/mclrec``
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcl import jsonio
from jaxcl import losses
from jaxcl.data import sequences
from jaxcl.eval import recsys as metrics
from jaxcl.models import SASRec

METHODS = ("sasrec", "cl4srec", "mclrec")


class Augmenter(nn.Module):
  """MCLRec's learnable augmenter: ``unit(W3 GELU(W2 GELU(W1 h)))``, widths d/2, d/4, d."""
  dim: int

  @nn.compact
  def __call__(self, h):
    x = nn.gelu(nn.Dense(max(self.dim // 2, 1))(h), approximate=False)
    x = nn.gelu(nn.Dense(max(self.dim // 4, 1))(x), approximate=False)
    x = nn.Dense(self.dim)(x)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-24))


@dataclasses.dataclass(frozen=True)
class Settings:
  """The recipe block as a hashable static argument (the rates live in the optimiser state)."""
  method: str = "mclrec"
  num_items: int = 500
  max_len: int = 20
  dim: int = 32
  num_layers: int = 1
  num_heads: int = 2
  inner: int = 128
  dropout: float = 0.2
  batch_size: int = 256
  steps: int = 1000
  crop: float = 0.5
  mask: float = 0.5
  reorder: float = 0.8
  lmd: float = 0.1
  beta: float = 0.1
  tau: float = 1.0
  margin_weight: float = 0.1
  k: int = 10

  def encoder(self):
    return SASRec(num_items=self.num_items, max_len=self.max_len, dim=self.dim,
                  num_layers=self.num_layers, num_heads=self.num_heads, inner=self.inner,
                  dropout=self.dropout)


def settings(cfg, num_items):
  """``Settings`` from ``config.mclrec`` (clear errors for bad values)."""
  if cfg.method not in METHODS:
    raise ValueError(f"config.mclrec.method must be one of {METHODS}, got {cfg.method!r}")
  for name in ("dim", "batch_size", "steps", "num_layers", "num_heads", "k", "max_len"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.mclrec.{name} must be an int >= 1, got {v!r}")
  for name in ("lr", "aug_lr", "tau"):
    if not cfg[name] > 0:
      raise ValueError(f"config.mclrec.{name} must be > 0, got {cfg[name]!r}")
  fields = {f.name for f in dataclasses.fields(Settings)}
  return Settings(**{k: v for k, v in cfg.items() if k in fields}, num_items=num_items)


class State(NamedTuple):
  params: dict           # {"encoder": SASRec variables, "augmenter": {"a1", "a2"}} (MCLRec)
  enc_opt: optax.OptState
  aug_opt: optax.OptState


def _labels(params):
  return {k: jax.tree.map(lambda _: k, v) for k, v in params.items()}


def optimizers(lr, aug_lr):
  """``(encoder tx, augmenter tx)``: each Adam on its own partition, zero on the other."""
  adam = optax.inject_hyperparams(optax.adam)
  enc = optax.multi_transform({"encoder": adam(learning_rate=lr),
                               "augmenter": optax.set_to_zero()}, _labels)
  aug = optax.multi_transform({"encoder": optax.set_to_zero(),
                               "augmenter": adam(learning_rate=aug_lr)}, _labels)
  return enc, aug


def init_state(rng, s: Settings, lr, aug_lr):
  k_enc, k1, k2 = jax.random.split(rng, 3)
  dummy = jnp.ones((1, s.max_len), jnp.int32)
  params = {"encoder": s.encoder().init(k_enc, dummy)}
  if s.method == "mclrec":
    h = jnp.zeros((1, s.dim))
    params["augmenter"] = {"a1": Augmenter(s.dim).init(k1, h),
                           "a2": Augmenter(s.dim).init(k2, h)}
  enc_tx, aug_tx = optimizers(lr, aug_lr)
  return State(params, enc_tx.init(params), aug_tx.init(params))


def losses_of(params, batch, views, rng, s: Settings, with_rec=True):
  """``{"rec", "cl", "meta"}`` means (those the method uses) for one batch (``rec`` = 0 without
  its forward pass when not ``with_rec``: the augmenter step does not use it)."""
  seqs, targets = batch
  enc = s.encoder()
  k = jax.random.split(rng, 3)
  table = enc.apply(params["encoder"], method=SASRec.item_table)
  out = {"rec": jnp.zeros((), jnp.float32)}
  if with_rec:
    h = enc.apply(params["encoder"], seqs, True, rngs={"dropout": k[0]})
    out["rec"] = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h @ table.T,
                                                                          targets - 1))
  if s.method == "sasrec":
    return out
  h0 = enc.apply(params["encoder"], views[0], True, rngs={"dropout": k[1]})
  h1 = enc.apply(params["encoder"], views[1], True, rngs={"dropout": k[2]})
  out["cl"] = jnp.mean(losses.nt_xent(h0, h1, temperature=s.tau, normalize=False))
  if s.method == "mclrec":
    a = params["augmenter"]
    h2 = Augmenter(s.dim).apply(a["a1"], h0)
    h3 = Augmenter(s.dim).apply(a["a2"], h1)
    out["meta"] = jnp.mean(losses.contrib.mclrec_meta_loss(h0, h1, h2, h3, margin_weight=s.margin_weight,
                                                   margin_temperature=s.tau))
  return out


def encoder_objective(m, s):
  return m["rec"] + s.lmd * m.get("cl", 0.0) + s.beta * m.get("meta", 0.0)


def augmenter_objective(m, s):
  return s.lmd * m["cl"] + m["meta"]


def _partial_grad(objective, params, part, batch, views, rng, s):
  """Gradient of ``objective`` w.r.t. ``params[part]`` only; zeros elsewhere (never used)."""
  def f(p):
    m = losses_of({**params, part: p}, batch, views, rng, s, with_rec=part == "encoder")
    return objective(m, s), m
  (_, m), g = jax.value_and_grad(f, has_aux=True)(params[part])
  full = {k: (g if k == part else jax.tree.map(jnp.zeros_like, v)) for k, v in params.items()}
  return full, m


def train_step(state: State, batch, rng, s: Settings):
  """One batch: the method's update(s) (module docstring). Returns ``(state, metrics)``."""
  enc_tx, aug_tx = optimizers(0.0, 0.0)   # the rates are read from the states
  keys = jax.random.split(rng, 5)
  aug = functools.partial(sequences.cl4srec_augment, crop=s.crop, mask=s.mask,
                          reorder=s.reorder, mask_token=s.num_items + 1)
  views = (aug(keys[0], batch[0]), aug(keys[1], batch[0])) if s.method != "sasrec" else None

  def enc_update(st, key):
    g, m = _partial_grad(encoder_objective, st.params, "encoder", batch, views, key, s)
    up, opt = enc_tx.update(g, st.enc_opt, st.params)
    return st._replace(params=optax.apply_updates(st.params, up), enc_opt=opt), m

  if s.method != "mclrec":
    return enc_update(state, keys[2])

  def aug_update(st, key):
    g, m = _partial_grad(augmenter_objective, st.params, "augmenter", batch, views, key, s)
    up, opt = aug_tx.update(g, st.aug_opt, st.params)
    return st._replace(params=optax.apply_updates(st.params, up), aug_opt=opt), m

  state, _ = enc_update(state, keys[2])      # (1) encoder, augmenters frozen
  state, _ = aug_update(state, keys[3])      # (2) augmenters only
  return enc_update(state, keys[4])          # (3) encoder again (fresh dropout)


@functools.partial(jax.jit, static_argnames=("s", "num_steps"))
def run_steps(state, data_x, data_y, rng, s: Settings, num_steps: int):
  """``num_steps`` steps in one ``lax.scan`` (uniform batches with replacement); returns the
  state and the mean metrics."""
  def body(st, key):
    k_b, k_s = jax.random.split(key)
    idx = jax.random.randint(k_b, (s.batch_size,), 0, data_x.shape[0])
    return train_step(st, (data_x[idx], data_y[idx]), k_s, s)
  state, m = jax.lax.scan(body, state, jax.random.split(rng, num_steps))
  return state, jax.tree.map(jnp.mean, m)


@functools.partial(jax.jit, static_argnames=("s",))
def _scores(params, seqs, s: Settings):
  return s.encoder().apply(params["encoder"], seqs, method=SASRec.scores)


def hr_ndcg(scores, targets, k):
  """Per-row ``(HR@k, NDCG@k)`` of the item ids ``targets`` (``1..I``) under ``scores [N, I]``
  (column ``j`` = item ``j + 1``), full ranking, ties to the lower id."""
  scores = np.asarray(scores)
  relevant = np.zeros(scores.shape, bool)
  relevant[np.arange(len(targets)), np.asarray(targets) - 1] = True
  hr, ndcg, _ = metrics.topk_metrics(scores, np.zeros_like(relevant), relevant, k)
  return np.asarray(hr), np.asarray(ndcg)


def evaluate(params, split_data, s: Settings):
  out = {}
  for split in ("val", "test"):
    x, y = split_data[split]
    hr, ndcg = hr_ndcg(_scores(params, jnp.asarray(x), s), y, s.k)
    out[f"{split}/hr@{s.k}"] = float(hr.mean())
    out[f"{split}/ndcg@{s.k}"] = float(ndcg.mean())
  return out


def fit(cfg, data, seed):
  """Trains one run on ``data`` (a :class:`jaxcl.data.sequences.Sequences`); returns
  ``(state, metrics dict)``."""
  s = settings(cfg, data.num_items)
  t0 = time.time()
  split_data = sequences.splits(data, s.max_len)
  k_init, k_train = jax.random.split(jax.random.key(seed))
  state = init_state(k_init, s, cfg.lr, cfg.aug_lr)
  x, y = (jnp.asarray(a) for a in split_data["train"])
  state, m = run_steps(state, x, y, k_train, s, s.steps)
  m = {f"train/{k}": float(v) for k, v in m.items()}
  if not all(np.isfinite(v) for v in m.values()):
    raise FloatingPointError(f"mclrec: non-finite training loss {m}")
  out = {**evaluate(state.params, split_data, s), **m, "wall_s": round(time.time() - t0, 2)}
  return state, out


def data_from_config(config, seed=None):
  return sequences.make_sequences(config.seed if seed is None else seed, **config.data.to_dict())


def train(config, workdir):
  """``python -m jaxcl.main`` entry (``config.recipe = "mclrec"``): one run on the synthetic set
  of ``config.data`` (generated from ``config.seed``); writes ``workdir/mclrec.json``."""
  data = data_from_config(config)
  _, out = fit(config.mclrec, data, config.seed)
  os.makedirs(workdir, exist_ok=True)
  jsonio.write_json(os.path.join(workdir, "mclrec.json"),
                    {"config": config.to_dict(), "metrics": out}, indent=1)
  k = config.mclrec.k
  print(f"mclrec: {config.mclrec.method} test HR@{k} {out[f'test/hr@{k}']:.4f} NDCG@{k} "
        f"{out[f'test/ndcg@{k}']:.4f} ({out['wall_s']:.1f} s)", flush=True)
  return out
