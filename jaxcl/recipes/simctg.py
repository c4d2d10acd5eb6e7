"""SimCTG: a tiny decoder-only LM on the WordNet gloss corpus, MLE with or without the
contrastive token loss (Su et al., "A Contrastive Framework for Neural Text Generation",
NeurIPS 2022, arXiv 2202.06417; methods.md ``contrastive_search``)::

    L = L_MLE + weight * L_CL,   L_CL = losses.contrib.simctg_loss(last-layer states, margin=rho)

``weight = 0`` is the MLE baseline (``L_CL`` is still computed and logged, so both arms run
the same program: one compile, identical cost). The LM is :class:`jaxcl.models.lm.CausalLM`;
decoding is :mod:`jaxcl.decoding`; metrics :mod:`jaxcl.eval.generation`. Not an embedding
model, so not the shared trainer: its own small jitted optax step, the loss inside
``jax.shard_map`` over the ``'data'`` axis (sequences split over devices; the MLE token mean
and ``L_CL`` are normalised by ``psum``'d counts, so any device count gives the
single-device loss and gradient), differentiated outside it as the trainer does.

Data (CPU proxy). Tokenizer: a **word-level** vocabulary of the ``simctg.vocab`` most frequent
lower-cased words / punctuation marks of the training glosses (ids 0 = pad, 1 = unk, 2 = eos),
not MiniLM's WordPiece: with width 128 the 30,522-way softmax dominates the step (measured on
the shared 2-core machine, batch 64 x 32, depth 2: 2.14 s/step at 30,522 vs 0.44 s at 8,192
and 0.25 s at 4,096), and the study needs 6 trainings in minutes. 4,096 words cover 84% of the
corpus' tokens; ``unk`` *targets* are left out of the MLE loss (so the LM puts little mass on
``unk`` and decoders rarely emit it), ``unk`` inputs stay. Glosses (``wordnet.gloss_corpus``,
definitions + examples) are joined with ``eos`` into one stream (GPT-style packing) and cut
into windows of ``seq_len + 1`` tokens; every ``heldout_every``-th synset's gloss is held out
(test windows: perplexity, isotropy; prompts for the decoding study).

State and resuming: ``{"params", "opt_state", "step"}`` saved with orbax (``workdir/
checkpoints``, every ``checkpoint_every`` steps and at the end); a rerun with the same workdir
restores the latest and continues. Batches are a pure function of ``(seed, step)`` (a
per-epoch permutation), so a resumed run sees exactly the batches it would have seen. Single
process (the global batch is built on this host).

``python -m jaxcl.main --config=configs/simctg_wordnet.py --workdir=runs/simctg`` writes
``workdir/simctg.json`` (held-out perplexity, self-similarity / isotropy, final losses).
"""
from __future__ import annotations

import collections
import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
from ml_collections import ConfigDict

from jaxcl import jsonio
from jaxcl.eval import generation
from jaxcl.losses.contrib import simctg_loss
from jaxcl.models.lm import CausalLM
from jaxcl.train.sharding import AXIS, make_mesh

PAD, UNK, EOS = 0, 1, 2
SPECIALS = ("[PAD]", "[UNK]", "[EOS]")
_WORD = re.compile(r"[a-z0-9]+|[^a-z0-9\s]")


def words(text: str) -> list:
  """Lower-cased words and single punctuation marks."""
  return _WORD.findall(text.lower())


def build_vocab(texts, size: int) -> tuple:
  """The specials, then the ``size - 3`` most frequent words (ties: first seen first)."""
  if size <= len(SPECIALS):
    raise ValueError(f"build_vocab: 'size' must be > {len(SPECIALS)}, got {size}")
  counts = collections.Counter(w for t in texts for w in words(t))
  return SPECIALS + tuple(w for w, _ in counts.most_common(size - len(SPECIALS)))


def encode(texts, vocab) -> list:
  """Each text as an int32 array of word ids (``UNK`` for out-of-vocabulary words)."""
  index = {w: i for i, w in enumerate(vocab)}
  return [np.array([index.get(w, UNK) for w in words(t)], np.int32) for t in texts]


def decode(ids, vocab) -> str:
  """Space-joined words; ``eos`` -> ``.``, padding dropped (the text MiniLM embeds)."""
  out = []
  for i in map(int, ids):
    if i == PAD:
      continue
    out.append("." if i == EOS else vocab[i])
  return " ".join(out)


def pack(encoded, window: int) -> np.ndarray:
  """``[N, window]``: the texts joined with ``EOS`` (one before each) and cut into windows."""
  if not encoded:
    return np.zeros((0, window), np.int32)
  stream = np.concatenate([np.concatenate([[EOS], e]) for e in encoded]).astype(np.int32)
  n = len(stream) // window
  return stream[:n * window].reshape(n, window)


def split(texts, heldout_every: int):
  """(train texts, held-out texts): every ``heldout_every``-th text is held out."""
  test = [t for i, t in enumerate(texts) if i % heldout_every == 0]
  train = [t for i, t in enumerate(texts) if i % heldout_every != 0]
  return train, test


