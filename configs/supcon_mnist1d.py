"""SupCon (Khosla et al., arXiv 2004.11362) on MNIST-1D: supervised contrastive pretraining of
the 1-D CNN, then the linear probe / kNN on the frozen encoder.

``python -m jaxcl.main --config=configs/supcon_mnist1d.py --workdir=runs/supcon_mnist1d``

Everything but the loss is the SimCLR recipe (``configs/simclr_mnist1d.py``: views, encoder,
head, AdamW schedule): the two views of every example are anchors, every other row of the
global batch with the same label is a positive (``jaxcl.losses.supcon``, L_out), T = 0.1 as
in the paper. The cross-entropy baseline is the same recipe with
``loss.name = "softmax_cross_entropy"`` and ``loss.kwargs = {"num_classes": 10}`` (a learnable
linear classifier on the head output, ``jaxcl.train.objectives.classifier_objective``).
Study: ``python -m experiments.supcon`` (SupCon vs CE vs NT-Xent over a learning-rate grid).
"""
from configs.simclr_mnist1d import get_config as simclr_mnist1d


def get_config():
  c = simclr_mnist1d()
  c.loss.name = "supcon"
  c.loss.kwargs = {"temperature": 0.1}   # Khosla et al.'s T
  return c
