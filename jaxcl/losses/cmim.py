"""cMIM: the Mutual Information Machine (A-MIM) plus a contrastive term over the posteriors.

Livne, "Contrastive MIM: A Contrastive Mutual Information Framework for Unified Generative and
Discriminative Representation Learning", arXiv 2411.10548 / 2502.19642, and "Contrastive
Mutual Information Learning: Toward Robust Representations without Positive-Pair
Augmentations", arXiv 2509.21511. Base MIM: Livne, Swersky, Fleet, arXiv 1910.03175; reference
code seraphlabs-ca/MIM, ``src/vae-as-mim-dataset.py`` (``loss_function_mim``) with the model
of ``src/models.py`` (``MIM.forward``) and the layers of ``src/auxiliary.py``.

Encoder ``q(z|x) = N(mean(x), diag(exp(logvar(x))))``, decoder ``p(x|z) = Bernoulli(sigmoid(
logits(z)))`` (inputs in ``[0, 1]``), anchor prior ``P(z) = N(0, I)``, one reparameterised
sample ``z_i = mean_i + exp(logvar_i / 2) * eps_i`` per example.

**A-MIM** (:func:`a_mim`, exactly the reference's ``loss_function_mim`` with ``samp_p=False``,
the A-MIM variant that samples only ``x ~ data, z ~ q(z|x)``)::

    a_mim_i = -1/2 [ log p(x_i|z_i) + log P(z_i) + beta (log q(z_i|x_i) + log q(x_i)) ]

``q_x`` selects ``log q(x)``:

* ``"marginal"`` (the reference's default ``--q-x marginal``, ``q_x=None`` in ``MIM.forward``):
  the one-sample importance estimate of the model marginal,
  ``log q(x_i) = log p(x_i|z_i) + log P(z_i) - log q(z_i|x_i)``. Then the ``log q(z|x)`` terms
  cancel and ``a_mim_i = -(1 + beta)/2 [log p(x_i|z_i) + log P(z_i)]``: the encoder's
  entropy never appears, only through the sample, so nothing stops the posterior variance
  from shrinking (MIM's low-entropy, high-``I(x;z)`` codes; a VAE would add
  ``+ log q(z|x)``). ``beta`` (the reference warms it up from 0 to 1 over its first
  ``warmup_steps`` epochs) only rescales this loss.
* ``"data"``: ``q(x)`` is the data distribution, ``log q(x)`` a constant (0 here): the MIM
  paper's A-MIM with the data anchor, whose ``+ log q(z|x)`` term *rewards* low posterior
  entropy (the opposite sign to the VAE's).

``log p(x|z)``: the reference's ``BernoulliCondLayer`` clamps the probabilities to
``[probs_clip, 1 - probs_clip]`` (1e-3) and its training loop clamps binary targets to the same
range; ``probs_clip=0`` uses the exact ``log sigmoid`` form instead.

**Contrastive term (NOT from the paper text).** The cMIM papers' text could not be read (only
their abstracts: the term "removes the need for positive data augmentation", is "substantially
less sensitive to batch size than InfoNCE" and "imposes global discriminative structure";
arXiv abstract pages and openreview.net/forum?id=I8FkTtgsUu / n4sSEUVOpL), and no cMIM code was
found. This module implements reading (a) of ``methods.md`` section 13: an InfoNCE whose
positive is ``(x_i, its own sample z_i ~ q(z|x_i))`` and whose negatives are the other rows'
posteriors, scored by the encoder's own density (:func:`posterior_nce`)::

    l_ij = log q(z_i | x_j) = log N(z_i; mean_j, diag(exp(logvar_j)))
    nce_i = -l_ii + log sum_{j in global batch} exp(l_ij)

i.e. ``-log`` of the posterior probability that ``z_i`` was drawn from ``x_i`` rather than
from another row (an InfoNCE bound on ``I(x; z)`` with the encoder as the critic). The noise
of the reparameterisation plays the role of the augmentation, so no positive views are
needed. It is computed by the one similarity kernel: up to the constant ``-D/2 log 2 pi``
(which cancels), ``l_ij = <q'_i, k'_j>`` for the augmented features::

    q'_i = [z_i**2, z_i, 1]
    k'_j = [-exp(-logvar_j) / 2, mean_j exp(-logvar_j),
            -sum_d (mean_jd**2 exp(-logvar_jd) + logvar_jd) / 2]

so :func:`jaxcl.kernels.contrastive_lse` runs with ``scale = 1``, no normalisation, over the
global batch with ``axis_name`` (``impl="blockwise"`` / ``"ring"`` as everywhere). The
expansion cancels catastrophically when the variances are small (``|z|^2 / sigma^2`` terms),
so the positive ``l_ii`` is not taken from the product: the self key is masked out of the
kernel and the exact ``l_ii = -1/2 sum_d ((z_id - mean_id)^2 exp(-logvar_id) + logvar_id)``
enters as a per-row extra logit. Note that this term can also be lowered by shrinking every
variance (sharper posteriors separate any distinct means), which A-MIM already favours.

**cMIM** (:func:`cmim`): ``cmim_i = a_mim_i + contrastive_weight * nce_i`` (weight 1 by
default, not pinned down by any source; ``contrastive_weight=0`` is A-MIM and skips the
kernel).

**Informative embeddings** (:func:`informative_embeddings`): the papers read training-free
features from the *decoder's hidden states* of a sequence encoder-decoder (molecules). With the
MLP decoder here (:func:`init_mim_decoder` / :func:`mim_decoder`) they are the decoder's last
hidden layer given the posterior mean, concatenated with the mean.

Per-example values: ``a_mim`` decomposes per example; ``nce_i`` is row ``i``'s InfoNCE term
over the global batch (its mean is the batch InfoNCE loss). Padded rows (``valid=False``) are
neither anchors (loss 0) nor candidates.

Distributed semantics: the keys ``k'_j`` and their tags are gathered along ``axis_name`` inside
the kernel; queries, samples and reconstructions stay local. :func:`posterior_sample` draws
row ``g``'s noise from ``fold_in(rng, g)`` for its global row index ``g``, so value and gradient
equal the single-device call on the full batch.

Recommendation: the module is a faithful A-MIM plus one *candidate* contrastive term; treat
claims about cMIM made with it as claims about reading (a). Use ``q_x="marginal"`` to match the
reference code.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> x = jax.random.uniform(jax.random.key(0), (4, 6))
  >>> mean, logvar = jnp.zeros((4, 3)), jnp.zeros((4, 3))
  >>> dec = jaxcl.losses.contrib.init_mim_decoder(jax.random.key(1), 3, 6, hidden=(8,))
  >>> z = jaxcl.losses.contrib.posterior_sample(mean, logvar, jax.random.key(2))
  >>> jaxcl.losses.contrib.cmim(x, jaxcl.losses.contrib.mim_decoder(dec, z), z, mean, logvar).shape
  (4,)
"""
from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.kernels import contrastive_lse
from jaxcl.losses import _common as c

