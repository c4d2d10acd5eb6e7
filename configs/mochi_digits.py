"""MoCHi(64, 64, 32) on MoCo v2 (configs/moco_digits.py) on scikit-learn digits: per query, the
64 hardest negatives of the queue are mixed into 64 type-1 (two negatives) and 32 type-2 (query
+ a negative, query weight < 1/2) synthetic negatives, stop-gradient, added to the logits.

``python -m jaxcl.main --config=configs/mochi_digits.py --workdir=runs/mochi_digits``

Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", arXiv 2010.01028
(:func:`jaxcl.losses.contrib.mochi_loss`, ``mine="queue"`` as in the paper). Without a queue
(``queue.size = 0``) the pool is the gathered global batch (then ``num_hard`` must be below
the global batch). Study: ``python -m experiments.mochi``.
"""
from configs.moco_digits import get_config as moco_digits


def get_config():
  c = moco_digits()
  c.loss.name = "mochi_loss"
  c.loss.kwargs = {"temperature": 0.2, "num_hard": 64, "num_mix": 64, "num_mix_query": 32,
                   "mine": "queue"}
  return c
