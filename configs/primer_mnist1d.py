"""Input-label contrast (the `primer` survey, Rethmeier & Augenstein, arXiv 2102.12982) on
MNIST-1D: the 1-D CNN + head trained by scoring each view's head output against learned label
embeddings, then the linear probe / kNN on the frozen encoder.

``python -m jaxcl.main --config=configs/primer_mnist1d.py --workdir=runs/primer_mnist1d``

Everything but the loss is the SimCLR recipe (``configs/simclr_mnist1d.py``: views, encoder,
head, AdamW schedule). The loss is ``jaxcl.losses.contrib.label_contrast`` through the trainer's
``label_embedding`` objective (label embeddings ``E [10, 64]`` as objective parameters): the
binary-NCE form with 5 sampled negative labels per row (methods.md section 30's proxy: k = 5),
cosine scores at T = 0.1. ``loss.kwargs.form = "softmax"`` gives the softmax form (InfoNCE over
all 10 label embeddings); the cross-entropy baseline is ``loss.name = "softmax_cross_entropy"``
with ``loss.kwargs = {"num_classes": 10}``. Few-shot / long-tail training sets:
``config.data.per_class`` / ``config.data.imbalance``.
Study: ``python -m experiments.primer``.
"""
from configs.simclr_mnist1d import get_config as simclr_mnist1d


def get_config():
  c = simclr_mnist1d()
  c.loss.name = "label_contrast"
  c.loss.kwargs = {"num_classes": 10, "form": "binary", "num_negatives": 5, "temperature": 0.1}
  return c
