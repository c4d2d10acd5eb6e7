"""MoCo v2 on scikit-learn digits: InfoNCE between the online encoder's view 0 and the momentum
(EMA) teacher's view 1, with a queue of past keys as extra negatives.

``python -m jaxcl.main --config=configs/moco_digits.py --workdir=runs/moco_digits``

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", arXiv
1911.05722; Chen et al., "Improved Baselines with Momentum Contrastive Learning" (MoCo v2),
arXiv 2003.04297 (T = 0.2, MLP head). Here the negatives of each query are the queue *and* the
other keys of the current global batch (MoCo sees those one step later, once enqueued). The
teacher's momentum is 0.99 (not 0.999) because the runs are short. Study:
``python -m experiments.mochi``.
"""
from configs.simclr_digits import get_config as simclr_digits


def get_config():
  c = simclr_digits()
  c.batch_size = 32
  c.num_steps = 800
  c.loss.name = "info_nce"
  c.loss.kwargs = {"temperature": 0.2}
  c.momentum.ema = 0.99
  c.momentum.cosine = False
  c.queue.size = 512
  return c
