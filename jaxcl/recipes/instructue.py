"""InstructUE (arXiv 2510.11016, "Instruction-aware User Embedding via Synergistic Language and
Representation Modeling"; no public code) on the generated UserQA set
(:mod:`jaxcl.data.userqa`), with its own small jitted optax loop (not the image trainer).

Model (:class:`UserLM`, a tiny decoder made of :mod:`jaxcl.models.lm`'s pre-LN blocks, so the
attention block is the one ``CausalLM`` uses; ``CausalLM`` itself only takes token ids, and the
user prefix is continuous): behaviour encoder = event embedding + a per-event GELU MLP; adapter =
one Dense into the LM width; the LM reads ``[adapter(enc(X)) ; question ; SEP ; answer ; EOS]``
causally. The instruction-conditioned user embedding ``u = W_u h_SEP`` (the hidden state at SEP:
it has seen the behaviour and the question, not the answer); the answer's text embedding
``t = W_t mean(h)`` of the same LM run on ``[BOS ; answer ; EOS]`` without a user prefix (the
paper does not pin pooling nor whether t comes from the same LLM: the same LM, mean pooled)::

    method "instructue": L = L_AR + lambda L_CL       (jaxcl.losses.contrib.instructue_loss)
    method "cl":         L = L_CL                      (contrastive only)
    method "ar":         L = L_AR                      (autoregressive only)

``L_CL`` = symmetric InfoNCE (``clip_loss``, T = 0.1, rows with the same answer are not
negatives); lambda = 1. Budget: ``steps`` batches of ``batch_size`` (user, question) pairs drawn
uniformly with replacement from the train users and the two train templates; Adam, one rate.

Evaluation on the held-out users with the held-out question template: ``retrieval@1`` / ``mrr``
of the right answer among all A x V answer texts by cosine(u, t) (the paper's use: the
embedding as the product); ``probe`` = nearest-class-mean accuracy of u for the asked
attribute's value (centroids from the train users' u under the same held-out template; needs no
u-t alignment, so it also scores the AR-only arm's embedding fairly); ``gen_acc`` = the LM's
greedy answer word at SEP is right (AR arms; the CL arm's head is untrained: chance).

``python -m jaxcl.main --config=configs/instructue_synthetic.py --workdir=runs/instructue``
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
from jaxcl.data import userqa
from jaxcl.models.lm import _Block

METHODS = ("instructue", "cl", "ar")


class UserLM(nn.Module):
  """Behaviour encoder + adapter + a tiny causal LM (module docstring)."""
  vocab: int
  num_events: int
  dim: int = 32
  depth: int = 2
  heads: int = 2
  max_len: int = 32
  emb_dim: int = 32

  def setup(self):
    self.event_embed = nn.Embed(self.num_events + 1, self.dim)
    self.enc1 = nn.Dense(2 * self.dim)
    self.enc2 = nn.Dense(self.dim)
    self.adapter = nn.Dense(self.dim)
    self.embed = nn.Embed(self.vocab, self.dim)
    self.pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
    self.blocks = [_Block(self.dim, self.heads, 4) for _ in range(self.depth)]
    self.ln_f = nn.LayerNorm()
    self.head = nn.Dense(self.vocab)
    self.user_proj = nn.Dense(self.emb_dim)
    self.text_proj = nn.Dense(self.emb_dim)

  def _lm(self, x):
    x = x + self.pos[:x.shape[1]]
    for blk in self.blocks:
      x = blk(x)
    return self.ln_f(x)

  def __call__(self, events, words):
    """events [B, L], words [B, T] -> (logits [B, T, vocab], hidden [B, T, dim]) of the words."""
    e = self.event_embed(events)
    prefix = self.adapter(self.enc2(nn.gelu(self.enc1(e))))
    h = self._lm(jnp.concatenate([prefix, self.embed(words)], 1))[:, events.shape[1]:]
    return self.head(h), h

  def user(self, hidden_sep):
    return self.user_proj(hidden_sep)

  def text(self, words):
    """words [N, T] (no padding) -> text embeddings [N, emb_dim] (mean-pooled hidden)."""
    return self.text_proj(jnp.mean(self._lm(self.embed(words)), 1))

  def init_all(self, events, words):
    logits, h = self(events, words)
    return logits, self.user(h[:, 0]), self.text(words)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The static part of the recipe block (the method's loss weights and the rate are traced,
  so one compile serves every arm and seed)."""
  vocab: int = 64
  num_events: int = 96
  dim: int = 32
  depth: int = 2
  heads: int = 2
  emb_dim: int = 32
  batch_size: int = 64
  steps: int = 600
  temperature: float = 0.1
  max_len: int = 48          # positions: behaviour events + question words + 3

  def model(self):
    return UserLM(self.vocab, self.num_events, self.dim, self.depth, self.heads,
                  self.max_len, self.emb_dim)



