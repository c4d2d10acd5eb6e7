"""Lexical specialization (BabelBERT, arXiv 2208.01018; methods.md ``lexical_specialization``):
label-based NT-Xent (tau = 0.07) on WordNet synonym pairs, fine-tuning the pretrained
all-MiniLM-L6-v2 tower.

``python -m jaxcl.main --config=configs/lexical_specialization_wordnet.py --workdir=runs/lexspec``
Study: ``python -m experiments.lexical_specialization`` (vs plain InfoNCE / SupCon on the same
pairs and the untuned tower; word-similarity Spearman and synonym retrieval, seen / unseen
synsets, before / after).

Proxy choices (the recipe's docstring, ``jaxcl/recipes/lexical_specialization.py``): words of
at most 8 WordPiece tokens (``[CLS] w [SEP]``, longer multiword lemmas truncated), the word
vector = mean over its subwords (``pool_exclude``: [CLS] / [SEP] not pooled), one tower shared
by both words of a pair (``shared_tower``, ``z [B, 2, D]``, no head), dropout 0.1 as in a
BERT fine-tune; batch 64 pairs; AdamW with weight decay 0 as the paper, but lr 5e-5 (the paper's
5e-6 is for 2 epochs at batch 256 over ~100k pairs; this budget is ~100 steps), 10 warmup steps,
cosine decay. The pool: 3000 training synsets x up to 2 pairs (about 4,600 pairs; one epoch at
the study's budget); evaluation on 500 word pairs / 500 synsets seen and unseen.
"""
import ml_collections

from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.recipe = "lexical_specialization"
  c.data.name = "wordnet_synonym_pairs"
  c.batch_size = 64
  c.num_steps = 100
  c.log_every = 10
  c.model.encoder = "bert"
  c.model.encoder_kwargs = ml_collections.ConfigDict(
      {"dropout": 0.1, "pool_exclude": (101, 102)})
  c.model.pretrained = "minilm"
  c.model.shared_tower = True
  c.model.head_layers = 0
  c.views.num = 1
  c.loss.name = "label_nt_xent"
  c.loss.kwargs = ml_collections.ConfigDict({"temperature": 0.07})
  c.optim.name = "adamw"
  c.optim.lr = 5e-5
  c.optim.warmup_steps = 10
  c.optim.weight_decay = 0.0
  c.optim.clip_norm = 1.0
  c.checkpoint.every = c.num_steps
  c.checkpoint.use_async = False
  c.eval.at_end = False
  c.eval.baselines = False
  c.plots = False
  c.lexical_specialization = ml_collections.ConfigDict({
      "max_len": 8,             # tokens per word, [CLS] and [SEP] included
      "split_seed": 0,          # held-out synsets, evaluation sets and the training pool
      "test_fraction": 0.1,     # held-out (unseen) synsets: split_synsets's test split
      "pool_synsets": 3000,     # training synsets (>= 2 lemmas), the seen evaluation ones first
      "pairs_per_synset": 2,    # synonym pairs drawn per pool synset
      "sim_pairs": 500,         # Wu-Palmer word pairs, seen and unseen
      "retrieval_synsets": 500,  # retrieval query synsets, seen and unseen
      "ks": (1, 5, 10),
  })
  return c
