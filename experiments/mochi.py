"""Study `mochi`: MoCHi hard-negative mixing at small batch, with and without a MoCo teacher +
queue, on digits (methods.md section 5; MNIST-1D with the 1-D CNN took ~10 min per run on
the shared 2-core CPU, too slow for 12 runs).

Claim (Kalantidis et al., arXiv 2010.01028): adding per-query synthetic hard negatives (mixes
of the hardest negatives, type 1, and of the query with them, type 2) to MoCo v2 learns faster
and gives ~+1 point linear accuracy (ImageNet-100), while the proxy task (is the positive the
top logit?) gets harder. Four runs at global batch 32, equal budget (same steps, lr, schedule,
T, encoder, seeds): InfoNCE with in-batch negatives; MoCHi with the gathered batch as its pool
(MoCHi(16, 16, 8), scaled to the 31 in-batch negatives); MoCo (EMA teacher 0.99 + queue 512,
configs/moco_digits.py); MoCHi(64, 64, 32) on MoCo, mining the queue (configs/mochi_digits.py).

``python -m experiments.mochi [--smoke] [--replot]``
"""
import tempfile
import time

from experiments import _study

T = 0.2                 # MoCo v2's temperature, for every run
BATCH = 32
STEPS = 200
CHECKPOINTS = 2         # kNN / probe measured at STEPS/2 and STEPS (speed of learning)
SEEDS = (0, 1, 2)
METHODS = ("infonce_batch", "mochi_batch", "moco", "mochi_moco")
LABELS = {"infonce_batch": "InfoNCE (batch negatives)", "mochi_batch": "MoCHi(16,16,8) on batch",
          "moco": "MoCo (EMA + queue 512)", "mochi_moco": "MoCHi(64,64,32) on MoCo"}


def settings(smoke):
  from configs.mochi_digits import get_config as mochi_recipe
  from configs.moco_digits import get_config as moco_recipe
  from configs.simclr_digits import get_config as base
  out = []
  for method in (("mochi_batch", "mochi_moco") if smoke else METHODS):
    c = base()
    c.batch_size = 16 if smoke else BATCH
    c.num_steps = 4 if smoke else STEPS
    c.optim.warmup_steps = 1 if smoke else 20
    c.eval.probe_l2 = (1e-4,)
    c.eval.probe_steps = 10 if smoke else 100
    recipe = moco_recipe() if method in ("infonce_batch", "moco") else mochi_recipe()
    c.loss.name, c.loss.kwargs = recipe.loss.name, dict(recipe.loss.kwargs)
    c.loss.kwargs["temperature"] = T
    if method in ("moco", "mochi_moco"):
      c.momentum = recipe.momentum
      c.queue.size = 64 if smoke else recipe.queue.size
      if smoke and method == "mochi_moco":
        c.loss.kwargs.update(num_hard=8, num_mix=8, num_mix_query=4)
    if method == "mochi_batch":  # pool = the 31 other keys of the global batch
      c.loss.kwargs.update(num_hard=8 if smoke else 16, num_mix=8 if smoke else 16,
                           num_mix_query=4 if smoke else 8)
      del c.loss.kwargs["mine"]
    out.append(({"method": method}, c))
  return out


