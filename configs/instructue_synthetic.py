"""InstructUE (contrastive + autoregressive user embeddings) on the generated UserQA set
(methods.md ``instructue``; arXiv 2510.11016, no public code).

``python -m jaxcl.main --config=configs/instructue_synthetic.py --workdir=runs/instructue``
(``--config.instructue.method=cl`` / ``ar`` for the ablations). Study:
``python -m experiments.instructue``.

CPU proxy (:mod:`jaxcl.data.userqa`): 600 users (400 train, 200 held out) with 4 categorical
attributes of 6 values; 16 behaviour events each (4 event ids per attribute value, 30 % uniform
noise events); 3 question templates per attribute, the third held out for testing; one-word
answers. Model (:mod:`jaxcl.recipes.instructue`): per-event MLP behaviour encoder + adapter
prefix into a 2-block, d = 32 causal LM; u = projection of the hidden state at SEP, t = projection
of the mean hidden state of the answer text; lambda = 1, T = 0.1 (not pinned by the paper).
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.recipe = "instructue"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      num_users=600, num_train=400, num_attrs=4, num_values=6, events_per_value=4, seq_len=16,
      noise=0.3))
  c.instructue = ml_collections.ConfigDict(dict(
      method="instructue",       # "instructue" (AR + CL) | "cl" | "ar"
      dim=32, depth=2, heads=2, emb_dim=32,
      batch_size=64, steps=600, lr=3e-3,
      temperature=0.1, lmd=1.0))
  return c
