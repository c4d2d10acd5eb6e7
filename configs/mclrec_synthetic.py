"""SASRec vs CL4SRec vs MCLRec on synthetic Markov item sequences (methods.md ``mclrec``; Qin et
al., arXiv 2304.07763, code QinHsiu/MCLRec).

``python -m jaxcl.main --config=configs/mclrec_synthetic.py --workdir=runs/mclrec``
(``--config.mclrec.method=sasrec`` / ``cl4srec`` for the baselines). Study:
``python -m experiments.mclrec``.

CPU proxy (:mod:`jaxcl.data.sequences`): 2000 users x 20 items over 500 items in 10 clusters; a
sparse first-order Markov chain (16 successors per item, Dirichlet weights, half in the item's
cluster) reweighted by each user's drifting cluster interest, 20 % uniform noise clicks;
leave-one-out (last item test, the one before validation, all earlier prefixes train: 34k
prefixes). Model (:mod:`jaxcl.recipes.mclrec`): tiny SASRec (1 layer, 2 heads, d = 32, inner
128, dropout 0.2) instead of the reference's 2 layers / d = 64 / dropout 0.5; CL4SRec crop 0.5,
mask 0.5, reorder 0.8; lambda 0.1, tau 1 (dot), beta 0.1 (README; yaml 0.01), margin weight 0.1;
Adam for the encoder and a separate Adam for the augmenters (same rate, as the reference).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.recipe = "mclrec"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      num_users=2000, num_items=500, length=20, num_clusters=10, branch=16, noise=0.2,
      drift_scale=2.0))
  c.mclrec = ml_collections.ConfigDict(dict(
      method="mclrec",          # "sasrec" | "cl4srec" | "mclrec"
      max_len=20, dim=32, num_layers=1, num_heads=2, inner=128, dropout=0.2,
      batch_size=128, steps=240, lr=1e-2, aug_lr=1e-2,   # the study's budget and chosen rate
      crop=0.5, mask=0.5, reorder=0.8,
      lmd=0.1, beta=0.1, tau=1.0, margin_weight=0.1,
      k=10))
  return c
