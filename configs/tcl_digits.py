"""TCL (Yang et al., arXiv 2202.10401, methods.md section 23) on ``digits_captions``: 8x8 digit
images paired with generated captions; cross-modal alignment with momentum distillation (CMA)
+ intra-modal contrast (IMC) + local-global MI (LMI, image patches / caption tokens as locals).

``python -m jaxcl.main --config=configs/tcl_digits.py --workdir=runs/tcl_digits``
Study: ``python -m experiments.tcl`` (CMA alone vs + IMC vs + IMC + LMI: retrieval R@1, zero-shot).

CPU proxy and choices:
  * towers (``jaxcl.models.MultiModalLocals``, ``config.model.locals = True``): a 2-block,
    64-wide ViT on the image (patch 2: 16 patch tokens, the image locals; ``[CLS]`` the
    global) and a 1-block, 32-wide token transformer on the caption (its non-padding token
    states the text locals, the masked mean the global); a *linear* projection to 32-d shared
    by globals and locals, as the reference's ``vision_proj`` / ``text_proj``
    (``head_layers = 1``, no BatchNorm). Small so that the 9-run study fits the CPU budget; a
    1-block 32-wide ViT barely learned the image in this budget (CLIP loss, 250 steps:
    zero-shot ~25-30% vs ~50% for this one);
  * the EMA teacher of the whole model on every view (``teacher_views = "all"``) with
    ``momentum.ema = 0.95`` (half-life ~14 steps) instead of the reference's 0.995 (half-life
    ~140 steps: most of this 200-step budget, so the keys would lag far behind the online
    model); two image views (view 0 online, view 1 = the reference's ``image_aug`` through the
    teacher), the caption unaugmented (the teacher's text is the same caption, as in the
    reference); the teacher's view-1 patch / token locals are
    LMI's locals;
  * learnable temperature, init 0.07, clamped to [0.001, 0.5] (the reference); distillation
    weight ``alpha = 0.4`` ramped linearly from 0 over the first epoch (90 steps at batch 128);
  * negatives: the global batch (no queues: the reference's 65,536-feature queues are replaced
    by the gathered batch, so negatives are fresh and fewer);
  * not implemented: ITM and MLM (they need the fusion encoder), the patch pooling 16x16 -> 4x4
    (an 8x8 image has only 16 patches of 2x2, used directly, as methods.md's proxy);
  * the reference's AdamW lr 1e-4 / wd 0.02 for 30 epochs of 4M pairs is replaced by lr 1e-3 /
    wd 1e-4 for 200 steps at batch 128 (~2.2 epochs; the CPU budget), the same for every
    ablation.
"""
from jaxcl.train.config import default_config


def get_config():
  c = default_config()
  c.data.name = "digits_captions"
  c.batch_size = 128
  c.num_steps = 200
  c.log_every = 50
  c.views.num = 2
  c.augment.modalities = {"image": {"crop_scale": (0.7, 1.0), "flip_prob": 0.0, "blur_prob": 0.0,
                                    "jitter_prob": 0.0}}
  c.model.encoder = "vit_tiny"
  c.model.encoder_kwargs = {"dim": 64, "depth": 2, "heads": 2, "patch_size": 2, "mlp_ratio": 2}
  c.model.modalities = {"text": {"encoder_kwargs": {"dim": 32, "depth": 1, "heads": 2}}}
  c.model.locals = True
  c.model.head_layers = 1
  c.model.head_out = 32
  c.model.head_bn = False
  c.momentum.ema = 0.95
  c.momentum.teacher_views = "all"
  c.loss.name = "tcl_loss"
  c.loss.kwargs = {"temperature": 0.07, "learn_temperature": True, "alpha": 0.4,
                   "alpha_warmup_steps": 90, "imc": True, "lmi": True}
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 1e-4
  c.checkpoint.every = 200
  return c