def settings(cfg, data: userqa.UserQA):
  if cfg.method not in METHODS:
    raise ValueError(f"config.instructue.method must be one of {METHODS}, got {cfg.method!r}")
  for name in ("dim", "depth", "heads", "emb_dim", "batch_size", "steps"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.instructue.{name} must be an int >= 1, got {v!r}")
  for name in ("lr", "temperature"):
    if not cfg[name] > 0:
      raise ValueError(f"config.instructue.{name} must be > 0, got {cfg[name]!r}")
  if not cfg.lmd >= 0:
    raise ValueError(f"config.instructue.lmd must be >= 0, got {cfg.lmd!r}")
  fields = {f.name for f in dataclasses.fields(Settings)} - {"vocab", "num_events", "max_len"}
  q_len = len(userqa.TEMPLATES[0])
  return Settings(**{k: v for k, v in cfg.items() if k in fields}, vocab=len(data.vocab),
                  num_events=data.num_events, max_len=data.events.shape[1] + q_len + 3)


def weights(method, lmd):
  """``[ar_weight, contrastive weight]`` of ``method`` (float32, traced in the loop)."""
  return jnp.asarray({"instructue": (1.0, lmd), "cl": (0.0, lmd), "ar": (1.0, 0.0)}[method],
                     jnp.float32)


class State(NamedTuple):
  params: dict
  opt_state: optax.OptState


def _tx(lr):
  return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def qa_words(question, answer):
  """``[question ; SEP ; answer ; EOS]`` word ids ``[N, Q + 3]``."""
  n = question.shape[0]
  return jnp.concatenate([question, jnp.full((n, 1), userqa.SEP, question.dtype),
                          answer[:, None].astype(question.dtype),
                          jnp.full((n, 1), userqa.EOS, question.dtype)], 1)


def answer_words(answer):
  """``[BOS ; answer ; EOS]`` ``[N, 3]``."""
  n = answer.shape[0]
  return jnp.stack([jnp.full((n,), userqa.BOS, jnp.int32), answer.astype(jnp.int32),
                    jnp.full((n,), userqa.EOS, jnp.int32)], 1)


def forward(params, events, question, answer, s: Settings):
  """``(answer logits [N, 2, V], answer targets [N, 2], u [N, E], t [N, E])``."""
  model = s.model()
  q = question.shape[1]
  words = qa_words(question, answer)
  logits, h = model.apply(params, events, words)
  u = model.apply(params, h[:, q], method=UserLM.user)
  t = model.apply(params, answer_words(answer), method=UserLM.text)
  return logits[:, q:q + 2], words[:, q + 1:q + 3], u, t


def loss_fn(params, batch, w, s: Settings):
  logits, targets, u, t = forward(params, batch["events"], batch["question"], batch["answer"], s)
  ar_w, cl_w = w[0], w[1]
  per = losses.contrib.instructue_loss(logits, targets, jnp.ones(targets.shape, bool), u, t,
                               weight=cl_w, ar_weight=ar_w, temperature=s.temperature,
                               answer_ids=batch["answer_id"])
  return jnp.mean(per)


@functools.partial(jax.jit, static_argnames=("s", "seq_len", "q_len"))
def init_state(rng, s: Settings, seq_len, q_len, lr):
  """Parameters and Adam state (jitted: the eager Flax / optax init cost ~10 s on this CPU)."""
  params = s.model().init(rng, jnp.ones((1, seq_len), jnp.int32),
                          jnp.ones((1, q_len + 3), jnp.int32), method=UserLM.init_all)
  return State(params, _tx(lr).init(params))


@functools.partial(jax.jit, static_argnames=("s",))
def run_steps(state, train, rng, w, s: Settings):
  """``s.steps`` Adam steps in one ``lax.scan``; ``train`` = dict of arrays with ``events``
  gathered per example. Returns the state and the mean training loss."""
  tx = _tx(0.0)   # the rate is read from the state
  n = train["answer"].shape[0]

  def body(st, key):
    idx = jax.random.randint(key, (s.batch_size,), 0, n)
    batch = {k: v[idx] for k, v in train.items()}
    loss, g = jax.value_and_grad(loss_fn)(st.params, batch, w, s)
    up, opt = tx.update(g, st.opt_state, st.params)
    return State(optax.apply_updates(st.params, up), opt), loss

  state, loss = jax.lax.scan(body, state, jax.random.split(rng, s.steps))
  return state, jnp.mean(loss)


@functools.partial(jax.jit, static_argnames=("s",))
def _embed(params, events, question, answer, s: Settings):
  logits, _, u, _ = forward(params, events, question, answer, s)
  return u, jnp.argmax(logits[:, 0], -1)


@functools.partial(jax.jit, static_argnames=("s",))
def _texts(params, answers, s: Settings):
  return s.model().apply(params, answer_words(answers), method=UserLM.text)


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval(u, t, target):
  """``(acc@1 [N], reciprocal rank [N])`` of candidate ``target[i]`` among the rows of ``t``
  by cosine with ``u[i]`` (ties count against: rank = 1 + #candidates scoring >= the right one,
  other than itself)."""
  s = _unit(u) @ _unit(t).T
  right = s[np.arange(len(s)), target]
  rank = 1 + np.sum(s >= right[:, None], 1) - 1
  return (rank == 1).astype(np.float64), 1.0 / rank


def centroid_probe(u_fit, attr_fit, val_fit, u_test, attr_test, val_test, num_values):
  """Nearest-class-mean accuracy (cosine) of the asked attribute's value: centroids per
  (attribute, value) from the fit rows, each test row scored against its attribute's V ones."""
  uf, ut = _unit(u_fit), _unit(u_test)
  correct = np.zeros(len(ut))
  for a in np.unique(attr_test):
    cents = np.stack([uf[(attr_fit == a) & (val_fit == v)].mean(0) if np.any(
        (attr_fit == a) & (val_fit == v)) else np.zeros(uf.shape[1]) for v in range(num_values)])
    rows = attr_test == a
    correct[rows] = np.argmax(ut[rows] @ _unit(cents).T, 1) == val_test[rows]
  return correct


def _arrays(data, ex):
  return {"events": jnp.asarray(data.events[ex["user"]]), "question": jnp.asarray(ex["question"]),
          "answer": jnp.asarray(ex["answer"]), "answer_id": jnp.asarray(ex["answer_id"])}


def evaluate(params, data: userqa.UserQA, s: Settings):
  test = userqa.examples(data, "test")
  held = len(userqa.TEMPLATES) - 1
  fit_ex = userqa.examples(data, "train", templates=(held,))
  out = {}
  both = lambda k: np.concatenate([test[k], fit_ex[k]])   # one compile for both sets
  u, gen = _embed(params, jnp.asarray(data.events[both("user")]), jnp.asarray(both("question")),
                  jnp.asarray(both("answer")), s)
  n = len(test["user"])
  u_t, u_f, gen = u[:n], u[n:], gen[:n]
  all_answers = np.array([data.value_word(a, v) for a in range(data.num_attrs)
                          for v in range(data.num_values)], np.int32)
  t = _texts(params, jnp.asarray(all_answers), s)
  acc, rr = retrieval(np.asarray(u_t), np.asarray(t), test["answer_id"])
  val = lambda ex: data.attrs[ex["user"], ex["attr"]]
  probe = centroid_probe(np.asarray(u_f), fit_ex["attr"], val(fit_ex), np.asarray(u_t),
                         test["attr"], val(test), data.num_values)
  out["retrieval@1"] = float(acc.mean())
  out["mrr"] = float(rr.mean())
  out["probe"] = float(probe.mean())
  out["gen_acc"] = float(np.mean(np.asarray(gen) == test["answer"]))
  return out


def fit(cfg, data: userqa.UserQA, seed):
  """Trains one run; returns ``(state, metrics dict)``."""
  s = settings(cfg, data)
  t0 = time.time()
  train_ex = userqa.examples(data, "train")
  k_init, k_train = jax.random.split(jax.random.key(seed))
  state = init_state(k_init, s, data.events.shape[1], train_ex["question"].shape[1], cfg.lr)
  state, loss = run_steps(state, _arrays(data, train_ex), k_train, weights(cfg.method, cfg.lmd),
                          s)
  loss = float(loss)
  if not np.isfinite(loss):
    raise FloatingPointError(f"instructue: non-finite training loss {loss}")
  out = {**evaluate(state.params, data, s), "train/loss": loss,
         "wall_s": round(time.time() - t0, 2)}
  return state, out


def data_from_config(config, seed=None):
  return userqa.make_userqa(config.seed if seed is None else seed, **config.data.to_dict())


def train(config, workdir):
  """``python -m jaxcl.main`` entry (``config.recipe = "instructue"``): one run on the UserQA
  set of ``config.data`` (generated from ``config.seed``); writes ``workdir/instructue.json``."""
  data = data_from_config(config)
  _, out = fit(config.instructue, data, config.seed)
  os.makedirs(workdir, exist_ok=True)
  jsonio.write_json(os.path.join(workdir, "instructue.json"),
                    {"config": config.to_dict(), "metrics": out}, indent=1)
  print(f"instructue: {config.instructue.method} retrieval@1 {out['retrieval@1']:.4f} probe "
        f"{out['probe']:.4f} gen_acc {out['gen_acc']:.4f} ({out['wall_s']:.1f} s)", flush=True)
  return out
