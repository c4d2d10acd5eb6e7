"""SimCSE / WhitenedCSE on WordNet glosses: unsupervised sentence contrast with dropout views.

Zhuo et al., "WhitenedCSE: Whitening-based Contrastive Learning of Sentence Embeddings", ACL
2023 (arXiv 2305.17746), against unsupervised SimCSE (Gao et al. 2021). Data, built in memory:

* training texts: the glosses (definition + examples, :func:`jaxcl.data.wordnet.gloss_corpus`)
  of the *train* synsets of :func:`~jaxcl.data.wordnet.split_synsets` (seed ``data_seed``),
  ``train_texts`` of them drawn at random (0 = all ~106k), truncated to ``max_len`` WordPiece
  tokens, one text per example (a ``"tokens"`` dataset of :func:`jaxcl.data.text.register_texts`,
  labels all 0: the objectives use none). Views = ``config.views.num`` forward passes with BERT
  dropout (``encoder_kwargs.dropout``): SimCSE 2, WhitenedCSE 3.
* evaluation, held-out (test) synsets only: ``eval_pairs`` Wu-Palmer graded noun / verb pairs
  (:func:`~jaxcl.data.wordnet.similarity_pairs`), each synset embedded **by its gloss**
  (same truncation): the STS analogue, sentence pairs with a graded similarity, the input
  distribution the method trains on (a 1-3 token lemma is not a sentence; its Spearman is
  reported too, as ``spearman_word``, from the lemmas of the same pairs).

Metrics (:func:`evaluate`, encoder output = the pooled sentence embedding, eval mode, no head;
the WhitenedCSE head is train-only as in the reference): ``spearman_gloss`` / ``pearson_gloss``
of pair cosine vs Wu-Palmer; ``alignment`` (Wang & Isola, :func:`jaxcl.metrics.alignment`) over
the pairs with Wu-Palmer >= ``align_threshold`` (SimCSE's practice: STS-B pairs scored > 4);
``uniformity`` (:func:`jaxcl.metrics.uniformity`, t = 2) over the distinct held-out glosses;
``pair_auc``: the probability that a pair with Wu-Palmer >= ``align_threshold`` has a higher
cosine than a pair with Wu-Palmer < ``low_threshold`` (Mann-Whitney AUC, ties count 1/2).

``python -m jaxcl.main --config=configs/whitenedcse_wordnet.py --workdir=runs/wcse`` writes
``workdir/whitenedcse.json`` (``before``: the pretrained tower, ``after``: the trained one).
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from jaxcl import jsonio

BLOCK = "whitenedcse"


def default_block() -> ml_collections.ConfigDict:
  """The ``config.whitenedcse`` block: data and evaluation of the recipe."""
  b = ml_collections.ConfigDict()
  b.max_len = 16            # WordPiece tokens per gloss (truncated, final [SEP] kept)
  b.train_texts = 20000     # training glosses drawn from the train synsets (0 = all)
  b.eval_pairs = 1000       # held-out Wu-Palmer pairs
  b.align_threshold = 0.8   # Wu-Palmer >= this: a positive pair (alignment, AUC positives)
  b.low_threshold = 0.4     # Wu-Palmer < this: AUC negatives
  b.data_seed = 0           # synset split, training-gloss draw and evaluation pairs
  b.test_fraction = 0.1
  b.eval_before = True      # also evaluate the starting (pretrained) tower
  return b


def _tokenizer(tokenize):
  if tokenize is None:
    from jaxcl.models import pretrained
    tokenize = pretrained.load_minilm()[2]
  return tokenize


def build_data(config, tokenize=None):
  """``(x_train [N, L] float32 ids, y_train [N], eval dict)``; registers ``config.data.name``.

  ``tokenize``: a WordPiece-like ``(texts, pad_to) -> {"input_ids"}`` (default MiniLM's)."""
  from jaxcl.data import text, wordnet
  b = config[BLOCK]
  tokenize = _tokenizer(tokenize)
  wn = wordnet.load_wordnet()
  corpus = wordnet.gloss_corpus(wn)          # file order: corpus[i] is synset i's gloss
  ids = wordnet.split_synsets(wn, "train", seed=b.data_seed, test_fraction=b.test_fraction)
  if b.train_texts and b.train_texts < len(ids):
    pick = np.random.default_rng([b.data_seed, 0x5743]).choice(len(ids), b.train_texts,
                                                               replace=False)
    ids = ids[np.sort(pick)]
  _, x, _ = text.register_texts(config.data.name, [[corpus[i] for i in ids]],
                                tokenize=tokenize, max_len=b.max_len,
                                y=np.zeros(len(ids), np.int32), num_classes=1)
  pairs = wordnet.similarity_pairs(wn, b.eval_pairs, "test", seed=b.data_seed,
                                   test_fraction=b.test_fraction)
  syn = np.unique(np.concatenate([pairs["synset_a"], pairs["synset_b"]]))
  where = {int(s): k for k, s in enumerate(syn)}
  words = sorted(set(pairs["a"]) | set(pairs["b"]))
  wpos = {w: k for k, w in enumerate(words)}
  ev = {"gloss_x": text.encode(tokenize, [corpus[i] for i in syn], b.max_len),
        "gloss_a": np.asarray([where[int(s)] for s in pairs["synset_a"]]),
        "gloss_b": np.asarray([where[int(s)] for s in pairs["synset_b"]]),
        "word_x": text.encode(tokenize, words, b.max_len),
        "word_a": np.asarray([wpos[w] for w in pairs["a"]]),
        "word_b": np.asarray([wpos[w] for w in pairs["b"]]),
        "score": np.asarray(pairs["score"], np.float64)}
  return x, np.zeros(len(x), np.int32), ev


def pair_auc(cos, score, hi, lo):
  """Mann-Whitney AUC: P(cos of a pair with score >= hi > cos of a pair with score < lo)."""
  from jaxcl.eval.ranking import average_ranks
  pos, neg = np.asarray(cos)[score >= hi], np.asarray(cos)[score < lo]
  if not len(pos) or not len(neg):
    return float("nan")
  r = average_ranks(np.concatenate([pos, neg]))[:len(pos)]
  return float((r.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(embed, ev, align_threshold=0.8, low_threshold=0.4):
  """Metrics of ``embed(x [n, L]) -> [n, D]`` on the evaluation dict of :func:`build_data`."""
  import jax.numpy as jnp
  from jaxcl import metrics
  from jaxcl.eval import ranking
  unit = lambda f: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  g = unit(np.asarray(embed(ev["gloss_x"]), np.float64))
  w = unit(np.asarray(embed(ev["word_x"]), np.float64))
  score = ev["score"]
  cos = np.sum(g[ev["gloss_a"]] * g[ev["gloss_b"]], 1)
  wcos = np.sum(w[ev["word_a"]] * w[ev["word_b"]], 1)
  near = score >= align_threshold
  za, zb = (jnp.asarray(g[ev[k]][near], jnp.float32) for k in ("gloss_a", "gloss_b"))
  return {"spearman_gloss": ranking.spearman(cos, score),
          "pearson_gloss": ranking.pearson(cos, score),
          "spearman_word": ranking.spearman(wcos, score),
          "alignment": float(metrics.alignment(za, zb)),
          "uniformity": float(metrics.uniformity(jnp.asarray(g, jnp.float32))),
          "pair_auc": pair_auc(cos, score, align_threshold, low_threshold),
          "near_pairs": int(near.sum())}


def embedder(parts, state, batch_size):
  """``x -> [n, D]`` pooled encoder embeddings under ``state`` (eval mode, all devices)."""
  from jaxcl.recipes import mcl
  return lambda x: mcl.features(parts, state, x, "encoder", batch_size)


def evaluate_start(config, ev):
  """Metrics of the tower the run starts from (``config.model.pretrained``, or random init)."""
  from jaxcl.recipes import trainer_config
  from jaxcl.train import trainer
  c = trainer_config(config, BLOCK)
  parts = trainer.setup(c)
  state = parts["state"]
  if c.model.get("pretrained"):
    from jaxcl.models import pretrained
    state = jax.device_put(pretrained.warm_start(c.model.pretrained)(state), parts["shardings"])
  b = config[BLOCK]
  return evaluate(embedder(parts, state, c.eval.batch_size), ev, b.align_threshold,
                  b.low_threshold)


def train(config, workdir, *, tokenize=None, data=None):
  """Builds the data, trains ``config`` (its loss: ``info_nce`` = SimCSE, ``whitenedcse``),
  evaluates before / after; returns and writes ``workdir/whitenedcse.json``.
  ``data``: a :func:`build_data` result to reuse (a study's runs share one)."""
  from jaxcl.data import text
  from jaxcl.recipes import mcl, trainer_config
  from jaxcl.train import trainer
  b = config[BLOCK]
  x, y, ev = build_data(config, tokenize) if data is None else data
  c = trainer_config(config, BLOCK)
  os.makedirs(workdir, exist_ok=True)
  it = text.batches(x, y, global_batch_size=c.batch_size, seed=c.seed)
  trainer.train(c, workdir, iterator=it)
  state, parts = mcl.restore(c, workdir)
  results = {"after": evaluate(embedder(parts, state, c.eval.batch_size), ev,
                               b.align_threshold, b.low_threshold)}
  if b.eval_before:
    results["before"] = evaluate_start(config, ev)
  results.update(loss=c.loss.name, views=c.views.num, steps=c.num_steps,
                 batch=c.batch_size, train_texts=int(len(x)))
  if jax.process_index() == 0:
    jsonio.write_json(os.path.join(workdir, "whitenedcse.json"), results, indent=1)
    print(json.dumps(results, indent=1), flush=True)
  return results
