"""LaSO: label-set operation networks (intersection, union, difference in feature space).

Alfassy, Karlinsky, Aides, Shtok, Harary, Feris, Giryes, Bronstein, "LaSO: Label-Set Operations
networks for multi-label few-shot learning", CVPR 2019, arXiv 1902.09811. Reference code:
leokarlin/LaSO, ``oneshot/setops_models/res_setops.py`` (``SetOpsResModule``,
``SetopResBlock_v1``, ``SetopResBasicBlock``) and ``scripts_coco/train_setops_stripped.py``
(``create_setops_trainer`` and the ``Main`` defaults). Not a contrastive objective: a
feature-space synthesis objective on top of a multi-label classifier.

Three networks ``M_op(a, b)`` for ``op`` in ``subtract`` (``a \\ b``), ``intersect``
(``a & b``) and ``union`` (``a | b``) map a pair of feature rows ``a, b in R^D`` to one
feature row. Each is the reference's residual block with the analytic operation as residual
``r(a, b)`` (``relu(a - b)``, ``min(a, b)``, ``a + b``)::

    h   = LeakyReLU_0.2(Norm(W_in [a; b] + c_in))                   # Linear(2D -> D)
    h   = LeakyReLU_0.2(Norm(W_l h + c_l) + r(a, b))   for l = 1..L  # L = layers (default 1)
    out = ReLU(W_out h + c_out)                                      # Linear(D -> D), ReLU

A multi-label classifier ``Cls(x) = W x + c`` (``W [C, D]``) scores real and synthesised
features; ``l(s, t) = mean_c [softplus(s_c) - t_c s_c]`` is PyTorch's
``MultiLabelSoftMarginLoss`` of one row and ``mse(x, y) = mean_d (x_d - y_d)^2``. For a pair
``(a, b)`` with multi-hot label sets ``A, B``::

    S(x, y) = M_subtract(x, y),  I = M_intersect,  U = M_union
    fake_a  = U(S(a, I(b, a)), I(a, b))           fake_b = U(S(b, I(a, b)), I(b, a))

    L_real   = l(Cls a, A) + l(Cls b, B)
    L_fake   = l(Cls fake_a, A) + l(Cls fake_b, B)
    L_rec    = mse(a, fake_a) + mse(b, fake_b)
    L_S      = l(S(a,b), A\\B) + l(S(b,a), B\\A)
    L_S_taut = l(S(S(a,b), b), A\\B) + l(S(S(b,a), a), B\\A) + l(S(a, I(a,b)), A\\B)
               + l(S(b, I(a,b)), B\\A) + l(S(b, I(b,a)), B\\A) + l(S(a, I(b,a)), A\\B)
    L_U      = l(U(a,b), A|B)      L_U_taut = l(U(U(a,b), b), A|B) + l(U(U(b,a), a), A|B)
    L_U_sym  = l(U(b,a), A|B)
    L_I, L_I_taut, L_I_sym        the same with I and A&B
    M_S_taut = sum over (x, y) in {(a, b), (b, a)} of
               mse(S(x,y), S(S(x,y), y)) + mse(S(x,y), S(x, I(x,y))) + mse(S(x,y), S(x, I(y,x)))
    M_sym    = mse(U(a,b), U(b,a)) + mse(I(a,b), I(b,a))

    L = w_real L_real + w_fake L_fake + w_reconstruction L_rec
        + w_subtract (L_S + w_tautology_class L_S_taut)
        + w_union (L_U + w_tautology_class L_U_taut + w_symmetric_class L_U_sym)
        + w_intersect (L_I + w_tautology_class L_I_taut + w_symmetric_class L_I_sym)
        + w_tautology_mse M_S_taut + w_symmetric_mse M_sym

Every weight defaults to 1.0 (:data:`WEIGHTS`), which is the reference's default objective
(its toggles on, every loss weight 1). The reference weighs the three MSE groups with its one
``recon_loss_weight``: set ``reconstruction``, ``tautology_mse`` and ``symmetric_mse`` to
that value to get its other settings. Both arguments of every MSE get gradients, as there.

Pairs within the batch. Row ``i`` (global index ``g``) is the pair's ``a``; its partner ``b``
is global row ``p(g)`` (:func:`laso_partners`): ``pairing="half"`` (default) ``p(g) = (g +
N // 2) mod N``, ``"permutation"`` a uniformly random permutation of the valid rows of the
global batch drawn from the explicit ``rng`` (a row may draw itself), or an explicit
``partners`` array. The value returned for row ``i`` is ``L`` of its pair; each term above is
a per-pair sum of per-row means, so the mean over rows is the reference's loss on the batch
of pairs (its reductions are means over the pair batch). With ``"half"`` every unordered pair
is counted once from each side (the two rows' values are equal).

``detach_classifier=True`` (default): the op terms see ``stop_gradient(Cls)``, so the
classifier learns from real features (``L_real``) only. The reference trains the op networks
against a classifier pre-trained on real images and frozen (``train_classifier=False``);
training both at once with the classifier fed by real features only is the one-stage
equivalent. ``False`` lets the op terms train the classifier too.

Choices where the reference differs or is silent (methods.md section 28):
  * LayerNorm (learned scale and bias, per row) replaces the reference's BatchNorm1d: no
    batch statistics to carry or synchronise, and a row's output does not depend on the
    other rows, so the 18 applications of the networks can be batched and sharded runs equal
    one device exactly. ``norm="none"`` drops it;
  * the hidden width is ``D`` (the reference's block also works at the input width; its
    ``ops_latent_dim`` is unused by ``SetopResBlock_v1``); no dropout (its default 0);
  * initialisation: PyTorch's default ``U(+-1/sqrt(fan_in))`` for every Linear, the
    classifier too;
  * the reference adds the S tautology MSE only when its ``I`` symmetry MSE is on (a quirk of
    its condition); here every term has its own weight;
  * focal loss (off by default there) and the L1 reconstruction option are not implemented.

Distributed semantics: features, labels and validity are gathered along ``axis_name`` (the
partner of a local row may live on another device); each device computes the values of its
own rows; ``"permutation"`` is drawn for the global batch from the one ``rng``. Value and
gradient equal the single-device call on the full batch. Float32 compute for any float input.

Recommendation: on a multi-label feature space where set operations are meaningful (features
that add up, post-ReLU), train on random pairs with all terms at weight 1; compare against the
analytic operations (:func:`analytic_op`), which are the networks' residual paths and a
strong baseline when features are sums of label prototypes.

Example:
  >>> import jax, jax.numpy as jnp, jaxcl
  >>> params = jaxcl.losses.contrib.init_laso(jax.random.key(0), dim=8, num_labels=3)
  >>> x = jax.nn.relu(jax.random.normal(jax.random.key(1), (6, 8)))
  >>> y = jnp.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]])
  >>> jaxcl.losses.contrib.laso_loss(params, x, y).shape
  (6,)
  >>> jaxcl.losses.contrib.laso_op(params, "intersect", x[:3], x[3:]).shape
  (3, 8)
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcl import collectives
from jaxcl.losses import _common as c

OPS = ("subtract", "intersect", "union")
PAIRINGS = ("half", "permutation")
NORMS = ("layer", "none")
WEIGHTS = {"real": 1.0, "fake": 1.0, "reconstruction": 1.0, "subtract": 1.0, "union": 1.0,
           "intersect": 1.0, "tautology_class": 1.0, "symmetric_class": 1.0,
           "tautology_mse": 1.0, "symmetric_mse": 1.0}
NEGATIVE_SLOPE = 0.2  # the reference's LeakyReLU(0.2)


def analytic_op(op, a, b):
  """The analytic set operation of ``op`` on feature rows (float32): ``relu(a - b)``
  (subtract), ``min(a, b)`` (intersect), ``a + b`` (union); the networks' residuals."""
  if op not in OPS:
    raise ValueError(f"analytic_op: 'op' must be one of {OPS}, got {op!r}")
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  if op == "subtract":
    return jax.nn.relu(a - b)
  return jnp.minimum(a, b) if op == "intersect" else a + b


