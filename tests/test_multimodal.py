"""Multi-tower training: the captioned digits, the per-modality towers and views, the learnable
CLIP / SigLIP scale, zero-shot / retrieval evaluation, and 8 devices == 1 device after 3 steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import augment, data, losses, models
from jaxcl.data import captions
from jaxcl.data.catalog import Modality, split_modalities
from jaxcl.eval import multimodal
from jaxcl.train import ConfigError, objectives, setup
from tests.test_train import dataset_batches, leaves, step_history, tiny_config

MODS = (Modality("image", "image", (8, 8, 1)), Modality("text", "tokens", (16,), vocab=39))


# ------------------------------------------------------------------ data


def test_captions_name_the_digit_and_measured_attributes():
  d = data.load_arrays("digits_captions", "train")
  x, y = d["x"], d["y"]
  assert x.shape == (11496, 80) and data.info("digits_captions").modalities[1].vocab == len(
      captions.VOCAB)
  img, tok = split_modalities(x[:300], data.info("digits_captions").modalities)
  assert tok.dtype == np.int32 and img.shape == (300, 8, 8, 1)
  for r in range(300):
    words = captions.decode(tok[r]).split()
    assert captions.DIGIT_WORDS[y[r]] in words  # the digit is always named correctly
  # Stored attribute classes are the measured ones (same bins recomputed from the train split).
  edges = captions.thresholds(x[:, :64].reshape(-1, 8, 8), y)
  attrs = captions.attributes(x[:, :64].reshape(-1, 8, 8), y, edges)
  for k, v in attrs.items():
    np.testing.assert_array_equal(v, d[k])
  # Where a caption states the slant it is (mostly: 5% noise) the measured one.
  said = [(captions.SLANT.index(s), d["slant"][r]) for r in range(2000)
          for s in captions.SLANT if s in captions.decode(tok[r] if r < 300 else
                                                          x[r, 64:])]
  agree = np.mean([a == b for a, b in said])
  assert len(said) > 800 and 0.9 < agree < 1.0


def test_caption_helpers():
  t = captions.encode("a narrow seven near the top")
  assert t.shape == (16,) and captions.decode(t) == "a narrow seven near the top"
  with pytest.raises(ValueError, match="vocabulary"):
    captions.encode("a purple seven")
  p = captions.prompts()
  assert p.shape == (10, len(captions.PROMPT_TEMPLATES), 80) and not p[:, :, :64].any()
  assert "three" in captions.decode(p[3, 0, 64:])
  assert data.prompts("digits") is None


def test_split_and_views():
  x = np.concatenate([np.full((2, 64), 0.5, np.float32),
                      np.tile(np.arange(1, 17, dtype=np.float32), (2, 1))], axis=1)
  view = augment.make_multimodal_view_fn(MODS, {"image": {"noise_std": 0.1, "flip_prob": 0.0}})
  v = np.asarray(jax.jit(view)(jax.random.key(0), x))
  np.testing.assert_array_equal(v[:, 64:], x[:, 64:])  # captions untouched by default
  assert not np.allclose(v[:, :64], x[:, :64])
  masked = augment.make_multimodal_view_fn(MODS, {"text": {"mask_prob": 1.0}})(
      jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(masked)[:, 64:], captions.MASK_ID)
  with pytest.raises(ValueError, match="'audio'"):
    augment.make_multimodal_view_fn(MODS, {"audio": {}})
  with pytest.raises(ValueError, match="covers|cover"):
    split_modalities(x[:, :70], MODS)


def test_text_tower_ignores_padding():
  m = models.TextTransformer(vocab=10, dim=8, depth=1, heads=2, max_len=6)
  v = m.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))
  a = m.apply(v, jnp.array([[3, 4, 5, 0, 0, 0]]))
  b = m.apply(v, jnp.array([[3, 4, 5, 0, 0, 0]]).at[0, 4].set(0))
  np.testing.assert_allclose(a, b)
  # Attention masks the padding: changing pad positions' embeddings cannot matter, while a
  # real token does.
  c = m.apply(v, jnp.array([[3, 4, 6, 0, 0, 0]]))
  assert not np.allclose(a, c)
  with pytest.raises(ValueError, match="'tokens'"):
    m.apply(v, jnp.zeros((1, 7), jnp.int32))


# ------------------------------------------------------------------ eval


def test_zero_shot_matches_a_loop():
  rng = np.random.default_rng(0)
  zx, zp, y = rng.normal(size=(30, 5)), rng.normal(size=(4, 3, 5)), rng.integers(0, 4, 30)
  correct = 0
  for i in range(30):
    best, arg = -np.inf, -1
    for c in range(4):
      e = np.mean([p / np.linalg.norm(p) for p in zp[c]], axis=0)
      s = zx[i] @ e / (np.linalg.norm(zx[i]) * np.linalg.norm(e))
      if s > best:
        best, arg = s, c
    correct += arg == y[i]
  assert multimodal.zero_shot_accuracy(zx.astype(np.float32), zp.astype(np.float32),
                                       y) == pytest.approx(correct / 30)
  with pytest.raises(ValueError, match="z_prompts"):
    multimodal.zero_shot_accuracy(zx, zp[0], y)


# ------------------------------------------------------------------ learnable scale


def test_learnable_scale_objective():
  z = jax.random.normal(jax.random.key(1), (8, 2, 6))
  obj = objectives.make_objective("clip_loss", {"temperature": 0.07, "learn_temperature": True},
                                  2)
  p = obj.project(obj.init(None, 6))
  np.testing.assert_allclose(p["log_scale"], np.log(1 / 0.07), rtol=1e-6)
  np.testing.assert_allclose(obj.apply(p, z, None, None, None),
                             losses.clip_loss(z[:, 0], z[:, 1], temperature=0.07), rtol=1e-5)
  big = obj.project({"log_scale": jnp.float32(9.0)})
  np.testing.assert_allclose(big["log_scale"], np.log(100.0), rtol=1e-6)  # CLIP's clamp
  # d loss / d log_scale by central differences (float32; a loose but failing-able check).
  f = lambda s: jnp.mean(obj.apply({"log_scale": s}, z, None, None, None))
  g = jax.grad(f)(jnp.float32(2.0))
  fd = (f(jnp.float32(2.0 + 1e-2)) - f(jnp.float32(2.0 - 1e-2))) / 2e-2
  np.testing.assert_allclose(g, fd, rtol=2e-2)
  sig = objectives.make_objective("siglip_loss", {"learn_temperature": True, "learn_bias": True,
                                                  "temperature": 0.1, "bias": -10.0}, 2)
  ps = sig.init(None, 6)
  np.testing.assert_allclose(sig.apply(ps, z, None, None, None),
                             losses.siglip_loss(z[:, 0], z[:, 1]), rtol=1e-5)
  gb = jax.grad(lambda p: jnp.mean(sig.apply(p, z, None, None, None)))(ps)
  assert float(gb["bias"]) != 0 and float(gb["log_scale"]) != 0
  assert set(sig.health(ps, z, None)) == {"logit_scale", "logit_bias"}
  with pytest.raises(ValueError, match="learn_bias"):
    objectives.make_objective("clip_loss", {"learn_bias": True}, 2)
  plain = objectives.make_objective("clip_loss", {"temperature": 0.1}, 2)
  assert not isinstance(plain, objectives.ParamObjective)


# ------------------------------------------------------------------ trainer

B, STEPS = 16, 3


def _batches(steps=STEPS):
  return [{k: b[k] for k in ("x", "y")} for b in dataset_batches("digits_captions", B, steps)]


def clip_config(**over):
  return tiny_config(**{"data.name": "digits_captions", "batch_size": B, "views.num": 1,
                        "loss.name": "clip_loss",
                        "loss.kwargs": {"temperature": 0.1, "learn_temperature": True},
                        "model.head_bn": False,
                        "augment.modalities": {"image": {"flip_prob": 0.0}},
                        "model.modalities": {"text": {"encoder_kwargs": {
                            "dim": 16, "depth": 1, "heads": 2}}}, **over})


@pytest.fixture(scope="module")
def histories():
  batches = _batches()
  return (step_history(clip_config(), batches),
          step_history(clip_config(), batches, devices=jax.devices()[:1]))


@pytest.mark.long
def test_multi_tower_eight_devices_equal_one(histories):
  (p8, h8), (_, h1) = histories
  assert isinstance(p8["model"], models.MultiModal) and len(jax.devices()) == 8
  for (_, m8, s8), (_, m1, s1) in zip(h8, h1):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves((s8.params, s8.objective_params)),
                    leaves((s1.params, s1.objective_params))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  # Both towers and the temperature learn.
  first, last = h8[0][0], h8[-1][2]
  assert set(first.params) == {"towers_0", "towers_1"}
  for t in ("towers_0", "towers_1"):
    assert any(not np.allclose(a, b) for a, b in zip(leaves(first.params[t]),
                                                     leaves(last.params[t])))
  assert float(last.objective_params["log_scale"]) != pytest.approx(np.log(10.0))
  assert "logit_scale" in h8[0][1]


@pytest.mark.long
def test_the_objective_sees_modality_columns():
  seen = {}

  def spy(z, labels, rng, axis_name):
    seen["shape"] = z.shape
    return jnp.sum(z, axis=(1, 2)) * 0.0

  cfg = clip_config(**{"views.num": 2, "loss.kwargs": {"temperature": 0.1}})
  parts = setup(cfg, devices=jax.devices()[:1], objective=spy)
  from jaxcl.train.sharding import global_batch
  parts["step"](parts["state"], global_batch(parts["mesh"], _batches(1)[0]))
  assert seen["shape"] == (B, 4, 16)  # K = 2 views x M = 2 modalities, view-major


def test_multimodal_config_errors():
  with pytest.raises(ConfigError, match="views.num"):
    setup(tiny_config(**{"views.num": 1}))  # single-modality data needs 2 views
  with pytest.raises(ConfigError, match="audio"):
    setup(clip_config(**{"model.modalities": {"audio": {}}}))
  with pytest.raises(ConfigError, match="text"):
    setup(clip_config(**{"augment.modalities": {"text": {"blur": 1}}}))
  with pytest.raises(ConfigError, match="augment.modalities"):
    setup(clip_config(**{"augment.params": {"noise_std": 0.1}}))
  with pytest.raises(ConfigError, match="multimodal datasets only"):
    setup(tiny_config(**{"model.modalities": {"text": {}}}))


@pytest.mark.long
def test_multimodal_evaluation(tmp_path):
  from jaxcl.train import train
  cfg = clip_config(**{"num_steps": 2, "eval.at_end": True, "eval.baselines": False,
                       "eval.probe_steps": 20, "eval.probe_l2": (1e-4,)})
  res = train(cfg, str(tmp_path))
  final = res["final"][next(iter(res["final"]))]
  for k in ("probe_image", "probe_text", "zero_shot", "i2t_r1", "i2t_r10", "t2i_r5",
            "alignment", "linear_probe"):
    assert k in final and np.isfinite(final[k])
  assert final["i2t_r1"] <= final["i2t_r5"] <= final["i2t_r10"]
  assert "zero-shot" in res["markdown"]
