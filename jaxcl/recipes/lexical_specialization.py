"""Lexical specialization of a pretrained sentence encoder with WordNet synonym pairs.

Green, Ponzetto, Glavas, "Massively Multilingual Lexical Specialization of Multilingual
Transformers" (ACL 2023, arXiv 2208.01018, v1 "BabelBERT"; methods.md ``lexical_specialization``):
words fed in isolation (``[CLS] w [SEP]``), the word vector = the mean of the last-layer states
over the word's subword tokens, fine-tuned on synonym pairs with label-based NT-Xent
(:func:`jaxcl.losses.contrib.label_nt_xent`, tau = 0.07, label = synset: other pairs of the same synset
in the batch are positives too).

The proxy (English only, offline): the pretrained all-MiniLM-L6-v2 tower
(``config.model.pretrained = "minilm"``, one shared tower over the pair's two token blocks,
``head_layers = 0``, ``encoder_kwargs.pool_exclude = (101, 102)``: [CLS] / [SEP] attended to but
not pooled) on WordNet 3.0 synonym pairs of the training synsets
(:func:`jaxcl.data.wordnet.synonym_pairs`, registered by :func:`jaxcl.data.text.register_texts`
as a 2-text dataset, labels = WordNet synset index). Evaluation, on the tower alone, BEFORE (the
warm-started weights) and AFTER fine-tuning, each split into synsets **seen** in training (the
synsets of the training pool) and **unseen** (:func:`jaxcl.data.wordnet.split_synsets`'s
held-out test synsets, never in a training pair):

* word similarity: Spearman of the cosine of word pairs against their Wu-Palmer similarity
  (:func:`jaxcl.data.wordnet.similarity_pairs`; seen pairs: both synsets in the training pool);
* synonym retrieval (BLI-like): query = a synset's first lemma, corpus = every other lemma of
  all the evaluated synsets (seen and unseen together; texts that are also queries removed, so a
  query never finds itself), positives = the query synset's other lemmas; MRR@10 and Recall@k
  (:func:`jaxcl.eval.ranking.ranking_metrics`).

The training pool: the seen evaluation synsets plus random training synsets with >= 2 distinct
lemmas, up to ``pool_synsets``; ``pairs_per_synset`` pairs each. The evaluation sets and the pool
depend on ``split_seed`` only (not on ``config.seed``), so seeds vary the initialisation of
nothing but the batch order and dropout, and BEFORE is the same for every seed.

Paper vs proxy: one language (no cross-lingual pairs, no language up-sampling), WordNet in place
of BabelNet, MiniLM (6 layers, 384-d, pretrained for sentences) in place of mBERT / XLM-R,
``max_len`` 8 (longer multiword lemmas truncated, keeping [SEP]), a short budget (the paper: 2
epochs at batch 256, AdamW lr 5e-6, wd 0) with a higher learning rate (the config), Wu-Palmer
similarity / synonym retrieval in place of XLSIM / BLI.

``python -m jaxcl.main --config=configs/lexical_specialization_wordnet.py --workdir=...``
(``config.lexical_specialization`` is this recipe's block; ``num_steps = 0`` evaluates the
untuned tower). Writes ``workdir/lexical_specialization.json``: ``{"before", "after"}``.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np

from jaxcl import jsonio

BLOCK = "lexical_specialization"
_BEFORE = {}  # BEFORE metrics of pretrained towers, per process (deterministic weights)


@functools.lru_cache(maxsize=4)
def build_task(split_seed=0, test_fraction=0.1, pool_synsets=3000, pairs_per_synset=2,
               sim_pairs=500, retrieval_synsets=500):
  """The training pairs and the seen / unseen evaluation sets (module docstring), cached.

  Returns ``{"pairs": {"a", "b", "label"}, "pool": int64 [P] synsets,
  "similarity": {"seen" | "unseen": {"a", "b", "score"}},
  "retrieval": {"queries", "corpus", "positives", "seen" bool [Q]}}``.
  """
  from jaxcl.data import wordnet as W
  wn = W.load_wordnet()
  kw = dict(seed=split_seed, test_fraction=test_fraction)
  multi = lambda ids: np.asarray([i for i in ids if len(W._distinct(wn.lemmas[i])) >= 2],
                                 np.int64)
  train_multi, test_multi = multi(W.split_synsets(wn, "train", **kw)), multi(
      W.split_synsets(wn, "test", **kw))
  rng = np.random.default_rng([split_seed, 0x1E5])
  # Seen word pairs: both synsets of the training split with >= 2 lemmas (they join the pool).
  ok = set(train_multi.tolist())
  cand = W.similarity_pairs(wn, 8 * sim_pairs, "train", **kw)
  keep = [k for k in range(len(cand["a"]))
          if cand["synset_a"][k] in ok and cand["synset_b"][k] in ok][:sim_pairs]
  sim_seen = {f: [cand[f][k] for k in keep] for f in ("a", "b", "synset_a", "synset_b")}
  sim_seen["score"] = cand["score"][keep]
  unseen = W.similarity_pairs(wn, sim_pairs, "test", **kw)
  sim_unseen = {f: unseen[f] for f in ("a", "b", "score")}
  ret_seen = rng.choice(train_multi, size=min(retrieval_synsets, len(train_multi)), replace=False)
  ret_unseen = rng.choice(test_multi, size=min(retrieval_synsets, len(test_multi)), replace=False)
  pool = set(sim_seen["synset_a"]) | set(sim_seen["synset_b"]) | set(ret_seen.tolist())
  rest = [i for i in rng.permutation(train_multi).tolist() if i not in pool]
  pool = np.asarray(sorted(pool | set(rest[:max(0, pool_synsets - len(pool))])), np.int64)
  pairs = W.synonym_pairs(wn, "train", pairs_per_synset=pairs_per_synset, **kw)
  sel = np.isin(pairs["label"], pool)
  pairs = {"a": [w for w, s in zip(pairs["a"], sel) if s],
           "b": [w for w, s in zip(pairs["b"], sel) if s], "label": pairs["label"][sel]}
  sim_seen = {f: sim_seen[f] for f in ("a", "b", "score")}
  return {"pairs": pairs, "pool": pool, "num_synsets": len(wn),
          "similarity": {"seen": sim_seen, "unseen": sim_unseen},
          "retrieval": synonym_retrieval([wn.lemmas[i] for i in ret_seen],
                                         [wn.lemmas[i] for i in ret_unseen])}


def synonym_retrieval(seen_lemmas, unseen_lemmas):
  """Query word -> its synonyms among all evaluated lemmas (module docstring).

  ``seen_lemmas`` / ``unseen_lemmas``: one list of lemmas per synset. Texts are compared
  case-insensitively (the MiniLM tokenizer is uncased). Returns ``{"queries": [str],
  "corpus": [str], "positives": [int64 arrays], "seen": bool [Q]}``; synsets left without a
  positive (every other lemma is also a query somewhere) are dropped.
  """
  from jaxcl.data import wordnet as W
  synsets = [(ls, True) for ls in seen_lemmas] + [(ls, False) for ls in unseen_lemmas]
  words = [[W.text(w) for w in W._distinct(ls)] for ls, _ in synsets]
  query_keys = {ws[0].lower() for ws in words if ws}
  corpus, where = [], {}
  for ws in words:
    for w in ws[1:]:
      if w.lower() not in query_keys and w.lower() not in where:
        where[w.lower()] = len(corpus)
        corpus.append(w)
  queries, positives, seen = [], [], []
  for ws, (_, is_seen) in zip(words, synsets):
    pos = sorted({where[w.lower()] for w in ws[1:] if w.lower() in where})
    if ws and pos:
      queries.append(ws[0])
      positives.append(np.asarray(pos, np.int64))
      seen.append(is_seen)
  return {"queries": queries, "corpus": corpus, "positives": positives,
          "seen": np.asarray(seen, bool)}


def embed(module, params, ids, batch=256):
  """``[N, D]`` tower embeddings of token ids ``[N, L]`` (fixed-size jitted chunks)."""
  apply = _apply(module)
  out = []
  for s in range(0, len(ids), batch):
    chunk = ids[s:s + batch]
    pad = np.zeros((batch - len(chunk), ids.shape[1]), ids.dtype)
    out.append(np.asarray(apply(params, np.concatenate([chunk, pad])))[:len(chunk)])
  return np.concatenate(out) if out else np.zeros((0, module.dim), np.float32)


@functools.lru_cache(maxsize=8)
def _apply(module):
  return jax.jit(lambda p, x: module.apply({"params": p}, x, train=False))


def evaluate(module, params, task, tokenize, max_len, ks=(1, 5, 10)):
  """Word-similarity Spearman and synonym-retrieval metrics, seen / unseen. Flat dict."""
  from jaxcl.data import text
  from jaxcl.eval import ranking
  sim, ret = task["similarity"], task["retrieval"]
  words = sorted({w for part in sim.values() for f in ("a", "b") for w in part[f]}
                 | set(ret["queries"]) | set(ret["corpus"]))
  where = {w: k for k, w in enumerate(words)}
  e = embed(module, params, text.encode(tokenize, words, max_len))
  out = {}
  for name, part in sim.items():
    a = e[[where[w] for w in part["a"]]]
    b = e[[where[w] for w in part["b"]]]
    out[f"sim_{name}"] = float(ranking.similarity_correlation(a, b, part["score"])["spearman"])
  q = e[[where[w] for w in ret["queries"]]]
  corpus = e[[where[w] for w in ret["corpus"]]]
  for name, sel in (("seen", ret["seen"]), ("unseen", ~ret["seen"])):
    m = ranking.ranking_metrics(q[sel], corpus, [p for p, s in zip(ret["positives"], sel) if s],
                                ks=ks)
    out.update({f"ret_{name}/{k}": v for k, v in m.items()
                if k.startswith(("mrr@", "recall@"))})
  return out


def task_kwargs(block):
  return {k: block[k] for k in ("split_seed", "test_fraction", "pool_synsets",
                                "pairs_per_synset", "sim_pairs", "retrieval_synsets")}


def _tokenizer():
  """The tokenizer of the tower: MiniLM's WordPiece (its vocabulary, whatever the weights)."""
  from jaxcl.models import pretrained
  return pretrained.load_minilm()[2]


