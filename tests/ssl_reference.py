"""Float64 NumPy loop references for the self-supervised recipes (SwAV, MoCHi, truncated
InfoNCE, Sinkhorn, entropic OT, k-means), written from the equations in methods.md, plus a
shared-mesh helper for the sharded-equals-single-device tests."""
import jax
import numpy as np

N_DEV = 8


def mesh():
  return jax.make_mesh((N_DEV,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def shard(fn, in_specs, out_specs):
  return jax.jit(jax.shard_map(fn, mesh=mesh(), in_specs=in_specs, out_specs=out_specs))


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lse(values):
  values = np.asarray(values, np.float64)
  m = values.max()
  return m + np.log(np.sum(np.exp(values - m)))


# ------------------------------------------------------------------ Sinkhorn / OT

def sinkhorn_swav(scores, epsilon, num_iters):
  """facebookresearch/swav ``distributed_sinkhorn`` on one device, float64, raw exp."""
  q = np.exp(np.asarray(scores, np.float64).T / epsilon)          # [K, B]
  k, b = q.shape
  q = q / q.sum()
  for _ in range(num_iters):
    q = q / q.sum(axis=1, keepdims=True) / k
    q = q / q.sum(axis=0, keepdims=True) / b
  return (q * b).T


def entropic_ot(cost, epsilon, num_iters, a=None, b=None):
  """Scaling-form Sinkhorn: ``u = a / (K v)``, ``v = b / (K.T u)``, ``P = diag(u) K diag(v)``."""
  cost = np.asarray(cost, np.float64)
  n, m = cost.shape
  a = np.full(n, 1.0 / n) if a is None else np.asarray(a, np.float64)
  b = np.full(m, 1.0 / m) if b is None else np.asarray(b, np.float64)
  kern = np.exp(-cost / epsilon)
  v = np.ones(m)
  for _ in range(num_iters):
    u = a / (kern @ v)
    v = b / (kern.T @ u)
  return u[:, None] * kern * v[None, :]


# ------------------------------------------------------------------ SwAV

def swav(scores, temperature, epsilon, num_iters, num_global, queue=None, codes=None):
  """Per-example SwAV loss: loops over assigned crops, other crops, prototypes.

  ``codes`` (one ``[B, K]`` per assigned crop) freezes the targets, for finite differences.
  """
  scores = [np.asarray(s, np.float64) for s in scores]
  v, (b, k) = len(scores), scores[0].shape
  out = np.zeros(b)
  for s in range(num_global):
    rows = scores[s] if queue is None else np.concatenate([queue[s], scores[s]])
    q = (sinkhorn_swav(rows, epsilon, num_iters)[rows.shape[0] - b:] if codes is None
         else codes[s])
    for i in range(b):
      sub = 0.0
      for u in range(v):
        if u == s:
          continue
        logz = lse(scores[u][i] / temperature)
        sub += -sum(q[i, j] * (scores[u][i, j] / temperature - logz) for j in range(k))
      out[i] += sub / (v - 1)
  return out / num_global


# ------------------------------------------------------------------ MoCHi / truncated

def mochi_synthetic(q, k, queue, draws, num_hard, mine_batch=True):
  """Per-row synthetic negatives from the hardest-first pool (own positive excluded); with
  ``mine_batch=False`` the pool is the queue alone."""
  q, k = unit(q), unit(k)
  first, second, alpha, partner, beta = [np.asarray(d) for d in draws]
  out = []
  for i in range(q.shape[0]):
    pool = [k[j] for j in range(k.shape[0]) if j != i and mine_batch]
    if queue is not None:
      pool += list(unit(queue))
    pool = np.array(pool)
    order = np.argsort(-(pool @ q[i]), kind="stable")[:num_hard]
    hard = pool[order]
    rows = [alpha[i, m] * hard[first[i, m]] + (1 - alpha[i, m]) * hard[second[i, m]]
            for m in range(first.shape[1])]
    rows += [beta[i, m] * q[i] + (1 - beta[i, m]) * hard[partner[i, m]]
             for m in range(partner.shape[1])]
    out.append(unit(np.array(rows)) if rows else np.zeros((0, q.shape[1])))
  return np.array(out)


def mochi(q, k, temperature, synthetic, queue=None):
  """Per-example InfoNCE with in-batch + queue negatives and fixed per-row synthetic ones."""
  q, k = unit(q), unit(k)
  out = []
  for i in range(q.shape[0]):
    logits = [q[i] @ k[j] / temperature for j in range(k.shape[0])]
    if queue is not None:
      logits += [q[i] @ n / temperature for n in unit(queue)]
    logits += [q[i] @ h / temperature for h in synthetic[i]]
    out.append(-q[i] @ k[i] / temperature + lse(logits))
  return np.array(out)


def truncated(q, k, temperature, num_negatives, valid=None, hard_sets=None):
  """Per-example InfoNCE over the positive and the ``num_negatives`` most similar negatives.

  ``hard_sets`` (per row, indices into ``k``) freezes the selection, for finite differences.
  """
  q, k = unit(q), unit(k)
  b = q.shape[0]
  valid = np.ones(b, bool) if valid is None else np.asarray(valid)
  out = np.zeros(b)
  for i in range(b):
    if not valid[i]:
      continue
    if hard_sets is None:
      negs = [j for j in range(b) if j != i and valid[j]]
      chosen = sorted(negs, key=lambda j: -(q[i] @ k[j]))[:num_negatives]
    else:
      chosen = hard_sets[i]
    logits = [q[i] @ k[i] / temperature] + [q[i] @ k[j] / temperature for j in chosen]
    out[i] = -q[i] @ k[i] / temperature + lse(logits)
  return out


# ------------------------------------------------------------------ finite differences

def fd_directional(f, x, direction, eps=1e-6):
  x = np.asarray(x, np.float64)
  return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
