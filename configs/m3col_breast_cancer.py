"""M3CoL (Kumar et al., arXiv 2409.17777, methods.md section 20) on ``breast_cancer_blocks``:
scikit-learn's breast-cancer table (455 train / 114 test, the ``breast_cancer`` split and
standardisation) read as three tabular "modalities", its 10 ``mean``, 10 ``standard error``
and 10 ``worst`` features.

``python -m jaxcl.main --config=configs/m3col_breast_cancer.py --workdir=runs/m3col_bc``
Study: ``python -m experiments.m3col`` (CE vs CE + CLIP vs CE + M3Co -> SoftCLIP).

CPU proxy of the paper's ROSMAP / BRCA setting (``model_med.py``, MOGONET omics, not
obtainable offline): one tower per modality, ``Linear(10, 64) - ReLU - Linear(64, 32)`` (the
reference's ``Feature_Encoder``: an MLP encoder + a one-layer head, no BatchNorm); the objective
(``m3co_loss`` adapter, :func:`jaxcl.train.objectives.m3col_objective`) owns the fusion
classifier on the concatenated 96-d embeddings and one classifier per modality
(``Linear - ReLU - Linear``, 32 hidden units; the reference's dropout 0.5 is not used) and
trains ``CE(fusion) + sum_m CE(head_m) + 0.1 * sum_m M3Co(mix(x_m) -> z_{m+1})`` (cyclic pairs
mean -> se -> worst -> mean) for the first third of the steps, then SoftCLIP in place of M3Co
(``switch_step`` = num_steps // 3; the reference switches at ``int(0.33 * epochs)``). M3Co's
defaults are the reference's: ``Beta(0.15, 0.15)``, each row mixed with probability 0.5,
``T = 0.1``; SoftCLIP ``T' = 0.125``.

Choices: mixing in the *input* space of each modality (the paper's text for non-text
modalities; the released code mixes encoder outputs, ``mix="embedding"`` here; one forward of
``x`` with every block mixed by its own draw, ``modality_sizes``); partners are a
random single cycle of the global batch (no self-pairs; the reference's ``randperm`` may draw
some); no augmentation (``views.num = 1``, the tabular views set to the identity), as the
reference; Adam(W) at lr 2e-3 (the ROSMAP default) with weight decay 1e-4, minibatches of 64
rows (455 rows do not split over 8 devices; the reference trains full-batch) for 300 steps
(~42 passes over the 455 rows; the loader's reshuffled stream, batch 64 divides 8 devices).
"""
import jaxcl.data
from jaxcl.train.config import default_config

IDENTITY = {"noise_std": 0.0, "drop_prob": 0.0}
MODALITIES = ("mean", "se", "worst")


def get_config():
  c = default_config()
  c.data.name = "breast_cancer_blocks"
  c.batch_size = 64
  c.num_steps = 300
  c.log_every = 50
  c.views.num = 1
  c.augment.modalities = {m: dict(IDENTITY) for m in MODALITIES}
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (64,)}
  c.model.head_layers = 1
  c.model.head_out = 32
  c.model.head_bn = False
  c.loss.name = "m3co_loss"
  c.loss.kwargs = {"num_classes": 2, "contrastive": "m3co", "after": "softclip",
                   "switch_step": c.num_steps // 3, "weight": 0.1, "unimodal": True,
                   "head_hidden": 32, "mix": "input", "beta": 0.15, "mix_prob": 0.5,
                   "temperature": 0.1, "soft_temperature": 0.125,
                   # one forward of x with every block mixed (the towers are independent)
                   "modality_sizes": tuple(m.size for m in jaxcl.data.info(
                       c.data.name).modalities)}
  c.optim.name = "adamw"
  c.optim.lr = 2e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 1e-4
  c.checkpoint.every = 300
  c.eval.every = 0
  return c
