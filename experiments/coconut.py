"""Study `coconut`: class-incremental digits, experience replay (ER) vs ER + NSPT vs
ER + NSPT + MM (COCONUT; Cappellazzo et al., Findings of ACL 2024, arXiv 2310.02699;
methods.md section 11, CPU proxy).

Claim (methods.md, from the paper's abstract / summary): on top of experience replay, the
NSPT term (rehearsal anchors, positives from the frozen previous-task teacher, negatives from
the student) reduces forgetting and raises the average accuracy; the multimodal (MM) term
adds to it (COCONUT = both). The paper's numbers (FSC, SLURP) were not found.

Proxy (``configs/coconut_digits.py``, :mod:`jaxcl.recipes.coconut`): sklearn digits in 5 tasks
of 2 classes (0-1, ..., 8-9), MLP encoder + projection head + linear CE head, a buffer of the
first 20 training rows of every finished class, batches of 32 current + 32 replayed rows
(64 current rows on the first task), 150 AdamW steps per task. Every method has the *same*
budget: the same steps, batch, buffer, views, optimiser and seeds; the methods differ only in
the loss weights (``nspt_weight``, ``mm_weight``: 0 or 1, untuned; ``T = 0.1``). The MM term's
second modality is a second augmented view of the same digit (two-view proxy). ``finetune``
(no buffer, no replay, same steps) is a reference for how much there is to forget, not a
competitor. Metrics: after the last task, the average over the 5 tasks of the head's
class-incremental test accuracy (argmax over the 10 classes seen) and the average forgetting
(Chaudhry et al.: best earlier accuracy minus final, over tasks 0-3), plus a linear probe and
kNN of the final encoder on all 10 classes. Not pinned down by the paper and chosen without
tuning: T, the weights, NSPT's denominator (hypothesised form), NSPT on view 0 only, MM on the
current rows only.

``python -m experiments.coconut [--smoke]``
"""
import json
import os
import time

from experiments import _study

STEPS = 150  # per task
METHODS = {  # method -> (nspt_weight, mm_weight, replay)
    "finetune": (0.0, 0.0, False),
    "ER": (0.0, 0.0, True),
    "ER+NSPT": (1.0, 0.0, True),
    "ER+NSPT+MM": (1.0, 1.0, True),
}
COLUMNS = ("method", "nspt", "mm", "replay")
METRICS = ("average_accuracy", "forgetting", "last_task_accuracy", "old_tasks_accuracy",
           "linear_probe", "knn")


def derived(row):
  """After the last task: the accuracy on it (plasticity) and the mean on the earlier ones."""
  last = row["accuracy_matrix"][-1]
  return {**row, "last_task_accuracy": last[-1],
          "old_tasks_accuracy": sum(last[:-1]) / max(len(last) - 1, 1)}


def _config(method, smoke):
  from configs.coconut_digits import get_config
  c = get_config()
  w1, w2, replay = METHODS[method]
  c.coconut.nspt_weight, c.coconut.mm_weight = w1, w2
  if not replay:
    c.coconut.buffer_per_class, c.coconut.replay_batch = 0, 0
  c.checkpoint.use_async = False
  c.progress = False
  if smoke:  # plumbing only: 2 tasks of 2 steps, a small MLP
    c.batch_size, c.num_steps, c.optim.warmup_steps = 16, 2, 1
    c.coconut.num_tasks, c.coconut.replay_batch = 2, (8 if replay else 0)
    c.model.encoder_kwargs = {"hidden": (32,)}
    c.model.head_hidden, c.model.head_out = 32, 16
    c.eval.probe_steps = 5
  else:
    c.num_steps = STEPS
  c.log_every = c.checkpoint.every = c.num_steps
  return c


def settings(smoke):
  # Smoke: the full objective only (replay, teacher, NSPT, MM; one step compile).
  methods = ("ER+NSPT+MM",) if smoke else tuple(METHODS)
  return [({"method": m, "nspt": METHODS[m][0], "mm": METHODS[m][1],
            "replay": "yes" if METHODS[m][2] else "no"}, _config(m, smoke)) for m in methods]


def run(grid, seeds, keep=None):
  from jaxcl.recipes import coconut
  _study.compile_cache()
  rows = []
  for label, config in grid:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.seed = seed
      t0, cpu0 = time.time(), _study._cpu_seconds()
      with _study.run_dir(keep, f"{label['method']}_seed{seed}") as workdir:
        res = coconut.train(c, workdir)
      row = {"setting": label, "seed": seed, "wall_s": round(time.time() - t0, 2),
             "cpu_s": round(_study._cpu_seconds() - cpu0, 2),
             **{k: res[k] for k in ("average_accuracy", "forgetting", "linear_probe", "knn")},
             "accuracy_matrix": res["accuracy"]}
      row = derived(row)
      rows.append(row)
      _study.log(f"  {label['method']} seed {seed}: avg acc {100 * row['average_accuracy']:.1f}%"
                 f"  forgetting {100 * row['forgetting']:.1f}%  probe "
                 f"{100 * row['linear_probe']:.1f}%  ({row['wall_s']:.1f} s)")
  return rows


