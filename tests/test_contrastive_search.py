"""SimCTG recipe + generation metrics (contrastive-search study).

* ``losses.contrib.simctg_loss`` under ``axis_name``: value and gradient of the batch loss on 8 virtual
  devices == one device (padding differs per device, so a mean of device means would not);
* the recipe's sharded LM loss (MLE token mean + weight * SimCTG) == the single-device loss and
  gradient, and the MLE term == a NumPy log-softmax loop;
* ``jaxcl.eval.generation``: rep-n / diversity against an independent string loop (the SimCTG
  reference's definition, every n-gram counted), self-similarity / isotropy and coherence
  against float64 loops;
* recipe data pieces (vocabulary, packing, prompts with their human continuation, stateless
  batches) and an exact resume from an orbax checkpoint.
The decoders themselves are checked step by step in ``tests/test_decoding.py``.
"""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from jaxcl.eval import generation
from jaxcl.losses.contrib import simctg_loss
from jaxcl.recipes import simctg

AX = "data"


def _mesh():
  return jax.make_mesh((8,), (AX,), axis_types=(jax.sharding.AxisType.Auto,))


def test_simctg_loss_sharded_equals_single_device():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 5, 3)).astype(np.float32)
  w = rng.normal(size=(3, 4)).astype(np.float32)
  valid = np.ones((16, 5), bool)
  valid[[1, 2, 9], 3:] = False  # devices 0, 1 and 4 hold padded sequences
  valid[12, 1:] = False         # a sequence with one valid token: no pairs
  f = lambda w, x, v, a=None: simctg_loss(jnp.einsum("bld,de->ble", x, w), v, axis_name=a)
  sharded = jax.shard_map(lambda w, x, v: f(w, x, v, AX), mesh=_mesh(),
                          in_specs=(P(), P(AX), P(AX)), out_specs=P())
  val1, (gw1, gx1) = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(w, x, valid)
  val8, (gw8, gx8) = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(w, x, valid)
  np.testing.assert_allclose(val8, val1, rtol=1e-6)
  np.testing.assert_allclose(gw8, gw1, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gx8, gx1, rtol=1e-5, atol=1e-7)
  # The mean of per-device means differs: the psum'd pair count is what makes it exact.
  fj = jax.jit(f)
  naive = np.mean([fj(w, x[i:i + 2], valid[i:i + 2]) for i in range(0, 16, 2)])
  assert abs(naive - float(val1)) > 1e-4


def _lm_case():
  c = ConfigDict({"vocab": 11, "seq_len": 6, "dim": 8, "depth": 1, "heads": 2, "mlp_ratio": 2})
  model = simctg.make_model(c)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
  x = np.random.default_rng(1).integers(0, 11, size=(16, 7)).astype(np.int32)
  x[3, 4:] = simctg.PAD
  return model, params, x


