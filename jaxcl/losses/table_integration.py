"""SSACL: self-supervised pair classification with adversarial positives (Ji, Luo, Bao,
Culpepper, *Robust Table Integration in Data Lakes*, arXiv 2412.00324; code rmitbggroup/Robin
``src/pairwise_integrability/ssacl.py``; methods.md ``table_integration``).

A pair classifier ``p(a, b) = sigmoid(classify(a, b))`` on tuple embeddings decides whether two
tuples are integrable. Per anchor tuple ``t`` with embedding ``e = e(t)``, ``P`` positive
embeddings ``e(aug(t))`` and ``Q`` negative embeddings ``e(t')`` (other tuples of the batch)::

    L_NCE(t) = -(1 / (P + Q)) [ sum_p log p(e, e_p) + sum_q log(1 - p(e, e_q)) ]   (binary NCE)
    g        = grad_{e'} [ -log p(e, e') ] at e' = e          (stop-gradient direction)
    e_adv    = e + epsilon * g / ||g||_2                      (FGSM in embedding space)
    L_adv(t) = -log p(e, e_adv)
    L(t)     = L_NCE(t) + w_adv * L_adv(t)

**Sign.** The released ``_compute_perturbation`` uses ``e - epsilon * g / ||g||``, which moves
*down* the loss (an easier positive); the adversarial direction, implemented here, is
``+ epsilon * g / ||g||`` (the positive the classifier finds hardest within the epsilon-ball).
``pgd_steps > 1`` repeats the signed step with step size ``epsilon / pgd_steps`` and projects
onto the epsilon-ball around ``e`` (the optional 3-step PGD of the paper). The perturbation is
held fixed (``stop_gradient``) in ``L_adv``, whose gradient reaches the classifier and ``e``.

Returns per-anchor values ``[B]`` whose mean is the published loss (every anchor has the same
``P`` and ``Q``, so the mean over anchors of the per-anchor normalised sums equals the
``1 / (|P| + |N|)`` normalisation over the whole batch). A pair BCE is not a softmax over a
batch of similarities, so the logsumexp kernel is not involved; logits and results in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(name, x, ndim):
  if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
    raise TypeError(f"ssacl_loss: {name!r} must be a float array, got {jnp.asarray(x).dtype}")
  if jnp.ndim(x) != ndim:
    raise ValueError(f"ssacl_loss: {name!r} must have {ndim} dims, got shape {jnp.shape(x)}")


def adversarial_positive(classify, anchor, epsilon, *, pgd_steps=1):
  """``e_adv [B, D]``: FGSM (``pgd_steps = 1``) or projected ``pgd_steps``-step ascent of
  ``-log p(anchor, e')`` from ``e' = anchor`` within the L2 ball of radius ``epsilon``
  (stop-gradient; module docstring). ``classify(a [B, D], b [B, D]) -> logits [B]``."""
  _check("anchor", anchor, 2)
  if isinstance(epsilon, (int, float)) and not epsilon >= 0:   # a traced epsilon is allowed
    raise ValueError(f"adversarial_positive: 'epsilon' must be >= 0, got {epsilon!r}")
  if isinstance(pgd_steps, bool) or not isinstance(pgd_steps, int) or pgd_steps < 1:
    raise ValueError(f"adversarial_positive: 'pgd_steps' must be an int >= 1, got {pgd_steps!r}")
  e = jax.lax.stop_gradient(anchor.astype(jnp.float32))
  nll = lambda b: jnp.sum(-jax.nn.log_sigmoid(classify(e, b).astype(jnp.float32)))
  step = epsilon / pgd_steps
  x = e
  for _ in range(pgd_steps):
    g = jax.grad(nll)(x)
    g = g * jax.lax.rsqrt(jnp.maximum(jnp.sum(g * g, -1, keepdims=True), 1e-24))
    x = x + step * g
    d = x - e
    n = jnp.sqrt(jnp.maximum(jnp.sum(d * d, -1, keepdims=True), 1e-24))
    x = e + d * jnp.minimum(1.0, epsilon / n)
  return jax.lax.stop_gradient(x)


def ssacl_loss(classify, anchor, positives, negatives, *, epsilon=0.01, w_adv=1.0,
               pgd_steps=1, return_terms=False):
  """SSACL per-anchor loss ``[B]`` (module docstring).

  Args:
    classify: ``classify(a [M, D], b [M, D]) -> logits [M]`` (differentiable).
    anchor: ``[B, D]`` embeddings of the tuples.
    positives: ``[B, P, D]`` embeddings of augmented copies (``P >= 1``).
    negatives: ``[B, Q, D]`` embeddings of other tuples (``Q >= 0``).
    epsilon, pgd_steps: the adversarial ball and step count; ``w_adv = 0`` drops ``L_adv``
      (the SSACL-without-adversarial baseline; no perturbation is computed).
    return_terms: also return ``(nce [B], adv [B])``.
  """
  _check("anchor", anchor, 2)
  _check("positives", positives, 3)
  _check("negatives", negatives, 3)
  b, d = anchor.shape
  if positives.shape[0] != b or negatives.shape[0] != b:
    raise ValueError(f"ssacl_loss: 'positives' and 'negatives' must have the anchor's batch size "
                     f"{b}, got {positives.shape} and {negatives.shape}")
  if positives.shape[2] != d or negatives.shape[2] != d:
    raise ValueError(f"ssacl_loss: 'positives' / 'negatives' must have dim {d}, got "
                     f"{positives.shape[2]} and {negatives.shape[2]}")
  if positives.shape[1] < 1:
    raise ValueError("ssacl_loss: 'positives' needs at least one positive per anchor")
  if not w_adv >= 0:
    raise ValueError(f"ssacl_loss: 'w_adv' must be >= 0, got {w_adv!r}")
  p, q = positives.shape[1], negatives.shape[1]

  def pair_logits(others):
    k = others.shape[1]
    a = jnp.repeat(anchor, k, axis=0)
    return classify(a, others.reshape(b * k, d)).astype(jnp.float32).reshape(b, k)

  pos = jnp.sum(-jax.nn.log_sigmoid(pair_logits(positives)), axis=1)
  neg = jnp.sum(-jax.nn.log_sigmoid(-pair_logits(negatives)), axis=1) if q else 0.0
  nce = (pos + neg) / (p + q)
  if w_adv == 0:
    adv = jnp.zeros_like(nce)
  else:
    e_adv = adversarial_positive(classify, anchor, epsilon, pgd_steps=pgd_steps)
    adv = -jax.nn.log_sigmoid(classify(anchor, e_adv).astype(jnp.float32))
  total = nce + w_adv * adv
  return (total, (nce, adv)) if return_terms else total
