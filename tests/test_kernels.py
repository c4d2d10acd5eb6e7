"""Blockwise and ring kernels equal the dense kernel: values and gradients.

Every comparison is float32 against ``impl="dense"`` on the same inputs, at 1e-5 relative
(values elementwise; gradients relative to the largest entry of the reference gradient), on
shapes where the rows are not a multiple of the block, with padding (``valid``), duplicate
``sample_ids`` and hard negatives. Gradients are taken w.r.t. every float input and a traced
temperature (and SigLIP's bias). The ring runs inside ``jax.shard_map`` on 2, 4 and 8 of the
8 virtual CPU devices (conftest) and on a 2 x 4 mesh with a tuple axis name.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxcl
from jaxcl.kernels import contrastive_lse, sigmoid_row_sum
from jaxcl.kernels import blockwise
from jaxcl.losses import _common as c

RTOL = 1e-5
D = 8
BLOCK = 4  # rows per device below are never a multiple of it


def _close(actual, expected, what):
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape, what
  assert np.all(np.isfinite(actual)), what
  scale = max(float(np.max(np.abs(expected))), 1e-30)
  np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def _normal(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _weights(n):
  """Fixed non-uniform per-row weights so gradients see every row differently."""
  return 0.5 + jnp.cos(jnp.arange(n, dtype=jnp.float32)) ** 2


# ---------------------------------------------------------------------------------------------
# The objectives, each as (arrays, batch-sharded) -> per-example losses.

B = 13  # single-device batch: not a multiple of BLOCK (nor of 2 * BLOCK, views stacked)


def _inputs(b, seed=0):
  """Embeddings for every objective; rows 3 and 4 share an id, the last two rows are padding."""
  ids = jnp.arange(b, dtype=jnp.int32).at[4].set(3).at[b - 3].set(1)
  valid = jnp.arange(b) < b - 2
  return {
      "a": _normal(seed, (b, D)),
      "b": _normal(seed + 1, (b, D)),
      "hard": _normal(seed + 2, (b, 2, D)),
      "shared": _normal(seed + 3, (3, D)),
      "views": _normal(seed + 4, (b, 3, D)),
      "labels": jnp.arange(b, dtype=jnp.int32) % 4,
      "ids": ids,
      "valid": valid,
  }


def _info_nce_hard(x, t, **kw):
  return jaxcl.losses.info_nce(x["a"], x["b"], temperature=t, negatives=x["hard"],
                               sample_ids=x["ids"], valid=x["valid"], **kw)


def _info_nce_shared(x, t, **kw):
  return jaxcl.losses.info_nce(x["a"], x["b"], temperature=t, negatives=x["shared"],
                               sample_ids=x["ids"], valid=x["valid"], **kw)


def _clip(x, t, **kw):
  return jaxcl.losses.clip_loss(x["a"], x["b"], temperature=t, sample_ids=x["ids"],
                                valid=x["valid"], **kw)


def _nt_xent(x, t, **kw):
  return jaxcl.losses.nt_xent(x["a"], x["b"], temperature=t, sample_ids=x["ids"],
                              valid=x["valid"], **kw)


def _dcl(x, t, **kw):
  return jaxcl.losses.dcl(x["a"], x["b"], temperature=t, sample_ids=x["ids"], valid=x["valid"],
                          **kw)


def _dclw(x, t, **kw):
  return jaxcl.losses.dclw(x["a"], x["b"], temperature=t, sample_ids=x["ids"],
                           valid=x["valid"], **kw)


def _supcon(x, t, **kw):
  return jaxcl.losses.supcon(x["views"][:, :2], x["labels"], temperature=t, valid=x["valid"],
                             **kw)


def _mv_info_nce(x, t, **kw):
  return jaxcl.losses.mv_info_nce(x["views"], temperature=t, valid=x["valid"], **kw)


def _mv_dhel(x, t, **kw):
  return jaxcl.losses.mv_dhel(x["views"], temperature=t, valid=x["valid"], **kw)


def _siglip(x, t, **kw):
  return jaxcl.losses.siglip_loss(x["a"], x["b"], temperature=t, bias=x["bias"],
                                  sample_ids=x["ids"], valid=x["valid"], **kw)


def _symile_n(x, t, **kw):
  return jaxcl.losses.symile([x["a"], x["b"], x["views"][:, 0]], temperature=t, negatives="n",
                             rng=jax.random.key(7), valid=x["valid"], **kw)


def _symile_n2(x, t, **kw):
  return jaxcl.losses.symile([x["a"], x["b"], x["views"][:, 0]], temperature=t,
                             negatives="n_squared", valid=x["valid"], **kw)


OBJECTIVES = {
    "info_nce_hard": _info_nce_hard,
    "info_nce_shared": _info_nce_shared,
    "clip_loss": _clip,
    "nt_xent": _nt_xent,
    "dcl": _dcl,
    "dclw": _dclw,
    "supcon": _supcon,
    "mv_info_nce": _mv_info_nce,
    "mv_dhel": _mv_dhel,
    "siglip_loss": _siglip,
    "symile_n": _symile_n,
    "symile_n_squared": _symile_n2,
}
# Inputs that receive a gradient, and those that are replicated (not batch-sharded).
DIFF = ("a", "b", "hard", "shared", "views", "bias")
REPLICATED = ("shared", "bias")
# Inputs that only affect the objective given (so their gradient is not trivially zero).
TEMPERATURE = 0.5


def _objective_loss(name, x, t, **kw):
  per = OBJECTIVES[name](x, t, **kw)
  return jnp.sum(per * _weights(per.shape[0])), per


def _diff_args(x):
  return {n: v for n, v in x.items() if n in DIFF}


def _value_and_grads(name, x, impl, block_size=BLOCK):
  def loss(diff, t):
    return _objective_loss(name, {**x, **diff}, t, impl=impl, block_size=block_size)

  (val, per), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      _diff_args(x), jnp.float32(TEMPERATURE))
  return val, per, grads


def _check_equal(name, got, want):
  val, per, (g_x, g_t) = got
  val_ref, per_ref, (g_x_ref, g_t_ref) = want
  assert float(jnp.max(jnp.abs(per_ref))) > 0.1, "loss too close to zero to compare"
  _close(per, per_ref, f"{name}: per-example values")
  _close(val, val_ref, f"{name}: value")
  _close(g_t, g_t_ref, f"{name}: d/d temperature")
  for arg in g_x_ref:
    _close(g_x[arg], g_x_ref[arg], f"{name}: d/d {arg}")


def _inputs_with_bias(b, seed=0):
  return {**_inputs(b, seed), "bias": jnp.float32(-1.5)}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_blockwise_objective_equals_dense(name):
  x = _inputs_with_bias(B)
  want = _value_and_grads(name, x, "dense")
  # Square tiles for half the objectives, rectangular (query rows, key rows) for the others.
  block = BLOCK if sorted(OBJECTIVES).index(name) % 2 else (3, 5)
  _check_equal(name, _value_and_grads(name, x, "blockwise", block_size=block), want)


def test_ring_without_axis_is_blockwise():
  x = _inputs_with_bias(B)
  _check_equal("nt_xent", _value_and_grads("nt_xent", x, "ring"),
               _value_and_grads("nt_xent", x, "dense"))


# ---------------------------------------------------------------------------------------------
# The kernels themselves: positive sums, extra logits with -inf entries, empty rows.


def _tags(b, seed):
  x = _inputs(b, seed)
  valid = x["valid"].at[1].set(False)
  q_tags = c.row_tags(b, None, view=0, valid=valid, sample_ids=x["ids"], label=x["labels"])
  k_tags = c.row_tags(b, None, view=1, valid=valid, sample_ids=x["ids"], label=x["labels"])
  return q_tags, k_tags


def _mask_fn(qt, kt):
  # Row 0 has no candidate at all: its lse is -inf and its gradient must be 0, not NaN.
  return kt["valid"] & (qt["sample"] != kt["sample"]) & (qt["sample"] != 0)


def _pos_fn(qt, kt):
  return (qt["label"] == kt["label"]) & kt["valid"]


def _lse_loss(q, k, t, extra, q_tags, k_tags, **kw):
  res = contrastive_lse(q, k, 1.0 / t, q_tags=q_tags, k_tags=k_tags, mask_fn=_mask_fn,
                        pos_fn=_pos_fn, extra_logits=extra, **kw)
  lse = jnp.where(jnp.isfinite(res.lse), res.lse, 0.0)
  w = _weights(lse.shape[0])
  return jnp.sum(w * lse) - jnp.sum(w[::-1] * res.pos_sum), res


@pytest.mark.parametrize("block_size", [4, (5, 3), 64])
def test_lse_kernel_equals_dense(block_size):
  b = 13
  q, k = _normal(0, (b, D)), _normal(1, (b, D))
  extra = _normal(2, (b, 3)).at[2, 1].set(-jnp.inf).at[0].set(-jnp.inf)
  q_tags, k_tags = _tags(b, 0)

  def run(impl):
    f = functools.partial(_lse_loss, q_tags=q_tags, k_tags=k_tags, impl=impl,
                          block_size=block_size)
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3), has_aux=True))(
        q, k, jnp.float32(0.3), extra)

  (v, res), g = run("blockwise")
  (v_ref, res_ref), g_ref = run("dense")
  assert not np.isfinite(res_ref.lse[0]) and not np.isfinite(res.lse[0])
  _close(jnp.where(jnp.isfinite(res.lse), res.lse, 0.0),
         jnp.where(jnp.isfinite(res_ref.lse), res_ref.lse, 0.0), "lse")
  _close(res.pos_sum, res_ref.pos_sum, "pos_sum")
  np.testing.assert_array_equal(res.pos_count, res_ref.pos_count)
  _close(v, v_ref, "value")
  for name, a, e in zip(("q", "k", "temperature", "extra"), g, g_ref):
    _close(a, e, f"d/d {name}")


def test_lse_kernel_bfloat16_inputs():
  """bfloat16 embeddings: float32 results, cotangents in the input dtype, close to dense."""
  b = 11
  q, k = _normal(0, (b, D)).astype(jnp.bfloat16), _normal(1, (b, D)).astype(jnp.bfloat16)
  q_tags, k_tags = _tags(b, 0)

  def run(impl):
    f = lambda q, k: _lse_loss(q, k, jnp.float32(0.5), None, q_tags, k_tags, impl=impl,
                               block_size=4)[0]
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(q, k)

  v, (gq, gk) = run("blockwise")
  v_ref, (gq_ref, gk_ref) = run("dense")
  assert v.dtype == jnp.float32 and gq.dtype == jnp.bfloat16 and gk.dtype == jnp.bfloat16
  np.testing.assert_allclose(v, v_ref, rtol=1e-3)
  for a, e in ((gq, gq_ref), (gk, gk_ref)):
    a, e = np.asarray(a, np.float32), np.asarray(e, np.float32)
    np.testing.assert_allclose(a, e, atol=3e-2 * np.max(np.abs(e)))


def test_sigmoid_kernel_equals_dense():
  b = 13
  q, k = _normal(0, (b, D)), _normal(1, (b, D))
  q_tags, k_tags = _tags(b, 0)

  def run(impl):
    def f(q, k, t, bias):
      per = sigmoid_row_sum(q, k, 1.0 / t, bias, q_tags=q_tags, k_tags=k_tags, pos_fn=_pos_fn,
                            valid_fn=lambda qt, kt: kt["valid"], impl=impl, block_size=(4, 5))
      return jnp.sum(per * _weights(b))
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(q, k, jnp.float32(0.3),
                                                                 jnp.float32(-2.0))

  v, g = run("blockwise")
  v_ref, g_ref = run("dense")
  _close(v, v_ref, "value")
  for name, a, e in zip(("q", "k", "temperature", "bias"), g, g_ref):
    _close(a, e, f"d/d {name}")


def test_block_size_is_checked():
  q = _normal(0, (5, D))
  with pytest.raises(ValueError, match="block_size"):
    contrastive_lse(q, q, 1.0, impl="blockwise", block_size=0)


def test_auto_picks_dense_for_small_and_tiled_for_large():
  from jaxcl.kernels.lse import resolve_impl
  assert resolve_impl("auto", 64, 64, None) == "dense"
  assert resolve_impl("auto", 1 << 15, 1 << 15, None) == "blockwise"


def test_blockwise_memory_does_not_grow_with_batch():
  """XLA's temp allocation of the blockwise fwd+bwd stays O(B (D + block)), not O(B^2)."""

  def temp_bytes(b, impl):
    q = jax.ShapeDtypeStruct((b, 32), jnp.float32)
    f = jax.value_and_grad(
        lambda q, k: jaxcl.losses.info_nce(q, k, impl=impl, block_size=64).mean(), (0, 1))
    return jax.jit(f).lower(q, q).compile().memory_analysis().temp_size_in_bytes

  small, big = temp_bytes(512, "blockwise"), temp_bytes(2048, "blockwise")
  dense_big = temp_bytes(2048, "dense")
  assert big < 2048 * 2048 * 4  # less than one float32 logit matrix
  assert big < 8 * small  # 4x the rows: linear growth (quadratic would be 16x)
  assert dense_big > 2048 * 2048 * 4