@pytest.mark.long
def test_recipe_loss_sharded_equals_single_device_and_mle_reference():
  model, params, x = _lm_case()
  weight = jnp.float32(0.7)
  single = jax.value_and_grad(simctg.losses_fn(model, 0.5), has_aux=True)
  (l1, (m1, c1)), g1 = jax.jit(single)(params, x, weight)
  sharded = jax.value_and_grad(simctg.sharded_loss(model, _mesh(), 0.5), has_aux=True)
  (l8, (m8, c8)), g8 = jax.jit(sharded)(params, x, weight)
  np.testing.assert_allclose([l8, m8, c8], [l1, m1, c1], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  np.testing.assert_allclose(l1, m1 + 0.7 * c1, rtol=1e-6)
  logits, hidden = jax.jit(model.apply)(params, x[:, :-1])
  lg = np.asarray(logits, np.float64)
  tot, n = 0.0, 0
  for b in range(16):
    for t in range(6):
      y = x[b, t + 1]
      if y in (simctg.PAD, simctg.UNK):
        continue
      row = lg[b, t]
      tot += np.log(np.exp(row - row.max()).sum()) + row.max() - row[y]
      n += 1
  np.testing.assert_allclose(m1, tot / n, rtol=1e-5)
  np.testing.assert_allclose(c1, jax.jit(simctg_loss)(hidden, x[:, :-1] != simctg.PAD),
                             rtol=1e-6)


def _ref_rep(texts, n):
  unique = total = 0
  for t in texts:
    toks = " ".join(map(str, t)).split()
    grams = collections.Counter(" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))
    unique += len(grams)
    total += sum(grams.values())
  return 1 - unique / total


def test_repetition_and_diversity_match_loop():
  rng = np.random.default_rng(2)
  toks = rng.integers(0, 4, size=(5, 12))
  got = generation.repetition(toks)
  ref = {n: _ref_rep(toks, n) for n in (2, 3, 4)}
  for n in (2, 3, 4):
    np.testing.assert_allclose(got[f"rep_{n}"], ref[n], rtol=1e-12)
  np.testing.assert_allclose(got["diversity"], np.prod([1 - ref[n] for n in (2, 3, 4)]))
  valid = np.ones_like(toks, bool)
  valid[0, 7:] = False
  cut = generation.repetition(toks, valid)
  np.testing.assert_allclose(cut["rep_2"], _ref_rep([toks[0, :7]] + list(toks[1:]), 2))
  assert generation.repetition([[1, 2, 3, 4, 5]])["diversity"] == 1.0
  assert generation.repetition([[7] * 6])["rep_4"] == pytest.approx(2 / 3)


def test_self_similarity_isotropy_coherence_match_loops():
  rng = np.random.default_rng(3)
  h = rng.normal(size=(3, 5, 4)) + 0.5
  valid = np.ones((3, 5), bool)
  valid[1, 2:] = False
  valid[2, 1:] = False  # one valid token: skipped
  per = []
  for b in range(2):
    idx = [i for i in range(5) if valid[b, i]]
    u = {i: h[b, i] / np.linalg.norm(h[b, i]) for i in idx}
    per.append(np.mean([u[i] @ u[j] for i in idx for j in idx if i != j]))
  got = generation.self_similarity(jnp.asarray(h, jnp.float32), valid)
  np.testing.assert_allclose(got, np.mean(per), rtol=1e-5)
  np.testing.assert_allclose(generation.isotropy(jnp.asarray(h, jnp.float32), valid),
                             1 - np.mean(per), rtol=1e-5)
  a, b = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  ref = np.mean([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)])
  np.testing.assert_allclose(generation.coherence(a, b), ref, rtol=1e-12)


def test_recipe_data_pieces():
  texts = ["a cat sat", "the dog, a dog", "a cat ran far away", "dog"]
  vocab = simctg.build_vocab(texts, 6)
  assert vocab[:3] == simctg.SPECIALS and vocab[3] == "a" and vocab[4] == "dog"
  enc = simctg.encode(texts, vocab)
  assert list(enc[1]) == [vocab.index("the") if "the" in vocab else simctg.UNK,
                          4, vocab.index(",") if "," in vocab else simctg.UNK, 3, 4]
  assert simctg.decode([simctg.EOS, 3, 4, 0], vocab) == ". a dog"
  stream = np.concatenate([np.concatenate([[simctg.EOS], e]) for e in enc])
  packed = simctg.pack(enc, 4)
  np.testing.assert_array_equal(packed.reshape(-1), stream[:len(packed) * 4])
  p, cont = simctg.prompts(enc, 3, 2, continuation=2)
  np.testing.assert_array_equal(p[0], stream[0:3])
  np.testing.assert_array_equal(cont[0], stream[3:5])
  starts = np.flatnonzero(stream == simctg.EOS)
  assert all(any(np.array_equal(r, stream[s:s + 3]) for s in starts) for r in p)
  seen = np.concatenate([simctg.batch_indices(10, 3, 7, s) for s in range(3)])
  assert len(set(seen)) == 9  # one epoch: no row twice
  np.testing.assert_array_equal(simctg.batch_indices(10, 3, 7, 4),
                                simctg.batch_indices(10, 3, 7, 4))
  assert not np.array_equal(simctg.batch_indices(10, 3, 7, 3), simctg.batch_indices(10, 3, 7, 0))


def _tiny_config():
  from configs.simctg_wordnet import get_config
  c = get_config()
  c.simctg.update({"vocab": 40, "heldout_every": 5, "seq_len": 8, "dim": 8, "depth": 1,
                   "heads": 2, "mlp_ratio": 1, "num_steps": 4, "batch_size": 8,
                   "warmup_steps": 1, "log_every": 1, "checkpoint_every": 0,
                   "eval_windows": 4})
  return c


TEXTS = [f"word{i % 7} and word{(3 * i) % 11} is a thing {i % 5}" for i in range(60)]


@pytest.mark.long
def test_recipe_trains_and_resumes_exactly(tmp_path):
  c = _tiny_config()
  assert c.recipe == "simctg"
  full = simctg.train(c, str(tmp_path / "a"), log=lambda *a: None, texts=TEXTS)
  simctg.train(c, str(tmp_path / "b"), log=lambda *a: None, texts=TEXTS, stop_at=2)
  resumed = simctg.train(c, str(tmp_path / "b"), log=lambda *a: None, texts=TEXTS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               full["params"], resumed["params"])
  assert [h["step"] for h in resumed["history"]] == [3, 4]
  assert np.isfinite(full["metrics"]["perplexity"]) and 0 < full["metrics"]["isotropy"] < 2
  assert (tmp_path / "a" / "simctg.json").exists()


def test_errors_name_arguments():
  with pytest.raises(ValueError, match="'reduction'"):
    simctg_loss(jnp.zeros((2, 3, 4)), reduction="sum")
  with pytest.raises(ValueError, match="'ns'"):
    generation.repetition([[1, 2]], ns=(0,))
  with pytest.raises(ValueError, match="'prefix_emb'"):
    generation.coherence(np.zeros((2, 3)), np.zeros((3, 3)))
  with pytest.raises(ValueError, match="'valid'"):
    generation.self_similarity(np.zeros((2, 3, 4)), np.ones((2, 4), bool))
  with pytest.raises(ValueError, match="'size'"):
    simctg.build_vocab(["a"], 3)
  with pytest.raises(ValueError, match="'count'"):
    simctg.prompts(simctg.encode(["a b"], simctg.build_vocab(["a b"], 5)), 3, 2)
  c = _tiny_config()
  c.simctg.weight = -1.0
  with pytest.raises(ValueError, match="'weight'"):
    simctg.train(c, "/nonexistent", texts=TEXTS)
