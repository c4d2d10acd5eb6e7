"""MV-DHEL (Koromilas et al., arXiv 2507.06979) with K = 4 views per example on MNIST-1D (1-D
CNN encoder): alignment over all view pairs, uniformity within each view (``config.views.num``).

``python -m jaxcl.main --config=configs/mv_dhel_mnist1d.py --workdir=runs/mv_dhel_mnist1d``
Study: ``python -m experiments.mv_dhel`` (pwe / average / MV-InfoNCE / MV-DHEL, K = 2..5).
"""
from configs.simclr_mnist1d import get_config as simclr_mnist1d


def get_config():
  c = simclr_mnist1d()
  c.views.num = 4
  c.loss.name = "mv_dhel"
  c.loss.kwargs = {"temperature": 0.2}   # the reference code's class default
  c.batch_size = 64
  return c
