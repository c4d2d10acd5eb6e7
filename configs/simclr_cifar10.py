"""SimCLR on CIFAR-10 through tfds (for users who have the data; nothing is downloaded).

Prepare CIFAR-10 once as ``array_record`` (``tfds build cifar10 --file_format=array_record``
on a machine with network), point ``--config.data.data_dir`` (or ``$TFDS_DATA_DIR``) at it,
then on one host or every host of a pod::

  python -m jaxcl.main --config=configs/simclr_cifar10.py --workdir=gs://bucket/simclr_c10

Recipe after SimCLR's CIFAR-10 setting (Chen et al., arXiv 2002.05709, appendix B.9):
ResNet-18 (CIFAR stem), batch 512, LARS, lr 0.3 * B / 256 with 10 warmup epochs, weight
decay 1e-6, temperature 0.5, crop / flip / colour jitter / grayscale views.
"""
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.data.name = "cifar10"
  c.data.in_memory = False    # stream array_record through grain
  c.data.worker_count = 4
  c.batch_size = 512
  steps_per_epoch = 50000 // 512
  c.num_steps = 500 * steps_per_epoch
  c.log_every = 100
  c.model.encoder = "resnet18"
  c.model.encoder_kwargs = {}
  c.model.head_hidden = 2048
  c.model.head_out = 128
  c.loss.name = "nt_xent"
  c.loss.kwargs = {"temperature": 0.5}
  c.optim.name = "lars"
  c.optim.lr = 0.3 * c.batch_size / 256
  c.optim.warmup_steps = 10 * steps_per_epoch
  c.optim.weight_decay = 1e-6
  c.checkpoint.every = 5000
  c.checkpoint.keep = 3
  c.eval.every = 50 * steps_per_epoch
  c.eval.batch_size = 1024
  return c