# ---------------------------------------------------------------------------------------------
# Ring (and all-gather blockwise) inside shard_map.

B_LOCAL = 5


def _mesh(shape, names):
  n = int(np.prod(shape))
  return jax.make_mesh(shape, names, devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,) * len(shape))


def _sharded_value_and_grads(name, x, mesh, axis, impl):
  batch_names = [n for n in x if n not in REPLICATED]

  def per_device(sharded, replicated, t):
    loss, per = _objective_loss(name, {**sharded, **replicated}, t, impl=impl,
                                block_size=BLOCK - 1, axis_name=axis)
    return per

  def loss(diff, t):
    full = {**x, **diff}
    sharded = {n: full[n] for n in batch_names}
    replicated = {n: full[n] for n in REPLICATED}
    per = jax.shard_map(per_device, mesh=mesh,
                        in_specs=({n: P(axis) for n in sharded}, {n: P() for n in replicated},
                                  P()),
                        out_specs=P(axis))(sharded, replicated, t)
    return jnp.sum(per * _weights(per.shape[0])), per

  with jax.set_mesh(mesh):
    (val, per), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        _diff_args(x), jnp.float32(TEMPERATURE))
  return val, per, grads


MESHES = {
    "ring2": ((2,), ("d",), "d"),
    "ring4": ((4,), ("d",), "d"),
    "ring8": ((8,), ("d",), "d"),
    "ring2x4": ((2, 4), ("p", "q"), ("p", "q")),
}
# Every objective on the ring, the meshes dealt round-robin (each mesh gets three objectives).
RING_CASES = [(name, sorted(MESHES)[i % len(MESHES)]) for i, name in enumerate(sorted(OBJECTIVES))]


