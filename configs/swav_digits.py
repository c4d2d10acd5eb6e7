"""SwAV (Caron et al., arXiv 2006.09882) on scikit-learn's 8x8 digits: learnable prototypes,
Sinkhorn codes over the global batch, swapped prediction over 2 global + 4 local crops.

``python -m jaxcl.main --config=configs/swav_digits.py --workdir=runs/swav_digits``
Study: ``python -m experiments.swav`` (SwAV vs NT-Xent, with and without multi-crop).

CPU proxy of methods.md section 4: batch 64, K = 30 prototypes, T = 0.1, eps = 0.05, 3
Sinkhorn iterations, prototypes frozen for the first epoch (1,437 / 64 ~ 22 steps). Global
crops are the digits recipe's views (random resized crop of 20-100% of the area, as SimCLR);
local crops cover 20-35% of the area (about 4x4 of 8x8), resized back to 8x8 so all crops
share one forward pass. Logged health: ``swav/code_entropy`` and ``swav/used_prototypes``; a
loss stuck at ln K = 3.40 means collapse.
"""
from configs.simclr_digits import get_config as simclr_digits


def get_config():
  c = simclr_digits()
  c.batch_size = 64
  c.num_steps = 400
  c.views.num = 2                  # global crops (get codes)
  c.views.num_local = 4            # local crops (predicted only)
  c.views.local_params = {"crop_scale": (0.2, 0.35)}
  c.loss.name = "swav_loss"
  c.loss.kwargs = {"temperature": 0.1, "epsilon": 0.05, "sinkhorn_iters": 3,
                   "num_prototypes": 30, "freeze_prototypes_steps": 22}
  c.checkpoint.every = 200
  c.eval.every = 200
  return c
