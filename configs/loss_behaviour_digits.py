"""Hard-negative truncated InfoNCE (Wang & Liu, arXiv 2012.09740) on digits: each anchor keeps
only the upper ``quantile`` of its negatives, which lets a large temperature stay uniform.

``python -m jaxcl.main --config=configs/loss_behaviour_digits.py --workdir=runs/trunc``
Study: ``python -m experiments.loss_behaviour`` (temperature sweep of NT-Xent + truncation).
"""
from configs.simclr_digits import get_config as simclr_digits


def get_config():
  c = simclr_digits()
  c.loss.name = "truncated_info_nce"
  c.loss.kwargs = {"temperature": 0.5, "quantile": 0.1}
  return c
