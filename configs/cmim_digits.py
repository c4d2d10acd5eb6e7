"""cMIM (A-MIM + a posterior contrastive term; Livne, arXiv 2411.10548 / 2509.21511, methods.md
section 13) on scikit-learn's 8x8 digits, through the shared trainer.

``python -m jaxcl.main --config=configs/cmim_digits.py --workdir=runs/cmim_digits``
Study: ``python -m experiments.cmim`` (A-MIM vs cMIM vs NT-Xent across batch sizes: linear
probe on the posterior mean and on the informative embeddings, reconstruction BCE).

Model: the MLP encoder (256-256) and a 2-layer head without BatchNorm whose 32 outputs are the
Gaussian posterior ``[mean | logvar]`` of a 16-d latent (no BatchNorm anywhere, so an example's
loss does not depend on the other rows of its batch except through the contrastive term). The
objective owns the decoder, an MLP ``16 -> 256 -> 256 -> 64`` with Bernoulli logits for the
pixels in ``[0, 1]`` (``loss.kwargs.input_dim = 64``, ``decoder_hidden``), and reconstructs the
un-augmented input.

Choices (see ``jaxcl/losses/cmim.py``):
  * A-MIM exactly as the reference ``loss_function_mim`` (seraphlabs-ca/MIM) with its defaults:
    anchor prior ``N(0, I)``, ``q(x)`` the one-sample model marginal (``q_x="marginal"``),
    Bernoulli probabilities and targets clamped to ``[1e-3, 1 - 1e-3]``, ``beta = 1`` (the
    reference's warm-up of beta only rescales this loss, so it is not reproduced); the
    reference's NOAM schedule / Adam 1e-3 / tanh 400-unit layers become the trainer's AdamW
    warm-up-cosine and ReLU MLPs;
  * the contrastive term is NOT from the paper (its text could not be read): reading (a) of
    methods.md, an InfoNCE over the global batch with logits ``log q(z_i | x_j)``, weight 1;
  * views: identity (cMIM needs no positive augmentation); ``views.num = 2`` is the trainer's
    minimum, view 1 is encoded and ignored.
"""
from configs.simclr_digits import get_config as simclr_digits

LATENT = 16
IDENTITY_VIEWS = {"crop_scale": None, "flip_prob": 0.0, "jitter_prob": 0.0, "gray_prob": 0.0,
                  "blur_prob": 0.0}


def get_config():
  c = simclr_digits()
  c.augment.params = dict(IDENTITY_VIEWS)
  c.model.head_bn = False
  c.model.head_out = 2 * LATENT
  c.loss.name = "cmim"
  c.loss.kwargs = {"input_dim": 64, "decoder_hidden": (256, 256), "contrastive_weight": 1.0,
                   "q_x": "marginal", "beta": 1.0, "probs_clip": 1e-3}
  return c
