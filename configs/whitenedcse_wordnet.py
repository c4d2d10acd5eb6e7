"""WhitenedCSE (Zhuo et al., ACL 2023, arXiv 2305.17746; methods.md section 27) on WordNet
glosses with the pretrained all-MiniLM-L6-v2 tower (:mod:`jaxcl.recipes.whitenedcse`).

``python -m jaxcl.main --config=configs/whitenedcse_wordnet.py --workdir=runs/wcse``
Study: ``python -m experiments.whitenedcse`` (vs SimCSE: alignment / uniformity and the
Wu-Palmer similarity Spearman of held-out glosses, before and after).

As in the paper / reference code: 3 dropout passes of each text (BERT dropout 0.1), the
train-only head SGW -> Linear(D, D) -> tanh (whitening per view's rows, stop-gradient ZCA
matrices, global-batch statistics), anchor pass 1 against passes 2 and 3 (two InfoNCE terms,
in-batch negatives), tau = 0.05, AdamW, lr in the paper's 1e-5 .. 3e-5 range (3e-5), no weight
decay; evaluation reads the pooled embedding without the head.

Proxy choices (CPU): MiniLM (D = 384, mean pooling) instead of BERT-base's CLS (D = 768);
groups: the paper's 128 groups of 6 channels for D = 768 become 64 groups of the same 6
channels (the group size is what the whitening's conditioning depends on: a 6 x 6 covariance
from each view's rows; ``num_groups=128`` would be groups of 3); glosses truncated to 16 tokens
(paper: 32-token Wikipedia sentences), batch 32 sentences (paper 64), a few dozen steps.
"""
import ml_collections

from jaxcl.recipes.whitenedcse import default_block
from jaxcl.train.config import default_config

# The paper's encoder dropout and temperature; 6 channels per whitening group.
DROPOUT = 0.1
TEMPERATURE = 0.05
GROUP_SIZE = 6
DIM = 384  # all-MiniLM-L6-v2


def simcse(c):
  """The SimCSE baseline on the same config: 2 dropout views, InfoNCE (tau 0.05) on the pooled
  embedding (``info_nce``: anchor view 0, in-batch negatives of view 1, SimCSE's CE)."""
  c.views.num = 2
  c.loss.name = "info_nce"
  c.loss.kwargs = {"temperature": TEMPERATURE}
  return c


def get_config():
  c = default_config()
  with c.unlocked():
    c.recipe = "whitenedcse"
    c.whitenedcse = default_block()
  c.data.name = "wordnet_glosses"
  c.model.encoder = "bert"
  c.model.encoder_kwargs = {"dropout": DROPOUT}
  c.model.pretrained = "minilm"
  c.model.head_layers = 0          # z = the pooled sentence embedding (the head is the loss')
  c.views.num = 3
  c.augment.params = ml_collections.ConfigDict()
  c.loss.name = "whitenedcse"
  c.loss.kwargs = {"temperature": TEMPERATURE, "num_groups": DIM // GROUP_SIZE,
                   "chunking": "view", "method": "zca", "head": True, "whiten": True}
  c.batch_size = 32
  c.num_steps = 60
  c.optim.name = "adamw"
  c.optim.lr = 3e-5
  c.optim.warmup_steps = 6
  c.optim.weight_decay = 0.0
  c.eval.at_end = False            # the recipe evaluates (jaxcl.recipes.whitenedcse.evaluate)
  c.eval.batch_size = 512
  c.checkpoint.every = c.num_steps
  c.checkpoint.use_async = False
  c.log_every = 10
  c.plots = False
  return c
