"""MV-DHEL (Koromilas et al., arXiv 2507.06979) with K = 4 views per example on digits:
alignment over all view pairs, uniformity within each view (``config.views.num``).

``python -m jaxcl.main --config=configs/mv_dhel_digits.py --workdir=runs/mv_dhel_digits``
Study: ``python -m experiments.mv_dhel`` (pairwise NT-Xent vs MV-InfoNCE vs MV-DHEL, K=2..5).
"""
from configs.simclr_digits import get_config as simclr_digits


def get_config():
  c = simclr_digits()
  c.views.num = 4
  c.loss.name = "mv_dhel"
  c.loss.kwargs = {"temperature": 0.2}   # the reference code's class default
  c.batch_size = 128
  return c
