"""SimCTG (Su et al., arXiv 2202.06417) on the WordNet gloss corpus: a tiny decoder-only LM
(:class:`jaxcl.models.lm.CausalLM`, 2 layers, width 128, 4 heads, 32 positions) trained with
MLE + the contrastive token loss (``weight = 1``, margin rho = 0.5: the paper's values; ``weight
= 0`` is the MLE baseline). Recipe :mod:`jaxcl.recipes.simctg` (its own jitted optax step,
sharded over the data axis; orbax checkpoints, resumable).

``python -m jaxcl.main --config=configs/simctg_wordnet.py --workdir=runs/simctg``
Study: ``python -m experiments.contrastive_search`` (greedy / beam / nucleus / contrastive
search on MLE and SimCTG models: rep-n, diversity, coherence, isotropy).

CPU proxy (methods.md ``contrastive_search``): a word-level vocabulary of 4,096 (the 30,522-way
WordPiece softmax costs ~8x more per step here; see the recipe's docstring), glosses packed into
33-token windows, 250 AdamW steps at batch 32 (lr 3e-3, warmup 25, cosine, clip 1): ~0.15 epoch
of the ~1.8M training tokens -- what 6 trainings of the study afford on 2 CPU cores. The paper trains GPT-2 small (12 layers, 768) on WikiText-103.
"""
from ml_collections import ConfigDict


def get_config():
  c = ConfigDict()
  c.recipe = "simctg"
  c.seed = 0
  c.simctg = ConfigDict({
      "vocab": 4096, "heldout_every": 50, "max_texts": 0,  # 0 = all 117,659 glosses
      "seq_len": 32, "dim": 128, "depth": 2, "heads": 4, "mlp_ratio": 4,
      "weight": 1.0, "margin": 0.5,
      "num_steps": 250, "batch_size": 32, "lr": 3e-3, "warmup_steps": 25, "wd": 0.01,
      "clip": 1.0, "log_every": 50, "checkpoint_every": 100, "eval_windows": 512,
  })
  return c
