"""GradCache: the exact full-batch gradient of a contrastive loss with chunk-sized activations.

A contrastive loss couples every row of the batch, so ordinary gradient accumulation does not
apply: the loss of chunk ``c`` depends on the embeddings of every other chunk. GradCache (Gao
et al., 2021) splits the chain rule at the embeddings ``e = [e_1; ...; e_C]``, ``e_c = f(θ, x_c)``::

    dL/dθ = ∂L/∂θ|_e  +  Σ_c (∂e_c/∂θ)ᵀ · g_c,        g_c = ∂L/∂e_c

and computes it in three passes:

  1. embed every chunk with no gradient tape (``lax.map``; no activation is kept);
  2. ``g = ∂L/∂e`` and ``∂L/∂θ|_e`` from the loss on the full embedding set(s) (cheap: ``B x D``);
  3. re-run the encoder chunk by chunk under ``jax.vjp`` inside ``lax.scan`` and accumulate
     ``(∂e_c/∂θ)ᵀ g_c``.

Memory: the encoder's activations are held for one chunk at a time, so peak memory is
``O(chunk_size)`` activations + ``O(B x D)`` embeddings and their gradient + whatever the loss
itself needs, instead of ``O(B)`` activations. Cost: one extra encoder forward (about +1/3 of a
forward-backward). The value and gradient are those of the plain full-batch
``jax.value_and_grad`` up to float reassociation, for any encoder that treats rows
independently.

Semantics worth knowing:
  * **RNG (dropout).** Chunk ``c`` gets ``jax.random.fold_in(rng, c)`` in both the first forward
    and the re-forward, so the dropout masks are replayed exactly. (They differ from the masks a
    single full-batch call with ``rng`` would draw; the gradient is exact for the chunked draw.)
    Inside ``shard_map`` fold the device index into ``rng`` yourself if devices should differ.
  * **BatchNorm in training mode** normalises each chunk with that chunk's statistics ("ghost
    batch norm" with ghost batch ``chunk_size``): the gradient is exact for that model, not for
    full-batch BatchNorm (chunk statistics differ from batch statistics). With
    ``has_state=True`` the returned state (e.g. Flax ``batch_stats``) is the row-weighted mean of
    the per-chunk updated states, all computed from the same input state: for a running mean
    this equals one update with the full-batch mean; a running variance misses the
    between-chunk variance. For exact full-batch equality use frozen statistics
    (``use_running_average=True``) or a per-row normalisation (LayerNorm, GroupNorm).
  * **Remainder.** When ``chunk_size`` does not divide the batch the last ``B mod chunk_size``
    rows form one smaller chunk (one extra trace of the encoder, no padding, so per-chunk
    statistics never see fake rows).
  * **XLA:CPU and convolutions.** On the CPU backend (jax 0.10) convolution gradients inside a
    ``while`` loop (the ``lax.scan`` of pass 3) run 6-20x slower than the same convolutions
    outside one; matmul encoders (MLP, ViT) are unaffected. Unrolling the loop restores the
    speed but lets XLA keep every chunk's activations alive, which defeats the purpose, so the
    loop stays. GPU/TPU backends do not show this.
  * **``shard_map``.** Each device chunks its local rows; the loss (with its ``axis_name``
    collectives) sees the full local embedding sets, and the result equals ``jax.value_and_grad``
    of the same local loss in the same ``shard_map`` (i.e. the gradient of the sum over devices
    of the local losses w.r.t. replicated parameters). Pass ``axis_name`` to keep the chunk
    gradients local and all-reduce once at the end instead of once per chunk.

Reference: Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup", RepL4NLP 2021, arXiv 2101.06983.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> from jaxcl import grad_cache
  >>> params = {"w": jax.random.normal(jax.random.key(0), (8, 4))}
  >>> embed = lambda p, x, rng: (jnp.tanh(x[0] @ p["w"]), jnp.tanh(x[1] @ p["w"]))
  >>> loss = lambda p, e: jaxcl.losses.nt_xent(*e).mean()
  >>> x = jax.random.normal(jax.random.key(1), (2, 10, 8))
  >>> step = jax.jit(grad_cache.value_and_grad(embed, loss, chunk_size=4))
  >>> value, grads = step(params, (x[0], x[1]))
  >>> ref_value, ref_grads = jax.value_and_grad(lambda p: loss(p, embed(p, (x[0], x[1]), None)))(params)
  >>> bool(jnp.allclose(grads["w"], ref_grads["w"], rtol=1e-5, atol=1e-6))
  True
"""
from __future__ import annotations

