"""Study `symile`: Symile vs pairwise CLIP on the binary-XOR synthetic, with and without missing
modalities, and Symile's O(N) vs O(N^2) negatives (methods.md section 3, the paper's own
synthetic as the CPU proxy).

Claim (Saporta et al., NeurIPS 2024, arXiv 2411.01053): when ``c = a XOR b`` every pair of
modalities is independent, so pairwise CLIP has nothing to align and predicts one modality
from the other two at chance, while Symile (the multilinear inner product of all three)
predicts it near perfectly; Symile keeps working when modalities are missing at training time
(missingness encoded as an input, the reference's convention).

Metric: zero-shot prediction of ``c`` from ``(a, b)`` on the 2,000 fully observed test rows
(``zs_c``; chance 50%: one bit per modality, as the reference's ``examples/binary_xor.py``):
every candidate value of ``c`` (its noise-free block,
``jaxcl.data.embedded.symile_xor_candidates``) is encoded by the ``c`` tower and scored by the
representation's own rule (:func:`jaxcl.eval.multimodal.predict_modality`): Symile ``<r_a, r_b,
r_cand>``, CLIP ``r_a.r_cand + r_b.r_cand`` (the reference's
``zeroshot_retrieval_logits``). ``zs_mean`` averages the three targets (a from (b, c), b from
(a, c), c from (a, b)). ``probe_c``: the trainer's linear probe on the c tower's features (is
the bit information there at all?).

Settings (one config, ``configs/symile_xor.py``, every method the same towers, steps, batch,
lr and learnable logit scale, init 1/0.1, nothing tuned per method):

* ``symile`` (``negatives="n"``, O(N): one permutation of the global batch per non-anchor
  modality, the reference default) and ``symile_n2`` (``"n_squared"``: all N^2 (b, c)
  combinations per a-anchor, 16,384 candidates at batch 128);
* ``clip_mean``: ``clip_loss`` with ``learn_temperature`` through the trainer's pair adapter,
  the mean of the 3 symmetric pairwise losses (the "pwe" rule; the reference's older
  ``pairwise_infonce``); ``clip_sum``: their sum (the reference's ``experiments/losses.py``
  baseline; the ``symile`` adapter's ``form="clip_sum"``). With AdamW the two differ only
  through the optimiser's epsilon (a constant factor 3 on the loss), so they should agree;
* the same Symile and CLIP-mean on ``symile_xor_missing`` (same rows; in train each modality
  missing with probability 0.5, an all-zero block with its indicator set: 12.5% of the train
  rows are complete).

``python -m experiments.symile [--smoke]``
"""
import json
import math
import os

import numpy as np

from experiments import _study

STEPS = 300
BATCH = 128
METHODS = {  # method -> (loss name, loss kwargs over the recipe's)
    "symile": ("symile", {"negatives": "n"}),
    "symile_n2": ("symile", {"negatives": "n_squared"}),
    "clip_mean": ("clip_loss", None),
    "clip_sum": ("symile", {"form": "clip_sum"}),
}
GRID = (("symile_xor", "symile"), ("symile_xor", "symile_n2"), ("symile_xor", "clip_mean"),
        ("symile_xor", "clip_sum"), ("symile_xor_missing", "symile"),
        ("symile_xor_missing", "clip_mean"))
COLUMNS = ("data", "method")
METRICS = ("zs_c", "zs_mean", "probe_c", "train/loss", "train/logit_scale", "cpu_s")
CHANCE = 0.5


def _config(data, method, smoke):
  from configs.symile_xor import get_config
  c = get_config()
  c.data.name = data
  loss, kw = METHODS[method]
  if loss == "clip_loss":
    c.loss.name = "clip_loss"
    c.loss.kwargs = {"temperature": c.loss.kwargs.temperature, "learn_temperature": True}
  else:
    c.loss.kwargs.update(kw)
  c.num_steps = 3 if smoke else STEPS
  c.optim.warmup_steps = 1 if smoke else 20
  c.batch_size = 32 if smoke else BATCH
  c.checkpoint.every = c.num_steps
  c.eval.probe_l2 = (1e-4,)
  c.eval.probe_steps = 10 if smoke else 100
  return c


