"""TCL (jaxcl.losses.tcl, arXiv 2202.10401): float64 loop references written here for the
distilled InfoNCE (CMA), IMC and the local-global MI term (value and gradient by finite
differences), the CLIP / InfoNCE identities, 8 devices = 1 device and blockwise = dense (value
and gradient), bf16 and extreme inputs, argument errors; the model's locals
(``config.model.locals``: jaxcl.models.MultiModalLocals) and the trainer adapter's column
layout, alpha ramp, temperature clamp and errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from jaxcl import losses
from tests.reference import check_value_and_grad
from tests.reference import unit as _unit, lse as _lse

B, D, L = 5, 4, 3
VALID = np.array([1, 1, 0, 1, 1], bool)               # row 2 is padding
LOCAL_VALID = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]], bool)


def _data(seed, *shape):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ------------------------------------------------------------------ float64 loop references


def _ok(valid, b):
  return [True] * b if valid is None else [bool(t) for t in valid]


def ref_distilled(q, k, qt, alpha, temperature, queue=None, valid=None, k_target=None,
                  queue_target=None, t_target=None):
  """-sum_j y_ij log softmax_j(<q_i, K_j> / T) over K = [valid keys; queue], with
  y_ij = alpha softmax_j(<qt_i, K~_j> / T~) + (1 - alpha) [j = i]. The targets use their own
  copies (K~, T~: default the same) so finite differences see them as constants."""
  b = len(q)
  ok = _ok(valid, b)
  k_target = k if k_target is None else k_target
  queue_target = queue if queue_target is None else queue_target
  t_target = temperature if t_target is None else t_target
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    u = _unit(q[i])
    cands, tcands, pos = [], [], None
    for j in range(b):
      if ok[j]:
        if j == i:
          pos = len(cands)
        cands.append(float(np.dot(u, _unit(k[j]))) / temperature)
        tcands.append(float(np.dot(_unit(qt[i]), _unit(k_target[j]))) / t_target)
    for m in range(0 if queue is None else len(queue)):
      cands.append(float(np.dot(u, _unit(queue[m]))) / temperature)
      tcands.append(float(np.dot(_unit(qt[i]), _unit(queue_target[m]))) / t_target)
    lse, tlse = _lse(cands), _lse(tcands)
    for j, (s, st) in enumerate(zip(cands, tcands)):
      y = alpha * math.exp(st - tlse) + (1 - alpha) * (j == pos)
      out[i] -= y * (s - lse)
  return out


def ref_lmi(g, loc, temperature, local_valid=None, valid=None):
  """Per sample: mean over its valid locals p of -log softmax of [s(g_i, l_ip); s(g_i, l_jp')
  for every valid local p' of every other valid sample j]."""
  b, n, _ = loc.shape
  ok = _ok(valid, b)
  lv = np.ones((b, n), bool) if local_valid is None else np.asarray(local_valid, bool)
  out = np.zeros(b)
  for i in range(b):
    if not ok[i]:
      continue
    u = _unit(g[i])
    negs = [float(np.dot(u, _unit(loc[j, p]))) / temperature
            for j in range(b) if ok[j] and j != i for p in range(n) if lv[j, p]]
    mine = [p for p in range(n) if lv[i, p]]
    for p in mine:
      s = float(np.dot(u, _unit(loc[i, p]))) / temperature
      out[i] += (_lse([s] + negs) - s) / len(mine)
  return out


def ref_tcl(v, t, vm, tm, vl, tl, alpha, temperature, tl_valid=None, valid=None, imc=True,
            lmi=True, vm_target=None, tm_target=None):
  """Mean of the active terms: CMA i2t / t2i, IMC image / text, LMI image / text."""
  vm_target = vm if vm_target is None else vm_target
  tm_target = tm if tm_target is None else tm_target
  terms = [ref_distilled(v, tm, vm_target, alpha, temperature, valid=valid, k_target=tm_target),
           ref_distilled(t, vm, tm_target, alpha, temperature, valid=valid, k_target=vm_target)]
  if imc:
    terms += [ref_distilled(v, vm, vm, 0.0, temperature, valid=valid),
              ref_distilled(t, tm, tm, 0.0, temperature, valid=valid)]
  if lmi:
    terms += [ref_lmi(v, vl, temperature, valid=valid),
              ref_lmi(t, tl, temperature, local_valid=tl_valid, valid=valid)]
  return sum(terms) / len(terms)


# ------------------------------------------------------------------ value and gradient


def _check(lib_fn, ref_fn, inputs, wrt):
  return check_value_and_grad(lib_fn, ref_fn, inputs, wrt=wrt)


def test_distilled_info_nce_matches_the_loop_reference():
  q, k, qt, queue = _data(0, B, D), _data(1, B, D), _data(2, B, D), _data(3, 2, D)
  k += q
  qt += q
  k0, queue0 = k.copy(), queue.copy()
  lib = lambda q, k, qt, queue: losses.contrib.distilled_info_nce(
      q, k, teacher_query=qt, alpha=0.4, temperature=0.2, queue=queue, valid=VALID)
  ref = lambda q, k, qt, queue: ref_distilled(q, k, qt, 0.4, 0.2, queue, VALID, k_target=k0,
                                              queue_target=queue0)
  want, grads = _check(lib, ref, [q, k, qt, queue], wrt=(0, 1, 3))
  assert want[2] == 0 and np.all(want[VALID] > 0)
  assert np.all(np.asarray(grads[2]) == 0)            # the soft targets are constants


def test_traced_alpha_and_temperature():
  q, k, qt = _data(4, B, D), _data(5, B, D), _data(6, B, D)
  k += q
  t0, eps = 0.3, 1e-6
  lib = lambda t, a: jnp.sum(losses.contrib.distilled_info_nce(q, k, teacher_query=qt, alpha=a,
                                                       temperature=t))
  value, (g_t, g_a) = jax.jit(jax.value_and_grad(lib, argnums=(0, 1)))(jnp.float32(t0),
                                                                       jnp.float32(0.7))
  ref = lambda t, a: float(np.sum(ref_distilled(q, k, qt, a, t, t_target=t0)))
  np.testing.assert_allclose(value, ref(t0, 0.7), rtol=1e-5)
  np.testing.assert_allclose(g_t, (ref(t0 + eps, 0.7) - ref(t0 - eps, 0.7)) / (2 * eps),
                             rtol=1e-4)
  np.testing.assert_allclose(g_a, (ref(t0, 0.7 + eps) - ref(t0, 0.7 - eps)) / (2 * eps),
                             rtol=1e-4)


def test_lmi_matches_the_loop_reference():
  g, loc = _data(7, B, D), _data(8, B, L, D)
  loc += 0.5 * g[:, None]
  lib = lambda g, loc: losses.contrib.tcl_lmi(g, loc, local_valid=LOCAL_VALID, temperature=0.1,
                                      valid=VALID)
  ref = lambda g, loc: ref_lmi(g, loc, 0.1, LOCAL_VALID, VALID)
  want, _ = _check(lib, ref, [g, loc], wrt=(0, 1))
  assert want[2] == 0 and want[3] == 0                # padding; no valid local
  assert np.all(want[[0, 1, 4]] > 0)


def test_tcl_loss_matches_the_loop_reference():
  v, t, vm, tm = (_data(s, B, D) for s in (9, 10, 11, 12))
  vm += v
  tm += t
  vl, tl = _data(13, B, L, D), _data(14, B, L, D)
  vm0, tm0 = vm.copy(), tm.copy()
  kw = dict(alpha=0.4, temperature=0.2, valid=VALID)
  lib = lambda v, t, vm, tm, vl, tl: losses.contrib.tcl_loss(
      v, t, vm, tm, image_locals=vl, text_locals=tl, text_local_valid=LOCAL_VALID, **kw)
  ref = lambda v, t, vm, tm, vl, tl: ref_tcl(v, t, vm, tm, vl, tl, 0.4, 0.2, LOCAL_VALID,
                                             VALID, vm_target=vm0, tm_target=tm0)
  want, _ = _check(lib, ref, [v, t, vm, tm, vl, tl], wrt=(0, 1, 2, 3, 4, 5))
  assert want[2] == 0
  terms = jax.jit(lambda *xs: losses.contrib.tcl_terms(*xs[:4], image_locals=xs[4], text_locals=xs[5],
                                               text_local_valid=LOCAL_VALID, **kw))(
      v, t, vm, tm, vl, tl)
  assert sorted(terms) == sorted(losses.tcl.TERMS)
  # imc=False, lmi=False: CMA alone; identical inputs and alpha=0: CLIP.
  cma = losses.contrib.tcl_loss(v, t, vm, tm, imc=False, lmi=False, **kw)
  np.testing.assert_allclose(cma, ref_tcl(v, t, vm, tm, None, None, 0.4, 0.2, valid=VALID,
                                          imc=False, lmi=False), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(cma, losses.contrib.tcl_cma(v, t, vm, tm, **kw), rtol=1e-6)
  np.testing.assert_allclose(losses.contrib.tcl_cma(v, t, v, t, alpha=0.0, temperature=0.2),
                             losses.clip_loss(v, t, temperature=0.2), rtol=1e-6)
  np.testing.assert_allclose(losses.contrib.tcl_imc(v, t, vm, tm, temperature=0.2),
                             0.5 * (losses.info_nce(v, vm, temperature=0.2)
                                    + losses.info_nce(t, tm, temperature=0.2)), rtol=1e-6)


# ------------------------------------------------------------------ 8 devices = 1 device

NB, DIN, DOUT, NL = 16, 6, 4, 3
SVALID = np.ones(NB, bool)
SVALID[[3, 10]] = False
SLV = np.random.default_rng(20).uniform(size=(NB, NL)) > 0.3
SX = _data(21, NB, 4, DIN)
SX[:, 1:] += SX[:, :1]
SLOC = _data(22, NB, NL, DIN)
SW = (_data(23, DIN, DOUT), _data(24, DIN, DOUT))
SQUEUE = _data(25, 3, DOUT)


def _tcl_fn(axis_name, impl="dense"):
  def fn(params, x, loc, lv, valid):
    wi, wt = params
    v, t, vm, tm = x[:, 0] @ wi, x[:, 1] @ wt, x[:, 2] @ wi, x[:, 3] @ wt
    return losses.contrib.tcl_loss(v, t, vm, tm, image_locals=loc @ wi, text_locals=loc @ wt,
                           text_local_valid=lv, alpha=0.4, temperature=0.2, valid=valid,
                           image_queue=SQUEUE, text_queue=SQUEUE[::-1], axis_name=axis_name,
                           impl=impl, block_size=4)
  return fn


def test_sharded_equals_single_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(AxisType.Auto,))
  sharded = jax.shard_map(_tcl_fn("d"), mesh=mesh,
                          in_specs=(P(), P("d"), P("d"), P("d"), P("d")), out_specs=P("d"))

  def per_and_grad(f, *args):
    per, vjp = jax.vjp(lambda p: f(p, *args), SW)
    return per, vjp(jnp.full(per.shape, 1.0 / per.shape[0]))[0]

  @jax.jit
  def both(*args):
    return per_and_grad(_tcl_fn(None), *args), per_and_grad(sharded, *args)

  (v1, g1), (v8, g8) = both(SX, SLOC, SLV, SVALID)
  v1 = np.asarray(v1)
  assert np.all(np.isfinite(v1)) and np.all(v1[~SVALID] == 0) and np.all(v1[SVALID] > 0)
  np.testing.assert_allclose(v8, v1, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(g8), jax.tree.leaves(g1)):
    b = np.asarray(b)
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_blockwise_equals_dense():
  q, k, g, loc = _data(26, B, D), _data(27, B, D), _data(28, B, D), _data(29, B, L, D)

  def vg(impl):
    f = lambda q, k, g, loc: jnp.sum(
        losses.contrib.distilled_info_nce(q, k, teacher_query=g, alpha=0.3, queue=k[:2], impl=impl,
                                  block_size=2)
        + losses.contrib.tcl_lmi(g, loc, local_valid=LOCAL_VALID, impl=impl, block_size=4))
    return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(q, k, g, loc)
  dense, tiled = jax.jit(lambda: (vg("dense"), vg("blockwise")))()
  np.testing.assert_allclose(tiled[0], dense[0], rtol=1e-5)
  for a, b in zip(tiled[1], dense[1]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ precision and extremes


def test_bf16_and_extreme_inputs():
  xs = [_data(s, B, D) for s in (30, 31, 32, 33)] + [_data(34, B, L, D), _data(35, B, L, D)]

  def fn(xs, temperature=0.1):
    v, t, vm, tm, vl, tl = xs
    return losses.contrib.tcl_loss(v, t, vm, tm, image_locals=vl, text_locals=tl, alpha=0.4,
                           text_local_valid=LOCAL_VALID, temperature=temperature)
  value_grad = lambda xs, temperature: (fn(xs, temperature), jax.grad(
      lambda xs: jnp.sum(fn(xs, temperature)))(xs))
  # One compile for the float32 variants (vmapped): plain, 1e4-scaled, T = 1e-3, a zero row.
  stacked = [np.stack([x, 1e4 * x, x, np.where(np.arange(B)[(...,) + (None,) * (x.ndim - 1)]
                                                == 1, 0.0, x)]) for x in xs]
  temps = jnp.array([0.1, 0.1, 1e-3, 0.1], jnp.float32)
  (values, grads), low = jax.jit(lambda s, t, xs: (
      jax.vmap(value_grad)(s, t), fn([x.astype(jnp.bfloat16) for x in xs])))(stacked, temps, xs)
  assert np.asarray(low).dtype == np.float32
  np.testing.assert_allclose(low, values[0], rtol=2e-2, atol=2e-2)
  assert np.all(np.isfinite(np.asarray(values)))
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g, np.float32)))