Q_X = ("marginal", "data")
LOG_2PI = math.log(2 * math.pi)


def _posterior_args(fn, z, mean, logvar):
  z = c.embeddings("z", z, fn)
  mean = c.embeddings("mean", mean, fn)
  logvar = c.embeddings("logvar", logvar, fn)
  for name, a in (("mean", mean), ("logvar", logvar)):
    if a.shape != z.shape:
      raise ValueError(f"{fn}: 'z' and '{name}' must have the same shape [batch, latent], got "
                       f"{tuple(z.shape)} and {tuple(a.shape)}")
  f32 = lambda a: a.astype(jnp.float32)
  return f32(z), f32(mean), f32(logvar)


def gaussian_log_prob(z, mean, logvar):
  """``log N(z; mean, diag(exp(logvar)))`` summed over the last axis, float32."""
  z, mean, logvar = (jnp.asarray(a, jnp.float32) for a in (z, mean, logvar))
  return -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def bernoulli_log_prob(x, logits, probs_clip=1e-3):
  """``sum_p x_p log p_p + (1 - x_p) log(1 - p_p)`` with ``p = sigmoid(logits)`` clamped to
  ``[probs_clip, 1 - probs_clip]`` and ``x`` to the same range (the reference); exact
  ``log sigmoid`` when ``probs_clip == 0``."""
  x, logits = jnp.asarray(x, jnp.float32), jnp.asarray(logits, jnp.float32)
  if probs_clip:
    x = jnp.clip(x, probs_clip, 1.0 - probs_clip)
    p = jnp.clip(jax.nn.sigmoid(logits), probs_clip, 1.0 - probs_clip)
    return jnp.sum(x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p), axis=-1)
  return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits),
                 axis=-1)


