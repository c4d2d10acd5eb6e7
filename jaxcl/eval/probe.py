"""Linear probe: multinomial logistic regression on frozen features, trained in JAX.

For features ``x_i`` (L2-normalised, then standardised with the training mean and std) and
labels ``y_i``, minimise over ``W, b``::

    L(W, b) = 1/n sum_i [ logsumexp(W x_i + b) - (W x_i + b)_{y_i} ] + l2/2 ||W||_F^2

with full-batch L-BFGS (optax). ``l2`` is chosen from a small sweep by accuracy on a
validation split carved from the training set, then the probe is refit on the whole training
set. This is scikit-learn's ``LogisticRegression(C=1/(n*l2))`` objective (intercept not
penalised). Arrays may be sharded over the 'data' mesh axis: ``jit`` partitions the matmuls
over all devices.

Example:
  >>> import numpy as np
  >>> x = np.r_[np.random.randn(50, 2) + 3, np.random.randn(50, 2) - 3].astype(np.float32)
  >>> y = np.r_[np.zeros(50), np.ones(50)].astype(np.int32)
  >>> w, b = fit_logistic(x, y, 2, l2=1e-3)
  >>> float(accuracy(predict(w, b, x), y)) > 0.95
  True
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def l2_normalize(x, eps=1e-12):
  x = jnp.asarray(x, jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps))


def logistic_objective(params, x, y, l2):
  w, b = params
  logits = x @ w + b
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.mean(ce) + 0.5 * l2 * jnp.sum(w * w)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, y, l2, num_classes, steps):
  params = (jnp.zeros((x.shape[1], num_classes), jnp.float32), jnp.zeros((num_classes,)))
  f = lambda p: logistic_objective(p, x, y, l2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(f)

  def body(_, carry):
    p, s = carry
    value, grad = value_and_grad(p, state=s)
    updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=f)
    return optax.apply_updates(p, updates), s

  return jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))[0]


def fit_logistic(x, y, num_classes, *, l2=1e-4, steps=200):
  """Minimises :func:`logistic_objective` with ``steps`` L-BFGS iterations. ``(W, b)``."""
  return _fit(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32),
              jnp.float32(l2), num_classes, steps)


def predict(w, b, x):
  return jnp.argmax(jnp.asarray(x, jnp.float32) @ w + b, axis=-1)


def accuracy(pred, y):
  return jnp.mean((jnp.asarray(pred) == jnp.asarray(y)).astype(jnp.float32))


def standardize(train, *others):
  """L2-normalise rows, then centre and scale every column by the training statistics."""
  train = l2_normalize(train)
  mean, std = jnp.mean(train, 0), jnp.std(train, 0) + 1e-6
  out = [(train - mean) / std] + [(l2_normalize(o) - mean) / std for o in others]
  return out


def split_train_val(n, fraction, seed):
  perm = np.random.default_rng(seed).permutation(n)
  n_val = max(1, int(round(n * fraction)))
  return perm[n_val:], perm[:n_val]


def linear_probe(train_x, train_y, test_x, test_y, num_classes, *, l2s=(1e-6, 1e-5, 1e-4, 1e-3),
                 steps=200, val_fraction=0.1, seed=0):
  """Picks ``l2`` on a validation split of train, refits on train, returns test accuracy.

  Returns ``{"accuracy", "l2", "val_accuracy": {l2: acc}}``.
  """
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  tr, va = split_train_val(len(train_y), val_fraction, seed)
  xtr, xva = standardize(jnp.asarray(train_x)[tr], jnp.asarray(train_x)[va])
  val = {}
  for l2 in l2s:
    w, b = fit_logistic(xtr, train_y[tr], num_classes, l2=l2, steps=steps)
    val[float(l2)] = float(accuracy(predict(w, b, xva), train_y[va]))
  best = max(val, key=lambda k: (val[k], k))
  xtrain, xtest = standardize(train_x, test_x)
  w, b = fit_logistic(xtrain, train_y, num_classes, l2=best, steps=steps)
  return {"accuracy": float(accuracy(predict(w, b, xtest), test_y)), "l2": best,
          "val_accuracy": val}
