"""SSACL (jaxcl.losses.contrib.ssacl_loss / adversarial_positive), the synthetic tables and string
augmentations (jaxcl.data.tables), and the recipe's F1 metrics, against plain-Python loops."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses
from jaxcl.data import tables
from jaxcl.recipes import table_integration as ti


def _bilinear(w):
  # classify(a, b) = sum_k a_k w_k b_k (its gradient in b is a * w: an analytic FGSM direction)
  return lambda a, b: jnp.sum(a * w * b, axis=-1)


def _ref_loss(w, anchor, pos, neg, eps, w_adv):
  """float64 loops: per anchor, binary NCE over its pairs + w_adv * the FGSM positive's NLL."""
  sig = lambda s: 1.0 / (1.0 + jnp.exp(-s))
  out = []
  for i in range(anchor.shape[0]):
    a = anchor[i]
    terms = [-jnp.log(sig(jnp.sum(a * w * p))) for p in pos[i]]
    terms += [-jnp.log(1.0 - sig(jnp.sum(a * w * q))) for q in neg[i]]
    nce = sum(terms) / len(terms)
    a0 = jax.lax.stop_gradient(a)
    s0 = jnp.sum(a0 * w * a0)
    g = -(1.0 - sig(s0)) * a0 * w            # d/db [-log sig(a.w.b)] at b = a
    e_adv = a0 + eps * g / jnp.linalg.norm(g)
    out.append(nce + w_adv * -jnp.log(sig(jnp.sum(a * w * e_adv))))
  return jnp.stack(out)


@pytest.fixture(scope="module")
def pair_data():
  rng = np.random.default_rng(0)
  b, p, q, d = 3, 2, 4, 5
  return (rng.normal(size=d), rng.normal(size=(b, d)), rng.normal(size=(b, p, d)),
          rng.normal(size=(b, q, d)))


def test_ssacl_value_and_gradient_match_loop(pair_data):
  with jax.enable_x64(True):
    w, a, p, q = (jnp.asarray(v, jnp.float64) for v in pair_data)

    def ours(a, p, q, w):
      return jnp.sum(losses.contrib.ssacl_loss(_bilinear(w), a, p, q, epsilon=0.3, w_adv=0.7))

    def ref(a, p, q, w):
      return jnp.sum(_ref_loss(w, a, p, q, 0.3, 0.7))

    v1, g1 = jax.jit(jax.value_and_grad(ours, argnums=(0, 1, 2, 3)))(a, p, q, w)
    v2, g2 = jax.jit(jax.value_and_grad(ref, argnums=(0, 1, 2, 3)))(a, p, q, w)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    for x, y in zip(g1, g2):
      np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_adversarial_step_raises_the_loss_and_stays_in_the_ball(pair_data):
  w, a, _, _ = (jnp.asarray(v, jnp.float32) for v in pair_data)
  f = _bilinear(w)
  nll = lambda b: -jax.nn.log_sigmoid(f(a, b))
  for steps in (1, 3):
    e = jax.jit(lambda a, s=steps: losses.contrib.adversarial_positive(f, a, 0.2, pgd_steps=s))(a)
    assert np.all(np.asarray(nll(e)) > np.asarray(nll(a)))          # the corrected + sign
    assert np.all(np.linalg.norm(np.asarray(e - a), axis=-1) <= 0.2 + 1e-5)
  # bf16 inputs: float32 results, finite
  out = losses.contrib.ssacl_loss(f, a.astype(jnp.bfloat16), jnp.ones((3, 1, 5), jnp.bfloat16),
                          jnp.zeros((3, 0, 5), jnp.bfloat16))
  assert out.dtype == jnp.float32 and np.all(np.isfinite(out))


def test_ssacl_bad_inputs_name_the_argument():
  f = _bilinear(jnp.ones(4))
  a = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="'positives'"):
    losses.contrib.ssacl_loss(f, a, jnp.ones((3, 1, 4)), jnp.ones((2, 1, 4)))
  with pytest.raises(TypeError, match="'anchor'"):
    losses.contrib.ssacl_loss(f, jnp.ones((2, 4), jnp.int32), jnp.ones((2, 1, 4)), jnp.ones((2, 1, 4)))
  with pytest.raises(ValueError, match="'w_adv'"):
    losses.contrib.ssacl_loss(f, a, jnp.ones((2, 1, 4)), jnp.ones((2, 1, 4)), w_adv=-1.0)
  with pytest.raises(ValueError, match="'epsilon'"):
    losses.contrib.adversarial_positive(f, a, -0.1)
  with pytest.raises(ValueError, match="'noise'"):
    tables.corrupt("a b | c | d | e", np.random.default_rng(0), 2.0)
  with pytest.raises(ValueError, match="'op'"):
    tables.augment("a b | c | d | e", np.random.default_rng(0), op="nope")
  with pytest.raises(TypeError, match="'rng'"):
    tables.typo("word", 0)
  with pytest.raises(ValueError, match="'num_entities'"):
    tables.make_table(0, 0)
  with pytest.raises(ValueError, match="'pred_sets'"):
    ti.set_f1([], np.zeros(3))


