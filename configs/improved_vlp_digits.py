"""The improved CLIP recipe (CLIP🚀 / CL2L, Fini et al., arXiv 2305.08675, methods.md section 19)
on ``digits_captions``: 8x8 digit images paired with generated captions.

``python -m jaxcl.main --config=configs/improved_vlp_digits.py --workdir=runs/improved_vlp``
Study: ``python -m experiments.improved_vlp`` (plain CLIP vs CL2L vs CLIP + SimCLR add-on).

Recipe (``jaxcl.losses.contrib.cl2l_loss`` through ``objectives.vlp_objective``):

* two towers (``models.MultiModal``): an MLP image tower, a 1-block token transformer on the
  caption, each with a 2-layer projection head to ``D = 32`` (the small towers of
  ``clip_vs_siglip``);
* the reference's view layout: one weakly augmented global view (``views.num = 1``: image
  shift by up to one pixel, caption unchanged) and ``m = 2`` strongly augmented local views
  (``views.num_local = 2``, ``views.local_params`` per modality on top of the weak ones: random
  erasing p 0.5 of 2-20% of the image, Gaussian noise 0.1; caption token masking (``<mask>``,
  p 0.1) and dropping (p 0.1), the toy stand-in for the reference's EDA text augmentation --
  stop-word removal, WordNet synonyms, swaps, deletions: no WordNet offline); ``z`` is
  ``[B, 3 x 2, D]``, column ``v*2 + m``;
* global CLIP term on view 0's pair with CLIP's learnable logit scale (init 1 / 0.07, clamped
  at 100); local terms on all ``2 x 2`` (image view a, caption view b) pairs of views 1, 2
  (``local_views="rest"``) through separate MLP heads ``Linear(32, 32) - ReLU - Linear(32, 32)``
  per modality (objective parameters), their own learnable scale (init 10, clamp 100), label
  smoothing 0.1 (local terms only); reduction ``sum`` (``L^I + L^T``, the reference's repro
  runs). ``ssl_weight > 0`` adds the SimCLR image add-on (NT-Xent between the two strong image
  views through its own head); ``local_views="none"`` is plain CLIP (then set
  ``views.num_local = 0``).

Paper vs code / not pinned down:

* the separate heads sit on the model's projection ``z`` (the only output an objective gets),
  not on the encoder features as the reference's ``--separate-proj`` MLPs (3 layers, 4096
  hidden, BatchNorm); here 2 layers, no BatchNorm, so the local terms also train the shared
  projection head;
* local views are the trainer's multi-crop "local" views (``views.local_params`` for a
  multimodal dataset: ``{modality: overrides of augment.modalities}``), so they are the
  *weak* views plus the strong transforms, drawn independently;
* ``local_views="all"`` (every view local, view 0 also global) runs the recipe with
  ``views.num = 2`` and no weak view;
* AdamW lr 3e-3 (the reference's; betas here (0.9, 0.999), the reference (0.9, 0.98)), weight
  decay 1e-4 (the reference: 0.1 / 0.5), batch 256, 600 steps (the study: 200).
"""
from jaxcl.train.config import default_config

# Weak (global) views: integer shift by up to one pixel, captions unchanged.
WEAK_IMAGE = {"crop_scale": None, "flip_prob": 0.0, "blur_prob": 0.0, "jitter_prob": 0.0,
              "shift": 1}
# Strong (local) views on top: random erasing, Gaussian noise; token masking and dropping.
STRONG_IMAGE = {"erase_prob": 0.5, "erase_scale": (0.02, 0.2), "noise_std": 0.1}
STRONG_TEXT = {"mask_prob": 0.1, "drop_prob": 0.1}


def get_config():
  c = default_config()
  c.data.name = "digits_captions"
  c.batch_size = 256
  c.num_steps = 600
  c.log_every = 50
  c.views.num = 1               # the weakly augmented global pair
  c.views.num_local = 2         # m = 2 strongly augmented local views of each modality
  c.augment.modalities = {"image": dict(WEAK_IMAGE)}
  c.views.local_params = {"image": dict(STRONG_IMAGE), "text": dict(STRONG_TEXT)}
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (128,)}
  c.model.modalities = {"text": {"encoder_kwargs": {"dim": 32, "depth": 1, "heads": 2}}}
  c.model.head_hidden = 64
  c.model.head_out = 32
  c.model.head_bn = False
  c.loss.name = "cl2l_loss"
  c.loss.kwargs = {"temperature": 0.07, "local_temperature": 0.1, "learn_temperature": True,
                   "label_smoothing": 0.1, "reduction": "sum", "local_views": "rest",
                   "head_hidden": 0, "head_out": 0, "ssl_weight": 0.0, "ssl_temperature": 0.1}
  c.optim.name = "adamw"
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 50
  c.optim.weight_decay = 1e-4
  c.checkpoint.every = 300
  return c
