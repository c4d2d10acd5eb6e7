"""Study `instructue`: InstructUE's contrastive + autoregressive objective vs its contrastive-only
and autoregressive-only ablations on the generated UserQA set (methods.md ``instructue``, CPU
proxy; issue #9 item 5).

Claim (arXiv 2510.11016, "Instruction-aware User Embedding via Synergistic Language and
Representation Modeling"; no public code, proprietary Alipay evaluation): training the
instruction-conditioned user embedding with next-token prediction of the answer *and* a user-text
InfoNCE (``L = L_AR + lambda L_CL``) gives better embeddings than either term alone.

Data (:mod:`jaxcl.data.userqa`, ``configs/instructue_synthetic.py``): 600 users (400 train,
200 held out) with 4 attributes x 6 values; 16 behaviour events (30 % uniform noise); templated
questions, the third template held out; one-word answers; regenerated from each seed.

Arms (:mod:`jaxcl.recipes.instructue`, the same model, batches, steps and Adam rate for every
arm, no tuning for any arm): ``instructue`` (L_AR + 1.0 L_CL), ``cl`` (L_CL only), ``ar`` (L_AR
only). Metrics on held-out users x the held-out template: ``retrieval@1`` / ``mrr`` of the right
answer among all 24 answer texts by cosine(u, t); ``probe`` (nearest-class-mean accuracy of u for
the asked attribute, alignment-free, so it scores the AR-only embedding fairly; chance 1/6);
``gen_acc`` (greedy answer word; the CL arm's LM head is untrained). Mean ± std over 3 seeds.

``python -m experiments.instructue [--smoke]``
"""
from __future__ import annotations

import math

from experiments import _study

STEPS = 600
BATCH = 64
LR = 3e-3
ARMS = ("instructue", "cl", "ar")
METRICS = ("retrieval@1", "mrr", "probe", "gen_acc", "wall_s")


def _config(smoke):
  from configs.instructue_synthetic import get_config
  c = get_config()
  if smoke:
    c.data.update(dict(num_users=40, num_train=24, num_attrs=2, num_values=3, seq_len=6))
    c.instructue.update(dict(dim=8, depth=1, emb_dim=8, batch_size=8, steps=2))
  else:
    c.instructue.update(dict(steps=STEPS, batch_size=BATCH, lr=LR))
  return c


def arms(smoke):
  return ("instructue", "ar") if smoke else ARMS


def run(smoke):
  from jaxcl.recipes import instructue
  _study.compile_cache()
  seeds = (0,) if smoke else (0, 1, 2)
  base = _config(smoke)
  rows = []
  for seed in seeds:
    data = instructue.data_from_config(base, seed)
    for arm in arms(smoke):
      cfg = base.instructue.copy_and_resolve_references()
      cfg.method = arm
      _, m = instructue.fit(cfg, data, seed)
      _study.log(f"  seed {seed} {arm}: retrieval@1 {m['retrieval@1']:.4f} mrr {m['mrr']:.4f} "
                 f"probe {m['probe']:.4f} gen {m['gen_acc']:.4f} ({m['wall_s']:.1f} s)")
      rows.append({"setting": {"method": arm}, "seed": seed, **m})
  return rows, [], []


