"""SupReMix (arXiv 2309.16633, methods.md section 6) on scikit-learn diabetes (353 train /
89 test, 10 standardised features, continuous disease-progression target).

Views: Gaussian feature noise + feature dropout (the tabular views). The target is binned for
"same label": ``bin_width=25`` (disease-progression units; about 13 bins over the 25..346
range), so the mix-pos window of 5 bins spans 125 units and the ``|dy| + 1`` weights are in
bins. The end-of-run evaluation reports the ridge-probe test MAE and the ordinality (Spearman
correlation of embedding distance and ``|dy|``) instead of class accuracy.

``python -m jaxcl.main --config=configs/supremix_diabetes.py --workdir=runs/supremix_diabetes``
Study: ``python -m experiments.supremix`` (vs SupCon on binned labels, diabetes + ordinal).
"""
from jaxcl.train.config import default_config

BIN_WIDTH = 25.0


def get_config():
  c = default_config()
  c.data.name = "diabetes"
  c.batch_size = 64
  c.num_steps = 300
  c.log_every = 50
  c.model.encoder = "mlp"
  c.model.encoder_kwargs = {"hidden": (64, 64)}
  c.model.head_hidden = 64
  c.model.head_out = 32
  c.augment.params = {"noise_std": 0.1, "drop_prob": 0.2}
  c.loss.name = "supremix"
  c.loss.kwargs = {"temperature": 0.5, "window": 5.0, "beta": (2.0, 8.0),
                   "weighting": "l1_inv", "bin_width": BIN_WIDTH}
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.warmup_steps = 30
  c.checkpoint.every = 300
  return c
