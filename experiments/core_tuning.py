"""Study `core_tuning`: contrast-regularised fine-tuning (Core-tuning) vs CE and CE + SupCon
fine-tuning of a SimCLR-pretrained encoder with 10% of the labels (digits proxy, methods.md
section 22).

Claims (Zhang et al., arXiv 2102.06605; headline checked in the reference README: CIFAR-10,
MoCo-v2 ResNet-50, CE-tuning 94.70 -> Core-tuning 97.31): (i) Core-tuning (hard-pair mixtures +
focal SupCon + soft-label CE) reaches a higher test accuracy than plain CE fine-tuning;
(ii) the contrastive regulariser tightens the classes: a lower intra-class scatter (mean
intra-class cosine distance of the test features) for CE + SupCon and Core-tuning than for CE.

Protocol (``configs/core_tuning_digits.py``): per seed, SimCLR (NT-Xent, T = 0.2) pretrains the
MLP encoder once on all 1,437 unlabelled training images (``configs/simclr_digits.py``, 300 steps
at batch 128 here); each fine-tuning run copies that encoder (``config.init``), drops the SimCLR
head and trains encoder + a fresh classifier (no bias) + a fresh contrastive head on the first 14
labelled images per class (140, ~10%). The three methods are the one objective with terms
switched off, so they share the classifier, head, parameters, views, batch (64 images = 128 rows),
steps (150) and the AdamW lr grid (warm-up 15, cosine):

* ``ce``: ``eta = 0, mixup = False`` (soft-label CE = CE on the original rows);
* ``ce_supcon``: ``mixup = False, focal = False, eta = 0.1``: CE + SupCon on ``g(h)``;
* ``core_tuning``: mixtures + focal SupCon + soft-label CE, ``eta = 0.1`` (the README's
  command), ``T = 0.07``, ``Beta(1, 1)``, ``lam >= 0.8``, intended math
  (``reproduce_code=False``).

The same ``eta`` and ``T`` for ``ce_supcon`` and ``core_tuning``; no method gets a search the
others do not. Metrics on the 360 test images: ``test_accuracy`` = the fine-tuned network's own
classifier (encoder + ``W``, the paper's metric); ``scatter`` = 1 - mean cosine similarity of
same-class pairs of encoder features (1 - the trainer's ``tolerance``); also the built-in linear
probe (fitted on the same 140 labels) and kNN. "Best lr" = the grid point with the highest mean
test accuracy, for every method (the same, optimistic, selection). A difference is called only
when the means differ by more than the sum of the two std's. The frozen SimCLR encoder with a
linear probe on the 140 labels is reported for reference.

``python -m experiments.core_tuning [--smoke]``
"""
import math
import os
import tempfile
import time

import numpy as np

from experiments import _study

NAME = "core_tuning"
PRETRAIN_STEPS, PRETRAIN_BATCH = 300, 128
STEPS, WARMUP = 150, 15
LRS = (1e-3, 3e-3)
ETA = 0.1
METHODS = {  # method -> the loss kwargs that differ from the recipe's
    "ce": {"eta": 0.0, "mixup": False},
    "ce_supcon": {"mixup": False, "focal": False},
    "core_tuning": {},
}
NAMES = {"ce": "CE", "ce_supcon": "CE + SupCon", "core_tuning": "Core-tuning",
         "frozen": "frozen SimCLR + probe"}
COLUMNS = ("method", "lr")
METRICS = ("test_accuracy", "scatter", "linear_probe", "knn")


def pretrain_config(smoke):
  from configs.simclr_digits import get_config
  c = _study.budget(get_config(), smoke, steps=PRETRAIN_STEPS, warmup=50, batch=PRETRAIN_BATCH)
  c.eval.at_end = False
  return c


def finetune_config(method, lr, smoke):
  from configs.core_tuning_digits import get_config
  c = get_config()
  c.loss.kwargs.eta = ETA
  c.loss.kwargs.update(METHODS[method])
  c.optim.lr = lr
  return _study.budget(c, smoke, steps=STEPS, warmup=WARMUP, batch=64)


