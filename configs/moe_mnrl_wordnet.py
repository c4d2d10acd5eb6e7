"""MoE-MNRL on WordNet (Hallee et al., arXiv 2401.15713; methods.md ``moe_mnrl``): MNRL
fine-tuning of all-MiniLM-L6-v2 on three "domains" -- nouns, verbs, adjectives -- of WordNet
synonym pairs, as one shared model, one model per domain, or the FFNs copied into one expert
per domain with enforced routing (``config.moe_mnrl.arm``; :mod:`jaxcl.recipes.moe_mnrl`).

Choices: MNR = ``info_nce`` at temperature 0.05 (sentence-transformers' scale 20, one
direction, in-batch negatives), lemmas in 8 WordPiece tokens (99% of WordNet lemmas fit),
batch 32 pairs (single-domain batches), AdamW lr 1e-4 with a 10% warmup and cosine decay, no
dropout (the sentence-transformers fine-tuning default keeps BERT's dropout; off here to keep
the CPU step cheap and the arms deterministic given the batch order), no projection head (z =
the normalised mean-pooled embedding that is evaluated).

``python -m jaxcl.main --config=configs/moe_mnrl_wordnet.py --workdir=runs/moe_mnrl``
(``--config.moe_mnrl.arm=shared``); study: ``python -m experiments.moe_mnrl``.
"""
from jaxcl.recipes.moe_mnrl import NAME, default_block
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.recipe = "moe_mnrl"
  c.data.name = NAME            # registered by the recipe (routed variant for the moe arm)
  c.model.encoder = "bert"
  c.model.pretrained = "minilm"
  c.model.shared_tower = True
  c.model.head_layers = 0
  c.views.num = 1
  c.loss.name = "info_nce"
  c.loss.kwargs = {"temperature": 0.05}
  c.batch_size = 32
  c.num_steps = 60              # shared / moe; per_domain: 20 per domain
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 6
  c.optim.weight_decay = 0.01
  c.log_every = 10
  c.checkpoint.every = 60
  c.checkpoint.use_async = False
  c.eval.at_end = False         # the recipe evaluates retrieval / pair F1 itself
  c.eval.baselines = False
  c.plots = False
  c.progress = False
  c.moe_mnrl = default_block()
  return c
