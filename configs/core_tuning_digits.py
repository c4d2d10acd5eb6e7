"""Core-tuning (Zhang et al., arXiv 2102.06605, methods.md section 22) on scikit-learn's 8x8
digits: contrast-regularised fine-tuning of a SimCLR-pretrained encoder with few labels.

Two stages, both through the shared trainer::

  python -m jaxcl.main --config=configs/simclr_digits.py --workdir=runs/simclr_digits
  python -m jaxcl.main --config=configs/core_tuning_digits.py --workdir=runs/core_tuning_digits

The second run copies the encoder of the first one's latest checkpoint (``config.init``:
``workdir`` and ``modules = ("encoder",)``; the SimCLR projection head is dropped) and then
fine-tunes everything. Study: ``python -m experiments.core_tuning`` (CE vs CE + SupCon vs
Core-tuning at 10% of the labels, same budget and lr grid).

CPU proxy choices (not pinned down by the reference, which fine-tunes a MoCo-v2 ResNet-50 on
CIFAR with every label):
  * labels: the first 14 training images of each class (``data.per_class = 14``: 140 of
    1,437, about 10%); the test split stays whole; the built-in probe is fitted on the same 140;
  * model: the SimCLR recipe's MLP encoder (256-256, post-ReLU features like the reference's
    pooled ResNet features) with **no projection head** (``model.head_layers = 0``: ``z = h``),
    so the objective's classifier ``W [10, 256]`` (no bias) and contrastive head
    ``g = Linear(256, 256) - ReLU - Linear(256, 64)`` (the reference's ``D -> D -> 256`` with
    the output scaled to the 64-d SimCLR embedding) sit on the encoder features, as in the
    reference; both are fresh (the reference's contrastor is not pretrained);
  * loss: the intended math (``reproduce_code=False``; see jaxcl/losses/core_tuning.py), eta =
    0.1 (the reference README's command; its argparse default is 10), T = 0.07, Beta(1, 1)
    mixing with the hard-negative weight clamped at 0.8;
  * views: two per image (the trainer's minimum), both rows of the batch; the cheap digit
    views of ``configs/hydra_digits.py`` (1-pixel shift, random erasing, noise 0.1) stand in
    for the reference's resize / rotation / crop / flip; batch 64 images (128 rows, 384 with
    the mixtures; the reference: 64 x 4 accumulation);
  * optimiser: AdamW (lr 1e-3, warm-up 20, cosine) for 200 steps (the reference: SGD-Nesterov
    0.01, cosine over 100 epochs; the study uses the same lr grid for every method).
"""
from configs.hydra_digits import VIEWS
from configs.simclr_digits import get_config as simclr_digits

PRETRAINED = "runs/simclr_digits"   # the workdir of configs/simclr_digits.py


def get_config():
  c = simclr_digits()
  c.init.workdir = PRETRAINED
  c.init.modules = ("encoder",)
  c.data.per_class = 14
  c.augment.params = dict(VIEWS)
  c.model.head_layers = 0
  c.batch_size = 64
  c.num_steps = 200
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 20
  c.checkpoint.every = 200
  c.eval.every = 0
  c.loss.name = "core_tuning"
  c.loss.kwargs = {"num_classes": 10, "contrast_dim": 64, "contrast_hidden": 0, "eta": 0.1,
                   "temperature": 0.07, "alpha": 1.0, "lam_min": 0.8, "mixup": True,
                   "focal": True, "reproduce_code": False}
  return c