def settings(smoke):
  # Smoke: pretraining, the encoder copy and one Core-tuning run (plumbing only).
  grid = [("core_tuning", 1e-3)] if smoke else [
      (m, lr) for m in METHODS for lr in LRS]
  return [({"method": m, "lr": lr}, finetune_config(m, lr, smoke)) for m, lr in grid]


def _measure(config, workdir, smoke, classifier=True):
  """Metrics of a run's encoder on the test images, from its latest checkpoint: the fine-tuned
  network's own classifier accuracy (``classifier``), the intra-class scatter, and the linear
  probe / kNN fitted on the same labelled images (the trainer's evaluation without its
  augmented-view geometry, which the study does not use)."""
  import jax
  from jaxcl import data
  from jaxcl.eval import evaluate
  from jaxcl.recipes.mcl import features, restore
  from jaxcl.train.trainer import _tolerance
  state, parts = restore(config, workdir)
  ft = finetune_config("ce", LRS[0], smoke)
  train = data.train_subset_arrays(data.load_arrays("digits", "train"),
                                   per_class=ft.data.per_class, where="config.data")
  test = data.load_arrays("digits", "test")
  ftr = np.asarray(features(parts, state, train["x"], "encoder"), np.float32)
  fte = np.asarray(features(parts, state, test["x"], "encoder"), np.float32)
  res = evaluate.evaluate_features(ftr, train["y"], fte, test["y"], 10, ft.eval, config.seed)
  out = {"linear_probe": res["linear_probe"], "knn": res["knn"],
         "scatter": 1.0 - _tolerance(fte, test["y"])}
  if classifier:
    w = np.asarray(jax.device_get(state.objective_params["classifier"]), np.float32)
    out["test_accuracy"] = float(np.mean(np.argmax(fte @ w.T, axis=1) == np.asarray(test["y"])))
  return out


def run(grid, seeds, smoke, log=_study.log):
  from jaxcl.train import logger, train
  _study.compile_cache()
  rows = []
  for seed in seeds:
    with tempfile.TemporaryDirectory() as tmp:
      pre = _study.quiet(pretrain_config(smoke))
      pre.eval.at_end = False
      pre.seed = seed
      pre_dir = os.path.join(tmp, "simclr")
      t0, cpu0 = time.time(), _study._cpu_seconds()
      train(pre, pre_dir)
      loss = logger.read_metrics(pre_dir)[-1]["loss"]
      log(f"  seed {seed}: SimCLR pretrained, final loss {loss:.4f} "
          f"({time.time() - t0:.1f} s)")
      if not smoke:
        row = {"setting": {"method": "frozen", "lr": "-"}, "seed": seed,
               **_measure(pre, pre_dir, smoke, classifier=False), "pretrain_loss": loss,
               "wall_s": round(time.time() - t0, 2),
               "cpu_s": round(_study._cpu_seconds() - cpu0, 2)}
        rows.append(row)
      for label, config in grid:
        c = _study.quiet(config.copy_and_resolve_references())
        c.seed = seed
        c.init.workdir = pre_dir
        t0, cpu0 = time.time(), _study._cpu_seconds()
        work = os.path.join(tmp, f"{label['method']}_{label['lr']}")
        c.eval.at_end = False       # measured below (classifier, scatter, probe, kNN)
        train(c, work)
        logged = logger.read_metrics(work)
        row = {"setting": label, "seed": seed, **_measure(c, work, smoke),
               "train/loss": logged[-1]["loss"],
               "wall_s": round(time.time() - t0, 2),
               "cpu_s": round(_study._cpu_seconds() - cpu0, 2)}
        rows.append(row)
        log(f"  {label} seed {seed}: test acc {row['test_accuracy']:.4f}, scatter "
            f"{row['scatter']:.4f}, probe {row['linear_probe']:.4f} ({row['wall_s']:.1f} s)")
  return rows


def best(summary, method, lrs, metric="test_accuracy"):
  pts = [(lr, _study.mean_std(summary, metric, method=method, lr=lr)) for lr in lrs]
  pts = [p for p in pts if not math.isnan(p[1][0])]
  return max(pts, key=lambda p: p[1][0]) if pts else (None, (float("nan"), float("nan")))


def _pct(ms):
  return f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}%"