def _linear_init(key, fan_in, fan_out):
  kw, kb = jax.random.split(key)
  bound = 1.0 / math.sqrt(fan_in)
  return {"kernel": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
          "bias": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound)}


def _norm_init(n):
  return {"scale": jnp.ones((n,), jnp.float32), "bias": jnp.zeros((n,), jnp.float32)}


def init_laso(rng, dim, num_labels, *, layers=1):
  """Parameters of the three op networks and the multi-label classifier.

  Returns ``{"subtract" | "intersect" | "union": {"input", "input_norm", "residual": [layers
  x {"dense", "norm"}], "output"}, "classifier": {"w": [num_labels, dim], "b":
  [num_labels]}}`` (PyTorch's default Linear initialisation; norm scale 1, bias 0).
  """
  fn = "init_laso"
  dim, num_labels = (c.check_int(v, 1, message=f"{fn}: '{n}' must be an int >= 1")
                     for n, v in (("dim", dim), ("num_labels", num_labels)))
  layers = c.check_int(layers, 0, message=f"{fn}: 'layers' must be an int >= 0")
  keys = jax.random.split(rng, len(OPS) + 1)
  params = {}
  for key, op in zip(keys, OPS):
    ks = jax.random.split(key, layers + 2)
    params[op] = {"input": _linear_init(ks[0], 2 * dim, dim), "input_norm": _norm_init(dim),
                  "residual": [{"dense": _linear_init(k, dim, dim), "norm": _norm_init(dim)}
                               for k in ks[2:]],
                  "output": _linear_init(ks[1], dim, dim)}
  cls = _linear_init(keys[-1], dim, num_labels)
  params["classifier"] = {"w": cls["kernel"].T, "b": cls["bias"]}
  return params