# ------------------------------------------------------------------ errors


def test_bad_inputs_name_the_argument():
  v, loc = _data(40, B, D), _data(41, B, L, D)
  cases = [
      (lambda: losses.contrib.distilled_info_nce(v, v, alpha=0.4), ValueError, "'teacher_query'"),
      (lambda: losses.contrib.distilled_info_nce(v, v, teacher_query=v[:3], alpha=0.4), ValueError,
       "'teacher_query'"),
      (lambda: losses.contrib.distilled_info_nce(v, v, teacher_query=v, alpha=1.5), ValueError,
       "'alpha'"),
      (lambda: losses.contrib.distilled_info_nce(v, v, queue=v[:, :3]), ValueError, "'queue'"),
      (lambda: losses.contrib.distilled_info_nce(v, v, temperature=0.0), ValueError, "'temperature'"),
      (lambda: losses.contrib.tcl_cma(v, v[:4], v, v), ValueError, "'text'"),
      (lambda: losses.contrib.tcl_imc(v, v, v, v.astype(np.int32)), TypeError, "'text_m'"),
      (lambda: losses.contrib.tcl_lmi(v, loc[:, :, :3]), ValueError, "'locals_'"),
      (lambda: losses.contrib.tcl_lmi(v, loc[0]), ValueError, "'locals_'"),
      (lambda: losses.contrib.tcl_lmi(v, loc, local_valid=LOCAL_VALID[:, :2]), ValueError,
       "'local_valid'"),
      (lambda: losses.contrib.tcl_loss(v, v, v, v), ValueError, "'image_locals'"),
      (lambda: losses.contrib.tcl_loss(v, v, v, v, text_locals=loc[:4]), ValueError, "'text_locals'"),
      (lambda: losses.contrib.tcl_loss(v, v, v, v, image_locals=loc, image_local_valid=LOCAL_VALID[1:]),
       ValueError, "'image_local_valid'"),
      (lambda: losses.contrib.tcl_loss(v, v, v, v, lmi=False, image_queue=loc), ValueError,
       "'image_queue'"),
  ]
  for call, err, name in cases:
    with pytest.raises(err, match=name):
      call()


