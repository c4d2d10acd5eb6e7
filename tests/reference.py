"""Independent float64 NumPy references for jaxcl's objectives and metrics.

Written from the equations of issue 2 and of each loss module's docstring with explicit Python
loops over anchors, positives and candidates; nothing here calls or mirrors library code.
Every loss returns the per-example vector (padded rows 0); ``fd_coords`` / ``fd_directional``
differentiate any of them by central finite differences in float64.
"""
from __future__ import annotations

import math

import numpy as np


def _unit(x):
  x = np.asarray(x, np.float64)
  n = math.sqrt(float(np.dot(x, x)))
  return x / n if n > 0 else x * 0.0


def _prep(x, normalize):
  x = np.asarray(x, np.float64)
  if not normalize:
    return x.copy()
  flat = x.reshape(-1, x.shape[-1])
  return np.stack([_unit(r) for r in flat]).reshape(x.shape)


def _lse(values):
  values = list(values)
  m = max(values)
  return m + math.log(sum(math.exp(v - m) for v in values))


# Shared by the loop references of the per-method test files.
unit, lse = _unit, _lse


def _flags(valid, b):
  return [True] * b if valid is None else [bool(v) for v in np.asarray(valid)]


def info_nce(q, k, temperature, negatives=None, sample_ids=None, valid=None, normalize=True):
  """-s(q_i, k_i) + log(sum over valid keys without the anchor's id (k_i kept) + negatives)."""
  q, k = _prep(q, normalize), _prep(k, normalize)
  b = len(q)
  ok = _flags(valid, b)
  neg = None if negatives is None else _prep(negatives, normalize)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    cands = []
    for j in range(b):
      if not ok[j]:
        continue
      if j != i and sample_ids is not None and sample_ids[j] == sample_ids[i]:
        continue
      cands.append(np.dot(q[i], k[j]) / temperature)
    if neg is not None and neg.ndim == 3:  # every anchor sees the hard negatives of all valid rows
      for r in range(b):
        if ok[r]:
          for m in range(neg.shape[1]):
            cands.append(np.dot(q[i], neg[r, m]) / temperature)
    elif neg is not None:  # shared negatives, once
      for m in range(neg.shape[0]):
        cands.append(np.dot(q[i], neg[m]) / temperature)
    out[i] = _lse(cands) - np.dot(q[i], k[i]) / temperature
  return out


def clip_loss(a, b, temperature, sample_ids=None, valid=None, normalize=True):
  kw = dict(sample_ids=sample_ids, valid=valid, normalize=normalize)
  return 0.5 * (info_nce(a, b, temperature, **kw) + info_nce(b, a, temperature, **kw))


def _two_view(z1, z2, temperature, sample_ids, valid, normalize, decoupled, weights):
  z = [_prep(z1, normalize), _prep(z2, normalize)]
  b = len(z[0])
  ok = _flags(valid, b)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    total = 0.0
    for v in range(2):
      cands = []
      for j in range(b):
        if not ok[j]:
          continue
        if j != i and sample_ids is not None and sample_ids[j] == sample_ids[i]:
          continue
        if decoupled and j == i:
          continue
        for w in range(2):
          if j == i and w == v:
            continue
          cands.append(np.dot(z[v][i], z[w][j]) / temperature)
      pos = np.dot(z[0][i], z[1][i]) / temperature
      total += _lse(cands) - weights[i] * pos
    out[i] = total / 2
  return out


def nt_xent(z1, z2, temperature, sample_ids=None, valid=None, normalize=True):
  b = len(z1)
  return _two_view(z1, z2, temperature, sample_ids, valid, normalize, False, np.ones(b))


def dcl(z1, z2, temperature, sample_ids=None, valid=None, normalize=True):
  b = len(z1)
  return _two_view(z1, z2, temperature, sample_ids, valid, normalize, True, np.ones(b))


def dclw_weights(z1, z2, sigma, valid=None, normalize=True):
  """w_i = 2 - N exp(p_i / sigma) / sum_j exp(p_j / sigma) over the valid rows (N of them)."""
  u1, u2 = _prep(z1, normalize), _prep(z2, normalize)
  b = len(u1)
  ok = _flags(valid, b)
  p = [float(np.dot(u1[i], u2[i])) for i in range(b)]
  n = sum(ok)
  denom = sum(math.exp(p[j] / sigma) for j in range(b) if ok[j])
  return np.array([2.0 - n * math.exp(p[i] / sigma) / denom if ok[i] else 0.0 for i in range(b)])


