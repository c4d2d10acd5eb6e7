"""Hard-negative truncated InfoNCE (Wang & Liu, arXiv 2012.09740) on MNIST-1D (1-D CNN
encoder): each anchor keeps only the upper ``quantile`` of its negatives, which lets a large
temperature stay uniform.

``python -m jaxcl.main --config=configs/loss_behaviour_mnist1d.py --workdir=runs/trunc``
Study: ``python -m experiments.loss_behaviour`` (temperature sweep of NT-Xent + truncation).
"""
from configs.simclr_mnist1d import get_config as simclr_mnist1d


def get_config():
  c = simclr_mnist1d()
  c.loss.name = "truncated_info_nce"
  c.loss.kwargs = {"temperature": 0.5, "quantile": 0.1}
  c.batch_size = 128
  return c