def _word(a, b, higher_is_better=True):
  if not _study.separated(a, b):
    return "level with (within the seed spread)"
  return "above" if (a[0] > b[0]) else "below"


def verdict(summary, lrs):
  bests = {m: best(summary, m, lrs) for m in METHODS}
  if any(lr is None for lr, _ in bests.values()):
    return "Not all methods were run: no verdict."
  acc = {m: ms for m, (lr, ms) in bests.items()}
  scat = {m: _study.mean_std(summary, "scatter", method=m, lr=lr) for m, (lr, _) in bests.items()}
  lines = ["best-lr test accuracy (fine-tuned classifier): " + "; ".join(
      f"{NAMES[m]} {_pct(acc[m])} (lr {bests[m][0]})" for m in METHODS)]
  lines.append("intra-class scatter at the same lr: " + "; ".join(
      f"{NAMES[m]} {scat[m][0]:.3f} ± {scat[m][1]:.3f}" for m in METHODS))
  fr = _study.mean_std(summary, "linear_probe", method="frozen", lr="-")
  if not math.isnan(fr[0]):
    lines.append(f"reference: frozen SimCLR encoder + linear probe on the same labels "
                 f"{_pct(fr)}, scatter "
                 f"{_study.mean_std(summary, 'scatter', method='frozen', lr='-')[0]:.3f}")
  d = acc["core_tuning"][0] - acc["ce"][0]
  claim1 = acc["core_tuning"][0] > acc["ce"][0] and _study.separated(acc["core_tuning"],
                                                                     acc["ce"])
  lines.append(f"(i) Core-tuning − CE = {100 * d:+.1f} points: Core-tuning "
               f"{_word(acc['core_tuning'], acc['ce'])} CE")
  lines.append(f"Core-tuning − CE + SupCon = "
               f"{100 * (acc['core_tuning'][0] - acc['ce_supcon'][0]):+.1f} points: "
               f"{_word(acc['core_tuning'], acc['ce_supcon'])}")
  lower = {m: scat[m][0] < scat["ce"][0] and _study.separated(scat[m], scat["ce"])
           for m in ("ce_supcon", "core_tuning")}
  for m in ("ce_supcon", "core_tuning"):
    lines.append(f"(ii) scatter {NAMES[m]} − CE = {scat[m][0] - scat['ce'][0]:+.3f}: "
                 + ("lower" if lower[m] else
                    "not lower beyond the seed spread" if not _study.separated(scat[m], scat["ce"])
                    else "higher"))
  c1 = ("(i) **reproduces**: Core-tuning's test accuracy is above CE fine-tuning's beyond the "
        "seed spread" if claim1 else
        "(i) **does not reproduce on the proxy**: Core-tuning's test accuracy is not above CE "
        "fine-tuning's beyond the seed spread")
  higher = [NAMES[m] for m in lower if scat[m][0] > scat["ce"][0]
            and _study.separated(scat[m], scat["ce"])]
  c2 = ("(ii) **reproduces**: both contrastive regularisers lower the intra-class scatter"
        if all(lower.values()) else
        "(ii) **does not reproduce on the proxy**: the intra-class scatter is *higher* than CE's "
        "beyond the seed spread with " + " and ".join(higher) if len(higher) == len(lower) else
        "(ii) **partly reproduces**: only " + ", ".join(NAMES[m] for m in lower if lower[m])
        + " lowers the intra-class scatter beyond the seed spread" if any(lower.values()) else
        "(ii) **does not reproduce on the proxy**: neither contrastive regulariser lowers the "
        "intra-class scatter beyond the seed spread")
  caveat = (" Caveat: at this budget (150 steps) the fine-tuned classifiers are not converged "
            "(CE's final training loss is about 1 at the best lr) and each one is below a linear "
            "probe fitted on the same encoder and labels; the comparison is at an equal, small "
            "budget, not at convergence.")
  return c1 + "; " + c2 + "." + caveat + "\n\n" + "\n".join(f"- {l}" for l in lines)


