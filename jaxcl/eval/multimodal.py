"""Evaluation of multi-tower (multimodal) encoders: zero-shot, cross-modal retrieval, probes.

* ``zero_shot_accuracy(z_x, z_prompts, y)``: CLIP's zero-shot classifier (Radford et al. 2021,
  arXiv 2103.00020): class ``c``'s embedding is the normalised mean of its ``P`` L2-normalised
  prompt embeddings (prompt ensembling), the prediction ``argmax_c cos(z_x, e_c)``.
* ``retrieval_recall(q, g, ks)`` (:mod:`jaxcl.eval.retrieval`): modality 0 -> 1 (``i2t``) and
  1 -> 0 (``t2i``) over the test set, pairs matched row by row.
* per-modality linear probes and kNN on each tower's features ``h_m``.

``evaluate_modalities`` returns the flat dict the trainer's evaluator writes to ``eval.json``:
``probe_<name>``, ``knn_<name>`` per modality, ``i2t_r1/5/10``, ``t2i_r1/5/10``, ``zero_shot``
(when the dataset has prompts: ``jaxcl.data.prompts(name)``), the image-text ``alignment``
(of normalised ``z_0, z_1``), ``uniformity`` / ``effective_rank`` of ``h_0``, and
``linear_probe`` / ``knn`` = modality 0's (so logs and tables that read those keep working).

Example:
  >>> import numpy as np
  >>> zp = np.eye(3, dtype=np.float32)[:, None, :]      # one prompt per class
  >>> zero_shot_accuracy(np.eye(3, dtype=np.float32), zp, np.arange(3))
  1.0
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxcl import metrics
from jaxcl.eval.probe import l2_normalize
from jaxcl.eval.retrieval import retrieval_recall

RETRIEVAL_KS = (1, 5, 10)


def class_embeddings(z_prompts):
  """``[C, P, D]`` prompt embeddings -> ``[C, D]``: normalised mean of normalised prompts."""
  z = jnp.asarray(z_prompts, jnp.float32)
  if z.ndim != 3:
    raise ValueError(f"zero_shot: 'z_prompts' must be [C, P, D], got shape {tuple(z.shape)}")
  return l2_normalize(jnp.mean(l2_normalize(z), axis=1))


def zero_shot_predict(z_x, z_prompts):
  z_x = jnp.asarray(z_x, jnp.float32)
  e = class_embeddings(z_prompts)
  if z_x.ndim != 2 or z_x.shape[-1] != e.shape[-1]:
    raise ValueError(f"zero_shot: 'z_x' must be [N, {e.shape[-1]}], got shape {tuple(z_x.shape)}")
  return np.asarray(jnp.argmax(l2_normalize(z_x) @ e.T, axis=-1))


def zero_shot_accuracy(z_x, z_prompts, y):
  """Fraction of rows of ``z_x`` whose nearest class-prompt embedding is their label ``y``."""
  return float(np.mean(zero_shot_predict(z_x, z_prompts) == np.asarray(y)))


def evaluate_modalities(train, test, train_y, test_y, names, num_classes, eval_config, seed=0,
                        prompt_z=None):
  """``train`` / ``test``: per-modality ``(h_m, z_m)`` tuples; ``prompt_z``: ``[C, P, D]``
  embeddings of the class prompts by modality 1's tower (or ``None``). See the module doc."""
  from jaxcl.eval.evaluate import GEOMETRY_ROWS, evaluate_features
  res = {}
  # Zero columns to one common width: the probe / kNN programs then compile once for all
  # towers (zeros change neither the row norms, nor the standardised features, nor the fit).
  width = max(h.shape[-1] for h, _ in tuple(train) + tuple(test))
  pad = lambda h: np.pad(np.asarray(h, np.float32), ((0, 0), (0, width - h.shape[-1])))
  for name, (htr, _), (hte, _) in zip(names, train, test):
    r = evaluate_features(pad(htr), train_y, pad(hte), test_y, num_classes, eval_config, seed)
    res[f"probe_{name}"], res[f"knn_{name}"] = r["linear_probe"], r["knn"]
  res["linear_probe"], res["knn"] = res[f"probe_{names[0]}"], res[f"knn_{names[0]}"]
  z0, z1 = test[0][1], test[1][1]
  for tag, (q, g) in (("i2t", (z0, z1)), ("t2i", (z1, z0))):
    for k, v in retrieval_recall(q, g, ks=RETRIEVAL_KS).items():
      res[f"{tag}_r{k}"] = float(v)
  if prompt_z is not None:
    res["zero_shot"] = zero_shot_accuracy(z0, prompt_z, test_y)
  a = l2_normalize(jnp.asarray(z0[:GEOMETRY_ROWS], jnp.float32))
  b = l2_normalize(jnp.asarray(z1[:GEOMETRY_ROWS], jnp.float32))
  h0 = jnp.asarray(test[0][0][:GEOMETRY_ROWS], jnp.float32)
  res.update(alignment=float(metrics.alignment(a, b)), uniformity=float(metrics.uniformity(h0)),
             effective_rank=float(metrics.effective_rank(h0)))
  return res


def markdown_table(results, names):
  """One row per representation: per-modality probes, zero-shot, retrieval R@1 / R@5."""
  cols = [f"probe_{n}" for n in names] + ["zero_shot", "i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5",
                                          "alignment"]
  head = ("| representation | " + " | ".join(f"probe {n}" for n in names)
          + " | zero-shot | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 | alignment |")
  lines = [head, "|" + "---|" * (len(cols) + 1)]
  for rep, r in results.items():
    cells = ["-" if r.get(c) is None else (f"{r[c]:.3f}" if c == "alignment"
                                           else f"{100 * r[c]:.2f}%") for c in cols]
    lines.append(f"| {rep} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def predict_modality(z_given, z_candidates, score="symile"):
  """Zero-shot prediction of a held-out modality from the others (Symile's XOR evaluation):
  ``z_given``: the ``[N, D]`` embeddings of the observed modalities, ``z_candidates [C, D]``:
  the held-out modality's embedding of every candidate value. Scores (L2-normalised inputs;
  the logit scale does not change the argmax): ``score="symile"`` the multilinear inner
  product ``<z_1, ..., z_k, cand>`` (Saporta et al., arXiv 2411.01053), ``score="clip"`` the
  pairwise sum ``sum_m <z_m, cand>`` (the reference's CLIP baseline; the given-given terms
  are the same for every candidate). Returns the ``[N]`` argmax candidate indices."""
  import functools
  if score not in ("symile", "clip"):
    raise ValueError(f"predict_modality: 'score' must be 'symile' or 'clip', got {score!r}")
  zs = [l2_normalize(jnp.asarray(z, jnp.float32)) for z in z_given]
  if not zs:
    raise ValueError("predict_modality: 'z_given' must hold at least one [N, D] array")
  q = functools.reduce(jnp.multiply if score == "symile" else jnp.add, zs)
  cand = l2_normalize(jnp.asarray(z_candidates, jnp.float32))
  return np.asarray(jnp.argmax(q @ cand.T, axis=1))


def predict_modality_accuracy(z_given, z_candidates, y, score="symile"):
  """Accuracy of :func:`predict_modality` against the true candidate indices ``y [N]``."""
  return float(np.mean(predict_modality(z_given, z_candidates, score) == np.asarray(y)))
