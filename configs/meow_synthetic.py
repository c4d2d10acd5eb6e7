"""MEOW / AdaMEOW vs plain InfoNCE on a synthetic paper-author-venue graph (methods.md ``meow``;
Yu & Li, SDM 2023, arXiv 2212.13847; AdaMEOW, TKDE 2024; code jianxiangyu/MEOW).

``python -m jaxcl.main --config=configs/meow_synthetic.py --workdir=runs/meow``
(``--config.meow.method=infonce`` / ``adameow``; ``--config.meow.weight_norm=None`` is AdaMEOW's
unconstrained released form). Study: ``python -m experiments.meow``.

CPU proxy (:mod:`jaxcl.data.hetero`): 1200 papers (target nodes) in 3 balanced classes, 400
authors and 30 venues with a class each; 3 author slots per paper drawn from the paper's class
with probability 0.7 (else uniform), one venue from its class with probability 0.6; features
(32-d) = 0.15 * class mean + N(0, 1) noise, so the raw features alone are weak (a logistic
probe on them reaches ~0.4 macro-F1) and the meta-path structure carries the class (GCN
smoothing of the features over P-A-P / P-V-P reaches ~0.75 / ~0.65). Meta-paths P-A-P
(~26 neighbours, ~67 % same-class) and P-V-P (~40, ~55 %). Probe: 20 labelled papers per
class, 20 % of the rest for validation, the remainder for test. Model
(:mod:`jaxcl.recipes.meow`): hidden = projection
dim 64, T = 0.5 (between MEOW's ACM 0.4 and DBLP 0.9), lambda_proto = 1 (ACM / DBLP), cluster
counts K in {10, 30} (methods.md's proxy; the paper uses [100, 300] for 3k-node ACM), 10 Lloyd
steps per clustering per training step, Adam at a constant rate (the study tunes it on
validation with the same grid for every objective).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.recipe = "meow"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      num_papers=1200, num_classes=3, num_authors=400, num_venues=30, authors_per_paper=3,
      author_homophily=0.7, venue_homophily=0.6, feature_dim=32, signal=0.15,
      train_per_class=20, val_fraction=0.2))
  c.meow = ml_collections.ConfigDict(dict(
      method="meow",           # "infonce" | "meow" | "adameow"
      dim=64, temperature=0.5, lambda_proto=1.0, cluster_ks=[10, 30], kmeans_iters=10,
      weight_norm="mean",      # AdaMEOW: "mean" | "sum" | None (the released code, collapses)
      weight_hidden=16, ada_block=128,
      steps=200, lr=1e-3,
      impl="auto", block_size=1024))   # full-node contrasts through the one kernel
  return c