def _pct(m):
  return f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}%"


def _cmp(summary, metric, a, b, better):
  """``(sign, text)``: +1 when ``a`` is better than ``b`` beyond the seed spread (``better``:
  "higher" or "lower"), -1 when worse, 0 within the spread, None when not run."""
  x = _study.mean_std(summary, metric, method=a)
  y = _study.mean_std(summary, metric, method=b)
  if x[0] != x[0] or y[0] != y[0]:
    return None, f"{a} vs {b}: not run"
  up = x[0] > y[0] if better == "higher" else x[0] < y[0]
  sign = (1 if up else -1) if _study.separated(x, y) else 0
  word = {1: "better", 0: "level", -1: "worse"}[sign]
  return sign, (f"{metric.replace('_', ' ')}: {a} {_pct(x)} vs {b} {_pct(y)} "
                f"({word}{_study.spread_note(x, y)}; {better} is better)")


def verdict(summary):
  parts = {}
  lines = []
  for a, b in (("ER+NSPT", "ER"), ("ER+NSPT+MM", "ER+NSPT"), ("ER+NSPT+MM", "ER")):
    for metric, better in (("forgetting", "lower"), ("average_accuracy", "higher"),
                           ("last_task_accuracy", "higher")):
      parts[(a, b, metric)], text = _cmp(summary, metric, a, b, better)
      lines.append(text)
  old_tasks = {a: _cmp(summary, "old_tasks_accuracy", a, "ER", "higher") for a in
               ("ER+NSPT", "ER+NSPT+MM")}
  lines += [text for _, text in old_tasks.values()]
  lines.append(_cmp(summary, "linear_probe", "ER+NSPT+MM", "ER", "higher")[1])
  ref = _study.mean_std(summary, "average_accuracy", method="finetune")
  if ref[0] == ref[0]:
    lines.append(f"reference: finetune (no replay) average accuracy {_pct(ref)}, forgetting "
                 f"{_pct(_study.mean_std(summary, 'forgetting', method='finetune'))}")
  if any(v is None for v in parts.values()):
    return "Not all settings were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  word = lambda s: {1: "**better beyond the seed spread**", 0: "**within the seed spread**",
                    -1: "**worse beyond the seed spread**"}[s]
  p = lambda a, b: [parts[(a, b, m)] for m in ("forgetting", "average_accuracy",
                                               "last_task_accuracy")]
  nspt, mm, full = p("ER+NSPT", "ER"), p("ER+NSPT+MM", "ER+NSPT"), p("ER+NSPT+MM", "ER")
  claims = [f"({k}) {name}: forgetting {word(f)}, average accuracy {word(a)} (accuracy on the "
            f"last task, i.e. plasticity: {word(l).replace('**', '')})"
            for k, name, (f, a, l) in (("i", "NSPT on top of ER", nspt),
                                       ("ii", "MM on top of ER+NSPT", mm),
                                       ("iii", "COCONUT (ER+NSPT+MM) vs ER", full))]
  helps = lambda f, a: (f == 1 and a >= 0) or (a == 1 and f >= 0)
  nspt_ok, mm_ok = helps(nspt[0], nspt[1]), helps(mm[0], mm[1])
  if nspt_ok and mm_ok:
    head = ("**Reproduces** on the proxy: NSPT reduces forgetting vs ER and MM adds to it")
  elif nspt_ok or mm_ok or helps(full[0], full[1]):
    head = ("**Partly reproduces** on the proxy: "
            + ("NSPT's effect reproduces (less forgetting than ER, no loss of average "
               "accuracy)" if nspt_ok else "NSPT's effect does not reproduce")
            + ("; MM's added effect reproduces" if mm_ok else
               "; MM's added effect does **not** reproduce"))
  else:
    head = "**Does not reproduce on the proxy**"
  trade = [a for a, (sign, _) in old_tasks.items()
           if sign == 1 and parts[(a, "ER", "last_task_accuracy")] == -1]
  if trade:
    head += (". " + " and ".join(trade) + " trade plasticity for stability: above ER on the "
             "earlier tasks but below it on the newest one (after the last task), beyond the "
             "seed spread")
  return (head + ". Per part (the formulas are the hypothesised ones of methods.md; weights "
          "and T untuned):\n\n" + "\n".join(f"- {c}" for c in claims) + "\n\nNumbers:\n\n"
          + "\n".join(f"- {l}" for l in lines))


