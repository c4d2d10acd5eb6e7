"""Acceptance 5 (hypothesis): joint permutation of the batch permutes the per-example values, and
with normalize=True a positive rescaling of any row changes nothing.

Shapes are fixed so each loss compiles once (jit dominates the run time); hypothesis draws the
data seed, the permutation, the ids / padding / labels and the scales.

Symile with ``negatives="n"`` is not in the permutation test: its negatives are drawn as
permutations of batch *positions* from the key, so reordering the batch changes which rows are
paired as negatives (the loss is equivariant only in distribution, as in the reference
implementation). ``n_squared`` uses every combination and is exactly equivariant; ``n`` is in
the rescaling test, where positions do not move.
"""
import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jaxcl import losses

B, K, D = 8, 3, 5
SETTINGS = settings(max_examples=15, deadline=None, database=None)

# name -> f(x [B, K, D], ids, valid, labels) -> [B]
LOSSES = {
    "info_nce": lambda x, ids, v, lab: losses.info_nce(
        x[:, 0], x[:, 1], negatives=x[:, 2:], sample_ids=ids, valid=v, temperature=0.05),
    "clip_loss": lambda x, ids, v, lab: losses.clip_loss(x[:, 0], x[:, 1], sample_ids=ids, valid=v),
    "nt_xent": lambda x, ids, v, lab: losses.nt_xent(x[:, 0], x[:, 1], sample_ids=ids, valid=v),
    "dcl": lambda x, ids, v, lab: losses.dcl(x[:, 0], x[:, 1], sample_ids=ids, valid=v),
    "dclw": lambda x, ids, v, lab: losses.dclw(x[:, 0], x[:, 1], sample_ids=ids, valid=v),
    "siglip_loss": lambda x, ids, v, lab: losses.siglip_loss(
        x[:, 0], x[:, 1], temperature=0.2, bias=-1.0, sample_ids=ids, valid=v),
    "supcon": lambda x, ids, v, lab: losses.supcon(x, lab, valid=v),
    "mv_info_nce": lambda x, ids, v, lab: losses.mv_info_nce(x, valid=v),
    "mv_dhel": lambda x, ids, v, lab: losses.mv_dhel(x, valid=v),
    "symile_n_squared": lambda x, ids, v, lab: losses.symile(
        [x[:, 0], x[:, 1], x[:, 2]], temperature=0.1, negatives="n_squared", valid=v),
    "symile_n": lambda x, ids, v, lab: losses.symile(
        [x[:, 0], x[:, 1], x[:, 2]], temperature=0.1, negatives="n", rng=jax.random.key(0),
        valid=v),
}
JITTED = {name: jax.jit(f) for name, f in LOSSES.items()}
EQUIVARIANT = [n for n in LOSSES if n != "symile_n"]


@st.composite
def batches(draw):
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, K, D)).astype(np.float32)
  x[:, 1] += x[:, 0]
  ids = np.asarray(draw(st.lists(st.integers(0, 5), min_size=B, max_size=B)), np.int32)
  labels = np.asarray(draw(st.lists(st.integers(0, 3), min_size=B, max_size=B)), np.int32)
  valid = np.asarray(draw(st.lists(st.booleans(), min_size=B, max_size=B)), bool)
  valid[draw(st.integers(0, B - 1))] = True          # at least one real row
  return x, ids, valid, labels


def _call(name, x, ids, valid, labels):
  return np.asarray(JITTED[name](x, ids, valid, labels))


@pytest.mark.parametrize("name", EQUIVARIANT)
@SETTINGS
@given(batch=batches(), perm=st.permutations(list(range(B))))
def test_joint_permutation_permutes_per_example_values(name, batch, perm):
  x, ids, valid, labels = batch
  perm = np.asarray(perm)
  base = _call(name, x, ids, valid, labels)
  permuted = _call(name, x[perm], ids[perm], valid[perm], labels[perm])
  np.testing.assert_allclose(permuted, base[perm], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(LOSSES))
@SETTINGS
@given(batch=batches(),
       log_scales=st.lists(st.floats(-4.0, 4.0), min_size=B * K, max_size=B * K))
def test_positive_row_rescaling_is_invisible(name, batch, log_scales):
  x, ids, valid, labels = batch
  scales = np.exp(np.asarray(log_scales, np.float32)).reshape(B, K, 1)
  base = _call(name, x, ids, valid, labels)
  scaled = _call(name, x * scales, ids, valid, labels)
  np.testing.assert_allclose(scaled, base, rtol=1e-4, atol=1e-4)