def _check_x(fn, x, logits, b):
  x = c.embeddings("x", x, fn)
  logits = c.embeddings("logits", logits, fn)
  if x.shape != logits.shape:
    raise ValueError(f"{fn}: 'x' and 'logits' must have the same shape [batch, pixels], got "
                     f"{tuple(x.shape)} and {tuple(logits.shape)}")
  if x.shape[0] != b:
    raise ValueError(f"{fn}: 'x' and 'z' must have the same batch size, got {x.shape[0]} and "
                     f"{b}")
  return x, logits


def _check_probs_clip(fn, probs_clip):
  if not isinstance(probs_clip, numbers.Real) or not 0.0 <= probs_clip < 0.5:
    raise ValueError(f"{fn}: 'probs_clip' must be a number in [0, 0.5), got {probs_clip!r}")


def a_mim(x, logits, z, mean, logvar, *, q_x="marginal", beta=1.0, probs_clip=1e-3,
          valid=None):
  """A-MIM per example (the reference's ``loss_function_mim``; module docstring).

  Args:
    x: ``[B, P]`` targets in ``[0, 1]``; ``logits``: ``[B, P]`` decoder logits of ``z``.
    z, mean, logvar: ``[B, D]`` the posterior sample and its Gaussian's parameters.
    q_x: ``"marginal"`` (reference default) or ``"data"`` (``log q(x)`` constant).
    beta: weight of ``log q(z|x) + log q(x)``.
    probs_clip: Bernoulli probability clamp (reference 1e-3; 0 = exact).
    valid: ``[B]`` bool, padded rows 0.

  Returns ``[B]`` float32.
  """
  return _a_mim("a_mim", x, logits, z, mean, logvar, q_x, beta, probs_clip, valid)


def _a_mim(fn, x, logits, z, mean, logvar, q_x, beta, probs_clip, valid):
  z, mean, logvar = _posterior_args(fn, z, mean, logvar)
  x, logits = _check_x(fn, x, logits, z.shape[0])
  if q_x not in Q_X:
    raise ValueError(f"{fn}: 'q_x' must be one of {Q_X}, got {q_x!r}")
  _check_probs_clip(fn, probs_clip)
  valid = c.valid_mask(valid, z.shape[0], fn)
  log_px_z = bernoulli_log_prob(x, logits, probs_clip)
  log_pz = gaussian_log_prob(z, jnp.zeros_like(z), jnp.zeros_like(z))
  log_qz_x = gaussian_log_prob(z, mean, logvar)
  log_qx = log_px_z + log_pz - log_qz_x if q_x == "marginal" else jnp.zeros_like(log_pz)
  beta = jnp.asarray(beta, jnp.float32)
  loss = -0.5 * (log_px_z + log_pz + beta * (log_qz_x + log_qx))
  return c.finalize(loss, valid)


def posterior_features(z, mean, logvar):
  """``(q' [B, 2D+1], k' [B, 2D+1])`` with ``<q'_i, k'_j> = log q(z_i|x_j) + D/2 log 2 pi``."""
  prec = jnp.exp(-logvar)
  q = jnp.concatenate([z * z, z, jnp.ones_like(z[:, :1])], axis=1)
  bias = -0.5 * jnp.sum(mean * mean * prec + logvar, axis=1, keepdims=True)
  k = jnp.concatenate([-0.5 * prec, mean * prec, bias], axis=1)
  return q, k


def posterior_nce(z, mean, logvar, *, axis_name=None, valid=None, impl="dense",
                  block_size=1024):
  """InfoNCE over the posteriors of the global batch: ``-l_ii + log sum_j exp l_ij`` with
  ``l_ij = log q(z_i | x_j)`` (module docstring). ``[B_local]`` float32."""
  return _posterior_nce("posterior_nce", z, mean, logvar, axis_name, valid, impl, block_size)


def _posterior_nce(fn, z, mean, logvar, axis_name, valid, impl, block_size):
  z, mean, logvar = _posterior_args(fn, z, mean, logvar)
  b = z.shape[0]
  valid = c.valid_mask(valid, b, fn)
  q, k = posterior_features(z, mean, logvar)
  # Exact positive logit (same constant dropped as in the product).
  pos = -0.5 * jnp.sum((z - mean) ** 2 * jnp.exp(-logvar) + logvar, axis=1)
  tags = c.row_tags(b, axis_name, view=0, valid=valid)
  res = contrastive_lse(q, k, 1.0, q_tags=tags, k_tags=tags,
                        mask_fn=c.candidate_mask(exclude_self=True),
                        extra_logits=pos[:, None], axis_name=axis_name, impl=impl,
                        block_size=block_size)
  return c.finalize(res.lse - pos, valid)