# ------------------------------------------------------------------ model locals and the adapter


def _local_models():
  from jaxcl import models
  from jaxcl.data.catalog import Modality
  mods = (Modality("image", "image", (4, 4, 1)), Modality("text", "tokens", (5,), vocab=7))
  vit = models.ViT(dim=8, depth=1, heads=2, patch_size=2, mlp_ratio=1)
  txt = models.TextTransformer(vocab=7, dim=8, depth=1, heads=2, max_len=5, mlp_ratio=1)
  head = models.ProjectionHead(out=3, num_layers=1, use_bn=False)
  plain = models.MultiModal(
      (models.ContrastiveModel(vit, head), models.ContrastiveModel(txt, head)), mods)
  loc = models.MultiModalLocals(
      tuple(models.LocalsModel(e.clone(return_tokens=True), head) for e in (vit, txt)), mods)
  return plain, loc


def test_multimodal_locals_appends_projected_patches_and_tokens():
  plain, loc = _local_models()
  tokens = np.array([[3, 4, 0, 0, 0], [1, 2, 3, 4, 5], [6, 0, 0, 0, 0]], np.float32)
  x = np.concatenate([_data(50, 3, 16), tokens], axis=1)
  v = jax.jit(loc.init)(jax.random.key(0), x)
  (h, z), (h0, z0), per = jax.jit(lambda v, x: (
      loc.apply(v, x), plain.apply(v, x), loc.apply(v, x, method="per_modality")))(v, x)
  assert z.shape == (3, 2 + 2 * 5, 3)            # 2 globals, then 4 (+1 pad) patches, 5 tokens
  np.testing.assert_allclose(z[:, :2], z0, rtol=1e-6, atol=1e-7)  # the same parameter tree
  np.testing.assert_allclose(h, h0, rtol=1e-6, atol=1e-7)
  # per_modality (the evaluator's view) is the plain model's: (h_m, z_m) per tower
  np.testing.assert_allclose(np.concatenate([p[0] for p in per], -1), h0, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.stack([p[1] for p in per], 1), z0, rtol=1e-6, atol=1e-7)
  nonzero = np.any(np.asarray(z) != 0, axis=-1)
  np.testing.assert_array_equal(nonzero[:, 2:7], [[1, 1, 1, 1, 0]] * 3)   # image: 4 patches
  np.testing.assert_array_equal(nonzero[:, 7:], tokens > 0)               # text: no padding


