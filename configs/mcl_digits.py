"""MCL (Zhang et al., ECCV 2024, arXiv 2402.11816) on ``digits_easy``: digits plus an "easy"
channel (1 of 5 constant levels, shared by both views, unrelated to the digit).

Stage 1 is SimCLR (NT-Xent); k-means (K = 5) on its embeddings; stage 2 trains a fresh
encoder on cluster-homogeneous global batches, so its negatives share the anchor's cluster.
Colour jitter is off so that both views keep the easy channel exactly (the feature-suppression
setting: a shared feature that partly solves instance discrimination), and the encoder ends in
a 16-wide layer: features compete for a small representation, which is where suppression
shows (with the default 256-wide MLP the digit stays linearly decodable from the encoder
whatever the loss prefers; see experiments/results/mcl.md).

``python -m jaxcl.main --config=configs/mcl_digits.py --workdir=runs/mcl_digits``
(``--config.mcl.mechanism=mask`` masks negatives by pseudo-cluster in the loss instead;
``--config.mcl.cumulative=False`` uses only the last stage's clusters, as the released code).
Study: ``python -m experiments.mcl``.
"""
from configs.simclr_digits import get_config as simclr_digits
from jaxcl.recipes.mcl import default_mcl


def get_config():
  c = simclr_digits()
  c.data.name = "digits_easy"
  c.augment.params = {"jitter_prob": 0.0}
  c.model.encoder_kwargs = {"hidden": [256, 16]}
  c.batch_size = 128          # 1,437 rows / 5 clusters: about 2 homogeneous batches each
  c.num_steps = 300           # per stage
  c.optim.warmup_steps = 20
  c.checkpoint.every = 300
  c.eval.every = 0
  c.mcl = default_mcl()
  return c
