"""SimCLR on MNIST-1D: the main job (a few minutes on a 2-core CPU, no network).

``python -m jaxcl.main --config=configs/simclr_mnist1d.py --workdir=runs/simclr_mnist1d``

NT-Xent (Chen et al., arXiv 2002.05709) on two on-device views of 40-sample signals (random
shift, scale, noise, masking) with a small 1-D CNN; probe and kNN on the frozen encoder
features, compared with the raw inputs and the randomly initialised encoder. MNIST-1D
(Greydanus, arXiv 2011.14439): logistic regression 32%, MLP 68%, CNN 94% test accuracy.
"""
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.seed = 0
  c.data.name = "mnist1d"
  c.batch_size = 256
  c.num_steps = 600
  c.log_every = 50

  c.augment.params = {}
  c.model.encoder = "cnn1d"
  c.model.encoder_kwargs = {}
  c.model.head_hidden = 256
  c.model.head_out = 64
  c.model.head_layers = 2

  c.loss.name = "nt_xent"
  c.loss.kwargs = {"temperature": 0.2}

  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 1e-4

  c.checkpoint.every = 200
  c.eval.every = 200
  return c
