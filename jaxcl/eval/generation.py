"""Open-ended generation metrics (SimCTG / contrastive-search evaluation, arXiv 2202.06417,
2210.14140; reference ``simctg/evaluation.py``), on token-id continuations.

* :func:`repetition` -- ``rep-n = 1 - sum_texts |unique n-grams| / sum_texts |n-grams|`` for
  n = 2, 3, 4 (n-grams counted within each text, then pooled over texts: the reference's
  micro average) and ``diversity = prod_n (1 - rep-n)``. Fractions (the papers print x100).
  The reference loop ``while end_idx < len(tokens)`` skips each text's last n-gram; here every
  one of the ``len - n + 1`` n-grams counts. ``valid`` (optional) truncates each text at its
  first invalid position (e.g. after an end-of-sequence id).
* :func:`coherence` -- mean cosine of the sentence embeddings of prefix and continuation (the
  paper uses SimCSE; jaxcl uses the pretrained MiniLM tower, :func:`minilm_embedder`).
* :func:`self_similarity` / isotropy -- mean over sequences of the mean cosine between the
  token representations of distinct valid positions (SimCTG section 5's self-similarity, 0 =
  isotropic on average); ``isotropy = 1 - self_similarity``.

Example:
  >>> r = repetition([[1, 2, 1, 2, 1, 2]])
  >>> [round(r[k], 3) for k in ("rep_2", "rep_3", "rep_4")]
  [0.6, 0.5, 0.333]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _texts(tokens, valid):
  rows = [list(map(int, t)) for t in tokens]
  if valid is None:
    return rows
  out = []
  for r, v in zip(rows, valid):
    v = np.asarray(v, bool)
    stop = int(np.argmin(v)) if not v.all() else len(r)
    out.append(r[:stop])
  return out


def repetition(tokens, valid=None, ns=(2, 3, 4)) -> dict:
  """``{"rep_n": ..., "diversity": ...}`` of token-id texts ``tokens`` (``[N, T]`` or a list
  of sequences). ``nan`` for an n with no n-grams at all."""
  if any(int(n) < 1 for n in ns):
    raise ValueError(f"repetition: 'ns' must be positive n-gram orders, got {ns}")
  texts = _texts(tokens, valid)
  out, div = {}, 1.0
  for n in ns:
    unique = total = 0
    for t in texts:
      grams = [tuple(t[i:i + n]) for i in range(len(t) - n + 1)]
      unique += len(set(grams))
      total += len(grams)
    rep = 1.0 - unique / total if total else float("nan")
    out[f"rep_{n}"] = rep
    div *= 1.0 - rep
  out["diversity"] = div
  return out


def coherence(prefix_emb, continuation_emb) -> float:
  """Mean cosine of paired sentence embeddings ``[N, D]`` (normalised here)."""
  a, b = np.asarray(prefix_emb, np.float64), np.asarray(continuation_emb, np.float64)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"coherence: 'prefix_emb' and 'continuation_emb' must both be [N, D], got "
                     f"{a.shape} and {b.shape}")
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return float(np.mean(np.sum(a * b, axis=1)))


def per_sequence_self_similarity(h, valid):
  """Traceable: ``(per-sequence mean pairwise cosine [B], has >= 2 valid tokens [B])``."""
  u = h.astype(jnp.float32)
  u = u / jnp.maximum(jnp.linalg.norm(u, axis=-1, keepdims=True), 1e-12)
  s = jnp.einsum("bid,bjd->bij", u, u)
  n = h.shape[1]
  mask = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(n, dtype=bool)
  pairs = jnp.sum(mask, axis=(1, 2))
  per = jnp.sum(jnp.where(mask, s, 0.0), axis=(1, 2)) / jnp.maximum(pairs, 1)
  return per, pairs > 0


_self_sim = jax.jit(per_sequence_self_similarity)


def self_similarity(hidden, valid=None) -> float:
  """Mean over sequences (with >= 2 valid tokens) of the mean pairwise cosine of the token
  states ``hidden [B, L, D]`` at distinct valid positions."""
  hidden = jnp.asarray(hidden)
  if hidden.ndim != 3:
    raise ValueError(f"self_similarity: 'hidden' must be [B, L, D], got {hidden.shape}")
  valid = jnp.ones(hidden.shape[:2], bool) if valid is None else jnp.asarray(valid, bool)
  if valid.shape != hidden.shape[:2]:
    raise ValueError(f"self_similarity: 'valid' must have shape {hidden.shape[:2]}, got "
                     f"{valid.shape}")
  per, ok = (np.asarray(a) for a in _self_sim(hidden, valid))
  if not ok.any():
    raise ValueError("self_similarity: no sequence has two valid tokens")
  return float(per[ok].mean())


def isotropy(hidden, valid=None) -> float:
  """``1 - self_similarity(hidden, valid)``."""
  return 1.0 - self_similarity(hidden, valid)


def minilm_embedder(batch_size: int = 256, max_len: int = 64):
  """``embed(texts) -> float32 [N, 384]``: the pretrained all-MiniLM-L6-v2 tower (unit norm),
  fixed-length batches (one compile)."""
  from jaxcl.models.pretrained import load_minilm
  module, params, tokenize = load_minilm()
  fwd = jax.jit(lambda ids, mask: module.apply({"params": params}, ids, mask))

  def embed(texts):
    texts = list(texts)
    out = []
    for i in range(0, len(texts), batch_size):
      chunk = texts[i:i + batch_size]
      pad = chunk + [""] * (batch_size - len(chunk))
      t = tokenize(pad)
      ids = np.zeros((batch_size, max_len), np.int32)
      mask = np.zeros((batch_size, max_len), np.int32)
      n = min(max_len, t["input_ids"].shape[1])
      ids[:, :n], mask[:, :n] = t["input_ids"][:, :n], t["attention_mask"][:, :n]
      out.append(np.asarray(fwd(ids, mask))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, module.dim), np.float32)
  return embed
