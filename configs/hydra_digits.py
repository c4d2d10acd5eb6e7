"""Hydra / SimLAP (Wu et al., arXiv 2410.18200, methods.md section 7) on scikit-learn's 8x8
digits: arbitrary class pairs as positives, similarities in a class-pair gated subspace.

``python -m jaxcl.main --config=configs/hydra_digits.py --workdir=runs/hydra_digits``
Study: ``python -m experiments.hydra`` (vs SimCLR and SupCon: linear probe, kNN, effective rank).

CPU proxy: 10 classes (55 class pairs), MLP encoder + 2-layer head (64-d), the cheap digit
views of methods.md (integer shift by up to 1 pixel, random erasing of 2-20% of the image with
probability 0.5, Gaussian noise 0.1; no crop, flip or colour jitter). The gate (label embedding
``E [10, 128]`` and ``ReLU-LN-Linear(128, 256)-ReLU-LN-Linear(256, 64)``, the reference's
512 / 1024 / 256 widths scaled to the 64-d head) and ``log(1 / T)`` (initial ``T = 0.1``) are
learned with the model. Partners ``arbitrary`` (the paper's default); anchors view 0, keys view
1 (the reference's one direction).
"""
from configs.simclr_digits import get_config as simclr_digits

# The cheap digit views of methods.md section 7 (shared by the study's baselines).
VIEWS = {"crop_scale": None, "flip_prob": 0.0, "jitter_prob": 0.0, "blur_prob": 0.0,
         "shift": 1, "erase_prob": 0.5, "erase_scale": (0.02, 0.2), "noise_std": 0.1}


def get_config():
  c = simclr_digits()
  c.augment.params = dict(VIEWS)
  c.loss.name = "hydra"
  c.loss.kwargs = {"temperature": 0.1, "num_classes": 10, "partners": "arbitrary",
                   "gate_embed_dim": 128, "gate_hidden": 256, "learn_temperature": True,
                   "variant": "fastssl", "symmetric": False}
  return c
