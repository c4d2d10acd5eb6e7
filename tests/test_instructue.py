"""InstructUE (jaxcl.losses.instructue, jaxcl.recipes.instructue, jaxcl.data.userqa; arXiv
2510.11016): float64 loop reference for the AR + CL objective (value and gradient), sharded ==
single device, bf16 / extreme inputs, clear errors; the UserQA generator's structure; retrieval
and the centroid probe against loops; the loop's loss weights switch the terms off."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import reference
from jaxcl import losses
from jaxcl.data import userqa
from jaxcl.recipes import instructue

B, T, V, D = 8, 2, 7, 5
IDS = np.array([0, 1, 2, 1, 3, 4, 0, 5], np.int32)   # answers 1 and 0 repeat


def _x(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _targets(seed=3):
  return np.random.default_rng(seed).integers(0, V, (B, T)).astype(np.int32)


MASK = np.ones((B, T), bool)
MASK[2, 1] = False


def ref_loss(logits, targets, mask, user, text, weight, ar_weight, temperature, ids):
  logits = np.asarray(logits, np.float64)
  unit = lambda x: np.asarray(x, np.float64) / np.linalg.norm(np.asarray(x, np.float64), axis=1,
                                                              keepdims=True)
  u, t = unit(user), unit(text)
  out = np.zeros(B)
  for i in range(B):
    nll, cnt = 0.0, 0
    for s in range(T):
      if mask[i, s]:
        nll += -(logits[i, s, targets[i, s]] - reference.lse(list(logits[i, s])))
        cnt += 1
    ar = nll / max(cnt, 1)
    cl = 0.0
    for q, k in ((u, t), (t, u)):
      cand = [float(q[i] @ k[j]) / temperature for j in range(B)
              if j == i or ids is None or ids[j] != ids[i]]
      cl += 0.5 * (-float(q[i] @ k[i]) / temperature + reference.lse(cand))
    out[i] = ar_weight * ar + weight * cl
  return out


@pytest.mark.parametrize("weight,ar_weight,ids", [(1.0, 1.0, IDS), (0.5, 0.0, None),
                                                  (0.0, 1.0, IDS)])
def test_loss_value_and_grad(weight, ar_weight, ids):
  logits, user, text = _x(0, B, T, V), _x(1, B, D), _x(2, B, D)
  tg = _targets()
  lib = lambda lg, u, t: losses.contrib.instructue_loss(lg, jnp.asarray(tg), jnp.asarray(MASK), u, t,
                                                weight=weight, ar_weight=ar_weight,
                                                temperature=0.3, answer_ids=ids)
  ref = lambda lg, u, t: ref_loss(lg, tg, MASK, u, t, weight, ar_weight, 0.3, ids)
  wrt = tuple(i for i, on in enumerate((ar_weight > 0, weight > 0, weight > 0)) if on)
  reference.check_value_and_grad(lib, ref, (logits, user, text), wrt=wrt, atol=1e-5)


def test_sharded_equals_single_device():
  n = 16
  x = _x(20, n, 3, 6)
  w = _x(21, 6, D, scale=0.5)
  lg = _x(22, n, T, V)
  tg = jnp.asarray(np.random.default_rng(23).integers(0, V, (n, T)), jnp.int32)
  ids = jnp.asarray(np.arange(n) % 6, jnp.int32)

  def f(axis_name):
    def fn(w, x, lg, tg, ids):
      h = jnp.einsum("bkd,de->bke", x, w)
      return losses.contrib.instructue_loss(lg * jnp.sum(w), tg, jnp.ones(tg.shape, bool), h[:, 0],
                                    h[:, 1], temperature=0.2, answer_ids=ids,
                                    axis_name=axis_name)
    return fn

  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  sharded = jax.shard_map(f("d"), mesh=mesh, in_specs=(P(),) + (P("d"),) * 4,
                          out_specs=P("d"))

  @jax.jit
  def both(w, x, lg, tg, ids):
    out = []
    for fn in (f(None), sharded):
      per, vjp = jax.vjp(lambda w: fn(w, x, lg, tg, ids), w)
      out.append((per, vjp(jnp.full(per.shape, 1.0 / n))[0]))
    return out

  (v1, g1), (v8, g8) = both(w, x, lg, tg, ids)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g8, g1, rtol=1e-5, atol=1e-5 * np.abs(np.asarray(g1)).max())


def test_bf16_extreme_inputs_and_errors():
  lg, u, t = _x(30, B, T, V), _x(31, B, D), _x(32, B, D)
  tg, m = jnp.asarray(_targets()), jnp.asarray(MASK)
  f32 = np.asarray(losses.contrib.instructue_loss(lg, tg, m, u, t))
  bf = losses.contrib.instructue_loss(*(jnp.asarray(a, jnp.bfloat16) for a in (lg,)), tg, m,
                              jnp.asarray(u, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
  assert bf.dtype == jnp.float32
  np.testing.assert_allclose(bf, f32, rtol=5e-2, atol=5e-2)
  big = losses.contrib.instructue_loss(lg * 1e4, tg, m, u * 1e6, t * 1e-6, temperature=1e-3)
  assert np.all(np.isfinite(np.asarray(big)))
  with pytest.raises(ValueError, match="'logits'"):
    losses.contrib.instructue_loss(lg[0], tg, m, u, t)
  with pytest.raises(ValueError, match="'targets'"):
    losses.contrib.instructue_loss(lg, tg[:, :1], m, u, t)
  with pytest.raises(ValueError, match="'targets' must be integer"):
    losses.contrib.instructue_loss(lg, tg.astype(jnp.float32), m, u, t)
  with pytest.raises(ValueError, match="'user'"):
    losses.contrib.instructue_loss(lg, tg, m, u[:4], t)


def test_userqa_structure_and_errors():
  d = userqa.make_userqa(0, num_users=300, num_train=200, noise=0.0)
  assert d.attrs.shape == (300, 4) and d.events.shape == (300, 16)
  assert d.events.min() >= 1 and d.events.max() <= d.num_events == 4 * 6 * 4
  # noise 0: every event belongs to one of the user's own (attribute, value) groups.
  group = (d.events - 1) // 4                  # a * V + v
  own = d.attrs[np.arange(300)[:, None], group // 6] == group % 6
  assert own.all()
  noisy = userqa.make_userqa(0, num_users=300, num_train=200, noise=0.5)
  g = (noisy.events - 1) // 4
  share = (noisy.attrs[np.arange(300)[:, None], g // 6] == g % 6).mean()
  assert 0.5 < share < 0.7                     # 0.5 + 0.5 * (1/6) expected
  np.testing.assert_array_equal(userqa.make_userqa(0).events, userqa.make_userqa(0).events)
  tr, te = userqa.examples(d, "train"), userqa.examples(d, "test")
  assert len(tr["user"]) == 200 * 4 * 2 and len(te["user"]) == 100 * 4
  assert tr["user"].max() < 200 <= te["user"].min()
  held = userqa.question(d, 0, len(userqa.TEMPLATES) - 1)
  assert not any((q == held).all() for q in tr["question"][tr["attr"] == 0])
  for ex in (tr, te):
    for i in range(0, len(ex["user"]), 97):
      a, u = ex["attr"][i], ex["user"][i]
      assert ex["answer"][i] == d.value_word(a, d.attrs[u, a])
      assert d.vocab[ex["answer"][i]] == f"{userqa.ATTR_NAMES[a]}_{d.attrs[u, a]}"
      assert d.attr_word(a) in ex["question"][i]
  for kw, name in ((dict(num_users=0), "num_users"), (dict(noise=1.5), "noise"),
                   (dict(num_train=600), "num_train"), (dict(num_attrs=9), "num_attrs")):
    with pytest.raises(ValueError, match=f"'{name}'"):
      userqa.make_userqa(0, **kw)
  with pytest.raises(ValueError, match="'split'"):
    userqa.examples(d, "val")


def test_retrieval_and_probe_against_loops():
  rng = np.random.default_rng(7)
  u, t = rng.normal(size=(9, 4)), rng.normal(size=(5, 4))
  target = rng.integers(0, 5, 9)
  acc, rr = instructue.retrieval(u, t, target)
  for i in range(9):
    s = [float(u[i] @ t[j] / np.linalg.norm(u[i]) / np.linalg.norm(t[j])) for j in range(5)]
    rank = 1 + sum(s[j] >= s[target[i]] for j in range(5) if j != target[i])
    assert rr[i] == pytest.approx(1 / rank) and acc[i] == (rank == 1)
  uf, af, vf = rng.normal(size=(30, 4)), rng.integers(0, 2, 30), rng.integers(0, 3, 30)
  ut, at, vt = rng.normal(size=(10, 4)), rng.integers(0, 2, 10), rng.integers(0, 3, 10)
  got = instructue.centroid_probe(uf, af, vf, ut, at, vt, 3)
  for i in range(10):
    cents = [np.mean([x / np.linalg.norm(x) for x, a, v in zip(uf, af, vf)
                      if a == at[i] and v == c], 0) for c in range(3)]
    sims = [ut[i] @ c / np.linalg.norm(c) for c in cents]
    assert got[i] == (int(np.argmax(sims)) == vt[i])


def test_recipe_weights_and_config_errors():
  from configs.instructue_synthetic import get_config
  c = get_config()
  d = userqa.make_userqa(0, num_users=20, num_train=12, num_attrs=2, num_values=3, seq_len=4)
  np.testing.assert_array_equal(instructue.weights("cl", 0.5), [0.0, 0.5])
  np.testing.assert_array_equal(instructue.weights("ar", 0.5), [1.0, 0.0])
  s = instructue.settings(c.instructue, d)
  assert s.vocab == len(d.vocab) and s.num_events == d.num_events
  for key, bad in (("method", "x"), ("steps", 0), ("lr", 0.0), ("lmd", -1.0)):
    cfg = c.instructue.copy_and_resolve_references()
    cfg[key] = bad
    with pytest.raises(ValueError, match=f"config.instructue.{key}"):
      instructue.settings(cfg, d)