def _layer_norm(x, p, norm, eps=1e-5):
  if norm == "none":
    return x
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
  return (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _dense(x, p):
  return jnp.einsum("bi,io->bo", x, p["kernel"].astype(jnp.float32),
                    preferred_element_type=jnp.float32) + p["bias"].astype(jnp.float32)


def _net(p, op, a, b, norm):
  leaky = lambda t: jax.nn.leaky_relu(t, NEGATIVE_SLOPE)
  h = leaky(_layer_norm(_dense(jnp.concatenate([a, b], axis=-1), p["input"]),
                        p["input_norm"], norm))
  if isinstance(op, str):
    r = analytic_op(op, a, b)
  else:  # a traced index into OPS (the vmapped levels of laso_outputs)
    r = jnp.where(op == 0, analytic_op(OPS[0], a, b),
                  jnp.where(op == 1, analytic_op(OPS[1], a, b), analytic_op(OPS[2], a, b)))
  for layer in p["residual"]:
    h = leaky(_layer_norm(_dense(h, layer["dense"]), layer["norm"], norm) + r)
  return jax.nn.relu(_dense(h, p["output"]))


def _check_params(params, dim, fn):
  missing = [k for k in OPS + ("classifier",) if k not in params]
  if missing:
    raise ValueError(f"{fn}: 'params' lacks {missing} (build it with init_laso)")
  w = params[OPS[0]]["input"]["kernel"]
  if w.shape[0] != 2 * dim:
    raise ValueError(f"{fn}: 'params' were built for features of width {w.shape[0] // 2}, "
                     f"got width {dim}")


def laso_op(params, op, a, b, *, norm="layer"):
  """``M_op(a, b)``: the learned set operation ``op`` on ``[B, D]`` feature rows, float32."""
  fn = "laso_op"
  if op not in OPS:
    raise ValueError(f"{fn}: 'op' must be one of {OPS}, got {op!r}")
  if norm not in NORMS:
    raise ValueError(f"{fn}: 'norm' must be one of {NORMS}, got {norm!r}")
  a = c.embeddings("a", a, fn)
  b = c.embeddings("b", b, fn)
  if a.shape != b.shape:
    raise ValueError(f"{fn}: 'a' and 'b' must have the same shape, got {tuple(a.shape)} and "
                     f"{tuple(b.shape)}")
  _check_params(params, a.shape[1], fn)
  return _net(params[op], op, a.astype(jnp.float32), b.astype(jnp.float32), norm)


def laso_logits(params, x):
  """``Cls(x) = x W.T + b`` ``[B, C]`` float32 (the classifier of :func:`init_laso`)."""
  cls = params["classifier"] if "classifier" in params else params
  return jnp.einsum("bd,cd->bc", jnp.asarray(x).astype(jnp.float32),
                    cls["w"].astype(jnp.float32),
                    preferred_element_type=jnp.float32) + cls["b"].astype(jnp.float32)


def multilabel_soft_margin(logits, targets):
  """PyTorch's ``MultiLabelSoftMarginLoss`` of each row: ``mean_c softplus(s_c) - t_c s_c``
  (``[B]`` float32; ``targets`` multi-hot)."""
  s = jnp.asarray(logits, jnp.float32)
  t = jnp.asarray(targets, jnp.float32)
  return jnp.mean(jax.nn.softplus(s) - t * s, axis=-1)


def _mse(x, y):
  return jnp.mean(jnp.square(x - y), axis=-1)


def laso_outputs(params, a, b, *, norm="layer"):
  """The 18 synthesised features of the pairs ``(a, b)`` (the reference's
  ``SetOpsResModule.forward``), as ``{name: [B, D]}``: ``a_S_b = S(a, b)``, ``a_I_b``,
  ``a_U_b`` and their swaps, ``a_S_b_b = S(S(a,b), b)``, ``a_I_b_b``, ``a_U_b_b`` and swaps,
  ``a_S_b_I_a = S(a, I(b,a))``, ``a_S_a_I_b = S(a, I(a,b))`` and swaps, ``fake_a``,
  ``fake_b``."""
  fn = "laso_outputs"
  a = c.embeddings("a", a, fn).astype(jnp.float32)
  b = c.embeddings("b", b, fn).astype(jnp.float32)
  if norm not in NORMS:
    raise ValueError(f"{fn}: 'norm' must be one of {NORMS}, got {norm!r}")
  _check_params(params, a.shape[1], fn)
  n = a.shape[0]
  # Few network graphs (compile time): level 1 and 2 run the three networks at once (vmap over
  # the stacked parameters, each with its own residual), level 2 padding the intersection and
  # union networks' 2 pairs to the subtraction network's 6; level 3 is the union network alone.
  stacked = jax.tree.map(lambda *t: jnp.stack(t), *[params[op] for op in OPS])
  ops = jnp.arange(len(OPS))

  def level(pairs):  # pairs[k]: the (x, y) row pairs of network OPS[k], the same count each
    xs = jnp.stack([jnp.concatenate([p[0] for p in pk]) for pk in pairs])
    ys = jnp.stack([jnp.concatenate([p[1] for p in pk]) for pk in pairs])
    out = jax.vmap(lambda q, k, x, y: _net(q, k, x, y, norm))(stacked, ops, xs, ys)
    return [[out[k, m * n:(m + 1) * n] for m in range(len(pairs[k]))] for k in range(len(OPS))]

  o = {}
  (o["a_S_b"], o["b_S_a"]), (o["a_I_b"], o["b_I_a"]), (o["a_U_b"], o["b_U_a"]) = level(
      [[(a, b), (b, a)]] * 3)
  s2, i2, u2 = level([
      [(o["a_S_b"], b), (o["b_S_a"], a), (a, o["b_I_a"]), (b, o["a_I_b"]), (a, o["a_I_b"]),
       (b, o["b_I_a"])],
      [(o["a_I_b"], b), (o["b_I_a"], a)] * 3,
      [(o["a_U_b"], b), (o["b_U_a"], a)] * 3])
  (o["a_S_b_b"], o["b_S_a_a"], o["a_S_b_I_a"], o["b_S_a_I_b"], o["a_S_a_I_b"],
   o["b_S_b_I_a"]) = s2
  o["a_I_b_b"], o["b_I_a_a"] = i2[:2]
  o["a_U_b_b"], o["b_U_a_a"] = u2[:2]
  fake = _net(params["union"], "union", jnp.concatenate([o["a_S_b_I_a"], o["b_S_a_I_b"]]),
              jnp.concatenate([o["a_I_b"], o["b_I_a"]]), norm)
  o["fake_a"], o["fake_b"] = fake[:n], fake[n:]
  return o


def laso_terms(params, a, b, labels_a, labels_b, *, detach_classifier=True, norm="layer"):
  """The per-pair terms of the module docstring, ``{name: [B]}`` float32 (unweighted):
  ``real``, ``fake``, ``reconstruction``, ``subtract``, ``subtract_tautology``, ``union``,
  ``union_tautology``, ``union_symmetric``, ``intersect``, ``intersect_tautology``,
  ``intersect_symmetric``, ``subtract_tautology_mse``, ``symmetric_mse``."""
  o = laso_outputs(params, a, b, norm=norm)
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  ta, tb = jnp.asarray(labels_a) > 0, jnp.asarray(labels_b) > 0
  t_i, t_u = ta & tb, ta | tb
  t_as, t_bs = ta & ~tb, tb & ~ta
  cls = params["classifier"]
  cls_ops = jax.lax.stop_gradient(cls) if detach_classifier else cls
  lc = lambda x, t, w=cls_ops: multilabel_soft_margin(laso_logits(w, x), t)
  return {
      "real": lc(a, ta, cls) + lc(b, tb, cls),
      "fake": lc(o["fake_a"], ta) + lc(o["fake_b"], tb),
      "reconstruction": _mse(a, o["fake_a"]) + _mse(b, o["fake_b"]),
      "subtract": lc(o["a_S_b"], t_as) + lc(o["b_S_a"], t_bs),
      "subtract_tautology": (lc(o["a_S_b_b"], t_as) + lc(o["b_S_a_a"], t_bs)
                             + lc(o["a_S_a_I_b"], t_as) + lc(o["b_S_a_I_b"], t_bs)
                             + lc(o["b_S_b_I_a"], t_bs) + lc(o["a_S_b_I_a"], t_as)),
      "union": lc(o["a_U_b"], t_u),
      "union_tautology": lc(o["a_U_b_b"], t_u) + lc(o["b_U_a_a"], t_u),
      "union_symmetric": lc(o["b_U_a"], t_u),
      "intersect": lc(o["a_I_b"], t_i),
      "intersect_tautology": lc(o["a_I_b_b"], t_i) + lc(o["b_I_a_a"], t_i),
      "intersect_symmetric": lc(o["b_I_a"], t_i),
      "subtract_tautology_mse": (_mse(o["a_S_b"], o["a_S_b_b"]) + _mse(o["a_S_b"], o["a_S_a_I_b"])
                                 + _mse(o["a_S_b"], o["a_S_b_I_a"])
                                 + _mse(o["b_S_a"], o["b_S_a_a"]) + _mse(o["b_S_a"], o["b_S_a_I_b"])
                                 + _mse(o["b_S_a"], o["b_S_b_I_a"])),
      "symmetric_mse": _mse(o["a_U_b"], o["b_U_a"]) + _mse(o["a_I_b"], o["b_I_a"]),
  }


def combine_terms(terms, weights=None):
  """``L`` of the module docstring from :func:`laso_terms` and ``weights`` (missing keys:
  :data:`WEIGHTS`; an unknown key is an error)."""
  w = check_weights(weights, "combine_terms")
  return (w["real"] * terms["real"] + w["fake"] * terms["fake"]
          + w["reconstruction"] * terms["reconstruction"]
          + w["subtract"] * (terms["subtract"] + w["tautology_class"] * terms["subtract_tautology"])
          + w["union"] * (terms["union"] + w["tautology_class"] * terms["union_tautology"]
                          + w["symmetric_class"] * terms["union_symmetric"])
          + w["intersect"] * (terms["intersect"]
                              + w["tautology_class"] * terms["intersect_tautology"]
                              + w["symmetric_class"] * terms["intersect_symmetric"])
          + w["tautology_mse"] * terms["subtract_tautology_mse"]
          + w["symmetric_mse"] * terms["symmetric_mse"])


def check_weights(weights, fn):
  weights = dict(weights or {})
  unknown = sorted(set(weights) - set(WEIGHTS))
  if unknown:
    raise ValueError(f"{fn}: unknown 'weights' key(s) {unknown}; known: {sorted(WEIGHTS)}")
  return {**WEIGHTS, **{k: float(v) for k, v in weights.items()}}


def laso_partners(batch, pairing="half", *, rng=None, valid=None, axis_name=None):
  """Global row index of each local row's partner, ``[B_local]`` int32.

  ``"half"``: ``(g + N // 2) mod N`` over the global batch of ``N`` rows (``g`` the row's
  global index); ``"permutation"``: the r-th valid row (in index order) is paired with the
  r-th row of a uniformly random order of the valid rows, drawn from ``rng`` for the global
  batch (the same on every device); invalid rows keep their own index.
  """
  fn = "laso_partners"
  if pairing not in PAIRINGS:
    raise ValueError(f"{fn}: 'pairing' must be one of {PAIRINGS}, got {pairing!r}")
  valid = c.valid_mask(valid, batch, fn)
  n = batch * collectives.axis_size(axis_name)
  g = collectives.global_row_index(batch, axis_name)
  if pairing == "half":
    return ((g + n // 2) % n).astype(jnp.int32)
  if rng is None:
    raise ValueError(f"{fn}: pairing 'permutation' draws at random and needs an explicit "
                     f"'rng' key")
  ok = collectives.all_gather(valid, axis_name)
  order = jnp.argsort(jnp.where(ok, jax.random.uniform(rng, (n,)), 2.0))
  rank = jnp.clip(jnp.cumsum(ok.astype(jnp.int32)) - 1, 0, n - 1)
  out = jax.lax.dynamic_slice_in_dim(order[rank], collectives.axis_index(axis_name) * batch,
                                     batch)
  return jnp.where(valid, out, g).astype(jnp.int32)


def _multi_hot(labels, batch, fn):
  labels = jnp.asarray(labels)
  if labels.ndim != 2 or labels.shape[0] != batch:
    raise ValueError(f"{fn}: 'labels' must be multi-hot label sets of shape ({batch}, "
                     f"num_labels), got shape {tuple(labels.shape)}")
  if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
    raise TypeError(f"{fn}: 'labels' must be integer or bool multi-hot rows, got dtype "
                    f"{labels.dtype}")
  return labels > 0


def laso_loss(params, features, labels, *, pairing="half", partners=None, rng=None,
              weights=None, detach_classifier=True, norm="layer", axis_name=None, valid=None):
  """LaSO objective of each local row's pair (see the module docstring). Returns ``[B_local]``.

  Args:
    params: :func:`init_laso` parameters (op networks + classifier of ``C`` labels).
    features: ``[B, D]`` float feature rows (any float dtype; computed in float32).
    labels: ``[B, C]`` multi-hot label sets (int or bool; ``> 0`` is "in the set").
    pairing: ``"half"`` or ``"permutation"`` (:func:`laso_partners`); ignored if ``partners``.
    partners: optional ``[B]`` int global row index of each row's partner.
    rng: PRNG key for ``pairing="permutation"``.
    weights: ``{term: weight}`` overrides of :data:`WEIGHTS`.
    detach_classifier: op terms see ``stop_gradient`` of the classifier.
    norm: ``"layer"`` (LayerNorm in the op networks) or ``"none"``.
    axis_name: mesh axis name(s) inside ``shard_map``.
    valid: ``[B]`` bool: a padded row has value 0 and is nobody's partner (a row whose
      explicit partner is padded has value 0).

  Returns:
    ``[B_local]`` float32; the global mean is the loss over the batch of pairs.
  """
  fn = "laso_loss"
  features = c.embeddings("features", features, fn)
  b, d = features.shape
  if "classifier" not in params:
    raise ValueError(f"{fn}: 'params' lacks 'classifier' (build it with init_laso)")
  _check_params(params, d, fn)
  num_labels = params["classifier"]["w"].shape[0]
  targets = _multi_hot(labels, b, fn)
  if targets.shape[1] != num_labels:
    raise ValueError(f"{fn}: 'labels' has {targets.shape[1]} labels per row but the "
                     f"classifier in 'params' has {num_labels}")
  valid = c.valid_mask(valid, b, fn)
  w = check_weights(weights, fn)
  if partners is None:
    partners = laso_partners(b, pairing, rng=rng, valid=valid, axis_name=axis_name)
  else:
    partners = jnp.asarray(partners)
    if partners.shape != (b,) or not jnp.issubdtype(partners.dtype, jnp.integer):
      raise ValueError(f"{fn}: 'partners' must be int global row indices of shape ({b},), "
                       f"got {partners.dtype} {tuple(partners.shape)}")
  x = features.astype(jnp.float32)
  x_all = collectives.all_gather(x, axis_name)
  t_all = collectives.all_gather(targets, axis_name)
  ok_all = collectives.all_gather(valid, axis_name)
  n = x_all.shape[0]
  p = jnp.clip(partners.astype(jnp.int32), 0, n - 1)
  keep = valid & ok_all[p] & (partners >= 0) & (partners < n)
  terms = laso_terms(params, x, x_all[p], targets, t_all[p],
                     detach_classifier=detach_classifier, norm=norm)
  return c.finalize(combine_terms(terms, w), keep)