def test_augmentations_against_loops():
  t = "john smith | acme corporation | new york | senior software engineer"
  pool = ["mary lee | wonka limited | boston | data analyst"]
  for seed in range(30):
    for op in tables.AUG_OPS:
      out = tables.augment(t, np.random.default_rng(seed), pool, op=op)
      a, b = tables.split(t), tables.split(out)
      assert len(b) == 4
      diff = [k for k in range(4) if a[k] != b[k]]
      assert len(diff) <= 1                       # every operation touches one attribute
      if not diff:
        continue
      k = diff[0]
      wa, wb = a[k].split(" "), b[k].split(" ")
      if op == "attr_remove":
        assert b[k] == ""
      elif op == "attr_substitute":
        assert b[k] == tables.split(pool[0])[k]
      elif op == "word_remove":
        assert any(wa[:i] + wa[i + 1:] == wb for i in range(len(wa)))
      elif op == "word_swap":
        assert sorted(wa) == sorted(wb) and sum(x != y for x, y in zip(wa, wb)) == 2
      elif op == "word_substitute":
        changed = [(x, y) for x, y in zip(wa, wb) if x != y]
        assert len(changed) == 1 and any(set(changed[0]) <= set(g) for g in tables.SYNONYMS)
      else:
        changed = [(x, y) for x, y in zip(wa, wb) if x != y]
        assert len(changed) == 1 and _edit_distance(*changed[0]) <= 2   # one edit (swap = 2)


def _edit_distance(x, y):
  d = list(range(len(y) + 1))
  for i in range(1, len(x) + 1):
    prev, d[0] = d[0], i
    for j in range(1, len(y) + 1):
      prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x[i - 1] != y[j - 1]))
  return d[-1]


def test_tables_structure_and_hashing():
  t = tables.make_table(3, 10, noise=0.3)
  ent = t.entity
  assert len(t.tuples) == len(ent) and set(ent.tolist()) == set(range(10))
  assert all(np.sum(ent == k) >= 2 for k in range(10))     # every entity has a duplicate
  assert tables.make_table(3, 10, noise=0.3).tuples == t.tuples   # seeded
  x = tables.hash_ngrams(t.tuples[:3], dim=64)
  import zlib
  for r, s in enumerate(t.tuples[:3]):           # loop reference of the featuriser
    c = np.zeros(64)
    for w in s.replace("|", " # ").split():
      w = f" {w} "
      for i in range(len(w) - 2):
        c[zlib.crc32(w[i:i + 3].encode()) % 64] += 1
    c = np.log1p(c)
    np.testing.assert_allclose(x[r], c / np.linalg.norm(c), rtol=1e-5)
  assert tables.corrupt(t.tuples[0], np.random.default_rng(0), 0.0).count("|") == 3


def test_f1_metrics_against_loops():
  rng = np.random.default_rng(1)
  ent = rng.integers(0, 5, size=12)
  prob = rng.random((12, 12))
  prob = (prob + prob.T) / 2
  m = ti.evaluate(prob, ent, 0.6, seed=0)
  tp = fp = fn = 0
  for i, j in itertools.combinations(range(12), 2):
    pred, true = prob[i, j] > 0.6, ent[i] == ent[j]
    tp += pred and true
    fp += pred and not true
    fn += true and not pred
  p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
  assert math.isclose(m["pair_f1"], 2 * p * r / (p + r) if p + r else 0.0)
  # set-level F1 by hand: predicted {0,1}, {2}, {3,4}; truth {0,1}, {2,3}, {4}
  sets = [{0, 1}, {2}, {3, 4}]
  assert math.isclose(ti.set_f1(sets, np.array([7, 7, 8, 8, 9])), 1 / 3)
  assert ti.set_f1([{0, 1}, {2}], np.array([0, 0, 1])) == 1.0
  comms = ti.communities(prob, 0.6, 0)
  assert sorted(i for c in comms for i in c) == list(range(12))   # a partition


@pytest.mark.long
def test_recipe_runs_and_shares_one_compile(tmp_path):
  from configs.table_integration_synthetic import get_config
  c = get_config()
  c.data.update(train_entities=12, test_entities=8)
  c.table_integration.update(steps=2, hash_dim=32, hidden=8, dim=4, head_hidden=4, batch=4,
                             n_neg=2, pool=2)
  out = ti.train(c, str(tmp_path))
  assert 0.0 <= out["pair_f1@0.2"] <= 1.0 and np.isfinite(out["train/loss"])
  n = ti.run_steps._cache_size()
  c.table_integration.w_adv = 0.0
  ti.fit(c, 0)
  assert ti.run_steps._cache_size() == n        # w_adv / epsilon are traced
  c.table_integration.batch = 0
  with pytest.raises(ValueError, match="config.table_integration.batch"):
    ti.fit(c, 0)