def _tower(params):
  return params["towers_0"]["encoder"]


def final_params(workdir):
  """The model parameters of a run's latest checkpoint (host arrays; no model set up)."""
  import orbax.checkpoint as ocp
  from jaxcl.train import checkpoint as ckpt
  mngr = ckpt.manager(os.path.abspath(os.path.join(workdir, "checkpoints")), use_async=False)
  state = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  return jax.device_get(state["params"])


def train(config, workdir):
  """Builds the pairs, fine-tunes (``num_steps > 0``), evaluates before / after. Returns
  ``{"before": {...}, "after": {...}, "pairs": P, "pool": S}`` (also written as JSON)."""
  from jaxcl import models, recipes
  from jaxcl.data import text
  from jaxcl.models import pretrained
  from jaxcl.train import train as run_trainer
  from jaxcl.train import trainer
  block = config[BLOCK]
  if config.model.encoder != "bert" or not config.model.shared_tower:
    raise ValueError(f"{BLOCK}: needs config.model.encoder='bert' and config.model.shared_tower"
                     f"=True (one tower for both words), got {config.model.encoder!r} / "
                     f"{config.model.shared_tower}")
  if config.model.head_layers != 0:
    raise ValueError(f"{BLOCK}: config.model.head_layers must be 0 (the word vector is the "
                     f"pooled tower output), got {config.model.head_layers}")
  task = build_task(**task_kwargs(block))
  tokenize = _tokenizer()
  max_len = int(block.max_len)
  pairs = task["pairs"]
  _, x, y = text.register_texts(config.data.name, [pairs["a"], pairs["b"]], tokenize=tokenize,
                                max_len=max_len, y=pairs["label"],
                                num_classes=task["num_synsets"])
  c = recipes.trainer_config(config, BLOCK)
  c.eval.at_end = False
  module = models.BertEncoder(**dict(config.model.encoder_kwargs))
  ks = tuple(block.ks)
  key = json.dumps([c.model.pretrained, dict(config.model.encoder_kwargs), task_kwargs(block),
                    max_len, ks], sort_keys=True, default=str)
  measure = lambda params: evaluate(module, params, task, tokenize, max_len, ks)
  if c.model.pretrained and key not in _BEFORE:  # pretrained weights: the same every run
    _BEFORE[key] = measure(pretrained.load_minilm()[1])
  before = _BEFORE.get(key)
  if c.num_steps == 0:  # the untuned tower: BEFORE only
    if before is None:
      c.num_steps = 1  # a model to initialise (the trainer's init of this seed)
      before = measure(jax.device_get(_tower(trainer.setup(c)["state"].params)))
    after = before
  else:
    captured = {}

    def warm_start(state):  # the starting point of the fine-tune (the trainer's own rule)
      if c.model.pretrained:
        state = pretrained.warm_start(c.model.pretrained)(state)
      captured["params"] = jax.device_get(_tower(state.params))
      return state

    run_trainer(c, workdir, iterator=text.batches(x, y, global_batch_size=c.batch_size,
                                                  seed=c.seed), warm_start=warm_start)
    if before is None:
      before = measure(captured["params"]) if captured else {}
    after = measure(_tower(final_params(workdir)))
  out = {"before": before, "after": after, "pairs": int(len(y)), "pool": int(len(task["pool"]))}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    jsonio.write_json(os.path.join(workdir, f"{BLOCK}.json"), out, indent=1)
  return out
