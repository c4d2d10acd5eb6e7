"""SimCLR on scikit-learn's 8x8 digits (1,437 train / 360 test images, embedded).

``python -m jaxcl.main --config=configs/simclr_digits.py --workdir=runs/simclr_digits``
"""
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.data.name = "digits"
  c.batch_size = 256
  c.num_steps = 800
  c.log_every = 50
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {}
  c.model.head_hidden = 256
  c.model.head_out = 64
  c.loss.name = "nt_xent"
  c.loss.kwargs = {"temperature": 0.2}
  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 50
  c.checkpoint.every = 400
  c.eval.every = 400
  return c
