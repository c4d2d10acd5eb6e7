"""Shared machinery of the method studies: a grid of (setting, seed) runs of the shared trainer,
mean +- std over seeds, and the Markdown / JSON / PNG outputs in ``experiments/results/``.

A study module builds ``settings = [(label_dict, config), ...]`` and calls :func:`run_study`;
every run is ``jaxcl.train.train(config, tmpdir)`` with the final linear probe + kNN + geometry
evaluation (no baselines, plots or progress bars, to save time).

Example:
  >>> summarize([{"setting": {"T": 0.1}, "seed": 0, "linear_probe": 0.5},
  ...            {"setting": {"T": 0.1}, "seed": 1, "linear_probe": 0.7}], ["linear_probe"])
  [{'setting': {'T': 0.1}, 'n': 2, 'linear_probe': {'mean': 0.6, 'std': 0.1}}]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METRICS = ("linear_probe", "knn", "alignment", "uniformity", "tolerance", "effective_rank",
           "probe_mae", "probe_val_mae", "ordinality")  # the last three: regression targets


def parse_args(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--smoke", action="store_true", help="tiny budget: a few steps, one seed")
  p.add_argument("--out", default=RESULTS, help="directory for <study>.md/.json/.png")
  p.add_argument("--replot", action="store_true",
                 help="re-render md/png from the runs in <out>/<study>.json (no training)")
  p.add_argument("--shard", default=None, metavar="I/N",
                 help="run only settings I, I+N, I+2N, ... (all seeds), appending each "
                      "setting's runs to <out>/<study>.rows.jsonl as it finishes; settings "
                      "already there are skipped (so a killed shard resumes); no md/png")
  p.add_argument("--from-rows", action="store_true",
                 help="render md/json/png from <out>/<study>.rows.jsonl (all shards' runs)")
  p.add_argument("--keep-runs", default=None, metavar="DIR",
                 help="keep each run's workdir under DIR/<run> (studies that support it: mcl, "
                      "coconut) instead of a temporary directory")
  return p.parse_args(argv)


@contextlib.contextmanager
def run_dir(keep, name):
  """A run's workdir: ``keep/name`` (kept, for inspecting or resuming a run) or a temporary one."""
  if keep is None:
    with tempfile.TemporaryDirectory() as d:
      yield d
  else:
    path = os.path.join(keep, name)
    os.makedirs(path, exist_ok=True)
    yield path


def start(name, settings, argv=None, measure=None, iterator=None):
  """Parses the flags and runs (or reads back) the study's grid of (setting, seed) configs.

  Returns ``(args, grid, seeds, rows, summary, machine_info)``; 3 seeds, 1 with ``--smoke``.
  ``measure(config, workdir) -> dict`` (optional) adds a study's own metrics to every run's
  row, from the finished run's directory (its checkpoints), before it is removed;
  ``iterator(config)`` (optional) replaces the config's data loader (``jaxcl.train.train``'s
  ``iterator=`` hook, e.g. an in-memory :class:`jaxcl.data.grouped.GroupedBatches`).
  """
  args = parse_args(argv)
  grid = settings(args.smoke)
  seeds = (0,) if args.smoke else (0, 1, 2)
  rows, info = runs(name, args, grid, seeds, measure, iterator)
  return args, grid, seeds, rows, summarize(rows), info


def runs(name, args, grid, seeds, measure=None, iterator=None):
  """The grid's runs: trained now, or (``--replot``) read back with their machine info, or
  (``--from-rows``) gathered from the shards' rows file in grid order; ``--shard`` trains its
  part of the grid and exits."""
  if args.replot:
    with open(os.path.join(args.out, f"{name}.json")) as f:
      saved = json.load(f)
    return saved["runs"], saved["machine"]
  key = lambda setting: json.dumps(setting, sort_keys=True)
  path = os.path.join(args.out, f"{name}.rows.jsonl")
  done = []
  if os.path.exists(path):
    with open(path) as f:
      done = [json.loads(l) for l in f if l.strip()]
  if args.from_rows:
    order = [key(label) for label, _ in grid]
    rows = sorted((r for r in done if key(r["setting"]) in order),
                  key=lambda r: (order.index(key(r["setting"])), r["seed"]))
    return rows, None
  if args.shard:
    i, n = (int(x) for x in args.shard.split("/"))
    finished = {key(r["setting"]) for r in done}
    os.makedirs(args.out, exist_ok=True)
    for label, config in grid[i::n]:
      if key(label) not in finished:
        rows = run_grid([(label, config)], seeds, log=log, measure=measure,
                        iterator=iterator)
        with open(path, "a") as f:  # one write per setting: shards may share the file
          f.write("".join(json.dumps(r) + "\n" for r in rows))
    raise SystemExit(0)
  return run_grid(grid, seeds, log=log, measure=measure, iterator=iterator), None