def main(argv=None):
  args = _study.parse_args(argv)
  grid = settings(args.smoke)
  seeds = (0,) if args.smoke else (0, 1, 2)
  if args.replot:
    import json
    with open(os.path.join(args.out, f"{NAME}.json")) as f:
      saved = json.load(f)
    rows, info = saved["runs"], saved["machine"]
  else:
    t0 = time.time()
    rows, info = run(grid, seeds, args.smoke), None
    _study.log(f"study wall time {time.time() - t0:.0f} s")
  summary = _study.summarize(rows, METRICS + ("train/loss", "cpu_s"))
  lrs = (1e-3,) if args.smoke else LRS
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  colors = {"ce": "tab:blue", "ce_supcon": "tab:green", "core_tuning": "tab:orange"}
  for ax, metric, scale, ylabel in ((axes[0], "test_accuracy", 100, "test accuracy (%)"),
                                    (axes[1], "scatter", 1, "intra-class scatter "
                                     "(1 - mean same-class cosine)")):
    for m in METHODS:
      pts = [(lr, _study.mean_std(summary, metric, method=m, lr=lr)) for lr in lrs]
      pts = [p for p in pts if not math.isnan(p[1][0])]
      if pts:
        ax.errorbar([p[0] for p in pts], [scale * p[1][0] for p in pts],
                    yerr=[scale * p[1][1] for p in pts], marker="o", capsize=3,
                    color=colors[m], label=NAMES[m])
    ax.set_xscale("log")
    ax.set_xlabel("fine-tuning lr (AdamW)")
    ax.set_ylabel(ylabel)
  fr = _study.mean_std(summary, "linear_probe", method="frozen", lr="-")
  if not math.isnan(fr[0]):
    axes[0].axhline(100 * fr[0], color="gray", ls="--", label=NAMES["frozen"])
  axes[0].legend(fontsize=8)
  c0 = grid[0][1]
  fig.suptitle(f"Core-tuning vs CE vs CE + SupCon fine-tuning, digits, "
               f"{c0.data.per_class} labels/class, {c0.num_steps} steps "
               f"(mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  setup = (f"sklearn digits (8x8, 1,437 train / 360 test). Per seed: SimCLR pretraining of the "
           f"MLP encoder (256-256) + 2-layer head (64-d), NT-Xent T = 0.2, "
           f"{PRETRAIN_STEPS if not args.smoke else 3} steps at batch "
           f"{PRETRAIN_BATCH if not args.smoke else 32} on all training images (no labels); "
           f"then fine-tuning of the encoder (SimCLR head dropped) + a fresh bias-free "
           f"classifier + a fresh contrastive head (256-256-64) on the first "
           f"{c0.data.per_class} images of each class ({10 * c0.data.per_class} labels, ~10%), "
           f"{c0.num_steps} steps at batch {c0.batch_size} images x 2 views, AdamW (warm-up "
           f"{c0.optim.warmup_steps}, cosine) over the lr grid {list(lrs)}, the same for every "
           f"method; views: 1-pixel shift, random erasing, noise 0.1. eta = {ETA} and T = 0.07 "
           f"for both contrastive variants; Core-tuning with Beta(1, 1) mixing, lam >= 0.8, "
           f"intended math (see jaxcl/losses/core_tuning.py). Test accuracy = the fine-tuned "
           f"network's own classifier; scatter = 1 − mean cosine similarity of same-class test "
           f"feature pairs; linear probe / kNN fitted on the same labelled images. Mean ± std "
           f"over seeds {list(seeds)}; each seed has its own pretraining, shared by all its "
           f"fine-tuning runs. cpu s = process CPU seconds per run.")
  _study.write(NAME, args.out, title="Core-tuning vs CE vs CE + SupCon fine-tuning with 10% "
               "of the labels (digits)", command=_study.command(NAME, args.smoke),
               setup_text=setup, summary=summary, rows=rows, figure=fig, info=info,
               verdict=verdict(summary, lrs),
               table_md=_table(summary))


def _table(summary):
  """The study's table, accuracies in %."""
  metrics = METRICS + ("train/loss", "cpu_s")
  head = list(COLUMNS) + [m.replace("_", " ") for m in metrics]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for e in summary:
    cells = [str(e["setting"][c]) for c in COLUMNS]
    cells += [_study.fmt(e.get(m), percent=m in ("test_accuracy", "linear_probe", "knn"))
              for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