def table(summary):
  head = list(COLUMNS) + [m.replace("_", " ") for m in METRICS]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [str(s["setting"][c]) for c in COLUMNS]
    cells += [_study.fmt(s.get(m), percent=True) + "%" for m in METRICS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None):
  import numpy as np
  args = _study.parse_args(argv)
  seeds = (0,) if args.smoke else (0, 1, 2)
  grid = settings(args.smoke)
  info = None
  if args.replot:
    with open(os.path.join(args.out, "coconut.json")) as f:
      saved = json.load(f)
    rows, info, wall = saved["runs"], saved["machine"], saved.get("study_wall_s")
  else:
    t0 = time.time()
    rows = run(grid, seeds, args.keep_runs)
    wall = round(time.time() - t0, 1)
    _study.log(f"study wall time {wall:.0f} s")
  rows = [derived(r) for r in rows]
  summary = _study.summarize(rows, METRICS)
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  names = [s["setting"]["method"] for s in summary]
  colors = {"finetune": "tab:gray", "ER": "tab:blue", "ER+NSPT": "tab:orange",
            "ER+NSPT+MM": "tab:green"}
  for ax, m in zip(axes[:2], ("average_accuracy", "forgetting")):
    means = [100 * s[m]["mean"] for s in summary]
    stds = [100 * s[m]["std"] for s in summary]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=3,
           color=[colors.get(n, "tab:red") for n in names])
    ax.set_xticks(range(len(summary)), names, fontsize=8)
    ax.set_ylabel({"average_accuracy": "average accuracy after the last task (%)",
                   "forgetting": "average forgetting (%)"}[m])
  ax = axes[2]
  for name in names:
    curves = np.array([[np.mean(a) for a in r["accuracy_matrix"]] for r in rows
                       if r["setting"]["method"] == name])
    x = np.arange(1, curves.shape[1] + 1)
    ax.errorbar(x, 100 * curves.mean(0), yerr=100 * curves.std(0), capsize=3, marker="o",
                label=name, color=colors.get(name, "tab:red"))
  ax.set_xlabel("tasks learnt")
  ax.set_ylabel("accuracy on the tasks seen (%)")
  ax.legend(fontsize=8)
  c0 = next(c for label, c in grid if label["replay"] == "yes")
  m0 = c0.coconut
  fig.suptitle(f"Class-incremental digits ({m0.num_tasks} tasks x "
               f"{m0.classes_per_task} classes), {c0.num_steps} steps per task, batch "
               f"{c0.batch_size} (mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  setup = (f"sklearn digits (1,437 train / 360 test), {m0.num_tasks} tasks of "
           f"{m0.classes_per_task} classes in ascending order, MLP encoder "
           f"{tuple(c0.model.encoder_kwargs['hidden'])} + 2-layer head ({c0.model.head_out}-d, no "
           f"BatchNorm) + linear CE head over all 10 classes; AdamW lr {c0.optim.lr}, "
           f"{c0.num_steps} steps per task at batch {c0.batch_size} (from the second task: "
           f"{c0.batch_size - m0.replay_batch} current + {m0.replay_batch} replayed rows) for "
           f"every method, the cheap digit views (1-pixel shift, random erasing, noise 0.1), "
           f"optimiser state and schedule reset at every task. Buffer: the first "
           f"{m0.buffer_per_class} training rows of each finished class. NSPT / MM: T = "
           f"{m0.temperature}, weight 1 when on (untuned); teacher = the model at the task's "
           f"start, frozen. Metrics after the last task: average class-incremental accuracy "
           f"of the head over the {m0.num_tasks} tasks, average forgetting over the first "
           f"{m0.num_tasks - 1}, linear probe (l2 = 1e-4) / kNN of the final encoder on all the "
           f"tasks' classes; mean ± std over seeds {list(seeds)}. A difference is called only "
           f"when the means differ by more than the sum of the two std's. finetune = no "
           f"buffer, no replay, same steps (reference only). Study wall time {wall} s (CPU "
           f"{sum(r.get('cpu_s', 0) for r in rows):.0f} s over the runs; per run: wall_s / "
           f"cpu_s in coconut.json).")
  _study.write("coconut", args.out, title="COCONUT: ER vs ER+NSPT vs ER+NSPT+MM "
               "(class-incremental digits)", command=_study.command("coconut", args.smoke),
               setup_text=setup, summary=summary, rows=rows, figure=fig, info=info,
               verdict=verdict(summary), table_md=table(summary),
               extra={"study_wall_s": wall})


if __name__ == "__main__":
  main()
