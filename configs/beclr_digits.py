"""BECLR on scikit-learn digits, the few-shot protocol's CPU proxy (Poulakakis-Daktylidis &
Jamali-Rad, ICLR 2024, arXiv 2402.02444).

Pretraining (the shared trainer): BECLR's loss (:func:`jaxcl.losses.contrib.beclr_loss`, T = 2,
lambda = 0.1) with an EMA teacher on both views (``momentum.teacher_views = "all"``), the
student's predictor and the DyCE memories (``loss.kwargs.dyce_*``), on the training images of
``PRETRAIN_CLASSES`` only (``data.classes``). Evaluation (``experiments/beclr.py``):
``FEWSHOT`` n-way k-shot episodes on the other classes (train and test images, never seen in
pretraining), nearest prototype / logistic regression with and without OpTA
(:mod:`jaxcl.eval.fewshot`). The study derives its SimCLR and no-DyCE baselines from this
config (same encoder, head, optimiser, steps and batch).

``python -m jaxcl.main --config=configs/beclr_digits.py --workdir=runs/beclr_digits``
(its built-in linear probe / kNN run on the pretraining classes); ``python -m
experiments.beclr`` (the study).
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
# DyCE at digits scale: the reference keeps memory_scale (20) x num_clusters rows and starts
# the enhancement after 50-60 of its epochs; here ~2 memory batches, 10 clusters (two per
# class), the 5 nearest members, from step 100 of 400.
DYCE = {"dyce_memory": 512, "dyce_clusters": 10, "dyce_top_k": 5, "dyce_start_steps": 100}


def get_config():
  c = simclr_digits()
  c.data.classes = PRETRAIN_CLASSES
  c.batch_size = 128      # ~718 training images of 5 classes: 5 batches per epoch
  c.num_steps = 400
  c.optim.warmup_steps = 40
  c.loss.name = "beclr_loss"
  c.loss.kwargs = {"temperature": 2.0, "neg_weight": 0.1, **DYCE}
  c.momentum.ema = 0.99   # BECLR 0.996 -> 1 over hundreds of epochs; 400 steps here
  c.momentum.cosine = True
  c.momentum.teacher_views = "all"
  return c
