"""WhitenedCSE through the trainer: the ``whitenedcse`` objective adapter (SGW -> Linear -> tanh
head owned by the objective) against the float64 loop references of tests/test_whitenedcse.py,
sharded on 8 devices == 1 device (value and gradients, global-batch whitening statistics),
SimCSE as its no-head no-whitening 2-view case, and the recipe's metrics against NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from jaxcl.recipes import whitenedcse as recipe
from jaxcl.train import objectives
from tests import ssl_reference as ref
from tests.test_whitenedcse import _perms, ref_loss, ref_sgw

B, K, D, G = 16, 3, 8, 2
KW = {"temperature": 0.1, "num_groups": G}


def _z(seed, b=B, k=K, d=D):
  return np.random.default_rng(seed).normal(size=(b, k, d)).astype(np.float32)


def _objective(**kw):
  return objectives.make_objective("whitenedcse", {**KW, **kw}, num_views=K)


def test_adapter_matches_loop_reference():
  obj = _objective()
  assert isinstance(obj, objectives.ParamObjective)
  params = obj.init(jax.random.key(0), D)
  assert params["w"].shape == (D, D) and np.all(np.asarray(params["b"]) == 0)
  np.testing.assert_allclose(np.std(np.asarray(obj.init(jax.random.key(1), 64)["w"])), 0.02,
                             rtol=0.1)
  params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(D, D)) / 3, jnp.float32),
            "b": jnp.full((D,), 0.1, jnp.float32)}
  z, rng = _z(2), jax.random.key(3)
  got = jax.jit(lambda p, a: obj.apply(p, a, jnp.zeros(B, jnp.int32), rng, None))(params, z)
  chunk = np.tile(np.arange(K), B)                                 # one chunk per view
  white = ref_sgw(z.reshape(B * K, D), _perms(rng, K, D), chunk, G, 1e-5)
  head = np.tanh(white @ np.asarray(params["w"], np.float64) + 0.1).reshape(B, K, D)
  np.testing.assert_allclose(got, ref_loss(head, t=0.1), rtol=1e-4, atol=1e-4)


def test_no_head_no_whitening_two_views_is_simcse_info_nce():
  obj = objectives.make_objective("whitenedcse", {"temperature": 0.05, "head": False,
                                                  "whiten": False}, num_views=2)
  z = _z(4, k=2)
  assert obj.init(jax.random.key(0), D) == {}
  got, want = jax.jit(lambda a: (obj.apply({}, a, None, jax.random.key(0), None),
                                 losses.info_nce(a[:, 0], a[:, 1], temperature=0.05)))(z)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.long
def test_adapter_sharded_equals_single_device():
  """8 devices: SGW statistics psum'd over the mesh, negatives gathered; the step's loss key
  is the same on every device. Per-example values and the gradients of z and of the head."""
  obj = _objective()
  params = obj.init(jax.random.key(5), D)
  z, g = _z(6), np.random.default_rng(7).uniform(0.5, 1.5, B).astype(np.float32)
  rng, y = jax.random.key(8), np.zeros(B, np.int32)

  def total(axis):
    def f(p, a, w, lab):
      s = jnp.sum(w * obj.apply(p, a, lab, rng, axis))
      return s if axis is None else jax.lax.psum(s, axis)
    return f

  sharded = ref.shard(total("data"), (P(), P("data"), P("data"), P("data")), P())
  v8, g8 = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(params, z, g, y)
  v1, g1 = jax.jit(jax.value_and_grad(total(None), argnums=(0, 1)))(params, z, g, y)
  np.testing.assert_allclose(v8, v1, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_adapter_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="'head'"):
    _objective(head="yes")
  with pytest.raises(ValueError, match="views.num >= 2"):
    _objective().apply({}, _z(0, k=1), None, jax.random.key(0), None)
  from jaxcl.train.config import ConfigError, default_config, loss_fn
  c = default_config()
  c.loss.name, c.loss.kwargs = "whitenedcse", {"project": None}
  with pytest.raises(ConfigError, match="project"):
    loss_fn(c)


def test_pair_auc_and_metrics_against_numpy():
  rng = np.random.default_rng(9)
  cos, score = rng.normal(size=60).round(1), rng.uniform(size=60)
  pos, neg = cos[score >= 0.7], cos[score < 0.3]
  want = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
  np.testing.assert_allclose(recipe.pair_auc(cos, score, 0.7, 0.3), want, rtol=1e-12)
  # evaluate(): embeddings = the ids themselves (rows of x), so every metric is checkable.
  n = 12
  ev = {"gloss_x": rng.normal(size=(n, 5)), "word_x": rng.normal(size=(n, 5)),
        "gloss_a": rng.integers(n, size=30), "gloss_b": rng.integers(n, size=30),
        "word_a": rng.integers(n, size=30), "word_b": rng.integers(n, size=30),
        "score": rng.uniform(size=30)}
  out = recipe.evaluate(lambda x: x, ev, 0.6, 0.3)
  u = ev["gloss_x"] / np.linalg.norm(ev["gloss_x"], axis=1, keepdims=True)
  cos = np.sum(u[ev["gloss_a"]] * u[ev["gloss_b"]], 1)
  rank = lambda v: np.array([np.sum(v < x) + (np.sum(v == x) + 1) / 2 for x in v])  # ties: mean
  np.testing.assert_allclose(out["spearman_gloss"],
                             np.corrcoef(rank(cos), rank(ev["score"]))[0, 1], rtol=1e-6)
  near = ev["score"] >= 0.6
  np.testing.assert_allclose(out["alignment"], np.mean(np.sum(
      (u[ev["gloss_a"]][near] - u[ev["gloss_b"]][near]) ** 2, 1)), rtol=1e-5)
  d2 = np.sum((u[:, None] - u[None]) ** 2, -1)[~np.eye(n, dtype=bool)]
  np.testing.assert_allclose(out["uniformity"], np.log(np.mean(np.exp(-2 * d2))), rtol=1e-4)
  assert out["near_pairs"] == int(near.sum())


@pytest.mark.long
def test_config_validates_and_trainer_steps_through_the_adapter():
  """The recipe's config (tiny BERT, a stand-in tokenizer, 16 glosses): validates on 8
  devices, and two trainer steps through the adapter update the head."""
  from configs.whitenedcse_wordnet import get_config
  from jaxcl.data import text
  from jaxcl.recipes import trainer_config
  from jaxcl.train import setup
  from jaxcl.train.config import validate
  from jaxcl.train.sharding import global_batch
  from tests.test_text_train import _tokenize
  c = get_config()
  _, x, y = text.register_texts(c.data.name, [[f"w{i} gloss of {i % 5}" for i in range(16)]],
                                tokenize=_tokenize, max_len=c.whitenedcse.max_len,
                                y=np.zeros(16, np.int32), num_classes=1)
  t = trainer_config(c, "whitenedcse")
  assert validate(t, num_devices=8, num_processes=1).name == "wordnet_glosses"
  t.model.pretrained = ""
  t.model.encoder_kwargs = {"vocab": 40, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32,
                            "max_len": 16, "dropout": 0.1}
  t.loss.kwargs.num_groups = 2
  t.batch_size = 16
  parts = setup(t, devices=jax.devices()[:1])  # sharding: test_adapter_sharded_equals_single
  state = parts["state"]
  w0 = np.asarray(state.objective_params["w"])
  for _ in range(2):
    state, m = parts["step"](state, global_batch(parts["mesh"], {"x": x, "y": y}))
    assert np.isfinite(float(m["loss"])) and float(m["loss"]) > 0
  assert np.abs(np.asarray(state.objective_params["w"]) - w0).max() > 0
