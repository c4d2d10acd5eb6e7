"""Study `m3col`: cross-entropy vs CE + CLIP vs CE + M3Co mixup contrastive (then SoftCLIP
after a third of training) on the three feature blocks of breast_cancer (methods.md section 20).

Claim (Kumar et al., arXiv 2409.17777; the paper's numbers were not found, the abstract claims
the state of the art on N24News / ROSMAP / BRCA): adding M3CoL's cross-modal term (M3Co mixup
contrastive, then SoftCLIP) to the fusion + unimodal cross-entropy improves multimodal
classification, and more than a plain (CLIP) cross-modal contrastive term does.

Proxy (``configs/m3col_breast_cancer.py``): ``breast_cancer_blocks`` (455 train / 114 test,
standardised) as three 10-feature tabular modalities (mean / standard error / worst), one
``Linear(10, 64) - ReLU - Linear(64, 32)`` tower each, a fusion classifier on the concatenated
96-d embeddings and one classifier per modality (``Linear - ReLU - Linear``, 32 hidden), as the
reference's ``MMC_Med``. The three methods are one objective with the cross-modal term
switched, so they share the model, the classifiers, the batch (64), the steps (300, ~42
epochs), the AdamW lr grid and the weight 0.1 of the term (the reference's ``lambda_mixup``):

* ``ce``: ``CE(fusion) + sum_m CE(head_m)`` (the reference without ``--multi_mixup``);
* ``ce_clip``: + 0.1 x the cyclic pairwise CLIP loss (T = 0.1) over mean -> se -> worst -> mean;
* ``ce_m3col``: + 0.1 x cyclic M3Co (each modality's *inputs* mixed, ``Beta(0.15, 0.15)``,
  probability 0.5, T = 0.1, against the next modality's unmixed embeddings) for the first
  100 steps, then cyclic SoftCLIP (T' = 0.125), the paper's schedule.

Metrics on the 114 test rows, from the fusion classifier (the paper's metric): accuracy,
AUROC, F1 (positive = benign, sklearn's label 1); also each unimodal head's accuracy and the
logistic-regression probes of each tower's encoder features and of their concatenation
(sklearn, fitted on the training rows; the trainer's built-in evaluation is skipped: its JAX
probes compile for longer than these runs train). "Best lr" = the grid point with
the highest mean test accuracy, for every method (the same, optimistic, selection). A
difference is called only when the means differ by more than the sum of the two std's. 5 seeds
(the data are small and the test set has 114 rows: one row is 0.9 points).

``python -m experiments.m3col [--smoke]``
"""
import json
import math
import os

import numpy as np

from experiments import _study

NAME = "m3col"
STEPS, WARMUP, BATCH = 300, 20, 64
LRS = (1e-3, 3e-3)
SEEDS = (0, 1, 2, 3, 4)
METHODS = {  # method -> (contrastive term, after the switch)
    "ce": ("none", "none"),
    "ce_clip": ("clip", "clip"),
    "ce_m3col": ("m3co", "softclip"),
}
NAMES = {"ce": "CE", "ce_clip": "CE + CLIP", "ce_m3col": "CE + M3Co -> SoftCLIP"}
COLUMNS = ("method", "lr")
METRICS = ("test_accuracy", "test_auroc", "test_f1", "uni_mean", "uni_se", "uni_worst",
           "linear_probe", "probe_mean", "probe_se", "probe_worst")


def config(method, lr, smoke):
  from configs.m3col_breast_cancer import get_config
  c = get_config()
  before, after = METHODS[method]
  c.loss.kwargs.contrastive, c.loss.kwargs.after = before, after
  c.optim.lr = lr
  c = _study.budget(c, smoke, steps=STEPS, warmup=WARMUP, batch=BATCH)
  c.loss.kwargs.switch_step = c.num_steps // 3 if before != after else -1
  c.checkpoint.every = c.num_steps
  return c


def settings(smoke):
  # Smoke: one M3CoL run (both phases of the schedule, the heads, the measurement).
  grid = [("ce_m3col", LRS[0])] if smoke else [
      (m, lr) for m in METHODS for lr in LRS]
  return [({"method": m, "lr": lr}, config(m, lr, smoke)) for m, lr in grid]


