"""Symile (Saporta et al., "Contrasting with Symile", NeurIPS 2024, arXiv 2411.01053;
methods.md section 3) on ``symile_xor``: the paper's binary-XOR synthetic, three modalities
``a, b ~ U{0,1}`` and ``c = a XOR b`` (every pair independent, the paper's ``p_hat = 1``).

``python -m jaxcl.main --config=configs/symile_xor.py --workdir=runs/symile_xor``
Study: ``python -m experiments.symile`` (Symile vs pairwise CLIP, missing modalities, O(N) vs
O(N^2) negatives; zero-shot prediction of ``c`` from ``(a, b)``).

CPU proxy: each bit value of a modality is a fixed antipodal 8-d code (``+u`` / ``-u``, ``u`` a
random direction of norm sqrt(8)) plus N(0, 0.25) noise (9 features per modality with a
missingness indicator; ``jaxcl/data/embedded.py`` ``_symile_xor``), so the towers must read
the bits before any structure is learned; ``symile_xor_missing`` (same rows, each train
modality missing with probability 0.5: an all-zero block with its indicator set) is the
missing-modality variant. One tower per modality (``jaxcl.models.MultiModal``): an MLP
64-64 + a 2-layer head to 16-d (the reference's synthetic uses one linear layer on the raw
bits; the MLP is needed to decode the noisy codes); no augmentation (``views.num = 1``, the
tabular views set to the identity: the rows are already noisy). The Symile objective
(:func:`jaxcl.train.objectives.symile_objective`) owns the learnable logit scale (init 1/0.1,
clamped at 100; the reference initialises ``log scale = -0.3`` and trains at lr 0.1 for 50
epochs of 10 batches of 1,000 — here 300 steps of 128 at lr 3e-3 with AdamW, weight decay
1e-4, the reference's ``weight_decay=0.01`` default not used). Negatives ``"n"`` (O(N): one
permutation of the global batch per non-anchor modality, the reference default).

Not pinned down by the paper: the bit embedding (codes + noise here; the paper feeds raw bits)
and the number of bits per modality (1 here, as the reference's ``examples/binary_xor.py``: 2
candidates for ``c``, chance 50%; in a trial, a 2-bit variant, ``XOR_BITS = 2``, with
non-antipodal codes, learned only one of its bits in 300 steps at lr 1e-2: 50% vs 25% chance).
"""
from jaxcl.train.config import default_config

IDENTITY = {"noise_std": 0.0, "drop_prob": 0.0}
MODALITIES = ("a", "b", "c")


def get_config():
  c = default_config()
  c.data.name = "symile_xor"
  c.batch_size = 128
  c.num_steps = 300
  c.log_every = 50
  c.views.num = 1
  c.augment.modalities = {m: dict(IDENTITY) for m in MODALITIES}
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (64, 64)}
  c.model.head_hidden = 64
  c.model.head_out = 16
  c.model.head_bn = False
  c.loss.name = "symile"
  c.loss.kwargs = {"temperature": 0.1, "negatives": "n", "learn_temperature": True}
  c.optim.name = "adamw"
  c.optim.lr = 3e-3
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 1e-4
  c.checkpoint.every = 300
  c.eval.every = 0
  return c
