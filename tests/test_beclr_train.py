"""BECLR through the trainer: EMA teacher on both views, the predictor as objective
parameters, the DyCE memories as checkpointed objective state; 8 devices = 1 device; the
class-subset loader. Tiny MLP on digits, a few steps."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import beclr, data, losses
from jaxcl.train import ConfigError, setup
from tests.test_train import dataset_batches, leaves, step_history, tiny_config

STEPS, B, MEM, TOPK = 3, 16, 32, 2


def beclr_config(**over):
  return tiny_config(**{"data.name": "digits", "batch_size": B, "loss.name": "beclr_loss",
                        "momentum.ema": 0.9, "momentum.teacher_views": "all",
                        "loss.kwargs": {"temperature": 2.0, "neg_weight": 0.1,
                                        "dyce_memory": MEM, "dyce_clusters": 2,
                                        "dyce_top_k": TOPK},
                        **over})


def _batches():
  return dataset_batches("digits", B, STEPS)


def run(config, devices=None):
  return step_history(config, _batches(), devices)


# Seed 2: no DyCE k-means assignment lands near a tie on 8 devices vs 1 (checked below: the
# labels are identical at every step). A discrete argmax within float rounding of a tie is
# decided differently by the 8- and 1-device reductions and then moves later losses: with the
# bounded l2_normalize (x / max(|x|, 1e-6)) seed 0 flips one row at step 0 and its step-2 loss
# differs by 6e-5 relative; seed 3 flips 7 rows (22% loss difference; see the closing note).
SEED = 2


@pytest.fixture(scope="module")
def eight():
  return run(beclr_config(seed=SEED))


@pytest.fixture(scope="module")
def one():
  return run(beclr_config(seed=SEED), devices=jax.devices()[:1])


@pytest.mark.long
def test_memory_fills_clusters_and_enhances(eight):
  _, hist = eight
  mem = [h[2].objective_state for h in hist]
  # Three memories (teacher / prediction / projection), 2 views x B rows written per step.
  assert set(mem[0]) == {"teacher", "prediction", "projection"}
  assert [int(m["teacher"].count) for m in mem] == [2 * B * (s + 1) for s in range(STEPS)]
  # The memory (32 rows) is full after the first step: clustered from then on.
  assert all(bool(m[n].clustered) for m in mem for n in m)
  for m in mem:
    rows = np.asarray(m["projection"].memory)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
  assert all(np.isfinite(h[1]["loss"]) for h in hist)


class _Frozen(dict):
  """``parts`` as a static jit argument (hashed by identity)."""
  __hash__ = object.__hash__
  __eq__ = object.__eq__


@functools.partial(jax.jit, static_argnums=0)
def _reference_loss(parts, before, x):
  """The step's loss recomputed outside the trainer from the same views, teacher, predictor
  and memories, with the library's DyCE and BECLR pieces on the full global batch."""
  from jaxcl.train.step import make_views, objective_key
  model = parts["eval_model"]  # no BatchNorm axis: statistics over the whole (global) batch
  views = make_views(parts["view_fn"], before, x, 2)

  def embed(variables, x):
    v = {"params": variables["params"]}
    if variables["batch_stats"]:
      v["batch_stats"] = variables["batch_stats"]
    return model.apply(v, x, train=True, mutable=["batch_stats"])[0][1]

  online = {"params": before.params, "batch_stats": before.batch_stats}
  zs = embed(online, jnp.concatenate(views)).reshape(2, B, -1)
  zt = embed(before.ema, jnp.concatenate(views)).reshape(2, B, -1)
  w = before.objective_params
  pred = lambda z: jax.nn.relu(z @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
  p = [pred(zs[0]), pred(zs[1])]
  rng = objective_key(before)
  rows, valid = {}, None
  for i, (name, arr) in enumerate((("teacher", zt), ("prediction", p), ("projection", zs))):
    mem = before.objective_state[name]
    key = jax.random.fold_in(rng, i)
    for v in range(2):
      mem = beclr.dyce_insert(mem, arr[v], jax.random.fold_in(key, v))
    out = []
    for v in range(2):
      nbrs, ok = beclr.dyce_lookup(mem, arr[v], top_k=TOPK)
      out.append((jnp.concatenate([arr[v], jnp.swapaxes(nbrs, 0, 1).reshape(-1, nbrs.shape[-1])]),
                  jnp.concatenate([jnp.ones(B, bool), ok.T.reshape(-1)])))
    rows[name] = [o[0] for o in out]
    ok = out[0][1] & out[1][1]
    valid = ok if valid is None else valid & ok
  per = losses.contrib.beclr_loss(*rows["prediction"], *rows["teacher"], *rows["projection"],
                          temperature=2.0, neg_weight=0.1, valid=valid)
  return jnp.sum(per) / jnp.sum(valid), jnp.mean(valid)


@pytest.mark.long
def test_step_loss_equals_out_of_trainer_reference(one):
  # One device (BatchNorm statistics over the whole batch, as the reference computes them).
  parts, hist = one
  batches = _batches()
  hashable = _Frozen(parts)
  for s in (0, 2):  # step 0: the memory fills and is clustered; step 2: FIFO overwrites
    ref, frac = _reference_loss(hashable, hist[s][0], jnp.asarray(batches[s]["x"]))
    np.testing.assert_allclose(hist[s][1]["loss"], float(ref), rtol=2e-4)
    assert float(frac) > 0.5  # most neighbour rows are real (the loss ran on them)


def _assert_same_memories(mem8, mem1):
  """DyCE memories equal; a cluster assignment may differ only at a near-tie (the row's
  cosine to both centres within 1e-4: float rounding decides a discrete argmax there)."""
  for name in mem8:
    a, b = mem8[name], mem1[name]
    for x, y in ((a.memory, b.memory), (a.centres, b.centres)):
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
    la, lb = np.asarray(a.labels), np.asarray(b.labels)
    sims = np.asarray(a.memory) @ np.asarray(a.centres).T
    diff = np.nonzero(la != lb)[0]
    assert len(diff) <= 1, (name, diff)
    for r in diff:
      assert abs(sims[r, la[r]] - sims[r, lb[r]]) < 1e-4, (name, r, sims[r])
    assert int(a.count) == int(b.count) and bool(a.clustered) == bool(b.clustered)


@pytest.mark.long
def test_eight_devices_equal_one(eight, one):
  _, h8 = eight
  _, h1 = one
  for (_, m8, s8), (_, m1, s1) in zip(h8, h1):
    for name in s8.objective_state:  # no near-tie decided differently (see SEED)
      np.testing.assert_array_equal(s8.objective_state[name].labels, s1.objective_state[name].labels)
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5, atol=1e-6)
    tree = lambda s: (s.params, s.objective_params, s.ema["params"])
    for a, b in zip(leaves(tree(s8)), leaves(tree(s1))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    _assert_same_memories(s8.objective_state, s1.objective_state)


def test_no_dyce_is_the_plain_loss_and_the_predictor_learns():
  cfg = beclr_config(**{"loss.kwargs": {"temperature": 2.0, "neg_weight": 0.1}})
  parts, hist = run(cfg, devices=jax.devices()[:2])
  assert hist[0][0].objective_state is None
  w0, w1 = (np.asarray(h.objective_params["w1"]) for h in (hist[0][0], hist[-1][2]))
  assert w0.shape == (16, 4) and not np.allclose(w0, w1)  # predictor bottleneck D // 4
  # The teacher moved towards the student (EMA 0.9 after each step).
  t0, t1 = (leaves(h.ema["params"]) for h in (hist[0][0], hist[-1][2]))
  assert any(not np.allclose(a, b) for a, b in zip(t0, t1))


def test_config_errors_name_the_key():
  with pytest.raises(ConfigError, match="momentum.teacher_views"):
    setup(beclr_config(**{"momentum.teacher_views": "key"}))
  with pytest.raises(ConfigError, match="momentum.ema"):
    setup(beclr_config(**{"momentum.ema": 0.0}))
  with pytest.raises(ConfigError, match="teacher_views='all'"):
    setup(tiny_config(**{"momentum.ema": 0.9, "momentum.teacher_views": "all"}))
  with pytest.raises(ConfigError, match="dyce_clusters"):
    setup(beclr_config(**{"loss.kwargs": {"dyce_memory": 4, "dyce_clusters": 8}}))
  with pytest.raises(ConfigError, match="dyce_order"):
    setup(beclr_config(**{"loss.kwargs": {"dyce_memory": 8, "dyce_order": "random"}}))
  with pytest.raises(ConfigError, match="views"):
    setup(beclr_config(**{"views.num": 3}))
  with pytest.raises(ConfigError, match="data.classes"):
    setup(beclr_config(**{"data.classes": (3, 12)}))


@pytest.mark.long
def test_state_checkpoints_and_restores(tmp_path, eight):
  from jaxcl.train import checkpoint as ckpt
  parts, hist = eight
  state = hist[-1][2]
  it = data.make_loader("digits", "train", global_batch_size=B, seed=0, in_memory=True)
  mngr = ckpt.manager(str(tmp_path / "ck"), keep=1, use_async=False)
  ckpt.save(mngr, 4, state, it)
  mngr.wait_until_finished()
  restored = ckpt.restore_latest(mngr, parts["state"], it)
  for a, b in zip(leaves(restored.objective_state), leaves(state.objective_state)):
    np.testing.assert_array_equal(a, b)


def test_class_subset_loader_and_order():
  full = data.load_arrays("digits", "train")
  keep = (0, 3, 4)
  it = data.make_loader("digits", "train", global_batch_size=32, seed=1, in_memory=True,
                        classes=keep)
  it2 = data.make_loader("digits", "train", global_batch_size=32, seed=1, in_memory=False,
                         classes=keep)
  seen = []
  for _ in range(3):
    a, b = next(it), next(it2)
    np.testing.assert_array_equal(a["x"], b["x"])  # both loader kinds: same subset order
    seen.append(a["y"])
  assert set(np.concatenate(seen).tolist()) <= set(keep)
  state = it.get_state()
  expected = next(it)["y"]
  it.set_state(state)
  np.testing.assert_array_equal(next(it)["y"], expected)
  sub = data.subset_arrays(full, keep)
  assert len(sub["y"]) == int(np.isin(full["y"], keep).sum())
  with pytest.raises(ValueError, match="'classes'"):
    data.make_loader("digits", "train", global_batch_size=8, seed=0, in_memory=True,
                     classes=(42,))
