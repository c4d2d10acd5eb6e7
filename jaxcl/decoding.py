"""Autoregressive decoders over :class:`jaxcl.models.lm.CausalLM`'s KV cache (jit, ``lax.scan``).

Every decoder takes ``(model, params, prompt [B, P] int, max_new_tokens, ...)`` and returns the
tokens ``[B, P + max_new_tokens]`` (prompt first). One ``lax.scan`` over all ``P +
max_new_tokens`` positions drives ``model.decode_step`` (prompt positions are forced to the
prompt token, so the model is traced once per decoder); no Python loop per token. Requires
``P + max_new_tokens <= model.max_len``. With ``eos_id``, a sequence that emitted ``eos_id``
keeps emitting it (fixed length, no early stop); ``eos_id`` is traced (one compilation).

* :func:`greedy` -- argmax of the next-token distribution.
* :func:`beam_search` -- ``beam_size`` beams ranked by summed log-probability, fixed length (no
  length penalty); returns the best beam and its score. A finished beam (``eos_id``) extends
  only with ``eos_id`` at log-probability 0.
* :func:`nucleus` -- top-p sampling (Holtzman et al. 2020, arXiv 1904.09751): the smallest set of
  most probable tokens whose mass reaches ``top_p`` (always at least the top token), sampled by
  inverse CDF in descending-probability order with ``u_t = uniform(fold_in(rng, t), [B])``.
  ``top_p -> 0`` is greedy.
* :func:`contrastive_search` -- Su et al. 2022 (arXiv 2202.06417; 2210.14140), as the reference
  code (SimCTG ``ContrastiveDecodingOneStepFast``; HF ``penalty_alpha``): candidates = the
  ``top_k`` tokens of the *full-vocabulary* softmax p (not renormalised); each candidate ``v`` is
  fed one step (the ``top_k`` candidates batched, cache replicated) to get its last-layer state
  ``h_v``; choose ``argmax_v (1 - alpha) p(v) - alpha max_{j < t} cos(h_v, h_j)`` where ``h_j``
  runs over **all** previous tokens, the prompt included. ``alpha = 0`` is greedy. Defaults
  ``top_k = 4``, ``alpha = 0.6`` (HF's common setting; the paper's GPT-2 runs use k = 5).

Ties break to the lowest index (``argmax`` / ``lax.top_k`` order).

Example (traced with ``jax.eval_shape`` to keep doctests fast; drop it to decode for real):
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl.models.lm import CausalLM
  >>> from jaxcl import decoding
  >>> m = CausalLM(vocab=13, dim=8, depth=1, heads=2, max_len=8, mlp_ratio=1)
  >>> params = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  >>> prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
  >>> cs = lambda p: decoding.contrastive_search(m, p, prompt, 5, top_k=4, alpha=0.6)
  >>> jax.eval_shape(cs, params).shape
  (2, 8)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _check(name, model, prompt, max_new_tokens):
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f"{name}: 'prompt' must be [B, P >= 1] token ids, got shape "
                     f"{tuple(prompt.shape)}")
  if not jnp.issubdtype(prompt.dtype, jnp.integer):
    raise ValueError(f"{name}: 'prompt' must be integer token ids, got dtype {prompt.dtype}")
  if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f"{name}: 'max_new_tokens' must be an int >= 1, got {max_new_tokens!r}")
  if prompt.shape[1] + max_new_tokens > model.max_len:
    raise ValueError(f"{name}: prompt length {prompt.shape[1]} + 'max_new_tokens' "
                     f"{max_new_tokens} exceeds model.max_len={model.max_len}")


def _forced(prompt, i):
  """(is position ``i`` inside the prompt, the prompt token there) for a traced ``i``."""
  p = prompt.shape[1]
  return i < p, jax.lax.dynamic_index_in_dim(prompt, jnp.minimum(i, p - 1), 1, keepdims=False)


def _eos_arg(name, model, eos_id):
  """``None`` -> -1 (matches no token); traced, so one compilation serves every eos id."""
  if eos_id is not None and not (isinstance(eos_id, int) and 0 <= eos_id < model.vocab):
    raise ValueError(f"{name}: 'eos_id' must be None or an int in [0, vocab={model.vocab}), got "
                     f"{eos_id!r}")
  return jnp.int32(-1 if eos_id is None else eos_id)


def _eos(tok, done, eos_id):
  tok = jnp.where(done, eos_id, tok)
  return tok, done | (tok == eos_id)


def _run(model, params, prompt, max_new_tokens, choose, extra, eos_id):
  """Shared greedy / nucleus loop over every position (the prompt is forced, so the model is
  traced once): ``choose(logits, t, extra) -> tokens [B]`` for generated step ``t``."""
  p = prompt.shape[1]
  total = p + max_new_tokens
  logits = jnp.zeros((prompt.shape[0], model.vocab), jnp.float32)
  done = jnp.zeros(prompt.shape[0], bool)

  def body(carry, i):
    logits, cache, done = carry
    forced, ptok = _forced(prompt, i)
    tok, gen_done = _eos(choose(logits, i - p, extra), done, eos_id)
    tok = jnp.where(forced, ptok, tok)
    done = jnp.where(forced, done, gen_done)
    logits, _, cache = model.apply(params, tok, cache, i, method=model.decode_step)
    return (logits, cache, done), tok

  carry = (logits, model.init_cache(prompt.shape[0], total), done)
  _, toks = jax.lax.scan(body, carry, jnp.arange(total))
  return toks.T.astype(prompt.dtype)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy(model, params, prompt, max_new_tokens, eos_id=None):
  return _run(model, params, prompt, max_new_tokens,
              lambda lg, t, _: jnp.argmax(lg, axis=-1), None, eos_id)


def greedy(model, params, prompt, max_new_tokens: int, *, eos_id=None):
  """Greedy decoding: ``x_t = argmax p(. | x_<t)``. Returns ``[B, P + max_new_tokens]``."""
  _check("greedy", model, prompt, max_new_tokens)
  return _greedy(model, params, prompt, max_new_tokens, eos_id=_eos_arg("greedy", model, eos_id))


def nucleus_choose(logits, u, top_p, temperature=1.0):
  """Top-p choice from ``logits [B, V]`` and uniforms ``u [B]`` (inverse CDF, sorted order)."""
  probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  order = jnp.argsort(-probs, axis=-1, stable=True)
  sp = jnp.take_along_axis(probs, order, axis=-1)
  before = jnp.cumsum(sp, axis=-1) - sp  # mass strictly above each sorted token
  keep = (before < top_p) | (jnp.arange(sp.shape[-1]) == 0)
  kp = jnp.where(keep, sp, 0.0)
  cdf = jnp.cumsum(kp, axis=-1) / jnp.sum(kp, axis=-1, keepdims=True)
  idx = jnp.sum((cdf <= u[:, None]) & keep, axis=-1)
  idx = jnp.minimum(idx, jnp.sum(keep, axis=-1) - 1)
  return jnp.take_along_axis(order, idx[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnums=(0, 3))
def _nucleus(model, params, prompt, max_new_tokens, rng, top_p, temperature, eos_id=None):
  def choose(lg, t, _):
    u = jax.random.uniform(jax.random.fold_in(rng, t), (lg.shape[0],))
    return nucleus_choose(lg, u, top_p, temperature)
  return _run(model, params, prompt, max_new_tokens, choose, None, eos_id)


def nucleus(model, params, prompt, max_new_tokens: int, rng, *, top_p: float = 0.95,
            temperature: float = 1.0, eos_id=None):
  """Nucleus (top-p) sampling with an explicit PRNG key ``rng`` (see the module docstring)."""
  _check("nucleus", model, prompt, max_new_tokens)
  if not 0.0 <= float(top_p) <= 1.0:
    raise ValueError(f"nucleus: 'top_p' must be in [0, 1], got {top_p}")
  if not float(temperature) > 0.0:
    raise ValueError(f"nucleus: 'temperature' must be > 0, got {temperature}")
  return _nucleus(model, params, prompt, max_new_tokens, rng, jnp.float32(top_p),
                  jnp.float32(temperature), eos_id=_eos_arg("nucleus", model, eos_id))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _beam(model, params, prompt, max_new_tokens, k, eos_id=None):
  b, p = prompt.shape
  total = p + max_new_tokens
  v = model.vocab
  logits = jnp.zeros((b * k, v), jnp.float32)
  cache = model.init_cache(b * k, total)
  scores = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None].repeat(b, 0)
  seqs = jnp.zeros((b, k, total), prompt.dtype)
  done = jnp.zeros((b, k), bool)

  def body(carry, i):
    logits, cache, scores, seqs, done = carry
    forced, ptok = _forced(prompt, i)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
    fin = jnp.where(jnp.arange(v) == eos_id, 0.0, -jnp.inf)
    logp = jnp.where(done[..., None], fin, logp)
    cand = (scores[..., None] + logp).reshape(b, k * v)
    new_scores, flat = jax.lax.top_k(cand, k)
    beam = jnp.where(forced, jnp.arange(k)[None], flat // v)
    tok = jnp.where(forced, ptok[:, None], flat % v).astype(prompt.dtype)
    scores = jnp.where(forced, scores, new_scores)
    seqs = jnp.take_along_axis(seqs, beam[..., None], axis=1)
    seqs = jax.lax.dynamic_update_slice_in_dim(seqs, tok[..., None], i, axis=2)
    done = jnp.take_along_axis(done, beam, axis=1) | ((tok == eos_id) & ~forced)
    src = (beam + k * jnp.arange(b)[:, None]).reshape(-1)
    cache = jax.tree.map(lambda c: c[:, src], cache)
    logits, _, cache = model.apply(params, tok.reshape(-1), cache, i, method=model.decode_step)
    return (logits, cache, scores, seqs, done), None

  (_, _, scores, seqs, _), _ = jax.lax.scan(body, (logits, cache, scores, seqs, done),
                                            jnp.arange(total))
  best = jnp.argmax(scores, axis=1)
  return jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0], jnp.max(scores, axis=1)


def beam_search(model, params, prompt, max_new_tokens: int, *, beam_size: int = 4, eos_id=None):
  """Beam search; returns ``(tokens [B, P + max_new_tokens], log-prob score [B])``."""
  _check("beam_search", model, prompt, max_new_tokens)
  if not isinstance(beam_size, int) or not 1 <= beam_size <= model.vocab:
    raise ValueError(f"beam_search: 'beam_size' must be an int in [1, vocab={model.vocab}], got "
                     f"{beam_size!r}")
  return _beam(model, params, prompt, max_new_tokens, beam_size,
               eos_id=_eos_arg("beam_search", model, eos_id))


def _unit(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _contrastive(model, params, prompt, max_new_tokens, k, alpha, eos_id=None):
  b, p = prompt.shape
  total = p + max_new_tokens
  logits = jnp.zeros((b, model.vocab), jnp.float32)
  hist = jnp.zeros((b, total, model.dim), jnp.float32)  # unit last-layer states so far
  done = jnp.zeros(b, bool)

  def body(carry, i):
    logits, cache, hist, done = carry
    forced, ptok = _forced(prompt, i)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top_p, top_i = jax.lax.top_k(probs, k)  # [B, k]
    top_i = jnp.where(done[:, None], eos_id, top_i)  # finished rows: every candidate is eos
    top_i = jnp.where(forced, ptok[:, None], top_i)  # prompt positions: the prompt token
    cache_k = jax.tree.map(lambda c: jnp.repeat(c, k, axis=1), cache)
    lg_k, h_k, cache_k = model.apply(params, top_i.reshape(-1), cache_k, i,
                                     method=model.decode_step)
    h_k = _unit(h_k.astype(jnp.float32)).reshape(b, k, -1)
    cos = jnp.einsum("bkd,bjd->bkj", h_k, hist)
    cos = jnp.max(jnp.where(jnp.arange(total) < i, cos, -jnp.inf), axis=-1)
    score = (1.0 - alpha) * top_p - alpha * cos
    sel = jnp.where(forced, 0, jnp.argmax(score, axis=-1))  # [B]
    tok = jnp.take_along_axis(top_i, sel[:, None], axis=1)[:, 0]
    done = done | ((tok == eos_id) & ~forced)
    src = sel + k * jnp.arange(b)
    logits, h_sel = lg_k[src], h_k[jnp.arange(b), sel]
    cache = jax.tree.map(lambda c: c[:, src], cache_k)
    hist = jax.lax.dynamic_update_slice_in_dim(hist, h_sel[:, None], i, axis=1)
    return (logits, cache, hist, done), tok

  carry = (logits, model.init_cache(b, total), hist, done)
  _, toks = jax.lax.scan(body, carry, jnp.arange(total))
  return toks.T.astype(prompt.dtype)


def contrastive_search(model, params, prompt, max_new_tokens: int, *, top_k: int = 4,
                       alpha: float = 0.6, eos_id=None):
  """Contrastive search (Su et al. 2022); see the module docstring. ``[B, P + max_new]``."""
  _check("contrastive_search", model, prompt, max_new_tokens)
  if not isinstance(top_k, int) or not 1 <= top_k <= model.vocab:
    raise ValueError(f"contrastive_search: 'top_k' must be an int in [1, vocab={model.vocab}], "
                     f"got {top_k!r}")
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f"contrastive_search: 'alpha' must be in [0, 1], got {alpha}")
  return _contrastive(model, params, prompt, max_new_tokens, top_k, jnp.float32(alpha),
                      eos_id=_eos_arg("contrastive_search", model, eos_id))