def settings(smoke):
  # Smoke: one setting (the trainer, evaluation and zero-shot compiles are most of its time).
  grid = (("symile_xor", "symile"),) if smoke else GRID
  return [({"data": d, "method": m}, _config(d, m, smoke)) for d, m in grid]


def measure(config, workdir):
  """Zero-shot accuracies of a finished run (module docstring), from its last checkpoint."""
  from jaxcl import data
  from jaxcl.data import embedded
  from jaxcl.eval.multimodal import predict_modality_accuracy
  from jaxcl.recipes.mcl import features, restore
  state, parts = restore(config, workdir)
  test = data.load_arrays(config.data.name, "test", data_dir=config.data.data_dir)
  block, n = embedded.XOR_BLOCK, len(test["y"])
  # The candidates of modality m: their blocks in m's slot (the other towers' outputs unused);
  # one encode of [test rows | candidates of a | of b | of c] (one compile).
  cands = [embedded.symile_xor_candidates(m) for m in range(3)]
  rows = [test["x"]]
  for m, cand in enumerate(cands):
    x = np.zeros((len(cand), 3 * block), np.float32)
    x[:, m * block:(m + 1) * block] = cand
    rows.append(x)
  z_all = np.asarray(features(parts, state, np.concatenate(rows), "head"))  # [., 3, D]
  z, start = z_all[:n], n
  score = "symile" if (config.loss.name == "symile"
                       and config.loss.kwargs.get("form", "symile") == "symile") else "clip"
  truth = (test["a"], test["b"], test["y"])
  acc = []
  for m, cand in enumerate(cands):
    zc = z_all[start:start + len(cand), m]
    start += len(cand)
    given = [z[:, o] for o in range(3) if o != m]
    acc.append(predict_modality_accuracy(given, zc, truth[m], score=score))
  out = {"zs_c": acc[2], "zs_mean": float(np.mean(acc)), "zs_a": acc[0], "zs_b": acc[1]}
  try:  # the trainer's per-tower probe of c (eval.json of the run)
    with open(os.path.join(workdir, "eval.json")) as f:
      (final,) = json.load(f)["final"].values()
    out["probe_c"] = final["probe_c"]
  except (OSError, KeyError, ValueError):
    pass
  return out


def _pct(m):
  return f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}%"


def verdict(summary):
  get = lambda data, method, metric="zs_c": _study.mean_std(summary, metric, data=data,
                                                            method=method)
  sy, cm, cs = (get("symile_xor", m) for m in ("symile", "clip_mean", "clip_sum"))
  n2 = get("symile_xor", "symile_n2")
  msy, mcm = get("symile_xor_missing", "symile"), get("symile_xor_missing", "clip_mean")
  if any(math.isnan(v[0]) for v in (sy, cm, cs, n2, msy, mcm)):
    return "Not all settings were run: no verdict."
  near_chance = lambda v: abs(v[0] - CHANCE) <= max(0.05, 2 * v[1])
  clip_chance = near_chance(cm) and near_chance(cs)
  sym_high = sy[0] >= 0.9 and _study.separated(sy, cm) and _study.separated(sy, cs)
  head = ("**Reproduces** the paper's direction" if clip_chance and sym_high else
          "**Partly reproduces**" if sym_high or clip_chance else
          "**Does not reproduce on the proxy**")
  lines = [
      f"{head}: predicting c from (a, b), Symile reaches {_pct(sy)} while pairwise CLIP stays "
      f"{'at' if clip_chance else 'away from'} chance (50%): mean of pairs {_pct(cm)}, sum of "
      f"pairs {_pct(cs)}.",
      f"- Sum vs mean of the pairwise CLIP terms: {_pct(cs)} vs {_pct(cm)}"
      f"{_study.spread_note(cs, cm)} (with AdamW a constant factor on the loss changes "
      f"nothing but the epsilon's weight).",
      f"- O(N) vs O(N^2) negatives (Symile): {_pct(sy)} (`n`) vs {_pct(n2)} (`n_squared`)"
      f"{_study.spread_note(sy, n2)}; CPU seconds per run "
      f"{get('symile_xor', 'symile', 'cpu_s')[0]:.0f} "
      f"vs {get('symile_xor', 'symile_n2', 'cpu_s')[0]:.0f}.",
      f"- Missing modalities (train: each modality missing with p = 0.5, 12.5% complete rows; "
      f"test fully observed): Symile {_pct(msy)} vs CLIP (mean) {_pct(mcm)}; Symile without "
      f"missingness {_pct(sy)}.",
  ]
  probe = get("symile_xor", "clip_mean", "probe_c")
  lines.append(f"- The towers do read the bits whatever the loss: linear probe of the c tower "
               f"(predicting c from c) {_pct(probe)} under CLIP (mean); CLIP's failure is in "
               f"the objective, which sees only pairwise (independent) structure.")
  return "\n".join(lines)


