"""Dual Adversarial Training (DAT; Yin et al., arXiv 2510.13872, methods.md section 10) on
scikit-learn's 8x8 digits (pixels in [0, 1], 1,437 train / 360 test).

``python -m jaxcl.main --config=configs/dat_digits.py --workdir=runs/dat_digits``
Study: ``python -m experiments.dat_jem`` (CE vs PGD-AT vs DAT: clean and L2-PGD robust
accuracy, real-vs-sample AUC, sample quality).

CPU proxy of the reference (WRN-34-10 on CIFAR-10, OOD starts from 80M TinyImages):

* the classifier is the model: MLP encoder (256-256, ReLU, no normalisation) + a one-layer
  head ``Dense(10)``: ``z`` are the logits (``head_out = num_classes``, ``head_bn = False``);
  no BatchNorm anywhere, in both stages (the reference's stage-1 AT checkpoint has BN and
  stage 2 drops it; the MLP needs none, so nothing changes between stages);
* two stages in one trainer run: ``stage1_steps`` of PGD-AT (EBM term off), then the DAT loss
  ``BCE(LSE f(x) real vs LSE f(x~) sampled) + CE(f(x_adv), y)`` from that classifier (Adam
  and its moments carry over; the reference restarts SGD at lr 1e-3);
* samples: uniform-noise starts in [0, 1] paired with the batch labels, T steps of
  class-conditional L2-normalised ascent, step 0.2 (reference 0.1 on 3,072-d CIFAR; the box
  of 64-d digits is 8 units across and noise is ~4.6 from a digit, so the step is larger
  relative to 1/sqrt(d) than the reference's), T from 0 by the AUC curriculum (threshold
  0.8 over a window of 8 batches = 1,024 images, the reference's 1,000; T_max = 20, methods.md
  "up to ~20"; the reference reaches 40-50);
* robust CE: untargeted L2-PGD, 10 steps of 0.25 within eps = 1.0 (the reference: 10 x 0.1
  within 0.5 on CIFAR; eps ~ 1 on 64-d is the proxy's evaluation radius), on view 1;
* views: identity (no augmentation; the reference uses AutoAugment + Cutout for the CE batch
  and none for the generation batch); views 0 and 1 are the same images;
* optimiser: AdamW lr 1e-3 constant after a 50-step warm-up (``end_lr_factor = 1``), weight
  decay 5e-4, batch 128, 1,500 steps; no EMA of the weights (reference EMA 0.999).
"""
from jaxcl.train.config import default_config

IDENTITY_VIEWS = {"crop_scale": None, "flip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0}


def get_config():
  c = default_config()
  c.data.name = "digits"
  c.batch_size = 128
  c.num_steps = 1500
  c.log_every = 100
  c.augment.params = dict(IDENTITY_VIEWS)
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (256, 256), "use_bn": False}
  c.model.head_layers = 1
  c.model.head_out = 10
  c.model.head_bn = False
  c.loss.name = "dat_loss"
  c.loss.kwargs = {"num_classes": 10, "bce_weight": 1.0, "clf_weight": 1.0,
                   "stage1_steps": 500, "sample_steps_start": 0, "sample_steps_max": 20,
                   "sample_step_size": 0.2, "sample_init": "uniform", "auc_threshold": 0.8,
                   "auc_window": 8, "adv_steps": 10, "adv_step_size": 0.25, "adv_eps": 1.0,
                   "box": (0.0, 1.0)}
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.end_lr_factor = 1.0
  c.optim.weight_decay = 5e-4
  c.checkpoint.every = 500
  c.eval.every = 0
  return c