@pytest.mark.parametrize("name,mesh_name", RING_CASES)
def test_ring_objective_equals_dense(name, mesh_name):
  shape, names, axis = MESHES[mesh_name]
  n_dev = int(np.prod(shape))
  x = _inputs_with_bias(n_dev * B_LOCAL, seed=3)
  want = _value_and_grads(name, x, "dense")
  got = _sharded_value_and_grads(name, x, _mesh(shape, names), axis, "ring")
  _check_equal(f"{name}/{mesh_name}", got, want)


def test_gathered_blockwise_objective_equals_dense():
  """``impl="blockwise"`` with an axis: keys all-gathered, then tiled."""
  x = _inputs_with_bias(4 * B_LOCAL, seed=6)
  want = _value_and_grads("clip_loss", x, "dense")
  got = _sharded_value_and_grads("clip_loss", x, _mesh((4,), ("d",)), "d", "blockwise")
  _check_equal("clip_loss/blockwise4", got, want)


def test_ring_memory_is_flat_in_device_count():
  """Per-device XLA temp memory of the ring fwd+bwd does not grow with the number of devices."""

  def temp_bytes(n_dev):
    mesh = _mesh((n_dev,), ("d",))
    f = jax.shard_map(
        lambda q, k: jaxcl.losses.info_nce(q, k, impl="ring", block_size=64, axis_name="d"),
        mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d"))
    g = jax.value_and_grad(lambda q, k: f(q, k).mean(), (0, 1))
    q = jax.ShapeDtypeStruct((n_dev * 256, 32), jnp.float32)
    with jax.set_mesh(mesh):
      return jax.jit(g).lower(q, q).compile().memory_analysis().temp_size_in_bytes

  # The chunk-major ring keeps one travelling key tile (and its gradient accumulator) in
  # flight, so the per-device temp memory is that of one device plus a few tiles, whatever the
  # device count (the criterion: 8 devices within 10% of 1).
  one, four, eight = temp_bytes(1), temp_bytes(4), temp_bytes(8)
  # Over one device: a handful of [64, 32] float32 tiles (keys, tags, gradient accumulator
  # and their receive buffers), far below one [256, 32] shard per extra device.
  tile = 64 * 32 * 4
  assert eight - one <= 8 * tile, (one, eight)
  assert eight <= 1.02 * four, (four, eight)


# ---------------------------------------------------------------------------------------------
# Named vmap axes: the ring needs shard_map's mesh axes (its custom VJP's backward pass cannot
# see a vmap axis); "auto" falls back to the gathered kernels, an explicit ring is an error.


def _vmapped(name, impl):
  def per_device(x):
    _, per = _objective_loss(name, {**x, "bias": jnp.float32(-1.5)}, jnp.float32(TEMPERATURE),
                             impl=impl, block_size=BLOCK, axis_name="v")
    return per

  def loss(diff):
    x = {**_vmap_inputs(), **diff}
    per = jax.vmap(per_device, axis_name="v")(x)
    return jnp.sum(per * _weights(per.size).reshape(per.shape)), per

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(
      {n: v for n, v in _vmap_inputs().items() if n in ("a", "b")})


def _vmap_inputs():
  x = _inputs(4 * B_LOCAL, seed=5)
  return {n: v.reshape((4, B_LOCAL) + v.shape[1:]) for n, v in x.items() if n != "shared"}


@pytest.mark.parametrize("name", ["clip_loss", "siglip_loss"])
def test_auto_under_vmap_axis_falls_back_from_ring(name, monkeypatch):
  from jaxcl.kernels import lse
  want = _vmapped(name, "dense")
  monkeypatch.setattr(lse, "AUTO_DENSE_MAX_LOGITS", 1)      # "auto" would pick the ring
  got = _vmapped(name, "auto")
  _close(got[0][1], want[0][1], f"{name}: per-example values")
  for arg in want[1]:
    _close(got[1][arg], want[1][arg], f"{name}: d/d {arg}")


@pytest.mark.parametrize("name", ["clip_loss", "siglip_loss"])
def test_explicit_ring_under_vmap_axis_is_a_clear_error(name):
  with pytest.raises(ValueError, match=r"impl='ring'.*shard_map.*'v'.*impl='blockwise'"):
    _vmapped(name, "ring")


# ---------------------------------------------------------------------------------------------
# Forward-mode autodiff: the tiled kernels are custom VJPs (reverse mode only).

_FWD_Q, _FWD_K = _normal(0, (6, D)), _normal(1, (6, D))


def _fwd_loss(impl, sig=False, **kw):
  if sig:
    return lambda q: jnp.sum(jaxcl.losses.siglip_loss(q, _FWD_K, impl=impl, block_size=4, **kw))
  return lambda q: jnp.sum(jaxcl.losses.info_nce(q, _FWD_K, impl=impl, block_size=4, **kw))


FORWARD_MODES = {
    "jvp": lambda f: jax.jvp(f, (_FWD_Q,), (_FWD_Q,)),
    "jit(jvp)": lambda f: jax.jit(lambda q: jax.jvp(f, (q,), (q,)))(_FWD_Q),
    "jacfwd": lambda f: jax.jacfwd(f)(_FWD_Q),
    "vmap(jvp)": lambda f: jax.vmap(lambda t: jax.jvp(f, (_FWD_Q,), (t,)))(_FWD_Q[None]),
    "grad(jvp)": lambda f: jax.grad(lambda q: jax.jvp(f, (q,), (q,))[1])(_FWD_Q),
}


@pytest.mark.parametrize("sig", [False, True], ids=["lse", "sigmoid"])
@pytest.mark.parametrize("mode", list(FORWARD_MODES))
def test_forward_mode_through_tiled_kernels_names_impl(mode, sig):
  for impl in ("blockwise", "ring"):
    with pytest.raises(TypeError, match=rf"impl='{impl}'.*forward-mode.*impl='dense'"):
      FORWARD_MODES[mode](_fwd_loss(impl, sig))
  np.asarray(FORWARD_MODES[mode](_fwd_loss("dense", sig))[0])       # dense: forward mode works


def test_forward_mode_names_what_auto_picked(monkeypatch):
  from jaxcl.kernels import lse
  monkeypatch.setattr(lse, "AUTO_DENSE_MAX_LOGITS", 1)
  with pytest.raises(TypeError, match=r"impl='auto'.*'blockwise'.*impl='dense'"):
    FORWARD_MODES["jvp"](_fwd_loss("auto"))


def test_forward_mode_inside_shard_map_ring_names_impl():
  mesh = _mesh((2,), ("d",))
  f = lambda q, k: jnp.sum(jaxcl.losses.info_nce(q, k, impl="ring", block_size=2, axis_name="d"))
  per_device = lambda q, k: jax.jvp(lambda q: f(q, k), (q,), (q,))[1][None]
  sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P("d"), P("d")), out_specs=P("d"))
  with jax.set_mesh(mesh), pytest.raises(TypeError, match=r"impl='ring'.*impl='dense'"):
    sharded(_FWD_Q, _FWD_K)


@pytest.mark.parametrize("sig", [False, True], ids=["lse", "sigmoid"])
def test_reverse_mode_and_hessian_still_work_with_tiled_kernels(sig):
  g_ref = jax.grad(_fwd_loss("dense", sig))(_FWD_Q)
  h_ref = jax.hessian(_fwd_loss("dense", sig))(_FWD_Q)
  for impl in ("blockwise", "ring"):
    _close(jax.grad(_fwd_loss(impl, sig))(_FWD_Q), g_ref, f"{impl}: grad")
    # jax.hessian is forward-over-reverse: the outer jvp differentiates the custom backward pass.
    h = jax.hessian(_fwd_loss(impl, sig))(_FWD_Q)
    np.testing.assert_allclose(h, h_ref, rtol=1e-4, atol=1e-4 * np.abs(h_ref).max())
