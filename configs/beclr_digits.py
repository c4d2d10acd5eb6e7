"""BECLR's few-shot protocol on scikit-learn digits (CPU proxy; Poulakakis-Daktylidis &
Jamali-Rad, ICLR 2024, arXiv 2402.02444).

Pretraining: SimCLR (NT-Xent, the shared trainer's step) on the ``PRETRAIN_CLASSES`` only.
Evaluation: ``FEWSHOT`` n-way k-shot episodes on the other classes (train and test images,
never seen in pretraining), nearest prototype with and without OpTA
(:mod:`jaxcl.eval.fewshot`).

What is *not* here: BECLR's own pretraining (EMA teacher + predictor + ``L_neg``, and the
DyCE memory, :mod:`jaxcl.beclr`) is not wired into the trainer, so the encoder is a SimCLR
one; the trainer has no class-subset option, so ``experiments/beclr.py`` feeds the step its
class-restricted batches itself.

``python -m experiments.beclr`` (the study).
"""
from configs.simclr_digits import get_config as simclr_digits

PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
HELD_OUT_CLASSES = (5, 6, 7, 8, 9)
FEWSHOT = dict(
    n_way=5, n_query=15, num_episodes=600, shots=(1, 5),
    preprocess="standardize",      # per-sample standardisation, as BECLR's evaluation
    epsilon=0.05, num_iters=200,   # OpTA's Sinkhorn (reference evaluation: eps 0.05)
    passes=(1, 2, 5),              # reference evaluation: 5 passes at 1-shot, 2 at 5-shot
)


def get_config():
  c = simclr_digits()
  c.batch_size = 128      # ~718 training images of 5 classes: 5 batches per epoch
  c.num_steps = 400
  c.optim.warmup_steps = 40
  return c
