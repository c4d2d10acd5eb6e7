"""WhitenedCSE: shuffled group whitening (SGW) and its multi-positive InfoNCE.

SGW (per chunk ``c`` of rows, e.g. one dropout view)::

    x_p   = x[:, perm_c]                        random channel permutation (explicit ``rng``)
    x_g   = x_p[:, g*s:(g+1)*s] - mean_c        G groups of s = D / G channels, centred
    S_cg  = x_g^T x_g / n_c                     population covariance over the chunk's rows
    W_cg  = U (L + eps)^(-1/2) U^T              ZCA ("zca", eigh)   or   chol(S + eps I)^(-T)
    out   = (x_g W_cg)[:, inverse perm_c]

``W`` is built from a stop-gradient copy of the covariance, as in the reference code (the
gradient flows through the centring and the product only). Loss (anchor view 0, positives
views ``1..K-1``, each a separate InfoNCE term with in-batch negatives of that view)::

    L_i = sum_{k>=1} info_nce(z_0, z_k)_i        (the code sums the two terms; K = 3, T = 0.05)

Reference: Zhuo et al., "WhitenedCSE: Whitening-based Contrastive Learning of Sentence
Embeddings", ACL 2023, arXiv 2305.17746; code SupstarZh/WhitenedCSE
(``shuffled_group_whitening.py``: 128 groups, no eps, detached W; ``models.py``).

Distributed semantics: with ``axis_name`` the chunk means and covariances are ``psum``'d over
the global batch (the whitening then equals the single-device one on the full batch, value and
gradient); every device must pass the same ``rng`` (same permutations). InfoNCE negatives are
gathered as in :func:`jaxcl.losses.info_nce`. Chunking: ``"view"`` (default) whitens each view's
rows separately (the evident intent of the code's three-way split); ``"code"`` reproduces the
code's contiguous thirds of the sentence-major ``[B*K]`` batch (each third holds all K copies
of a third of the sentences), over the global batch.

Example:
  >>> import jax, jaxcl
  >>> z = jax.random.normal(jax.random.key(0), (16, 3, 8))
  >>> jaxcl.losses.contrib.whitenedcse(z, jax.random.key(1), num_groups=2).shape
  (16,)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.losses import _common as c
from jaxcl.losses.infonce import info_nce

CHUNKINGS = ("view", "code")
METHODS = ("zca", "cholesky")


def _num_groups(num_groups, d, fn):
  g = c.check_int(num_groups, 1, d, message=f"{fn}: 'num_groups' must be an int in [1, {d}]")
  if d % g:
    raise ValueError(f"{fn}: 'num_groups' must divide the feature size {d}, got {num_groups!r}")
  return g


def _whitener(cov, eps, method):
  eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
  cov = jax.lax.stop_gradient(cov) + eps * eye
  if method == "zca":
    lam, u = jnp.linalg.eigh(cov)
    lam = jnp.maximum(lam, jnp.finfo(cov.dtype).tiny)
    return jnp.einsum("...ij,...j,...kj->...ik", u, jax.lax.rsqrt(lam), u)
  chol = jnp.linalg.cholesky(cov)
  inv = jax.scipy.linalg.solve_triangular(chol, jnp.broadcast_to(eye, cov.shape), lower=True)
  return jnp.swapaxes(inv, -1, -2)                      # W = L^{-T}: W^T S W = I


def shuffled_group_whitening(x, rng, *, num_groups=128, chunk_ids=None, num_chunks=1, eps=1e-5,
                             method="zca", shuffle=True, valid=None, axis_name=None):
  """SGW of ``x`` ``[N, D]`` (module docstring). Returns float32 ``[N, D]``.

  Args:
    x: ``[N, D]`` float rows (any float dtype; statistics in float32).
    rng: PRNG key; chunk ``c`` uses permutation ``jax.random.permutation(fold_in(rng, c), D)``.
      Must be identical on every device.
    num_groups: G, a divisor of D (the paper: 128 for D = 768; ``None`` = the code's auto rule
      ``ceil(2 D / N)`` with N all global rows (the code's ``x.shape[0]``), which must divide D).
    chunk_ids: ``[N]`` ints in ``[0, num_chunks)``: rows whitened together (default: one chunk).
    num_chunks: static number of chunks.
    eps: ridge added to each group covariance (the reference uses none; 0 is allowed).
    method: ``"zca"`` (eigh, the paper) or ``"cholesky"``.
    shuffle: permute channels before grouping (``False``: fixed contiguous groups).
    valid: ``[N]`` bool; padded rows take no part in the statistics (their outputs are finite).
    axis_name: mesh axis name(s): statistics over the global batch via ``psum``.
  """
  fn = "shuffled_group_whitening"
  x = c.embeddings("x", x, fn, 2, "[rows, dim]").astype(jnp.float32)
  n, d = x.shape
  nc = c.check_int(num_chunks, 1, message=f"{fn}: 'num_chunks' must be an int >= 1")
  if method not in METHODS:
    raise ValueError(f"{fn}: 'method' must be one of {METHODS}, got {method!r}")
  if not isinstance(eps, jax.core.Tracer) and not eps >= 0:
    raise ValueError(f"{fn}: 'eps' must be >= 0, got {eps!r}")
  if num_groups is None:
    rows = n * collectives.axis_size(axis_name)
    num_groups = -(-2 * d // max(rows, 1))
  g = _num_groups(num_groups, d, fn)
  valid = c.valid_mask(valid, n, fn)
  if chunk_ids is None:
    chunk_ids = jnp.zeros((n,), jnp.int32)
  chunk_ids = c.labels_array(chunk_ids, n, fn, "chunk_ids")

  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(nc))
  perms = (jax.vmap(lambda k: jax.random.permutation(k, d))(keys) if shuffle
           else jnp.broadcast_to(jnp.arange(d), (nc, d)))
  perm = perms[chunk_ids]                                             # [N, D]
  xp = jnp.take_along_axis(x, perm, axis=1).reshape(n, g, d // g)
  onehot = (chunk_ids[:, None] == jnp.arange(nc)[None, :]) & valid[:, None]
  w = onehot.astype(jnp.float32)                                      # [N, C]
  count = jnp.maximum(collectives.psum(jnp.sum(w, 0), axis_name), 1.0)
  mean = collectives.psum(jnp.einsum("nc,ngi->cgi", w, xp), axis_name) / count[:, None, None]
  xc = xp - mean[chunk_ids]
  cov = collectives.psum(jnp.einsum("nc,ngi,ngj->cgij", w, xc, xc), axis_name)
  cov = cov / count[:, None, None, None]
  wm = _whitener(cov, jnp.asarray(eps, jnp.float32), method)        # [C, G, s, s]
  out = jnp.einsum("ngi,ngij->ngj", xc, wm[chunk_ids]).reshape(n, d)
  return jnp.take_along_axis(out, jnp.argsort(perm, axis=1), axis=1)


def whitenedcse_loss(views, *, temperature=0.05, axis_name=None, normalize=True, valid=None,
                     impl="dense", block_size=1024):
  """``sum_{k>=1} info_nce(views[:, 0], views[:, k])`` per row ``[B_local]`` (views after the
  head). Each term's mean over the global batch is one of the code's CE terms."""
  fn = "whitenedcse_loss"
  views = c.embeddings("views", views, fn, 3, "[batch, views, dim]")
  if views.shape[1] < 2:
    raise ValueError(f"{fn}: 'views' needs >= 2 views (anchor + positives), got shape "
                     f"{tuple(views.shape)}")
  c.check_temperature(temperature, fn)
  kw = {"temperature": temperature, "axis_name": axis_name, "normalize": normalize,
        "valid": valid, "impl": impl, "block_size": block_size}
  return sum(info_nce(views[:, 0], views[:, k], **kw) for k in range(1, views.shape[1]))


def whitenedcse(views, rng, *, num_groups=128, temperature=0.05, chunking="view", eps=1e-5,
                method="zca", project=None, axis_name=None, valid=None, impl="dense",
                block_size=1024):
  """WhitenedCSE objective on ``views`` ``[B, K, D]`` (K dropout copies; the paper K = 3):
  SGW per chunk, then ``project`` (the train-only ``Linear -> tanh`` of the code, a callable
  ``[N, D] -> [N, D']``; ``None`` = identity), then :func:`whitenedcse_loss`. ``[B_local]``."""
  fn = "whitenedcse"
  views = c.embeddings("views", views, fn, 3, "[batch, views, dim]")
  c.check_temperature(temperature, fn)
  b, k, d = views.shape
  if chunking not in CHUNKINGS:
    raise ValueError(f"{fn}: 'chunking' must be one of {CHUNKINGS}, got {chunking!r}")
  valid = c.valid_mask(valid, b, fn)
  if chunking == "view":
    ids = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))
  else:   # contiguous thirds of the global sentence-major [B_global * K] rows
    flat = collectives.global_row_index(b, axis_name)[:, None] * k + jnp.arange(k)[None, :]
    ids = (flat // (b * collectives.axis_size(axis_name))).astype(jnp.int32)
  x = shuffled_group_whitening(views.reshape(b * k, d), rng, num_groups=num_groups,
                               chunk_ids=ids.reshape(-1), num_chunks=k, eps=eps, method=method,
                               valid=jnp.repeat(valid, k), axis_name=axis_name)
  if project is not None:
    x = project(x)
  return whitenedcse_loss(x.reshape(b, k, -1), temperature=temperature, axis_name=axis_name,
                          valid=valid, impl=impl, block_size=block_size)
