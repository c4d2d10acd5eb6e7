"""COCONUT (Cappellazzo et al., Findings of ACL 2024, arXiv 2310.02699, methods.md section 11)
on scikit-learn's 8x8 digits: class-incremental learning in 5 tasks of 2 classes (0-1, 2-3, ...,
8-9) with experience replay, the NSPT term (rehearsal anchors, frozen-teacher positives,
student negatives) and the multimodal term (two-view proxy) -- :mod:`jaxcl.recipes.coconut`.

``python -m jaxcl.main --config=configs/coconut_digits.py --workdir=runs/coconut_digits``
Study: ``python -m experiments.coconut`` (ER vs ER+NSPT vs ER+NSPT+MM, 3 seeds).

CPU proxy (methods.md): MLP encoder (256-256, no BatchNorm, so the frozen teacher in inference
mode is exactly the previous model) + 2-layer projection head (64-d, no BatchNorm) + a linear
classifier head on the 64-d output trained with CE over all 10 outputs (the paper's seq2seq
decoder and its CE on transcripts have no counterpart here); the "text" modality of the MM term
is a second augmented view of the same digit through the same encoder (the cheap digit views of
``configs/hydra_digits.py``: 1-pixel shift, random erasing, Gaussian noise). Per task: 150
AdamW steps at global batch 64 (from task 2 on: 32 current + 32 replayed rows), warmup 10,
cosine to 0, optimiser state reset; buffer: the first 20 training rows of every finished
class (up to 160 rows). Not pinned down by the paper and chosen here without tuning:
``T = 0.1``, ``l1 = l2 = 1`` (coconut block), NSPT on view 0 only (teacher and student see the
same input), MM on the current rows only, both directions.
``config.loss`` is the classifier head (``softmax_cross_entropy``, ``num_classes = 10``); the
recipe adds the contrastive terms and the teacher. Plain ER: ``coconut.nspt_weight =
coconut.mm_weight = 0``.
"""
from configs.hydra_digits import VIEWS
from configs.simclr_digits import get_config as simclr_digits
from jaxcl.recipes.coconut import default_coconut


def get_config():
  c = simclr_digits()
  c.augment.params = dict(VIEWS)
  c.batch_size = 64
  c.num_steps = 150          # per task
  c.log_every = 50
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (256, 256)}
  c.model.head_hidden = 256
  c.model.head_out = 64
  c.model.head_bn = False
  c.loss.name = "softmax_cross_entropy"
  c.loss.kwargs = {"num_classes": 10}
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 10
  c.checkpoint.every = 150
  c.eval.every = 0
  c.eval.probe_l2 = (1e-4,)
  c.eval.probe_steps = 100
  c.plots = False
  with c.unlocked():
    c.coconut = default_coconut()
  return c
