"""SSACL table integration on synthetic data-lake tables (methods.md ``table_integration``;
Ji et al., arXiv 2412.00324; code rmitbggroup/Robin). Run:
``python -m jaxcl.main --config=configs/table_integration_synthetic.py --workdir=runs/ti``
(``--config.table_integration.w_adv=0`` is the arm without adversarial positives).

CPU proxy: tuples ``name | company | city | title`` from small built-in vocabularies
(:mod:`jaxcl.data.tables`), ~2.5 copies per entity, duplicates corrupted by typos,
abbreviations (``new york -> ny``, ``corporation -> corp``, first-name initials), reordered name
tokens and title synonyms at strength ``noise``; training is self-supervised on a 200-entity
table, evaluation on held-out 100-entity tables at the training noise (0.2) and at a heavier
one (0.4). Each SSACL positive composes 2 random augmentation operations (one edit alone makes
the training task trivial: the loss reaches ~0.004 and the held-out duplicates, which carry
several corruptions, are missed; 3 makes the positives so loose that p > 0.5 links most pairs).
Encoder: char-3-gram hashing (512) -> MLP (128 -> 64, unit norm) -> symmetric pair MLP (no LM;
methods.md's proxy). SSACL's sampling: 6 positives (augmentations) and 20 negatives (random other
tuples) per anchor. ``epsilon = 0.1`` on unit-norm embeddings (the paper's 0.01 is for LM
embeddings of a different scale; fixed before seeing results), one FGSM step, ``w_adv = 1``.
"""
import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.recipe = "table_integration"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      train_entities=200, test_entities=100, mean_copies=2.5, noise=0.2,
      test_noises=[0.2, 0.4]))
  c.table_integration = ml_collections.ConfigDict(dict(
      hash_dim=512, hidden=128, dim=64, head_hidden=64,
      steps=300, batch=32, n_pos=6, n_neg=20, pool=12, aug_ops=2, lr=1e-3,
      w_adv=1.0, epsilon=0.1, pgd_steps=1, threshold=0.5))
  return c