def measure(config, workdir):
  """Test metrics of a finished run from its latest checkpoint: the fusion and unimodal
  classifiers (the objective's heads on the towers' embeddings ``z``), and a logistic-
  regression probe (sklearn, C = 1) of each tower's encoder features ``h`` and of their
  concatenation (``linear_probe``), fitted on the 455 training rows."""
  import jax
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import f1_score, roc_auc_score
  from jaxcl import data, losses
  from jaxcl.recipes.mcl import features, restore
  state, parts = restore(config, workdir)
  mods = data.info(config.data.name).modalities
  train = data.load_arrays(config.data.name, "train")
  test = data.load_arrays(config.data.name, "test")
  y, ytr = np.asarray(test["y"]), np.asarray(train["y"])
  z = np.asarray(features(parts, state, test["x"], "head"), np.float32)
  z = z.reshape(len(z), len(mods), -1)
  heads = jax.device_get(state.objective_params)
  fused, uni = (np.asarray(a, np.float64) for a in jax.jit(losses.contrib.m3col_heads)(heads, z))
  p = np.exp(fused - fused.max(1, keepdims=True))
  p = p[:, 1] / p.sum(1)
  out = {"test_accuracy": float(np.mean(fused.argmax(1) == y)),
         "test_auroc": float(roc_auc_score(y, p)),
         "test_f1": float(f1_score(y, fused.argmax(1)))}
  htr = np.asarray(features(parts, state, train["x"], "encoder"), np.float64)
  hte = np.asarray(features(parts, state, test["x"], "encoder"), np.float64)
  mu, sd = htr.mean(0), htr.std(0) + 1e-6
  htr, hte = (htr - mu) / sd, (hte - mu) / sd
  width = htr.shape[1] // len(mods)
  probe = lambda a, b: float(LogisticRegression(max_iter=2000).fit(a, ytr).score(b, y))
  out["linear_probe"] = probe(htr, hte)
  for i, mod in enumerate(mods):
    out[f"uni_{mod.name}"] = float(np.mean(uni[:, i].argmax(1) == y))
    cols = slice(i * width, (i + 1) * width)
    out[f"probe_{mod.name}"] = probe(htr[:, cols], hte[:, cols])
  return out


def run(grid, seeds, log=_study.log):
  """Every (setting, seed): ``jaxcl.train.train`` without the built-in evaluation (its
  per-modality JAX probes compile for longer than these runs train), then :func:`measure`."""
  import tempfile
  import time
  from jaxcl.train import logger, train
  _study.compile_cache()
  rows = []
  for label, config in grid:
    for seed in seeds:
      c = _study.quiet(config.copy_and_resolve_references())
      c.seed = seed
      c.eval.at_end = False
      t0, cpu0 = time.time(), _study._cpu_seconds()
      with tempfile.TemporaryDirectory() as workdir:
        train(c, workdir)
        logged = logger.read_metrics(workdir)
        row = {"setting": label, "seed": seed, **measure(c, workdir),
               "train/loss": logged[-1]["loss"]}
      row.update(wall_s=round(time.time() - t0, 2), cpu_s=round(_study._cpu_seconds() - cpu0, 2))
      rows.append(row)
      log(f"  {label} seed {seed}: test acc {row['test_accuracy']:.4f}, AUROC "
          f"{row['test_auroc']:.4f}, probe {row['linear_probe']:.4f} ({row['wall_s']:.1f} s)")
  return rows


def best(summary, method, metric="test_accuracy"):
  """``(lr, mean, std)`` of the method's grid point with the highest mean ``metric``."""
  cands = [(s["setting"]["lr"], s[metric]["mean"], s[metric]["std"]) for s in summary
           if s["setting"]["method"] == method and metric in s]
  return max(cands, key=lambda t: t[1]) if cands else (None, float("nan"), float("nan"))


def _pct(m):
  return f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}%"


def verdict(summary, grid, seeds, rows):
  b = {m: best(summary, m) for m in METHODS}
  if any(math.isnan(v[1]) for v in b.values()):
    return "Not all settings were run: no verdict."
  x = lambda m: (b[m][1], b[m][2])
  auc = {m: _study.mean_std(summary, "test_auroc", method=m, lr=b[m][0]) for m in METHODS}

  def rel(a, c):
    if not _study.separated(x(a), x(c)):
      return "level with (within the seed spread)"
    return "above" if x(a)[0] > x(c)[0] else "below"
  vs_ce, vs_clip, clip_ce = rel("ce_m3col", "ce"), rel("ce_m3col", "ce_clip"), rel("ce_clip", "ce")
  lines = [f"{NAMES[m]} (best lr {b[m][0]}): test accuracy {_pct(x(m))}, AUROC "
           f"{auc[m][0]:.4f} ± {auc[m][1]:.4f}" for m in METHODS]
  lines += [f"CE + M3Co -> SoftCLIP vs CE: {vs_ce}; vs CE + CLIP: {vs_clip}; "
            f"CE + CLIP vs CE: {clip_ce}."]
  if vs_ce == "above" and vs_clip == "above":
    head = ("**Reproduces** the paper's direction on the proxy: M3CoL's term lifts the fusion "
            "classifier's test accuracy above both CE and CE + CLIP beyond the seed spread.")
  elif vs_ce == "above" or vs_clip == "above":
    head = ("**Partly reproduces**: M3CoL is above " + ("CE" if vs_ce == "above" else
            "CE + CLIP") + " beyond the seed spread but " + (vs_clip if vs_ce == "above"
            else vs_ce) + " " + ("CE + CLIP" if vs_ce == "above" else "CE") + ".")
  elif "below" in (vs_ce, vs_clip):
    head = ("**Does not reproduce on the proxy**: M3CoL's term does not improve the fusion "
            "classifier; it is below " + " and ".join(
                n for n, r in (("CE", vs_ce), ("CE + CLIP", vs_clip)) if r == "below")
            + " beyond the seed spread.")
  else:
    head = ("**Does not reproduce on the proxy**: the three methods' best test accuracies "
            f"lie within {100 * (max(v[1] for v in b.values()) - min(v[1] for v in b.values())):.1f} "
            "points, inside the seed spread (breast_cancer is near its ceiling: one test row is "
            "0.9 points), so no improvement from M3CoL's cross-modal term can be claimed.")
  return (_study.incomplete_prefix(grid, seeds, rows) + head
          + _study.missing_note(grid, seeds, rows) + "\n\n"
          + "\n".join(f"- {l}" for l in lines))


