"""CLIP on ``digits_captions``: 8x8 digit images paired with generated captions (embedded).

``python -m jaxcl.main --config=configs/clip_digits.py --workdir=runs/clip_digits``

Two towers (``jaxcl.models.MultiModal``): an MLP on the image, a 2-block token transformer on
the caption (``text_transformer``), each with a 2-layer projection head to 64-d; the symmetric
CLIP loss over the global batch with CLIP's learnable logit scale (init 1 / 0.07, clamped at
100) owned by the objective. One view per modality per example (``views.num = 1``): the image
gets light views (small crops, no flip: digits are not mirror-symmetric), the caption none. The
evaluator reports per-tower linear probes, zero-shot accuracy from the caption prompts and
image <-> text retrieval R@1/5/10 on the 360 test pairs.
"""
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.data.name = "digits_captions"
  c.batch_size = 256
  c.num_steps = 600
  c.log_every = 50
  c.views.num = 1
  c.augment.modalities = {"image": {"crop_scale": (0.7, 1.0), "flip_prob": 0.0, "blur_prob": 0.0,
                                    "jitter_prob": 0.0}}
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (256, 256)}
  c.model.modalities = {"text": {"encoder_kwargs": {"dim": 64, "depth": 2, "heads": 4}}}
  c.model.head_hidden = 128
  c.model.head_out = 64
  c.model.head_bn = False
  c.loss.name = "clip_loss"
  c.loss.kwargs = {"temperature": 0.07, "learn_temperature": True}
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 1e-4
  c.checkpoint.every = 300
  return c
