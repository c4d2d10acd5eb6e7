"""DCL (Yeh et al., arXiv 2110.06848) on scikit-learn digits: NT-Xent with the positive pair
removed from the denominator. ``loss.name = "dclw"`` gives the vMF-weighted variant.

``python -m jaxcl.main --config=configs/dcl_digits.py --workdir=runs/dcl_digits``
Study: ``python -m experiments.dcl`` (NT-Xent vs DCL vs DCLW over batch sizes).
"""
from configs.simclr_digits import get_config as simclr_digits


def get_config():
  c = simclr_digits()
  c.loss.name = "dcl"
  c.loss.kwargs = {"temperature": 0.1}   # lightly's default for DCL / DCLW
  c.batch_size = 64
  return c