def main(argv=None):
  args, grid, seeds, rows, _, info = _study.start("symile", settings, argv, measure=measure)
  summary = _study.summarize(rows, _study.METRICS + METRICS + ("zs_a", "zs_b"))
  plt = _study.pyplot()
  fig, ax = plt.subplots(figsize=(8, 3.8))
  names = [f"{s['setting']['method']}\n{'missing' if 'missing' in s['setting']['data'] else 'full'}"
           for s in summary]
  colors = ["tab:orange" if s["setting"]["method"].startswith("symile") else "tab:blue"
            for s in summary]
  means = [100 * s["zs_c"]["mean"] for s in summary]
  stds = [100 * s["zs_c"]["std"] for s in summary]
  ax.bar(range(len(summary)), means, yerr=stds, capsize=3, color=colors)
  ax.axhline(100 * CHANCE, color="gray", ls="--", lw=1, label="chance (50%)")
  ax.set_xticks(range(len(summary)), names, fontsize=8)
  ax.set_ylim(0, 105)
  ax.set_ylabel("zero-shot accuracy, c from (a, b) (%)")
  ax.legend(loc="upper right", fontsize=8)
  c0 = grid[0][1]
  ax.set_title(f"Symile vs pairwise CLIP on binary XOR ({c0.num_steps} steps, batch "
               f"{c0.batch_size}; mean ± std over {len(seeds)} seeds)", fontsize=9)
  fig.tight_layout()
  setup = (f"`symile_xor`: a, b uniform bits, c = a XOR b (every pair independent), "
           f"each bit value a fixed antipodal 8-d code (+u / -u, |u| = sqrt 8) + N(0, 0.25) "
           f"noise, 9 features per modality "
           f"(last: missing indicator); 10,000 train / 2,000 test rows. "
           f"`symile_xor_missing`: the same rows, each train modality missing with p = 0.5 "
           f"(all-zero block, indicator 1); test fully observed. Three towers (MLP 64-64 + "
           f"2-layer head to 16-d), no augmentation, AdamW lr {c0.optim.lr}, weight decay "
           f"{c0.optim.weight_decay}, {c0.num_steps} steps at batch {c0.batch_size}, learnable "
           f"logit scale (init 10, max 100) for every method. zs_c: zero-shot accuracy of c "
           f"from (a, b) over the 2 candidate values (Symile: multilinear inner product; CLIP: "
           f"sum of the pairwise dot products); zs_mean: the mean over the three targets; "
           f"probe_c: linear probe of the c tower's features. Mean ± std over seeds "
           f"{list(seeds)}; a difference is called only when the means differ by more than "
           f"the sum of the std's. train/*: the last logged step; cpu_s: CPU seconds of the "
           f"run (training + evaluation).")
  pct = {"zs_c", "zs_mean", "probe_c"}
  head = list(COLUMNS) + [m.replace("_", " ") for m in METRICS]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [str(s["setting"][c]) for c in COLUMNS]
    cells += [_study.fmt(s.get(m), percent=m in pct) if m != "cpu_s" or s.get(m) is None
              else f"{s[m]['mean']:.0f}" for m in METRICS]
    lines.append("| " + " | ".join(cells) + " |")
  _study.write("symile", args.out, title="Symile vs pairwise CLIP on binary XOR (zero-shot "
               "prediction of one modality from the other two)",
               command=_study.command("symile", args.smoke), setup_text=setup,
               summary=summary, rows=rows, figure=fig, info=info, verdict=verdict(summary),
               table_md="\n".join(lines))


if __name__ == "__main__":
  main()