def run_grid(grid, seeds, log=_study.log):
  """Like ``_study.run_grid`` but also keeps the kNN / probe history and the logged proxy-task
  accuracy (mean over the second half of training)."""
  from jaxcl.train import logger, train
  rows = []
  for label, config in grid:
    for seed in seeds:
      c = _study.quiet(config.copy_and_resolve_references())
      c.seed = seed
      c.eval.every = c.num_steps // CHECKPOINTS    # 0 in the smoke run: final eval only
      c.log_every = max(c.num_steps // 20, 1)
      t0 = time.time()
      with tempfile.TemporaryDirectory() as workdir:
        out = train(c, workdir)
        logged = logger.read_metrics(workdir)
      (res,) = out["final"].values()
      row = {"setting": label, "seed": seed, "wall_s": round(time.time() - t0, 2),
             **{k: res[k] for k in _study.METRICS if k in res},
             "history": [{"step": h["step"], "knn": h["knn"], "linear_probe": h["linear_probe"]}
                         for h in out["history"]]}
      late = [m["proxy_acc"] for m in logged if "proxy_acc" in m and m["step"] > c.num_steps / 2]
      if late:
        row["proxy_acc"] = sum(late) / len(late)
      for h in row["history"][:-1]:
        row[f"knn@{h['step']}"] = h["knn"]
      rows.append(row)
      log(f"  {label} seed {seed}: probe {100 * row['linear_probe']:.2f}%  "
          f"kNN {100 * row['knn']:.2f}%  ({row['wall_s']:.1f} s)")
  return rows


def verdict(summary, early):
  get = lambda m, metric: _study.mean_std(summary, metric, method=m)
  lines, wins = [], {}
  for base, method in (("infonce_batch", "mochi_batch"), ("moco", "mochi_moco")):
    for metric in ("linear_probe", "knn", early):
      a, b = get(method, metric), get(base, metric)
      if a[0] != a[0] or b[0] != b[0]:
        continue
      wins[(method, metric)] = a[0] > b[0] and _study.separated(a, b)
      lines.append(f"{LABELS[method]} − {LABELS[base]}: {100 * (a[0] - b[0]):+.2f} points "
                   f"({metric.replace('_', ' ')}){_study.spread_note(a, b)}")
  pa, pb = get("mochi_moco", "proxy_acc"), get("moco", "proxy_acc")
  if pa[0] == pa[0] and pb[0] == pb[0]:
    lines.append(f"proxy-task accuracy (positive above every real negative, second half of "
                 f"training): MoCHi on MoCo {100 * pa[0]:.1f}% vs MoCo {100 * pb[0]:.1f}%"
                 f"{_study.spread_note(pa, pb)}")
  moco = any(wins.get(("mochi_moco", m)) for m in ("linear_probe", "knn", early))
  head = ("The proxy **reproduces** the direction for MoCo: MoCHi on MoCo beats MoCo beyond "
          "the seed spread on at least one of probe / kNN / early kNN." if moco else
          "The proxy **does not reproduce** the claim: MoCHi on MoCo is not better than MoCo "
          "beyond the seed spread (final probe, final kNN or early kNN).")
  return head + "\n\n" + "\n".join(f"- {l}" for l in lines)


def main(argv=None):
  args = _study.parse_args(argv)
  grid = settings(args.smoke)
  seeds = (0,) if args.smoke else SEEDS
  rows, info = ((_study.runs("mochi", args, grid, seeds)) if args.replot
                else (run_grid(grid, seeds), None))
  steps = sorted({h["step"] for r in rows for h in r["history"]})
  early = f"knn@{steps[0]}" if len(steps) > 1 else "knn"
  summary = _study.summarize(rows, _study.METRICS + ("proxy_acc", early))
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  import numpy as np
  for m in [m for m in METHODS if any(r["setting"]["method"] == m for r in rows)]:
    runs = [r for r in rows if r["setting"]["method"] == m]
    curve = np.array([[h["knn"] for h in r["history"]] for r in runs]) * 100
    axes[0].errorbar(steps, curve.mean(0), curve.std(0), marker="o", capsize=3, label=LABELS[m])
    probe = np.array([r["linear_probe"] for r in runs]) * 100
    axes[1].bar(LABELS[m].split(" (")[0].replace(" on ", "\non "), probe.mean(), yerr=probe.std(),
                capsize=3)
  axes[0].set_xlabel("training step")
  axes[0].set_ylabel("kNN test accuracy (%)")
  axes[0].legend(fontsize=8)
  axes[1].set_ylabel("final linear probe (%)")
  lo = min(100 * s["linear_probe"]["mean"] for s in summary) - 5
  axes[1].set_ylim(max(lo, 0), None)
  axes[1].tick_params(axis="x", labelsize=7)
  c0 = grid[0][1]
  fig.suptitle(f"digits, MLP, batch {c0.batch_size}, {c0.num_steps} steps, T={T}, "
               f"{len(seeds)} seeds")
  setup = (f"sklearn digits (1,437 train / 360 test), MLP encoder + 2-layer head (configs/"
           f"simclr_digits.py), global batch {c0.batch_size}, AdamW lr {c0.optim.lr}, "
           f"{c0.num_steps} steps, T = {T} for every run, one-direction InfoNCE (view 0 query, "
           f"view 1 key). MoCo: EMA teacher m = 0.99 encodes view 1, queue of 512 past keys "
           f"(the other keys of the batch are negatives too). MoCHi(N, s, s'): N hardest "
           f"negatives of the pool, s type-1 and s' type-2 mixes per query (batch pool: the 31 "
           f"other keys; MoCo pool: the queue). kNN (k = 20) at steps {steps}; linear probe "
           f"(l2 = 1e-4) at the end; proxy-task accuracy = fraction of the batch whose positive "
           f"beats every real negative (batch + queue, no synthetic points), logged every "
           f"{max(c0.num_steps // 20, 1)} steps, mean over the second half (MoCo runs only). "
           f"Mean ± std over seeds {list(seeds)}.")
  head = ["method", "linear probe", "kNN", f"kNN at step {steps[0]}", "proxy-task acc."]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [LABELS[s["setting"]["method"]]]
    cells += [_study.fmt(s.get(m), percent=True) for m in ("linear_probe", "knn", early,
                                                           "proxy_acc")]
    lines.append("| " + " | ".join(cells) + " |")
  table = "\n".join(lines)
  _study.write("mochi", args.out, title="MoCHi vs InfoNCE / MoCo at batch 32 (digits proxy)",
               command=_study.command("mochi", args.smoke), setup_text=setup, summary=summary,
               rows=rows, figure=fig, info=info, verdict=verdict(summary, early), table_md=table)


if __name__ == "__main__":
  main()