def main(argv=None):
  args = _study.parse_args(argv)
  grid = settings(args.smoke)
  seeds = (0,) if args.smoke else SEEDS
  if args.replot:
    with open(os.path.join(args.out, f"{NAME}.json")) as f:
      saved = json.load(f)
    rows, info = saved["runs"], saved["machine"]
  else:
    rows, info = run(grid, seeds), None
  summary = _study.summarize(rows, METRICS + ("train/loss", "wall_s", "cpu_s"))
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  methods = [m for m in METHODS if not math.isnan(best(summary, m)[1])]
  for ax, metric, label in ((axes[0], "test_accuracy", "fusion test accuracy (%)"),
                            (axes[1], "test_auroc", "fusion test AUROC (x100)")):
    for j, lr in enumerate(LRS):
      vals = [_study.mean_std(summary, metric, method=m, lr=lr) for m in methods]
      ax.bar(np.arange(len(methods)) + 0.38 * (j - 0.5), [100 * v[0] for v in vals], 0.38,
             yerr=[100 * v[1] for v in vals], capsize=3, label=f"lr {lr}")
    ax.set_xticks(range(len(methods)), [NAMES[m] for m in methods], fontsize=8)
    finite = [100 * s[metric]["mean"] for s in summary if metric in s]
    if finite:
      ax.set_ylim(max(0, min(finite) - 4), min(100.5, max(finite) + 2))
    ax.set_ylabel(label)
    ax.legend(fontsize=8)
  c0 = grid[0][1]
  fig.suptitle(f"M3CoL proxy: breast_cancer as 3 blocks, {c0.num_steps} steps at batch "
               f"{c0.batch_size} (mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  setup = (f"breast_cancer_blocks (sklearn breast_cancer, 455 train / 114 test, standardised "
           f"with train statistics) as three tabular modalities: mean / standard error / "
           f"worst (10 features each). Per modality Linear(10, 64)-ReLU-Linear(64, 32); fusion "
           f"classifier on the concatenated 96-d embeddings + one classifier per modality "
           f"(Linear-ReLU-Linear, 32 hidden), loss CE(fusion) + sum of the 3 unimodal CEs "
           f"(+ 0.1 x the cross-modal term). AdamW (wd 1e-4), lr grid {list(LRS)} with "
           f"{c0.optim.warmup_steps} warm-up steps, {c0.num_steps} steps at batch "
           f"{c0.batch_size} for every method, no augmentation. CLIP: T = 0.1, cyclic pairs "
           f"(mean, se), (se, worst), (worst, mean). M3CoL: input-space mixing of each "
           f"modality (Beta(0.15, 0.15), each row mixed with probability 0.5, partners a "
           f"random cycle of the batch), M3Co T = 0.1 against the next modality's embeddings "
           f"for steps < {c0.num_steps // 3}, then SoftCLIP (T' = 0.125). Metrics: the fusion "
           f"classifier's test accuracy / AUROC / F1, the unimodal heads' accuracies (uni_*) "
           f"and logistic-regression probes (sklearn) of each tower's encoder features (probe_*) "
           f"and of their concatenation (linear probe); mean "
           f"± std over seeds {list(seeds)}. A difference is called only when the means "
           f"differ by more than the sum of the two std's.")
  table = _study.table(summary, COLUMNS, METRICS + ("train/loss", "cpu_s"))
  _study.write(NAME, args.out, title="M3CoL: CE vs CE + CLIP vs CE + M3Co -> SoftCLIP "
               "(breast_cancer blocks)", command=_study.command(NAME, args.smoke),
               setup_text=setup, summary=summary, rows=rows, figure=fig, info=info,
               verdict=verdict(summary, grid, seeds, rows), table_md=table)


if __name__ == "__main__":
  main()