def dclw(z1, z2, temperature, sigma=0.5, sample_ids=None, valid=None, normalize=True,
         weights=None):
  """``weights`` overrides the vMF weights (the gradient treats them as constants)."""
  if weights is None:
    weights = dclw_weights(z1, z2, sigma, valid, normalize)
  return _two_view(z1, z2, temperature, sample_ids, valid, normalize, True, weights)


def _softplus(x):
  return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def siglip_loss(a, b, temperature, bias, sample_ids=None, valid=None, normalize=True):
  """sum_j -log sigmoid(z_ij (<a_i, b_j>/T + bias)), z=+1 on i==j (or equal ids), -1 else."""
  a, b_ = _prep(a, normalize), _prep(b, normalize)
  n = len(a)
  ok = _flags(valid, n)
  out = np.zeros(n)
  for i in range(n):
    if not ok[i]:
      continue
    for j in range(n):
      if not ok[j]:
        continue
      z = 1.0 if (i == j or (sample_ids is not None and sample_ids[i] == sample_ids[j])) else -1.0
      logit = np.dot(a[i], b_[j]) / temperature + bias
      out[i] += _softplus(-z * logit)  # -log sigmoid(x) = softplus(-x)
  return out


def supcon(features, labels, temperature, base_temperature=None, valid=None, normalize=True):
  f = _prep(features, normalize)
  b, nv, _ = f.shape
  ok = _flags(valid, b)
  factor = 1.0 if base_temperature is None else temperature / base_temperature
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    acc = 0.0
    for v in range(nv):
      others = [(j, w) for j in range(b) for w in range(nv) if ok[j] and (j, w) != (i, v)]
      lse = _lse(np.dot(f[i, v], f[j, w]) / temperature for j, w in others)
      pos = [(j, w) for j, w in others if labels[j] == labels[i]]
      if not pos:
        continue  # an anchor without positive contributes 0
      acc += -factor * sum(np.dot(f[i, v], f[j, w]) / temperature - lse for j, w in pos) / len(pos)
    out[i] = acc / nv
  return out


def mv_info_nce(views, temperature, valid=None, normalize=True):
  z = _prep(views, normalize)
  b, nk, _ = z.shape
  ok = _flags(valid, b)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    num = [np.dot(z[i, k], z[i, l]) / temperature for k in range(nk) for l in range(nk) if k != l]
    den = [np.dot(z[i, k], z[j, m]) / temperature
           for k in range(nk) for j in range(b) for m in range(nk)
           if ok[j] and (j, m) != (i, k)]
    out[i] = -_lse(num) + _lse(den)
  return out


def mv_dhel(views, temperature, valid=None, normalize=True):
  z = _prep(views, normalize)
  b, nk, _ = z.shape
  ok = _flags(valid, b)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    num = [np.dot(z[i, k], z[i, l]) / temperature for k in range(nk) for l in range(k + 1, nk)]
    val = -_lse(num)
    for k in range(nk):
      val += _lse(np.dot(z[i, k], z[j, k]) / temperature for j in range(b) if ok[j] and j != i)
    out[i] = val
  return out


def mv_average(views, temperature, valid=None, normalize=True):
  """1/K sum_k of the two-anchor NT-Xent of (z^k_i, m^k_i), m^k = mean of the other views
  (after normalising each view, the mean itself not re-normalised)."""
  z = _prep(views, normalize)
  b, nk, _ = z.shape
  ok = _flags(valid, b)
  out = np.zeros(b)
  for k in range(nk):
    m = [sum(z[i, l] for l in range(nk) if l != k) / (nk - 1) for i in range(b)]
    rows = {(0, i): z[i, k] for i in range(b) if ok[i]}
    rows.update({(1, i): m[i] for i in range(b) if ok[i]})
    for i in range(b):
      if not ok[i]:
        continue
      for side in (0, 1):
        a, p = rows[(side, i)], rows[(1 - side, i)]
        lse = _lse(np.dot(a, r) / temperature for key, r in rows.items() if key != (side, i))
        out[i] += 0.5 * (lse - np.dot(a, p) / temperature) / nk
  return out

def _mip(vectors):
  return float(np.sum(np.prod(np.stack(vectors), axis=0)))