def cmim(x, logits, z, mean, logvar, *, contrastive_weight=1.0, q_x="marginal", beta=1.0,
         probs_clip=1e-3, axis_name=None, valid=None, impl="dense", block_size=1024):
  """cMIM per example: ``a_mim + contrastive_weight * posterior_nce`` (module docstring).

  ``contrastive_weight=0`` (a Python number) is A-MIM alone (the kernel is not called).
  Returns ``[B_local]`` float32.
  """
  fn = "cmim"
  if isinstance(contrastive_weight, numbers.Real) and not contrastive_weight >= 0:
    raise ValueError(f"{fn}: 'contrastive_weight' must be >= 0, got {contrastive_weight}")
  out = _a_mim(fn, x, logits, z, mean, logvar, q_x, beta, probs_clip, valid)
  if isinstance(contrastive_weight, numbers.Real) and contrastive_weight == 0:
    return out
  nce = _posterior_nce(fn, z, mean, logvar, axis_name, valid, impl, block_size)
  return out + jnp.asarray(contrastive_weight, jnp.float32) * nce


def split_posterior(z, logvar_range=(-30.0, 20.0)):
  """``(mean, logvar)`` from an encoder output ``[..., 2D]`` laid out ``[mean | logvar]``;
  ``logvar`` clipped to ``logvar_range`` (the reference floors the scale at 1e-10)."""
  z = jnp.asarray(z)
  if z.shape[-1] % 2:
    raise ValueError(f"split_posterior: 'z' must have an even last axis [mean | logvar], got "
                     f"shape {tuple(z.shape)}")
  d = z.shape[-1] // 2
  z = z.astype(jnp.float32)
  return z[..., :d], jnp.clip(z[..., d:], *logvar_range)


def posterior_sample(mean, logvar, rng, axis_name=None):
  """``mean + exp(logvar / 2) * eps``, row ``g`` (global index) drawing ``eps`` from
  ``fold_in(rng, g)`` (the same sample whatever the device count)."""
  if rng is None:
    raise ValueError("posterior_sample: needs an explicit 'rng' key")
  mean, logvar = jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32)
  g = collectives.global_row_index(mean.shape[0], axis_name)
  eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), mean.shape[1:]))(g)
  return mean + jnp.exp(0.5 * logvar) * eps


def init_mim_decoder(rng, latent_dim, out_dim, *, hidden=(256, 256)):
  """Parameters of the MLP decoder ``z -> Dense(h) -> ReLU ... -> Dense(out_dim)`` (logits);
  LeCun-normal weights, zero biases."""
  dims = (int(latent_dim),) + tuple(int(h) for h in hidden) + (int(out_dim),)
  if min(dims) < 1:
    raise ValueError(f"init_mim_decoder: widths must be >= 1, got {dims}")
  keys = jax.random.split(rng, len(dims) - 1)
  return [{"w": jax.random.normal(k, (n, m), jnp.float32) / math.sqrt(n),
           "b": jnp.zeros((m,), jnp.float32)} for k, n, m in zip(keys, dims[:-1], dims[1:])]


def mim_decoder(params, z, return_hidden=False):
  """Decoder logits ``[B, out_dim]`` of ``z [B, D]`` (and the hidden activations, a list)."""
  h, hidden = jnp.asarray(z, jnp.float32), []
  for layer in params[:-1]:
    h = jax.nn.relu(h @ layer["w"] + layer["b"])
    hidden.append(h)
  logits = h @ params[-1]["w"] + params[-1]["b"]
  return (logits, hidden) if return_hidden else logits


def informative_embeddings(params, mean):
  """``[mean, last decoder hidden layer given mean]``: the papers' decoder-state features for
  an MLP decoder (module docstring). ``[B, D + hidden[-1]]``."""
  _, hidden = mim_decoder(params, mean, return_hidden=True)
  if not hidden:
    return jnp.asarray(mean, jnp.float32)
  return jnp.concatenate([jnp.asarray(mean, jnp.float32), hidden[-1]], axis=1)
