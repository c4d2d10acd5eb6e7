"""CoDiEmb on WordNet: joint reverse-dictionary retrieval (IR) and graded word similarity (STS).

Zhang et al., "CoDiEmb: A Collaborative yet Distinct Framework for Unified Representation
Learning in Information Retrieval and Semantic Textual Similarity", arXiv 2508.11442. One text
tower (``config.model.shared_tower``, all-MiniLM-L6-v2 with ``config.model.pretrained =
"minilm"``) is fine-tuned on two tasks built from WordNet nouns (:mod:`jaxcl.data.wordnet`):

* IR (reverse dictionary): query = a training synset's definition, ``P`` positives = its lemmas
  (cycled when it has fewer), ``N`` hard negatives = a lemma of a co-hyponym (a sibling under
  one of its hypernyms; a random training synset when it has none);
* STS: lemma pairs of training synsets graded by Wu-Palmer similarity
  (:func:`jaxcl.data.wordnet.similarity_pairs`), ``M / 2`` pairs per row.

Both are rows of one multi-column token dataset (``M = 1 + P + N`` blocks of ``text_len``
tokens; the shared tower needs one block shape, so words are padded to the gloss length in
training); the row's task and STS scores ride in its label (``jaxcl.losses.contrib.codiemb_labels``)
and the objective ``codiemb_joint`` (``jaxcl/train/objectives.py``) applies the IR or STS loss
per row (``config.loss.kwargs.form``: ``"codiemb"`` or ``"info_nce"``, the naive baseline).
``config.codiemb.single_task``: CoDiEmb's single-task batches (:func:`jaxcl.data.text.batches`
with ``groups`` = task: equal row counts per task, so the round-robin of
:class:`~jaxcl.data.grouped.GroupedBatches` alternates IR and STS batches: balanced) or mixed
uniform batches.

Evaluation on held-out synsets (:func:`jaxcl.data.wordnet.split_synsets`, never in a training
row): reverse-dictionary MRR@10 / nDCG@10 / Recall@10 (:mod:`jaxcl.eval.ranking`) of
``eval_queries`` test definitions against a corpus of their lemmas plus ``eval_distractors``
random noun lemmas (the full 119k-lemma corpus is too slow to embed on CPU), and the Spearman
of cosine vs Wu-Palmer over ``eval_pairs`` test word pairs. The trainer keeps the checkpoints of
steps ``k * num_steps / fuse_checkpoints``; besides the final one, their plain average and
their delta-guided fusion (:mod:`jaxcl.fusion`, deltas from the starting weights) are
evaluated. Results: ``workdir/codiemb.json``.

Example:
  ``python -m jaxcl.main --config=configs/codiemb_wordnet.py --workdir=runs/codiemb``
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcl import jsonio

VARIANTS = ("final", "average", "delta_guided")


def default_codiemb() -> ml_collections.ConfigDict:
  """The ``config.codiemb`` block (data, sampler, evaluation, fusion)."""
  m = ml_collections.ConfigDict()
  m.single_task = True        # CoDiEmb's single-task batches; False: mixed uniform batches
  m.ir_rows = 512             # training rows per task (equal counts: balanced sampler)
  m.sts_rows = 512
  m.positives = 2             # P lemmas per IR query; M = 1 + P + negatives (even)
  m.negatives = 1             # hard negatives (co-hyponym lemmas) per IR query
  m.text_len = 16             # tokens per text block in training (glosses; words padded)
  m.word_len = 8              # tokens per word at evaluation
  m.pos = "n"                 # WordNet parts of speech of both tasks
  m.split_seed = 0            # held-out synsets (split_synsets), fixed across runs
  m.test_fraction = 0.1
  m.eval_queries = 256
  m.eval_distractors = 1500
  m.eval_pairs = 512
  m.fuse_checkpoints = 3      # checkpoints kept and fused (0 / 1: only the final one)
  m.fusion_power = 1.0
  m.fusion_granularity = "element"
  m.eval_pretrained = False   # also evaluate the starting weights
  m.wordnet_dir = ""          # "" = $JAXCL_WORDNET_DIR or /usr/share/wordnet
  return m


def columns_of(m):
  cols = 1 + m.positives + m.negatives
  if m.positives < 1 or m.negatives < 0 or cols % 2:
    raise ValueError(f"config.codiemb: 1 + positives + negatives must be even (the STS rows "
                     f"hold pairs), got positives={m.positives}, negatives={m.negatives}")
  return cols


def _words(wn, i):
  from jaxcl.data import wordnet
  return list(dict.fromkeys(wordnet.text(w) for w in wn.lemmas[i]))


def ir_rows(wn, m, seed):
  """``columns`` (``[queries, positive_1..P, negative_1..N]`` text lists) of ``m.ir_rows``
  training synsets drawn with ``seed``."""
  from jaxcl.data import wordnet
  ids = wordnet.split_synsets(wn, "train", seed=m.split_seed, test_fraction=m.test_fraction,
                              pos=m.pos)
  member = set(ids.tolist())
  rng = np.random.default_rng([seed, 11])
  chosen = rng.choice(ids, size=min(m.ir_rows, len(ids)), replace=False)
  cols = [[] for _ in range(1 + m.positives + m.negatives)]
  for i in chosen.tolist():
    words = _words(wn, i)
    cols[0].append(wn.definitions[i])
    for k in range(m.positives):
      cols[1 + k].append(words[k % len(words)])
    sib = sorted({s for h in wn.hypernyms[i] for s in wn.hyponyms(h)} & member - {i})
    for k in range(m.negatives):
      for _ in range(8):
        j = int(sib[rng.integers(len(sib))]) if sib else int(ids[rng.integers(len(ids))])
        word = _words(wn, j)[0]
        if word not in words:
          break
      cols[1 + m.positives + k].append(word)
  return cols


@functools.lru_cache(maxsize=8)
def _pairs(wn, n, split, seed, test_fraction, pos):
  from jaxcl.data import wordnet
  return wordnet.similarity_pairs(wn, n, split, seed=seed, test_fraction=test_fraction, pos=pos)


def sts_rows(wn, m, pairs):
  """``(columns, scores [R, pairs])``: ``m.sts_rows`` rows of ``pairs`` Wu-Palmer-graded
  training word pairs (the same for every run: the pairs' sampler is tied to the split seed)."""
  sp = _pairs(wn, m.sts_rows * pairs, "train", m.split_seed, m.test_fraction, m.pos)
  a, b = np.asarray(sp["a"]).reshape(-1, pairs), np.asarray(sp["b"]).reshape(-1, pairs)
  cols = []
  for k in range(pairs):
    cols += [a[:, k].tolist(), b[:, k].tolist()]
  return cols, sp["score"].reshape(-1, pairs)


def training_data(wn, m, tokenize, seed, vocab):
  """``(name, x [R, M * text_len], y [R], task [R])`` with the dataset registered (IR rows then
  STS rows; ``y`` = :func:`jaxcl.losses.contrib.codiemb_labels`)."""
  from jaxcl.data import text
  from jaxcl.losses.contrib import codiemb_labels
  cols = columns_of(m)
  ir = ir_rows(wn, m, seed)
  sts, scores = sts_rows(wn, m, cols // 2)
  columns = [a + b for a, b in zip(ir, sts)]
  task = np.concatenate([np.zeros(len(ir[0]), np.int32), np.ones(len(sts[0]), np.int32)])
  y = codiemb_labels(task, np.concatenate([np.zeros((len(ir[0]), cols // 2)), scores]),
                     cols // 2)
  name = f"codiemb_wordnet_{cols}x{m.text_len}_v{vocab}"
  info, x, _ = text.register_texts(name, columns, tokenize=tokenize, max_len=m.text_len, y=y,
                                   num_classes=1, vocab=vocab)
  return info.name, x, y, task


def eval_sets(wn, m, tokenize):
  """Held-out reverse-dictionary queries / corpus / positives and STS pairs, tokenized."""
  from jaxcl.data import text, wordnet
  rd = wordnet.reverse_dictionary(wn, "test", seed=m.split_seed, test_fraction=m.test_fraction,
                                  pos=m.pos)
  rng = np.random.default_rng([m.split_seed, 7])
  q = np.sort(rng.choice(len(rd["queries"]), min(m.eval_queries, len(rd["queries"])),
                         replace=False))
  pos = np.unique(np.concatenate([rd["positives"][i] for i in q]))
  rest = np.setdiff1d(np.arange(len(rd["corpus"])), pos)
  extra = rng.choice(rest, min(m.eval_distractors, len(rest)), replace=False)
  corpus = np.unique(np.concatenate([pos, extra]))
  where = {int(c): k for k, c in enumerate(corpus)}
  sp = _pairs(wn, m.eval_pairs, "test", m.split_seed, m.test_fraction, m.pos)
  enc = functools.partial(text.encode, tokenize)
  return {"queries": enc([rd["queries"][i] for i in q], m.text_len),
          "corpus": enc([rd["corpus"][c] for c in corpus], m.word_len),
          "positives": [[where[int(c)] for c in rd["positives"][i]] for i in q],
          "a": enc(sp["a"], m.word_len), "b": enc(sp["b"], m.word_len),
          "score": np.asarray(sp["score"], np.float64)}


_FORWARD = {}  # one jitted forward per encoder configuration (compiled once per chunk shape)


def embed(module, params, ids, batch=256):
  """``[N, D]`` float32 embeddings of token ids (every chunk padded to ``batch`` rows)."""
  key = repr(module)
  if key not in _FORWARD:
    _FORWARD[key] = jax.jit(lambda p, x: module.apply({"params": p}, x))
  fwd = _FORWARD[key]
  out = []
  for s in range(0, len(ids), batch):
    chunk = ids[s:s + batch]
    pad = batch - len(chunk)
    chunk = np.concatenate([chunk, np.zeros((pad, ids.shape[1]), ids.dtype)])
    out.append(np.asarray(fwd(params, jnp.asarray(chunk)))[:len(chunk) - pad])
  return np.concatenate(out)


def evaluate(module, params, sets):
  """``{"mrr@10", "ndcg@10", "recall@10", "spearman", "pearson"}`` of encoder ``params``."""
  from jaxcl.eval import ranking
  r = ranking.ranking_metrics(embed(module, params, sets["queries"]),
                              embed(module, params, sets["corpus"]), sets["positives"], ks=(10,))
  s = ranking.similarity_correlation(embed(module, params, sets["a"]),
                                     embed(module, params, sets["b"]), sets["score"])
  return {"mrr@10": r["mrr@10"], "ndcg@10": r["ndcg@10"], "recall@10": r["recall@10"], **s}


def checkpoint_params(workdir):
  """``{step: encoder params}`` of the shared tower in every checkpoint of ``workdir``."""
  import orbax.checkpoint as ocp
  from jaxcl.train import checkpoint as ckpt
  mngr = ckpt.manager(os.path.abspath(os.path.join(workdir, "checkpoints")), use_async=False)
  out = {}
  for step in mngr.all_steps():
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    out[int(step)] = state["state"]["params"]["towers_0"]["encoder"]
  mngr.close()
  return out


def trainer_config(config, name):
  from jaxcl import recipes
  m = config.codiemb
  c = recipes.trainer_config(config, "codiemb")
  c.data.name = name
  c.views.num = 1
  c.model.shared_tower = True
  c.eval.at_end = False
  k = max(1, int(m.fuse_checkpoints))
  c.checkpoint.every = max(1, c.num_steps // k)
  c.checkpoint.keep = k
  return c


def run(config, workdir, *, wn=None, tokenize=None, vocab=None):
  """Trains and evaluates (module docstring); ``wn`` / ``tokenize`` / ``vocab`` default to
  WordNet and the MiniLM tokenizer (tests pass small stand-ins). Returns the results dict."""
  from jaxcl import fusion, models
  from jaxcl.data import text, wordnet
  from jaxcl.train import setup, train as train_run
  m = config.codiemb
  if wn is None:
    wn = wordnet.load_wordnet(m.wordnet_dir or None)
  if tokenize is None:
    from jaxcl.models import pretrained
    _, _, tokenize = pretrained.load_minilm()
  vocab = vocab or text.BERT_VOCAB
  name, x, y, task = training_data(wn, m, tokenize, config.seed, vocab)
  c = trainer_config(config, name)
  it = text.batches(x, y, global_batch_size=c.batch_size, seed=c.seed,
                    groups=task if m.single_task else None)
  if c.model.pretrained:
    from jaxcl.models import pretrained
    _, init, _ = pretrained.load_minilm()
  else:  # the trainer's own initialisation (same seed)
    init = jax.device_get(setup(c, devices=jax.devices()[:1])["state"].params["towers_0"]
                          ["encoder"])
  train_run(c, workdir, iterator=it)
  ckpts = checkpoint_params(workdir)
  module = models.BertEncoder(**dict(c.model.encoder_kwargs))
  sets = eval_sets(wn, m, tokenize)
  steps = sorted(ckpts)
  results = {"steps": steps, "final": evaluate(module, ckpts[steps[-1]], sets)}
  if len(steps) > 1:
    results["average"] = evaluate(module, fusion.average([ckpts[s] for s in steps]), sets)
    results["delta_guided"] = evaluate(module, fusion.delta_guided(
        init, [ckpts[s] for s in steps], power=m.fusion_power,
        granularity=m.fusion_granularity), sets)
  if m.eval_pretrained:
    results["pretrained"] = evaluate(module, init, sets)
  from jaxcl.train import logger
  logged = logger.read_metrics(workdir)
  results["train_loss"] = float(logged[-1]["loss"]) if logged else float("nan")
  jsonio.write_json(os.path.join(workdir, "codiemb.json"), results, indent=1)
  return results


def train(config, workdir):
  """``jaxcl.main`` entry point (``config.recipe = "codiemb"``)."""
  return run(config, workdir)
