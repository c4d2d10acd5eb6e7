"""Parity of the Flax all-MiniLM-L6-v2 tower with sentence-transformers (committed fixture).

The fixture ``tests/fixtures/minilm_reference.npz`` was written by
``experiments/benchmarks/minilm_fixture.py`` (PyTorch sentence-transformers, separate venv).
Needs the ``text`` extra and the weights package (tests/optional.py: skipped with the install
command when missing, failed under ``JAXCL_REQUIRE_OPTIONAL=1``).
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

needs_text = pytest.mark.requires("text", "minilm")  # tests/optional.py

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def tower():
  from jaxcl.models.pretrained import load_minilm
  module, params, tokenize = load_minilm()
  embed = jax.jit(lambda p, b: module.apply({"params": p}, **b))
  return module, params, tokenize, embed


def _cos(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@needs_text
def test_parity_with_reference_fixture(tower):
  module, params, tokenize, embed = tower
  ref = np.load(FIXTURE)
  sentences = [str(s) for s in ref["sentences"]]
  z = np.asarray(embed(params, tokenize(sentences)))  # padded to the longest (71)
  assert z.shape == ref["vectors"].shape == (16, 384)
  assert _cos(z, ref["vectors"]).min() >= 0.9999
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)  # Normalize module


@needs_text
def test_padding_invariance_and_param_tree(tower):
  module, params, tokenize, embed = tower
  sentences = [str(s) for s in np.load(FIXTURE)["sentences"]]  # parity's shape: compiled
  short = tokenize(sentences)  # padded to the longest sentence
  long = tokenize(sentences, pad_to=96)
  assert short["input_ids"].shape[1] < 96
  z_short = embed(params, short)
  np.testing.assert_allclose(embed(params, long), z_short, atol=1e-5)
  # a row does not depend on the other rows of its batch (nor on their padding)
  same = embed(params, tokenize(sentences[:1] * len(sentences), pad_to=short["input_ids"].shape[1]))
  np.testing.assert_allclose(same, np.broadcast_to(z_short[:1], same.shape), atol=1e-5)
  # the converted tree is exactly the module's own parameter tree
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
  assert (jax.tree.structure(shapes["params"]) == jax.tree.structure(params))
  assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(shapes["params"]),
                                                jax.tree.leaves(params)))
  # the trainer's FSDP rule splits every big leaf (embedding table, FFN kernels) over 8 devices
  from jaxcl.train.sharding import fsdp_spec
  big = [x.shape for x in jax.tree.leaves(params) if x.size >= 1 << 18]
  assert len(big) == 1 + 2 * module.depth
  assert all(fsdp_spec(shape, 8, 1 << 18) != jax.sharding.PartitionSpec() for shape in big)


@needs_text
def test_tokenize_and_errors(tower):
  module, params, tokenize, embed = tower
  b = tokenize(["hello world"])
  assert b["input_ids"].tolist() == [[101, 7592, 2088, 102]]  # [CLS] hello world [SEP]
  assert b["input_ids"].dtype == np.int32
  assert tokenize(["word " * 400])["input_ids"].shape[1] == 256  # max_seq_length
  with pytest.raises(ValueError, match="pad_to"):
    tokenize(["a b c d e"], pad_to=3)
  with pytest.raises(TypeError, match="sentences"):
    tokenize("one string")
  with pytest.raises(ValueError, match="input_ids"):
    module.apply({"params": params}, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="input_ids"):
    module.apply({"params": params}, jnp.zeros((1, 4), bool))
  # Token ids carried as float32 (jaxcl's token data) are the same ids.
  ids = jnp.asarray(b["input_ids"])
  np.testing.assert_array_equal(module.apply({"params": params}, ids),
                                module.apply({"params": params}, ids.astype(jnp.float32)))


def test_tiny_encoder_dropout_and_grad():
  """No extra needed: a tiny BertEncoder trains (dropout rng, finite gradients, unit outputs)."""
  from jaxcl.models.bert import BertEncoder
  m = BertEncoder(vocab=20, dim=8, depth=1, heads=2, mlp_dim=16, max_len=6, dropout=0.1)
  ids = jnp.array([[2, 5, 7, 0, 0, 0], [3, 4, 4, 9, 11, 1]])
  v = jax.jit(m.init)(jax.random.key(0), ids)

  @jax.jit
  def run(params):
    train = lambda i: m.apply({"params": params}, ids, train=True,
                              rngs={"dropout": jax.random.key(i)})
    grad = jax.grad(lambda p: m.apply({"params": p}, ids).sum())(params)
    return train(1), train(2), m.apply({"params": params}, ids), grad

  z0, z1, z, g = run(v["params"])
  assert not np.allclose(z0, z1)  # dropout views differ
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))
  with pytest.raises(ValueError, match="attention_mask"):
    jax.eval_shape(lambda: m.apply(v, ids, jnp.ones((2, 5), jnp.int32)))