def symile(modalities, temperature, negatives="n_squared", perms=None, valid=None,
           normalize=True):
  """(1/M) sum_m [-MIP_i/T + log sum_c exp MIP(r^m_i, c)/T].

  ``n_squared``: c ranges over every tuple of valid non-anchor rows. ``n``: ``perms[m][o]`` is
  the permutation of the batch used for non-anchor modality ``o`` when ``m`` anchors; candidate
  ``j != i`` is built from rows ``perms[m][o][j]`` (valid only if all of them are), plus the
  positive (which replaces the diagonal).
  """
  r = [_prep(x, normalize) for x in modalities]
  nm, b = len(r), len(r[0])
  ok = _flags(valid, b)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    pos = _mip([x[i] for x in r]) / temperature
    total = 0.0
    for m in range(nm):
      others = [o for o in range(nm) if o != m]
      cands = []
      if negatives == "n_squared":
        for combo in np.ndindex(*([b] * len(others))):
          if all(ok[j] for j in combo):
            cands.append(_mip([r[m][i]] + [r[o][j] for o, j in zip(others, combo)]) / temperature)
      else:
        cands.append(pos)
        for j in range(b):
          if j == i:
            continue
          rows = [int(perms[m][o][j]) for o in others]
          if all(ok[x] for x in rows):
            cands.append(_mip([r[m][i]] + [r[o][x] for o, x in zip(others, rows)]) / temperature)
      total += _lse(cands) - pos
    out[i] = total / nm
  return out


# ---------------------------------------------------------------- metrics


def alignment(z1, z2, alpha=2):
  z1, z2 = _prep(z1, True), _prep(z2, True)
  return float(np.mean([np.linalg.norm(z1[i] - z2[i]) ** alpha for i in range(len(z1))]))


def uniformity(z, t=2):
  z = _prep(z, True)
  vals = [math.exp(-t * float(np.sum((z[i] - z[j]) ** 2)))
          for i in range(len(z)) for j in range(len(z)) if i != j]
  return math.log(sum(vals) / len(vals))


def tolerance(z, labels):
  z = _prep(z, True)
  sims = [float(np.dot(z[i], z[j])) for i in range(len(z)) for j in range(len(z))
          if i != j and labels[i] == labels[j]]
  return float(np.mean(sims)) if sims else 0.0


def effective_rank(z):
  s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  p = s / s.sum()
  return math.exp(-sum(float(x) * math.log(x) for x in p if x > 0))


# ---------------------------------------------------------------- finite differences


def fd_coords(f, x, coords, eps=1e-6):
  """Central finite differences of ``f`` w.r.t. the listed coordinates of ``x``."""
  x = np.array(x, np.float64)
  out = []
  for idx in coords:
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    out.append((f(xp) - f(xm)) / (2 * eps))
  return np.array(out)


def fd_directional(f, x, direction, eps=1e-6):
  """Central finite-difference derivative of ``f`` at ``x`` along ``direction``."""
  x = np.array(x, np.float64)
  return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)


def check_value_and_grad(lib_fn, ref_fn, inputs, wrt=None, atol=1e-6):
  """The library's per-example values equal the float64 reference's (rtol 1e-5) and its
  gradient of ``sum_i w_i loss_i`` (fixed random weights) matches central differences of the
  reference, one coordinate per row plus one random direction, for the inputs ``wrt``
  (default all). Returns ``(reference values, library gradients w.r.t. every input)``."""
  import jax
  import jax.numpy as jnp
  want = ref_fn(*inputs)
  w = np.random.default_rng(99).uniform(0.5, 1.5, size=len(want))
  idx = tuple(range(len(inputs)))
  values, grads = jax.jit(lambda *xs: (lib_fn(*xs), jax.grad(
      lambda *xs: jnp.sum(w * lib_fn(*xs)), argnums=idx)(*xs)))(*inputs)
  values = np.asarray(values)
  assert values.dtype == np.float32 and values.shape == want.shape
  np.testing.assert_allclose(values, want, rtol=1e-5, atol=atol)
  rng = np.random.default_rng(5)
  for n in (idx if wrt is None else wrt):
    x = inputs[n]
    scalar = lambda xn, n=n: float(np.dot(w, ref_fn(*[xn if m == n else z
                                                      for m, z in enumerate(inputs)])))
    got = np.asarray(grads[n], np.float64)
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 0
    tol = lambda want: dict(rtol=2e-4, atol=2e-4 * max(1e-3, np.abs(want).max()))
    coords = [i + (int(rng.integers(x.shape[-1])),) for i in np.ndindex(*x.shape[:-1])]
    fd = fd_coords(scalar, x, coords)
    np.testing.assert_allclose([got[c] for c in coords], fd, **tol(fd))
    direction = rng.normal(size=x.shape)
    fd = fd_directional(scalar, x, direction)
    np.testing.assert_allclose(np.sum(got * direction), fd, **tol(fd))
  return want, grads