def missing_note(grid, seeds, rows):
  """A sentence naming the grid's settings without all their seeds' runs ("" when complete)."""
  have = {}
  for r in rows:
    have.setdefault(json.dumps(r["setting"], sort_keys=True), set()).add(r["seed"])
  missing = [label for label, _ in grid
             if not set(seeds) <= have.get(json.dumps(label, sort_keys=True), set())]
  if not missing:
    return ""
  return (f" **Incomplete: {len(grid) - len(missing)} of {len(grid)} settings finished; "
          f"not run yet: " + "; ".join(", ".join(f"{k}={v}" for k, v in m.items())
                                       for m in missing) + ".** The verdict covers only the "
          "finished settings.")


def incomplete_prefix(grid, seeds, rows):
  return ("**Incomplete grid: no verdict on the claim yet.** What the finished settings show "
          "(missing ones read nan):\n\n" if missing_note(grid, seeds, rows) else "")


def separated(a, b):
  """Whether two ``(mean, std)`` differ by more than the sum of their seed std's."""
  return abs(a[0] - b[0]) > a[1] + b[1]


def spread_note(a, b):
  return "" if separated(a, b) else " (**within the seed spread**)"


def machine():
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"cpu": cpu, "cores": cores, "jax": jax.__version__,
          "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
          "date": datetime.datetime.now().isoformat(timespec="seconds")}


def quiet(config):
  """The trainer settings every study run shares: final eval only, nothing else."""
  c = config
  c.plots = False
  c.progress = False
  c.eval.baselines = False
  c.eval.every = 0
  c.eval.at_end = True
  c.log_every = c.num_steps
  c.checkpoint.every = c.num_steps
  c.checkpoint.use_async = False
  return c


def budget(c, smoke, *, steps, warmup, batch=None):
  """The training budget of a study run: ``steps`` / ``warmup`` / ``batch`` (None: the
  recipe's), one probe l2 and 100 probe steps; ``smoke`` = 3 steps at batch 32 with a small MLP
  encoder (plumbing only: it compiles in a fraction of a CNN's time)."""
  c.num_steps = 3 if smoke else steps
  c.optim.warmup_steps = 1 if smoke else warmup
  c.batch_size = 32 if smoke else (batch or c.batch_size)
  if smoke:
    c.model.encoder, c.model.encoder_kwargs = "mlp", {"hidden": (64,)}
  c.eval.probe_l2 = (1e-4,)
  c.eval.probe_steps = 10 if smoke else 100
  return c


def compile_cache():
  """Points JAX's persistent compilation cache at a directory private to this process.

  A study compiles the same programs again and again (the train step of a setting for every
  seed, the evaluation for every run); with the cache each is compiled once per study, which
  more than halves a study's time on CPU. The directory is removed when the process exits, so
  nothing outlives the study. No effect when the cache was already configured or used.
  """
  import atexit
  import shutil
  import jax
  if jax.config.jax_compilation_cache_dir:
    return
  path = tempfile.mkdtemp(prefix="jaxcl_study_xla_")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def run_grid(settings, seeds, log=print, measure=None, iterator=None):
  """Trains every (setting, seed); returns one row of final metrics per run."""
  from jaxcl.train import logger, train
  compile_cache()
  rows = []
  for label, config in settings:
    for seed in seeds:
      c = quiet(config.copy_and_resolve_references())
      c.seed = seed
      t0, cpu0 = time.time(), _cpu_seconds()
      with tempfile.TemporaryDirectory() as workdir:
        final = train(c, workdir, iterator=iterator and iterator(c))["final"]
        logged = logger.read_metrics(workdir)
        extra = measure(c, workdir) if measure is not None else {}
      (res,) = final.values()
      # CPU seconds of this process (all its threads): unlike the wall time, roughly the same
      # whether or not other jobs share the machine; wall ~ cpu / cores on an idle machine.
      row = {"setting": label, "seed": seed, "wall_s": round(time.time() - t0, 2),
             "cpu_s": round(_cpu_seconds() - cpu0, 2),
             **{k: res[k] for k in METRICS if k in res}, **extra}
      # The last logged training metrics (loss, objective health), as "train/<name>".
      row.update({f"train/{k}": v for k, v in (logged[-1] if logged else {}).items()
                  if k not in ("step", "time") and isinstance(v, (int, float))})
      rows.append(row)
      from jaxcl.eval.evaluate import summary_line
      log(f"  {label} seed {seed}: {summary_line(row)}  ({row['wall_s']:.1f} s)")
  return rows


