"""Text through the trainer: tokenized in-memory datasets (jaxcl/data/text.py), the shared
bi-encoder tower, dropout views, and pretrained BERT weights copied into the model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import models
from jaxcl.data import catalog, text
from jaxcl.models import pretrained
from jaxcl.train import ConfigError, setup
from jaxcl.train.sharding import global_batch
from tests.test_train import tiny_config

TINY_BERT = dict(vocab=40, dim=16, depth=1, heads=2, mlp_dim=32, max_len=8)


def _tokenize(texts, pad_to=None):
  """A stand-in word tokenizer: [CLS]=2 word ids [SEP]=3 (ids < 40)."""
  rows = [[2] + [4 + (sum(map(ord, w)) % 36) for w in t.split()] + [3] for t in texts]
  n = max(map(len, rows)) if pad_to is None else pad_to
  ids = np.zeros((len(rows), n), np.int32)
  for r, row in enumerate(rows):
    ids[r, :len(row)] = row
  return {"input_ids": ids}


def test_encode_truncates_keeping_the_last_token():
  x = text.encode(_tokenize, ["a b c d e f g", "a"], max_len=4)
  assert x.dtype == np.float32 and x.shape == (2, 4)
  full = _tokenize(["a b c d e f g"])["input_ids"][0]
  np.testing.assert_array_equal(x[0], [full[0], full[1], full[2], 3])
  np.testing.assert_array_equal(x[1], [2, _tokenize(["a"])["input_ids"][0, 1], 3, 0])


def test_register_texts_checks_and_registers():
  info, x, y = text.register_texts("t_pairs", [["a b", "c"], ["d", "e f"]], tokenize=_tokenize,
                                   max_len=5, vocab=40)
  assert catalog.info("t_pairs") is info and x.shape == (2, 10) and list(y) == [0, 1]
  assert info.num_classes == 2 and [m.shape for m in info.modalities] == [(5,), (5,)]
  with pytest.raises(ValueError, match="already registered"):
    text.register_texts("t_pairs", [["a"]], tokenize=_tokenize, max_len=5)
  with pytest.raises(ValueError, match="'columns'"):
    text.register_texts("t_bad", [["a", "b"], ["c"]], tokenize=_tokenize, max_len=5)


def _pair_config(**over):
  c = tiny_config(**{"data.name": "t_train_pairs", **over})
  c.model.encoder = "bert"
  c.model.encoder_kwargs = dict(TINY_BERT)
  c.model.shared_tower = True
  c.model.head_layers = 0
  c.loss.name = "clip_loss"
  c.views.num = 1
  c.batch_size = 8
  return c


def _pairs():
  words = [f"w{i} x{i % 3}" for i in range(16)]
  return text.register_texts("t_train_pairs", [words, [w + " y" for w in words]],
                             tokenize=_tokenize, max_len=8, vocab=40)


@pytest.mark.long
def test_shared_tower_trains_and_encodes_both_texts_with_one_set_of_weights():
  info, x, y = _pairs()
  parts = setup(_pair_config(), devices=jax.devices()[:1])
  params = parts["state"].params
  assert list(params) == ["towers_0"]  # one tower for both token blocks
  h, z = parts["eval_model"].apply({"params": params}, jnp.asarray(x[:4]))
  assert z.shape == (4, 2, 16)
  enc = models.BertEncoder(**TINY_BERT)
  direct = enc.apply({"params": params["towers_0"]["encoder"]}, jnp.asarray(x[:4, 8:]))
  np.testing.assert_allclose(z[:, 1], direct, rtol=1e-5, atol=1e-6)
  it = text.batches(x, y, global_batch_size=8, seed=0, process_index=0, process_count=1)
  state = parts["state"]
  losses = []
  for _ in range(3):
    b = next(it)
    state, m = parts["step"](state, global_batch(parts["mesh"], {"x": b["x"], "y": b["y"]}))
    losses.append(float(m["loss"]))
  assert all(np.isfinite(losses)) and losses[-1] != losses[0]


@pytest.mark.long
def test_dropout_views_differ_only_with_dropout():
  """SimCSE's positive pair: one text, two forward passes; the step's dropout rng makes the
  two views' embeddings differ (loss > the dropout-free loss' exact alignment)."""
  _, x, y = text.register_texts("t_single", [[f"w{i} v" for i in range(16)]],
                                tokenize=_tokenize, max_len=8, vocab=40)
  out = {}
  for rate in (0.0, 0.3):
    c = _pair_config(**{"data.name": "t_single"})
    c.model.shared_tower = False
    c.views.num = 2
    c.loss.name = "info_nce"
    c.model.encoder_kwargs = dict(TINY_BERT, dropout=rate)
    parts = setup(c, devices=jax.devices()[:1])
    _, m = parts["step"](parts["state"], global_batch(parts["mesh"], {"x": x[:8], "y": y[:8]}))
    out[rate] = float(m["alignment"]) if "alignment" in m else float(m["loss"])
  assert out[0.3] != pytest.approx(out[0.0], rel=1e-4)


@pytest.mark.long
def test_copy_into_replaces_every_bert_subtree_and_checks_shapes():
  enc = models.BertEncoder(**TINY_BERT)
  ids = jnp.zeros((1, 4), jnp.int32)
  a = enc.init(jax.random.key(0), ids)["params"]
  b = enc.init(jax.random.key(1), ids)["params"]
  tree = {"towers_0": {"encoder": a, "head": {"w": np.ones(3)}}, "towers_1": {"encoder": a}}
  out = pretrained.copy_into(tree, b)
  for t in ("towers_0", "towers_1"):
    for u, v in zip(jax.tree.leaves(out[t]["encoder"]), jax.tree.leaves(b)):
      np.testing.assert_array_equal(u, v)
  np.testing.assert_array_equal(out["towers_0"]["head"]["w"], np.ones(3))
  wide = models.BertEncoder(**dict(TINY_BERT, dim=32, mlp_dim=32)).init(
      jax.random.key(0), ids)["params"]
  with pytest.raises(ValueError, match="shape"):
    pretrained.copy_into(tree, wide)
  with pytest.raises(ValueError, match="no BERT encoder"):
    pretrained.copy_into({"head": {"w": np.ones(3)}}, b)


def test_pretrained_config_errors():
  _pairs()
  with pytest.raises(ConfigError, match="config.model.pretrained"):
    setup(_pair_config(**{"model.pretrained": "gpt"}), devices=jax.devices()[:1])
  c = _pair_config(**{"model.pretrained": "minilm"})
  c.init.workdir = "/tmp/x"
  with pytest.raises(ConfigError, match="choose one"):
    setup(c, devices=jax.devices()[:1])


def test_shared_tower_needs_one_shape():
  mods = (catalog.Modality("a", "tokens", (4,), vocab=40), catalog.Modality("b", "tokens", (6,),
                                                                             vocab=40))
  tower = models.ContrastiveModel(models.BertEncoder(**TINY_BERT))
  m = models.MultiModal((tower,), mods, shared=True)
  with pytest.raises(ValueError, match="one kind and shape"):
    m.init(jax.random.key(0), jnp.zeros((2, 10)))


def test_recipe_dispatch_and_trainer_config():
  import ml_collections
  from jaxcl import recipes
  c = tiny_config()
  with c.unlocked():
    c.recipe = "no_such_recipe"
    c.text = ml_collections.ConfigDict({"max_len": 8})
  with pytest.raises(ValueError, match="config.recipe='no_such_recipe'"):
    recipes.run(c, "/tmp/unused")
  with c.unlocked():
    c.recipe = "../x"
  with pytest.raises(ValueError, match="module name"):
    recipes.run(c, "/tmp/unused")
  t = recipes.trainer_config(c, "text")
  assert "recipe" not in t and "text" not in t and "recipe" in c
  from jaxcl.train.config import check_keys
  check_keys(t)  # an ordinary trainer config again
