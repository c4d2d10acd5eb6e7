"""SigLIP on ``digits_captions``: the CLIP recipe (``configs/clip_digits.py``) with the pairwise
sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", arXiv 2303.15343).

``python -m jaxcl.main --config=configs/siglip_digits.py --workdir=runs/siglip_digits``
Study: ``python -m experiments.clip_vs_siglip`` (CLIP vs SigLIP across batch sizes 64 ... 4,096).

Everything but the loss is the CLIP recipe (towers, views, optimiser, steps). The loss learns
its logit scale ``exp(t')`` from ``t' = log 10`` (``temperature = 0.1``) and its bias from
``-10``, the paper's initialisation; the scale is not clamped (``max_scale = None``: the paper
clamps nothing, CLIP clamps at 100). Per row the loss sums the sigmoid terms over all global
candidates (the paper's ``1/|B| sum_i sum_j``: the mean of the returned values). At large
batch pass ``impl="blockwise"`` (or ``"ring"`` on several devices) in ``config.loss.kwargs``.
"""
from configs.clip_digits import get_config as clip_digits


def get_config():
  c = clip_digits()
  c.loss.name = "siglip_loss"
  c.loss.kwargs = {"temperature": 0.1, "bias": -10.0, "learn_temperature": True,
                   "learn_bias": True, "max_scale": None}
  return c
