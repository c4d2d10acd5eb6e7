"""DCL (Yeh et al., arXiv 2110.06848) on MNIST-1D (1-D CNN encoder): NT-Xent with the positive
pair removed from the denominator. ``loss.name = "dclw"`` gives the vMF-weighted variant.

``python -m jaxcl.main --config=configs/dcl_mnist1d.py --workdir=runs/dcl_mnist1d``
Study: ``python -m experiments.dcl --mnist1d`` (NT-Xent vs DCL vs DCLW over batch sizes).
"""
from configs.simclr_mnist1d import get_config as simclr_mnist1d


def get_config():
  c = simclr_mnist1d()
  c.loss.name = "dcl"
  c.loss.kwargs = {"temperature": 0.1}   # lightly's default for DCL / DCLW
  c.batch_size = 64
  return c