def prompts(encoded, length: int, count: int, continuation: int = 0):
  """``[count, length]`` prompts: ``EOS`` + the first ``length - 1`` words of the first texts
  with at least that many words and no ``UNK`` among them; with ``continuation > 0`` also the
  ``[count, continuation]`` tokens that follow each prompt in the packed stream of the texts
  (the human continuation, across text boundaries, ``EOS``-joined as in :func:`pack`)."""
  stream = np.concatenate([np.concatenate([[EOS], e]) for e in encoded]).astype(np.int32)
  starts = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]])
  rows = [int(s) for s, e in zip(starts, encoded)
          if len(e) >= length - 1 and not np.any(e[:length - 1] == UNK)
          and s + length + continuation <= len(stream)]
  if len(rows) < count:
    raise ValueError(f"prompts: only {len(rows)} texts qualify, 'count'={count}")
  rows = rows[:count]
  p = np.stack([stream[s:s + length] for s in rows])
  if not continuation:
    return p
  return p, np.stack([stream[s + length:s + length + continuation] for s in rows])


def batch_indices(num: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Rows of ``step``'s batch: epoch ``e = step // (num // batch_size)`` is a permutation
  drawn from ``(seed, e)``; a pure function of the step (exact resume)."""
  per_epoch = num // batch_size
  if per_epoch < 1:
    raise ValueError(f"batch_indices: {num} windows < 'batch_size'={batch_size}")
  epoch, pos = divmod(int(step), per_epoch)
  perm = np.random.default_rng([int(seed), epoch]).permutation(num)
  return perm[pos * batch_size:(pos + 1) * batch_size]


def make_model(c, vocab_size=None) -> CausalLM:
  """The config's LM (``vocab_size``: the built vocabulary's, default ``c.vocab``)."""
  return CausalLM(vocab=vocab_size or c.vocab, dim=c.dim, depth=c.depth, heads=c.heads,
                  max_len=c.seq_len, mlp_ratio=c.mlp_ratio)


def make_optimizer(c):
  sched = optax.warmup_cosine_decay_schedule(0.0, c.lr, max(1, c.warmup_steps),
                                             max(c.num_steps, c.warmup_steps + 1))
  return optax.chain(optax.clip_by_global_norm(c.clip), optax.adamw(sched, weight_decay=c.wd))


def losses_fn(model, margin, axis_name=None):
  """``f(params, windows [B, L+1], weight) -> (loss, (mle, cl))`` for the local rows;
  ``axis_name``: the global token mean / SimCTG pair mean through ``psum``."""
  def f(params, x, weight):
    inp, tgt = x[:, :-1], x[:, 1:]
    logits, hidden = model.apply(params, inp)
    keep = (tgt != PAD) & (tgt != UNK)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), tgt)
    num = jnp.sum(jnp.where(keep, nll, 0.0))
    den = jnp.sum(keep).astype(jnp.float32)
    if axis_name is not None:
      num, den = jax.lax.psum(num, axis_name), jax.lax.psum(den, axis_name)
    mle = num / jnp.maximum(den, 1.0)
    cl = simctg_loss(hidden, inp != PAD, margin=margin, axis_name=axis_name)
    return mle + weight * cl, (mle, cl)
  return f


def sharded_loss(model, mesh, margin):
  """The loss with the batch split over ``mesh``'s data axis (``jax.shard_map``)."""
  local = losses_fn(model, margin, AXIS)
  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P()),
                       out_specs=(P(), (P(), P())))


def make_step(model, tx, mesh, margin):
  """Jitted ``step(state, windows, weight) -> (state, metrics)`` (state donated)."""
  loss = sharded_loss(model, mesh, margin)

  def step(state, x, weight):
    (total, (mle, cl)), grads = jax.value_and_grad(loss, has_aux=True)(state["params"], x, weight)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
    return new, {"loss": total, "mle": mle, "cl": cl, "grad_norm": optax.tree.norm(grads)}

  rep = NamedSharding(mesh, P())
  return jax.jit(step, in_shardings=(rep, NamedSharding(mesh, P(AXIS)), rep),
                 out_shardings=(rep, rep), donate_argnums=0)


def init_fn(model, tx):
  """Jitted ``init(key) -> {"params", "opt_state", "step"}`` (eager init is slow on CPU)."""
  def init(key):
    params = model.init(key, jnp.zeros((1, model.max_len), jnp.int32))
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  return jax.jit(init)


@functools.lru_cache(maxsize=8)
def _programs(model, opt, mesh, margin):
  """(tx, init, step) for one model / optimiser setting, built once per process so repeated
  runs (seeds, training arms: ``weight`` is traced) reuse the compiled programs."""
  lr, warmup, steps, clip, wd = opt
  tx = make_optimizer(ConfigDict({"lr": lr, "warmup_steps": warmup, "num_steps": steps,
                                  "clip": clip, "wd": wd}))
  return tx, init_fn(model, tx), make_step(model, tx, mesh, margin)


