"""CoDiEmb (Zhang et al., arXiv 2508.11442, methods.md section 17) on WordNet nouns: the pretrained
all-MiniLM-L6-v2 tower fine-tuned jointly on reverse-dictionary retrieval (query = definition,
positives = the synset's lemmas, one co-hyponym lemma as hard negative) and Wu-Palmer-graded
word similarity, with the multi-positive IR loss (T = 0.02), the order-aware STS losses
(2 (1 - Pearson) + 0.5 PRO + 5 RankKL, T = 0.05) and single-task batches (recipe
:mod:`jaxcl.recipes.codiemb`).

``python -m jaxcl.main --config=configs/codiemb_wordnet.py --workdir=runs/codiemb_wordnet``
Study: ``python -m experiments.codiemb`` (vs naive mixed batches with one InfoNCE; fusion of the
run's checkpoints: plain average vs delta-guided).

CPU proxy choices: rows of 4 token blocks of 16 tokens (IR: definition, 2 lemmas, 1 hard
negative; STS: 2 word pairs), batch 16 rows, 60 steps at AdamW lr 5e-5 (warm-up 6, cosine to
0), no dropout; the paper trains larger models on many IR / STS datasets with P = 3, N = 8
and batches of 32 / 64 per device. Evaluation on held-out synsets (a 10% synset split).
"""
import ml_collections

from jaxcl.recipes.codiemb import default_codiemb
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  with c.unlocked():
    c.recipe = "codiemb"
    c.codiemb = default_codiemb()
  c.data.name = ""            # registered by the recipe (codiemb_wordnet_4x16_v30522)
  c.model.encoder = "bert"
  c.model.encoder_kwargs = ml_collections.ConfigDict()  # MiniLM's shape
  c.model.pretrained = "minilm"
  c.model.shared_tower = True
  c.model.head_layers = 0     # z = the pooled, L2-normalised sentence embedding
  c.views.num = 1
  c.loss.name = "codiemb_joint"
  c.loss.kwargs = {"form": "codiemb", "positives": 2, "temperature": 0.02,
                   "sts_temperature": 0.05, "threshold": 0.75}
  c.batch_size = 16
  c.num_steps = 60
  c.optim.lr = 5e-5
  c.optim.warmup_steps = 6
  c.optim.weight_decay = 0.01
  c.log_every = 10
  c.plots = False
  c.progress = False
  c.eval.baselines = False
  c.checkpoint.use_async = False
  return c
