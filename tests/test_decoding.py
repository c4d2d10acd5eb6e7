"""CausalLM KV cache, decoders (greedy / beam / nucleus / contrastive search) and SimCTG loss.

References: each decoder re-implemented step by step in Python/NumPy on top of the *uncached*
full forward (one jit, sequences zero-padded to max_len: the model is causal); SimCTG as a
float64 double loop with central-difference gradients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import decoding
from jaxcl.losses.contrib import simctg_loss
from jaxcl.models.lm import CausalLM

V, L, P, N = 13, 12, 3, 6
MODEL = CausalLM(vocab=V, dim=16, depth=2, heads=2, max_len=L, mlp_ratio=2)
PARAMS = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((1, L), jnp.int32))
PROMPT = jnp.array([[1, 2, 3], [4, 5, 6]], jnp.int32)
_FWD = jax.jit(lambda t: MODEL.apply(PARAMS, t))


def _full(seq):
  """Uncached forward of one sequence: (logits [len, V], hidden [len, D]) as float64."""
  pad = np.zeros((1, L), np.int32)
  pad[0, :len(seq)] = seq
  lg, h = _FWD(jnp.asarray(pad))
  return np.asarray(lg[0, :len(seq)], np.float64), np.asarray(h[0, :len(seq)], np.float64)


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _ref_decode(pick, eos_id=None):
  out = []
  for row in np.asarray(PROMPT):
    seq, done = list(row), False
    for t in range(N):
      tok = eos_id if done else pick(seq, t, len(out))
      done = done or (eos_id is not None and tok == eos_id)
      seq.append(int(tok))
    out.append(seq)
  return np.array(out)


def test_cache_decode_equals_full_forward():
  toks = jax.random.randint(jax.random.key(1), (2, L), 0, V)
  full = [_full(list(np.asarray(row))) for row in toks]
  cache = MODEL.init_cache(2, L)
  step = jax.jit(lambda t, c, p: MODEL.apply(PARAMS, t, c, p, method=MODEL.decode_step))
  for pos in range(L):
    lg, h, cache = step(toks[:, pos], cache, pos)
    np.testing.assert_allclose(lg, [f[0][pos] for f in full], atol=1e-5)
    np.testing.assert_allclose(h, [f[1][pos] for f in full], atol=1e-5)


def test_greedy_matches_reference_with_and_without_eos():
  pick = lambda seq, t, b: int(np.argmax(_full(seq)[0][-1]))
  got = decoding.greedy(MODEL, PARAMS, PROMPT, N)
  np.testing.assert_array_equal(got, _ref_decode(pick))
  eos = int(got[0, P + 1])  # emitted mid-sequence: the eos path is exercised
  got = decoding.greedy(MODEL, PARAMS, PROMPT, N, eos_id=eos)
  np.testing.assert_array_equal(got, _ref_decode(pick, eos))
  assert np.all(np.asarray(got)[0, P + 1:] == eos)


def test_beam_matches_reference():
  k = 3
  toks, scores = decoding.beam_search(MODEL, PARAMS, PROMPT, N, beam_size=k)
  for b, row in enumerate(np.asarray(PROMPT)):
    beams = [(list(row), 0.0)] + [(list(row), -np.inf)] * (k - 1)
    for _ in range(N):
      cand = []
      for seq, s in beams:
        lp = _full(seq)[0][-1]
        lp = lp - np.log(np.exp(lp - lp.max()).sum()) - lp.max()
        cand.extend(s + lp)
      cand = np.array(cand)
      top = np.argsort(-cand, kind="stable")[:k]
      beams = [(beams[i // V][0] + [int(i % V)], cand[i]) for i in top]
    np.testing.assert_array_equal(toks[b], beams[0][0])
    np.testing.assert_allclose(scores[b], beams[0][1], rtol=1e-5)


def _ref_nucleus(p, top_p, u):
  order = np.argsort(-p, kind="stable")
  sp = p[order]
  keep = (np.cumsum(sp) - sp < top_p) | (np.arange(len(sp)) == 0)
  cdf = np.cumsum(np.where(keep, sp, 0.0))
  cdf /= cdf[-1]
  return int(order[min(int(np.sum((cdf <= u) & keep)), int(keep.sum()) - 1)])


def test_nucleus_matches_reference_and_small_p_is_greedy():
  rng = jax.random.key(5)
  us = [np.asarray(jax.random.uniform(jax.random.fold_in(rng, t), (2,))) for t in range(N)]
  ref = _ref_decode(lambda seq, t, b: _ref_nucleus(_softmax(_full(seq)[0][-1]), 0.8, us[t][b]))
  got = decoding.nucleus(MODEL, PARAMS, PROMPT, N, rng, top_p=0.8)
  np.testing.assert_array_equal(got, ref)
  greedy = decoding.greedy(MODEL, PARAMS, PROMPT, N)
  assert not np.array_equal(got, greedy)  # it really sampled
  np.testing.assert_array_equal(decoding.nucleus(MODEL, PARAMS, PROMPT, N, rng, top_p=1e-9),
                                greedy)


def _ref_contrastive(seq, k, alpha):
  logits, hist = _full(seq)
  p = _softmax(logits[-1])
  cands = np.argsort(-p, kind="stable")[:k]
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  scores = [(1 - alpha) * p[v] - alpha * np.max(unit(hist) @ unit(_full(seq + [int(v)])[1][-1]))
            for v in cands]
  return int(cands[int(np.argmax(scores))])


def test_contrastive_search_matches_reference_and_alpha0_is_greedy():
  pick = lambda seq, t, b: _ref_contrastive(seq, 4, 0.6)
  got = decoding.contrastive_search(MODEL, PARAMS, PROMPT, N, top_k=4, alpha=0.6)
  np.testing.assert_array_equal(got, _ref_decode(pick))
  greedy = decoding.greedy(MODEL, PARAMS, PROMPT, N)
  assert not np.array_equal(got, greedy)  # the degeneration penalty changes choices here
  np.testing.assert_array_equal(decoding.contrastive_search(MODEL, PARAMS, PROMPT, N, alpha=0.0),
                                greedy)
  eos = int(got[1, P + 1])
  got = decoding.contrastive_search(MODEL, PARAMS, PROMPT, N, eos_id=eos)
  np.testing.assert_array_equal(got, _ref_decode(pick, eos))


def _ref_simctg(h, valid, rho):
  total, pairs = 0.0, 0
  for b in range(h.shape[0]):
    idx = [i for i in range(h.shape[1]) if valid[b, i]]
    u = {i: h[b, i] / np.linalg.norm(h[b, i]) for i in idx}
    for i in idx:
      for j in idx:
        if i != j:
          total += max(0.0, rho - (u[i] @ u[i] - u[i] @ u[j]))
          pairs += 1
  return total / pairs


def test_simctg_value_and_grad_match_loop_reference():
  h = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 3)), np.float64)
  valid = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
  val, grad = jax.jit(jax.value_and_grad(lambda x: simctg_loss(x, jnp.asarray(valid))))(
      jnp.asarray(h, jnp.float32))
  np.testing.assert_allclose(val, _ref_simctg(h, valid, 0.5), rtol=1e-5)
  num, eps = np.zeros_like(h), 1e-6
  for idx in np.ndindex(h.shape):
    d = np.zeros_like(h)
    d[idx] = eps
    num[idx] = (_ref_simctg(h + d, valid, 0.5) - _ref_simctg(h - d, valid, 0.5)) / (2 * eps)
  np.testing.assert_allclose(grad, num, atol=1e-5)
  assert np.all(np.asarray(grad)[1, 3:] == 0)
  seq = jax.jit(lambda x: simctg_loss(x, jnp.asarray(valid), reduction="sequence"))(
      jnp.asarray(h, jnp.float32))
  np.testing.assert_allclose(seq[1], _ref_simctg(h[1:], valid[1:], 0.5), rtol=1e-5)


def test_errors_name_arguments():
  with pytest.raises(ValueError, match="'max_new_tokens'"):
    decoding.greedy(MODEL, PARAMS, PROMPT, L)
  with pytest.raises(ValueError, match="'prompt'"):
    decoding.greedy(MODEL, PARAMS, PROMPT[0], 2)
  with pytest.raises(ValueError, match="'top_p'"):
    decoding.nucleus(MODEL, PARAMS, PROMPT, 2, jax.random.key(0), top_p=1.5)
  with pytest.raises(ValueError, match="'beam_size'"):
    decoding.beam_search(MODEL, PARAMS, PROMPT, 2, beam_size=0)
  with pytest.raises(ValueError, match="'top_k'"):
    decoding.contrastive_search(MODEL, PARAMS, PROMPT, 2, top_k=V + 1)
  with pytest.raises(ValueError, match="'alpha'"):
    decoding.contrastive_search(MODEL, PARAMS, PROMPT, 2, alpha=-0.1)
  with pytest.raises(ValueError, match="'eos_id'"):
    decoding.beam_search(MODEL, PARAMS, PROMPT, 2, eos_id=V)
  with pytest.raises(ValueError, match="'tokens'"):
    MODEL.apply(PARAMS, jnp.zeros((1, L + 1), jnp.int32))
  with pytest.raises(ValueError, match="'valid'"):
    simctg_loss(jnp.zeros((2, 3, 4)), jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="'hidden'"):
    simctg_loss(jnp.zeros((3, 4)))
