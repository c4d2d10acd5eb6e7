"""MMHCL vs LightGCN + BPR on the synthetic multimodal recommendation set (methods.md ``mmhcl``;
Xu et al., arXiv 2504.16576, code Xu107/MMHCL).

``python -m jaxcl.main --config=configs/mmhcl_synthetic.py --workdir=runs/mmhcl``
(``--config.mmhcl.method=lightgcn`` for the baseline, ``--config.mmhcl.view=first_order`` for
the paper's first-order contrast view). Study: ``python -m experiments.mmhcl``.

CPU proxy (:mod:`jaxcl.data.recsys`): 1000 users, 800 items, 8 latent interest clusters,
interactions drawn from softmax(6 <w_u, v_i>) at ~1.5 % density with heavy-tailed activity
(about half of the users have <= 5 training interactions), a 70 / 10 / 20 train / val / test
split per user; two item "modalities" = noisy random projections of the item latents (64-d,
noise 0.2, and 32-d, noise 0.4; fixed from the data alone: their 5-NN share the item's
cluster ~65 % / ~40 % of the time). Model and loss: :mod:`jaxcl.recipes.mmhcl` with the
reference's defaults (dim 64, LightGCN L = 2, u2u L_u = 3, i2i L_i = 2, top-5 kNN, T = 0.6,
lambda_i = 0.07, lambda_u = 0.03, reg 1e-3, 1024 users per BPR batch). Budget: Adam at a
constant lr (the study tunes it on validation from the same grid for both methods) for
``steps`` full-graph steps.
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.recipe = "mmhcl"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      num_users=1000, num_items=800, num_clusters=8, latent_dim=16, mean_interactions=12.0,
      modality_dims=(64, 32), modality_noise=(0.2, 0.4)))
  c.mmhcl = ml_collections.ConfigDict(dict(
      method="mmhcl",          # "mmhcl" | "lightgcn"
      view="fused",            # "fused" (the code) | "first_order" (the paper's text)
      dim=64, ui_layers=2, u_layers=3, i_layers=2, topk=5,
      temperature=0.6, lambda_i=0.07, lambda_u=0.03, reg=1e-3,
      batch_size=1024, steps=400, lr=1e-2,
      impl="blockwise", block_size=1024,   # the full-node GRACE contrast through the kernel
      k=20, sparse_max=5))
  return c