def test_locals_config_builds_and_refuses_encoders_without_tokens():
  from configs.tcl_digits import get_config
  from jaxcl import data, models
  from jaxcl.train.step import build_model
  c = get_config()
  mods = data.info("digits_captions").modalities
  assert isinstance(build_model(c.model, modalities=mods), models.MultiModalLocals)
  c.model.locals = False
  assert type(build_model(c.model, modalities=mods)) is models.MultiModal
  c.model.locals, c.model.encoder, c.model.encoder_kwargs = True, "mlp", {}
  with pytest.raises(ValueError, match="'image'.*no token outputs"):
    build_model(c.model, modalities=mods)
  with pytest.raises(ValueError, match="multimodal dataset"):
    build_model(c.model)


def test_adapter_columns_warmup_and_errors():
  from jaxcl.train import objectives
  k, m, n_loc, b, d = 2, 2, 3, 4, 5
  obj = objectives.make_objective("tcl_loss", {"alpha": 0.4, "alpha_warmup_steps": 4,
                                               "temperature": 0.1}, num_views=k * m)
  params = obj.init(None, d)
  c = m * (1 + n_loc)
  z = _data(60, b, 2 * k * c, d)
  z[:, (k + 1) * c + m + m * n_loc - 1] = 0.0    # the last text local of teacher view 1: padding
  teacher = z[:, (k + 1) * c:(k + 2) * c]
  lv = np.any(teacher[:, m + n_loc:] != 0, axis=-1)
  want = jax.jit(lambda a: losses.contrib.tcl_loss(z[:, 0], z[:, 1], teacher[:, 0], teacher[:, 1],
                                   image_locals=teacher[:, m:m + n_loc],
                                   text_locals=teacher[:, m + n_loc:], text_local_valid=lv,
                                   alpha=a, temperature=0.1))
  run = jax.jit(lambda p, s: obj.apply(p, z, None, None, None, state=s))
  for steps, alpha in ((0, 0.0), (2, 0.2), (9, 0.4)):
    per, new = run(params, {"steps": jnp.int32(steps)})
    np.testing.assert_allclose(per, want(jnp.float32(alpha)), rtol=1e-5)
    assert int(new["steps"]) == steps + 1
  assert obj.health(params, z, None)["tcl/temperature"] == pytest.approx(0.1)
  clamped = obj.project({"log_scale": jnp.float32(20.0)})["log_scale"]
  assert float(jnp.exp(-clamped)) == pytest.approx(1e-3, rel=1e-5)
  no_locals = objectives.make_objective("tcl_loss", {}, num_views=k * m)
  with pytest.raises(ValueError, match="config.model.locals"):
    no_locals.apply(no_locals.init(None, d), z[:, :2 * k * m], None, None, None)
  with pytest.raises(ValueError, match="columns"):
    no_locals.apply(no_locals.init(None, d), z[:, :7], None, None, None)
  for kw, name in (({"image_modality": 2}, "image_modality"), ({"alpha": 2.0}, "alpha"),
                   ({"temperature": 0.9}, "max_temperature"),
                   ({"alpha_warmup_steps": -1}, "alpha_warmup_steps")):
    with pytest.raises(ValueError, match=name):
      objectives.make_objective("tcl_loss", kw, num_views=k * m)