def replot_or_run(args, name, run):
  """``(runs, grid, references, machine, wall_s, cpu_s)`` of a study whose ``run()`` returns
  ``(runs, grid, references)``: read back from ``<out>/<name>.json`` with ``--replot`` (machine
  info and timings as saved), else run now and timed (``machine`` None: measured at write)."""
  import json
  import os
  if args.replot:
    with open(os.path.join(args.out, f"{name}.json")) as f:
      saved = json.load(f)
    return (saved["runs"], saved["grid"], saved["references"], saved["machine"],
            saved.get("study_wall_s"), saved.get("study_cpu_s"))
  t0, cpu0 = time.time(), _cpu_seconds()
  runs_, grid, refs = run()
  return (runs_, grid, refs, None, round(time.time() - t0, 1),
          round(_cpu_seconds() - cpu0, 1))


def _cpu_seconds():
  import resource
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def summarize(rows, metrics=METRICS):
  """Mean and (population) std over seeds of each setting, in first-seen setting order."""
  groups = {}
  for r in rows:
    groups.setdefault(json.dumps(r["setting"], sort_keys=True), []).append(r)
  out = []
  for rs in groups.values():
    entry = {"setting": rs[0]["setting"], "n": len(rs)}
    for m in metrics:
      vals = np.array([r[m] for r in rs if m in r], np.float64)
      if len(vals):
        entry[m] = {"mean": round(float(vals.mean()), 6), "std": round(float(vals.std()), 6)}
    out.append(entry)
  return out


def fmt(stat, percent=False):
  if stat is None:
    return "-"
  if percent:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"
  return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def table(summary, columns, metrics):
  """Markdown table: one row per setting; ``columns`` from the label, ``metrics`` as mean ± std
  (accuracies in %)."""
  head = list(columns) + [m.replace("_", " ") for m in metrics]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [str(s["setting"][c]) for c in columns]
    cells += [fmt(s.get(m), percent=m in ("linear_probe", "knn")) for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write(name, out_dir, *, title, command, setup_text, summary, rows, table_md, verdict,
          figure, extra=None, info=None):
  """``<name>.md``, ``<name>.json`` and ``<name>.png`` (``figure`` is a matplotlib Figure);
  ``info`` (machine and date) defaults to this machine now."""
  os.makedirs(out_dir, exist_ok=True)
  info = info or machine()
  md = [f"# {title}", "",
        f"Command: `{command}`  ",
        f"Date: {info['date']}  ",
        f"Machine: {info['cpu']}, {info['cores']} cores, jax {info['jax']} "
        f"({info['devices']})", "",
        setup_text, "", table_md, "", "## Verdict", "", verdict, "",
        f"![{name}]({name}.png)", ""]
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write("\n".join(md))
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump({"study": name, "command": command, "machine": info, "summary": summary,
               "runs": rows, **(extra or {})}, f, indent=1)
  figure.savefig(os.path.join(out_dir, f"{name}.png"), dpi=110, bbox_inches="tight")


def command(module, smoke):
  return f"python -m experiments.{module}" + (" --smoke" if smoke else "")


def mean_std(summary, metric, **where):
  """``(mean, std)`` of ``metric`` in the summary entry whose setting matches ``where``."""
  for s in summary:
    if all(s["setting"].get(k) == v for k, v in where.items()) and metric in s:
      return s[metric]["mean"], s[metric]["std"]
  return float("nan"), float("nan")


def pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def log(*a):
  print(*a, flush=True, file=sys.stderr)