import numbers
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["value_and_grad", "embed_in_chunks"]


def _axes(axis_name) -> tuple:
  if axis_name is None:
    return ()
  return tuple(axis_name) if isinstance(axis_name, (tuple, list)) else (axis_name,)


def _vma(x) -> frozenset:
  """Mesh axes along which ``x`` varies inside ``shard_map`` (empty outside)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)   # jax >= 0.10
  if mat is not None:
    return frozenset(mat.varying)
  return frozenset(getattr(aval, "vma", frozenset()))


def _batch_size(batch, fn: str) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError(f"{fn}: 'batch' has no arrays")
  sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
  if None in sizes or len(sizes) != 1:
    raise ValueError(f"{fn}: every leaf of 'batch' must have the same leading (batch) size, got "
                     f"shapes {[tuple(jnp.shape(x)) for x in leaves]}")
  return sizes.pop()


def _check_chunk_size(chunk_size, fn: str):
  if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, bool) or chunk_size < 1:
    raise ValueError(f"{fn}: 'chunk_size' must be a positive Python int, got {chunk_size!r}")


def _split(batch, chunk_size: int):
  """``batch`` -> (full chunks ``[n, chunk_size, ...]`` or None, remainder rows or None)."""
  b = _batch_size(batch, "grad_cache")
  n, rem = divmod(b, chunk_size)
  full = None if n == 0 else jax.tree.map(
      lambda x: jnp.reshape(x[:n * chunk_size], (n, chunk_size) + jnp.shape(x)[1:]), batch)
  tail = None if rem == 0 else jax.tree.map(lambda x: x[n * chunk_size:], batch)
  return full, tail, n, rem


def _join(full, tail):
  """Inverse of :func:`_split` on outputs: ``[n, chunk, ...]`` and ``[rem, ...]`` -> ``[B, ...]``."""
  if full is not None:
    full = jax.tree.map(lambda x: jnp.reshape(x, (-1,) + x.shape[2:]), full)
  if tail is None:
    return full
  if full is None:
    return tail
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b], axis=0), full, tail)


def _chunk_key(rng, i):
  return None if rng is None else jax.random.fold_in(rng, i)


def _mean_state(full, tail, n: int, chunk_size: int, rem: int):
  """Row-weighted mean over chunks of float leaves; other leaves from the last chunk."""
  b = n * chunk_size + rem

  def avg(*xs):
    f = xs[0] if full is not None else None
    t = xs[-1] if tail is not None else None
    last = t if t is not None else f[-1]
    if not jnp.issubdtype(last.dtype, jnp.floating):
      return last
    total = jnp.zeros(last.shape, jnp.float32)
    if f is not None:
      total = total + jnp.sum(f.astype(jnp.float32), axis=0) * chunk_size
    if t is not None:
      total = total + t.astype(jnp.float32) * rem
    return (total / b).astype(last.dtype)

  trees = [x for x in (full, tail) if x is not None]
  return jax.tree.map(avg, *trees)


def _forward(embed_fn, has_state):
  def fwd(params, x, key):
    out = embed_fn(params, x, key)
    return out if has_state else (out, None)
  return fwd


def embed_in_chunks(embed_fn: Callable, params, batch, chunk_size: int, rng=None, *,
                    has_state: bool = False):
  """``embed_fn`` over ``batch`` in chunks of ``chunk_size`` rows, no gradient tape.

  Pass 1 of GradCache, also handy for evaluation. Chunk ``c`` gets ``fold_in(rng, c)``.
  Returns the embeddings (same pytree as ``embed_fn``'s output, rows concatenated) and, with
  ``has_state=True`` (``embed_fn`` returns ``(embeddings, state)``), the row-weighted mean state
  (see the module docstring).
  """
  _check_chunk_size(chunk_size, "embed_in_chunks")
  full, tail, n, rem = _split(batch, chunk_size)
  fwd = _forward(embed_fn, has_state)
  params = jax.lax.stop_gradient(params)
  e_full = s_full = e_tail = s_tail = None
  if full is not None:
    e_full, s_full = jax.lax.map(lambda a: fwd(params, a[0], _chunk_key(rng, a[1])),
                                 (full, jnp.arange(n)))
  if tail is not None:
    e_tail, s_tail = fwd(params, tail, _chunk_key(rng, n))
  emb = jax.lax.stop_gradient(_join(e_full, e_tail))
  if not has_state:
    return emb
  return emb, _mean_state(s_full, s_tail, n, chunk_size, rem)


def _acc_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else dtype


def value_and_grad(embed_fn: Callable, loss_fn: Callable, chunk_size: int, *,
                   has_aux: bool = False, has_state: bool = False, axis_name=None) -> Callable:
  """GradCache ``value_and_grad``: ``(params, batch, *loss_args, rng=None) -> (value, grads)``.

  Args:
    embed_fn: ``embed_fn(params, x_chunk, rng) -> embeddings`` (an array or any pytree of
      ``[rows, ...]`` arrays: several views through one encoder, or several towers reading
      their own entries of ``params``). ``x_chunk`` has the structure of ``batch`` with
      ``chunk_size`` (or the remainder) rows. ``rng`` is ``fold_in(rng, chunk_index)`` or None.
      With ``has_state=True`` it returns ``(embeddings, state)`` (e.g. a Flax
      ``apply(..., mutable=["batch_stats"])``).
    loss_fn: ``loss_fn(params, embeddings, *loss_args) -> scalar`` (``(scalar, aux)`` with
      ``has_aux``) on the full embedding pytree. ``params`` is passed so learnable loss
      parameters (CLIP's logit scale, SigLIP's bias) get their gradient; ignore it otherwise.
      Inside ``shard_map`` this is the *local* loss, with the loss's own ``axis_name``.
    chunk_size: rows per encoder chunk (Python int); need not divide the batch.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; value is then ``(loss, aux)``.
    has_state: ``embed_fn`` returns ``(embeddings, state)``; the function then returns
      ``(value, grads, state)`` with ``state`` the row-weighted mean of the chunks' states.
    axis_name: optional mesh axis name(s) (inside ``shard_map``): parameters replicated along
      them accumulate their chunk gradients locally and are all-reduced once. Without it the
      result is the same, with one all-reduce per chunk.

  Returns:
    A pure, jit-able function ``(params, batch, *loss_args, rng=None)``. ``batch`` is a pytree
    whose leaves all have the same leading size ``B``; ``loss_args`` go to ``loss_fn`` unchanged
    (labels, validity masks, ...; not differentiated). Gradients are w.r.t. ``params`` only,
    with the dtypes of ``params``.
  """
  _check_chunk_size(chunk_size, "grad_cache.value_and_grad")
  axes = _axes(axis_name)
  fwd = _forward(embed_fn, has_state)

  def run(params, batch, *loss_args, rng=None):
    full, tail, n, rem = _split(batch, chunk_size)
    out = embed_in_chunks(embed_fn, params, batch, chunk_size, rng, has_state=has_state)
    emb, state = out if has_state else (out, None)

    # Pass 2: the loss on the full embedding set; g = dL/de, plus the direct dL/dθ.
    value, (g_params, g_emb) = jax.value_and_grad(
        lambda p, e: loss_fn(p, e, *loss_args), argnums=(0, 1), has_aux=has_aux)(params, emb)

    # Pass 3: re-forward each chunk under vjp and accumulate (de_c/dθ)ᵀ g_c. Replicated
    # parameters are made device-varying so each chunk's cotangent stays local (no per-chunk
    # all-reduce); one psum at the end restores the replicated gradient.
    extra = jax.tree.map(lambda p: tuple(a for a in axes if a not in _vma(p)), params)
    p_local = jax.tree.map(lambda p, ex: jax.lax.pcast(p, ex, to="varying") if ex else p,
                           params, extra)

    def zeros(p):
      z = jnp.zeros(jnp.shape(p), _acc_dtype(p.dtype))
      vma = tuple(_vma(p))
      return jax.lax.pcast(z, vma, to="varying") if vma else z

    def chunk_grad(x, g, i):
      _, vjp = jax.vjp(lambda p: fwd(p, x, _chunk_key(rng, i))[0], p_local)
      return jax.tree.map(lambda a: a.astype(_acc_dtype(a.dtype)), vjp(g)[0])

    acc = jax.tree.map(zeros, p_local)
    g_full, g_tail = _split(g_emb, chunk_size)[:2]
    if full is not None:
      def body(acc, a):
        return jax.tree.map(jnp.add, acc, chunk_grad(*a)), None
      acc, _ = jax.lax.scan(body, acc, (full, g_full, jnp.arange(n)))
    if tail is not None:
      acc = jax.tree.map(jnp.add, acc, chunk_grad(tail, g_tail, n))
    acc = jax.tree.map(lambda a, ex: jax.lax.psum(a, ex) if ex else a, acc, extra)
    grads = jax.tree.map(lambda a, d, p: (a + d).astype(p.dtype), acc, g_params, params)
    return (value, grads, state) if has_state else (value, grads)

  return run