def table(summary):
  head = ["method", "retrieval@1", "MRR", "probe (NCM)", "gen acc", "wall s (per run)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [s["setting"]["method"]] + [_study.fmt(s.get(m)) for m in METRICS[:4]]
    cells.append(f"{s['wall_s']['mean']:.0f}" if "wall_s" in s else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cmp(summary, metric, a, b):
  x = _study.mean_std(summary, metric, method=a)
  y = _study.mean_std(summary, metric, method=b)
  if math.isnan(x[0]) or math.isnan(y[0]):
    return None, x, y
  return ((1 if x[0] > y[0] else -1) if _study.separated(x, y) else 0), x, y


def _paired(rows, metric, a, b):
  """Per-seed ``a - b`` of ``metric`` (same seed = same generated data and init key)."""
  by = {(r["setting"]["method"], r["seed"]): r[metric] for r in rows}
  return [by[(a, s)] - by[(b, s)] for s in sorted({r["seed"] for r in rows})
          if (a, s) in by and (b, s) in by]


def verdict(summary, seeds, rows=()):
  word = {1: "above", 0: "level with", -1: "below", None: "not run"}
  lines, signs = [], {}
  for b in ("cl", "ar"):
    for metric in ("retrieval@1", "mrr", "probe"):
      sign, x, y = _cmp(summary, metric, "instructue", b)
      signs[(b, metric)] = sign
      if sign is not None:
        lines.append(f"{metric}: instructue {x[0]:.4f} ± {x[1]:.4f} vs {b} {y[0]:.4f} ± "
                     f"{y[1]:.4f} ({word[sign]}{_study.spread_note(x, y)})")
  if any(v is None for v in signs.values()):
    return "Not all arms were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  ret_cl, ret_ar = signs[("cl", "retrieval@1")], signs[("ar", "retrieval@1")]
  pr_cl, pr_ar = signs[("cl", "probe")], signs[("ar", "probe")]
  if ret_cl == 1 and ret_ar == 1 and pr_cl != -1 and pr_ar != -1:
    head = ("**Reproduces**: AR + CL is above both the contrastive-only and the AR-only "
            "ablation on answer retrieval@1, and not below either on the alignment-free probe")
  elif ret_cl == 1 or pr_cl == 1:
    head = ("**Partly reproduces**: adding the AR term helps the contrastive embedding, but AR + "
            "CL is not above both ablations on every measure")
  elif -1 in (ret_cl, pr_cl):
    head = "**Does not reproduce**: AR + CL is below the contrastive-only ablation"
  else:
    head = ("**Does not reproduce**: AR + CL is level with the contrastive-only ablation "
            "(within the seed spread)")
  g, gx, gy = _cmp(summary, "gen_acc", "instructue", "ar")
  notes = [("the AR-only arm never aligns u with t, so its retrieval is expected to be low; "
            "its probe shows what next-token prediction alone puts into u"),
           (f"gen acc (greedy answer word): instructue {gx[0]:.4f} ± {gx[1]:.4f} vs ar "
            f"{gy[0]:.4f} ± {gy[1]:.4f} ({word[g]}{_study.spread_note(gx, gy)}): the cost or "
            f"gain of the contrastive term for the LM")]
  d = _paired(rows, "retrieval@1", "instructue", "cl")
  if d:
    notes.append("paired per seed (same data), retrieval@1 instructue - cl: "
                 + ", ".join(f"{x:+.3f}" for x in d))
  return (head + f" (differences called only beyond the sum of the two std's over "
          f"{len(seeds)} seeds; same model, batches, steps and lr {LR:g} for every arm, no "
          f"tuning)." + "\n\n" + "\n".join(f"- {l}" for l in lines + notes))


def main(argv=None):
  args = _study.parse_args(argv)
  seeds = (0,) if args.smoke else (0, 1, 2)
  rows, _, _, info, wall, cpu = _study.replot_or_run(args, "instructue", lambda: run(args.smoke))
  summary = _study.summarize(rows, METRICS)
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  methods = [s["setting"]["method"] for s in summary]
  for ax, metric in zip(axes, ("retrieval@1", "probe", "gen_acc")):
    stats = [_study.mean_std(summary, metric, method=m) for m in methods]
    ax.bar(range(len(methods)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=4,
           color=["tab:orange", "tab:blue", "tab:gray"][:len(methods)])
    for r in rows:
      ax.plot(methods.index(r["setting"]["method"]), r[metric], "k.", ms=4)
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(f"held-out {metric}")
    ax.set_ylim(0, 1)
  base = _config(args.smoke)
  fig.suptitle(f"InstructUE AR + CL vs ablations, UserQA {base.data.num_users} users, "
               f"{base.instructue.steps} x {base.instructue.batch_size} batches, "
               f"{len(seeds)} seed(s)", fontsize=10)
  setup = (__doc__.split("\n\n", 1)[1].split("``python -m")[0].strip() +
           f"\n\nStudy wall time: {wall} s, {cpu} CPU s (all arms and seeds, one process, one "
           f"training compile; the machine was shared with other jobs).")
  _study.write("instructue", args.out, title="InstructUE: AR + contrastive vs ablations "
               "(generated UserQA)", command=_study.command("instructue", args.smoke),
               setup_text=setup, summary=summary, rows=rows, table_md=table(summary),
               verdict=verdict(summary, seeds, rows), figure=fig,
               extra={"grid": [], "references": [], "study_wall_s": wall, "study_cpu_s": cpu},
               info=info)
  _study.log(f"instructue study: {wall} s")


if __name__ == "__main__":
  main()