@functools.lru_cache(maxsize=4)
def corpus(vocab_size: int, heldout_every: int, max_texts: int = 0):
  """(vocab, train encoded, held-out encoded) of the WordNet gloss corpus (cached)."""
  from jaxcl.data import wordnet
  texts = list(wordnet.gloss_corpus(wordnet.load_wordnet()))
  if max_texts:
    texts = texts[:max_texts]
  train, test = split(texts, heldout_every)
  vocab = build_vocab(train, vocab_size)
  return vocab, encode(train, vocab), encode(test, vocab)


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(model, params, x):
  logits, hidden = model.apply(params, x[:, :-1])
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), x[:, 1:])
  keep = (x[:, 1:] != PAD) & (x[:, 1:] != UNK)
  ppl = jnp.exp(jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.maximum(jnp.sum(keep), 1))
  return ppl, generation.per_sequence_self_similarity(hidden, x[:, :-1] != PAD)


def evaluate(model, params, windows) -> dict:
  """Held-out perplexity (``unk`` / padding targets excluded) and token-state self-similarity
  / isotropy (:mod:`jaxcl.eval.generation`) on ``windows [N, L+1]`` (one jitted program)."""
  ppl, (per, ok) = _evaluate(model, params, jnp.asarray(windows))
  per, ok = np.asarray(per), np.asarray(ok)
  ss = float(per[ok].mean())
  return {"perplexity": float(ppl), "self_similarity": ss, "isotropy": 1.0 - ss}


def _manager(workdir, use_async=False):
  import orbax.checkpoint as ocp
  opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                      enable_async_checkpointing=use_async)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=opts)


def train(config, workdir, *, log=print, texts=None, stop_at=None):
  """Trains the LM of ``config.simctg``; resumes from ``workdir``'s latest checkpoint.
  Returns ``{"model", "params", "vocab", "test_windows", "test_encoded", "metrics", "history"}``
  and writes ``workdir/simctg.json``. ``texts``: a corpus instead of the WordNet glosses
  (tests); ``stop_at``: stop after that step with a checkpoint, as a killed run would."""
  import orbax.checkpoint as ocp
  c = config.simctg
  seed = int(config.seed)
  if c.weight < 0 or c.margin < 0:
    raise ValueError(f"config.simctg: 'weight' and 'margin' must be >= 0, got {c.weight}, "
                     f"{c.margin}")
  mesh = make_mesh()
  if c.batch_size % mesh.size:
    raise ValueError(f"config.simctg.batch_size={c.batch_size} must be divisible by the "
                     f"{mesh.size} devices")
  if texts is None:
    vocab, train_enc, test_enc = corpus(c.vocab, c.heldout_every, c.get("max_texts", 0))
  else:
    tr, te = split(list(texts), c.heldout_every)
    vocab = build_vocab(tr, c.vocab)
    train_enc, test_enc = encode(tr, vocab), encode(te, vocab)
  windows = pack(train_enc, c.seq_len + 1)
  test_windows = pack(test_enc, c.seq_len + 1)[:c.eval_windows]
  model = make_model(c, len(vocab))
  opt = tuple(c[k] for k in ("lr", "warmup_steps", "num_steps", "clip", "wd"))
  tx, init_fn, step_fn = _programs(model, opt, mesh, float(c.margin))
  rep = NamedSharding(mesh, P())
  state = jax.device_put(init_fn(jax.random.key(seed)), rep)
  os.makedirs(workdir, exist_ok=True)
  mngr = _manager(workdir)
  if mngr.latest_step() is not None:
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)
    state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
    log(f"simctg: resumed at step {int(state['step'])}")
  data = NamedSharding(mesh, P(AXIS))
  weight = np.float32(c.weight)
  history = []
  start = int(state["step"])
  end = c.num_steps if stop_at is None else min(int(stop_at), c.num_steps)
  for s in range(start, end):
    x = jax.device_put(windows[batch_indices(len(windows), c.batch_size, seed, s)], data)
    state, m = step_fn(state, x, weight)
    if (s + 1) % c.log_every == 0 or s + 1 == c.num_steps:
      m = {k: float(v) for k, v in m.items()}
      if not np.isfinite(m["loss"]):
        raise FloatingPointError(f"simctg: non-finite loss at step {s + 1}: {m}")
      history.append({"step": s + 1, **m})
      log(f"simctg step {s + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()))
    if c.checkpoint_every and (s + 1) % c.checkpoint_every == 0 and s + 1 < c.num_steps:
      mngr.save(s + 1, args=ocp.args.StandardSave(state))
  if mngr.latest_step() != end:
    mngr.save(end, args=ocp.args.StandardSave(state), force=True)
  mngr.wait_until_finished()
  mngr.close()
  # A run stopped early (``stop_at``) is not evaluated, as a killed one would not be.
  metrics = evaluate(model, state["params"], test_windows) if end == c.num_steps else {}
  jsonio.write_json(os.path.join(workdir, "simctg.json"),
                    {"metrics": metrics, "history": history, "vocab_size": len(vocab),
                     "train_windows": int(len(windows))}, indent=1)
  return {"model": model, "params": state["params"], "vocab": vocab, "metrics": metrics,
          "test_windows": test_windows, "test_encoded": test_enc, "history": history}
