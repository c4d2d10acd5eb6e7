"""Acceptance 4: input errors raise at trace time with a message naming the argument; a traced
(learnable) temperature is accepted and receives a gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import losses, metrics

B, D = 4, 3
x = np.ones((B, D), np.float32) + np.eye(B, D, dtype=np.float32)
short = x[:3]
narrow = x[:, :2]
cube = x[:, None, :]                                   # [B, 1, D]
views = np.stack([x, 2 * x, 3 * x], 1)                 # [B, 3, D]
ints = np.ones((B, D), np.int32)
labels = np.arange(B, dtype=np.int32)

TWO_ARG = {
    "info_nce": (losses.info_nce, "query", "key"),
    "clip_loss": (losses.clip_loss, "a", "b"),
    "nt_xent": (losses.nt_xent, "z1", "z2"),
    "dcl": (losses.dcl, "z1", "z2"),
    "dclw": (losses.dclw, "z1", "z2"),
    "siglip_loss": (losses.siglip_loss, "a", "b"),
}

CASES = []
for fname, (f, a, b) in TWO_ARG.items():
  CASES += [
      (f"{fname}-batch", lambda f=f: f(x, short), ValueError,
       rf"{fname}: '{a}' and '{b}' must have the same batch size"),
      (f"{fname}-features", lambda f=f: f(x, narrow), ValueError,
       rf"'{a}' and '{b}' must have the same feature size"),
      (f"{fname}-rank-first", lambda f=f: f(cube, x), ValueError, rf"'{a}' must have rank 2"),
      (f"{fname}-rank-second", lambda f=f: f(x, x[0]), ValueError, rf"'{b}' must have rank 2"),
      (f"{fname}-temperature-0", lambda f=f: f(x, x, temperature=0.0), ValueError,
       r"'temperature' must be > 0"),
      (f"{fname}-temperature-neg", lambda f=f: f(x, x, temperature=-0.1), ValueError,
       r"'temperature' must be > 0"),
      (f"{fname}-int-first", lambda f=f: f(ints, x), TypeError, rf"'{a}' must be a floating"),
      (f"{fname}-int-second", lambda f=f: f(x, ints), TypeError, rf"'{b}' must be a floating"),
      (f"{fname}-valid-shape", lambda f=f: f(x, x, valid=np.ones(3, bool)), ValueError,
       r"'valid' must have shape"),
  ]

CASES += [
    ("info_nce-ids-shape", lambda: losses.info_nce(x, x, sample_ids=np.arange(3)), ValueError,
     r"'sample_ids' must have shape"),
    ("info_nce-ids-float", lambda: losses.info_nce(x, x, sample_ids=np.ones(B)), TypeError,
     r"'sample_ids' must be integers"),
    ("info_nce-hard-negatives-batch", lambda: losses.info_nce(x, x, negatives=np.ones((3, 2, D))),
     ValueError, r"'query' and 'negatives' must have the same batch size"),
    ("info_nce-hard-negatives-features",
     lambda: losses.info_nce(x, x, negatives=np.ones((B, 2, 2))), ValueError,
     r"'query' and 'negatives' must have the same feature size"),
    ("info_nce-shared-negatives-features", lambda: losses.info_nce(x, x, negatives=np.ones((5, 2))),
     ValueError, r"'query' and 'negatives' must have the same feature size"),
    ("info_nce-negatives-rank", lambda: losses.info_nce(x, x, negatives=np.ones(D)), ValueError,
     r"'negatives' must have rank 3"),
    ("info_nce-negatives-int", lambda: losses.info_nce(x, x, negatives=np.ones((2, D), int)),
     TypeError, r"'negatives' must be a floating"),
    ("dclw-sigma", lambda: losses.dclw(x, x, sigma=0.0), ValueError, r"'sigma' must be > 0"),
    ("supcon-rank", lambda: losses.supcon(x, labels), ValueError, r"'features' must have rank 3"),
    ("supcon-int", lambda: losses.supcon(views.astype(np.int32), labels), TypeError,
     r"'features' must be a floating"),
    ("supcon-labels-batch", lambda: losses.supcon(views, labels[:3]), ValueError,
     r"'labels' must have shape"),
    ("supcon-labels-float", lambda: losses.supcon(views, labels.astype(np.float32)), TypeError,
     r"'labels' must be integers"),
    ("supcon-temperature", lambda: losses.supcon(views, labels, temperature=0.0), ValueError,
     r"'temperature' must be > 0"),
    ("supcon-base-temperature", lambda: losses.supcon(views, labels, base_temperature=-1.0),
     ValueError, r"'base_temperature' must be > 0"),
    ("symile-one-modality", lambda: losses.symile([x], temperature=0.1, negatives="n_squared"),
     ValueError, r"'modalities' must be a sequence of at least 2"),
    ("symile-not-sequence", lambda: losses.symile(views, temperature=0.1), ValueError,
     r"'modalities' must be a sequence"),
    ("symile-batch", lambda: losses.symile([x, short], temperature=0.1, negatives="n_squared"),
     ValueError, r"'modalities\[0\]' and 'modalities\[1\]' must have the same batch size"),
    ("symile-features", lambda: losses.symile([x, x, narrow], temperature=0.1,
                                              negatives="n_squared"),
     ValueError, r"'modalities\[0\]' and 'modalities\[2\]' must have the same feature size"),
    ("symile-rank", lambda: losses.symile([x, cube], temperature=0.1, negatives="n_squared"),
     ValueError, r"'modalities\[1\]' must have rank 2"),
    ("symile-int", lambda: losses.symile([x, ints], temperature=0.1, negatives="n_squared"),
     TypeError, r"'modalities\[1\]' must be a floating"),
    ("symile-temperature", lambda: losses.symile([x, x], temperature=0.0, negatives="n_squared"),
     ValueError, r"'temperature' must be > 0"),
    ("symile-negatives", lambda: losses.symile([x, x], temperature=0.1, negatives="all"),
     ValueError, r"'negatives' must be one of"),
    ("symile-rng", lambda: losses.symile([x, x], temperature=0.1, negatives="n"), ValueError,
     r"'rng'.*required"),
    ("alignment-batch", lambda: metrics.alignment(x, short), ValueError,
     r"'z1' and 'z2' must have the same batch size"),
    ("alignment-int", lambda: metrics.alignment(ints, x), TypeError, r"'z1' must be a floating"),
    ("uniformity-rank", lambda: metrics.uniformity(views), ValueError, r"'z' must have rank 2"),
    ("tolerance-labels", lambda: metrics.tolerance(x, labels[:3]), ValueError,
     r"'labels' must have shape"),
    ("effective_rank-int", lambda: metrics.effective_rank(ints), TypeError,
     r"'z' must be a floating"),
]

for fname in ("mv_info_nce", "mv_dhel"):
  f = getattr(losses, fname)
  CASES += [
      (f"{fname}-one-view", lambda f=f: f(cube), ValueError,
       rf"{fname}: 'views' needs at least 2 views"),
      (f"{fname}-rank", lambda f=f: f(x), ValueError, r"'views' must have rank 3"),
      (f"{fname}-int", lambda f=f: f(views.astype(np.int32)), TypeError,
       r"'views' must be a floating"),
      (f"{fname}-temperature", lambda f=f: f(views, temperature=-1.0), ValueError,
       r"'temperature' must be > 0"),
  ]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_naming_the_argument(call, exc, match):
  with pytest.raises(exc, match=match):
    call()


def test_errors_raise_at_trace_time_under_jit():
  with pytest.raises(ValueError, match=r"'query' and 'key' must have the same batch size"):
    jax.jit(losses.info_nce)(x, short)
  with pytest.raises(ValueError, match=r"'temperature' must be > 0"):
    jax.jit(lambda a: losses.nt_xent(a, a, temperature=0.0))(x)
  with pytest.raises(TypeError, match=r"'z1' must be a floating"):
    jax.jit(lambda a: losses.dcl(a, x))(ints)


LEARNABLE = {
    "info_nce": lambda a, b, t: losses.info_nce(a, b, temperature=t),
    "clip_loss": lambda a, b, t: losses.clip_loss(a, b, temperature=t),
    "nt_xent": lambda a, b, t: losses.nt_xent(a, b, temperature=t),
    "siglip_loss": lambda a, b, t: losses.siglip_loss(a, b, temperature=t, bias=-1.0),
    "dcl": lambda a, b, t: losses.dcl(a, b, temperature=t),
    "supcon": lambda a, b, t: losses.supcon(jnp.stack([a, b], 1), labels % 2, temperature=t),
    "mv_dhel": lambda a, b, t: losses.mv_dhel(jnp.stack([a, b], 1), temperature=t),
    "symile": lambda a, b, t: losses.symile([a, b], temperature=t, negatives="n_squared"),
}


@pytest.mark.parametrize("name", list(LEARNABLE))
def test_learnable_temperature_receives_gradient(name):
  # CLIP-style: temperature = exp(-log_scale), the log scale is the trained parameter.
  f = LEARNABLE[name]
  a = np.random.default_rng(0).normal(size=(B, D)).astype(np.float32)
  b = a + np.random.default_rng(1).normal(size=(B, D)).astype(np.float32)
  g = jax.jit(jax.grad(lambda s: jnp.mean(f(a, b, jnp.exp(-s)))))(jnp.float32(np.log(10.0)))
  assert np.isfinite(g) and g != 0


# A non-scalar temperature meant different things under impl="dense" (broadcast over keys in
# the log-sum-exp, over queries in the positive) and "blockwise" (an error from inside the
# kernel): every loss rejects rank > 0 at trace time, naming the loss and 'temperature'.
VECTOR_T = {
    **{f: (lambda t, f=f, **kw: getattr(losses, f)(x, 2 * x, temperature=t, **kw))
       for f in TWO_ARG},
    "supcon": lambda t, **kw: losses.supcon(views, labels % 2, temperature=t, **kw),
    "mv_info_nce": lambda t, **kw: losses.mv_info_nce(views, temperature=t, **kw),
    "mv_dhel": lambda t, **kw: losses.mv_dhel(views, temperature=t, **kw),
    "mv_average": lambda t, **kw: losses.mv_average(views, temperature=t, **kw),
    "symile": lambda t, **kw: losses.symile([x, 2 * x], temperature=t, negatives="n_squared",
                                            **kw),
    "grace_loss": lambda t, **kw: losses.contrib.grace_loss(x, 2 * x, temperature=t, **kw),
    "truncated_info_nce": lambda t, **kw: losses.contrib.truncated_info_nce(
        x, 2 * x, temperature=t, num_negatives=2, **kw),
    "smoothed_info_nce": lambda t, **kw: losses.contrib.smoothed_info_nce(x, 2 * x, temperature=t, **kw),
    "distilled_info_nce": lambda t, **kw: losses.contrib.distilled_info_nce(x, 2 * x, temperature=t,
                                                                    **kw),
    "label_nt_xent": lambda t, **kw: losses.contrib.label_nt_xent(views[:, :2], labels % 2,
                                                          temperature=t, **kw),
    "soft_clip_loss": lambda t, **kw: losses.contrib.soft_clip_loss(x, 2 * x, temperature=t, **kw),
    "whitenedcse_loss": lambda t, **kw: losses.contrib.whitenedcse_loss(views, temperature=t, **kw),
}


@pytest.mark.parametrize("name", list(VECTOR_T))
def test_non_scalar_temperature_is_rejected(name):
  f = VECTOR_T[name]
  match = rf"{name}: 'temperature' must be a scalar"
  for t in (np.full((B,), 0.1, np.float32), np.float32([0.1]), jnp.full((B, 1), 0.1)):
    for impl in ("dense", "blockwise"):   # the same check whatever the kernel
      with pytest.raises(ValueError, match=match):
        f(t, impl=impl)
  # Traced: the check is on the rank, so it fires at trace time too.
  with pytest.raises(ValueError, match=match):
    jax.jit(f)(jnp.full((B,), 0.1))
  # A traced scalar still works and keeps its gradient.
  g = jax.jit(jax.grad(lambda t: jnp.mean(f(t))))(jnp.float32(0.2))
  assert np.isfinite(g) and g != 0
