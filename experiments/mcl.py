"""Study `mcl`: feature suppression on digits_easy, and Multistage Contrastive Learning.

Claim (Zhang et al., ECCV 2024, arXiv 2402.11816): an easy feature shared by both views
suppresses the others in contrastive learning; a second stage trained with negatives from the
first stage's k-means cluster learns the suppressed feature, and concatenating the stages keeps
both. Proxy (methods.md section 16): ``digits_easy`` (digits + a constant channel at 1 of 5
levels, unrelated to the digit), NT-Xent, MLP encoder with a 16-wide last layer.

Runs per seed (equal budget: the plain baseline trains as many steps as both MCL stages):

* ``digits, no easy channel``: the same recipe on plain digits, ``2 S`` steps -- the digit
  accuracy the encoder reaches when nothing suppresses it (reference, not a competitor);
* ``InfoNCE``: the same recipe on digits_easy, ``2 S`` steps;
* ``MCL``: stage 1 (``S`` steps), k-means (K = 5) of its embeddings, stage 2 (``S`` steps,
  cluster-homogeneous global batches); probes on stage 1, stage 2 and their concatenation.

``python -m experiments.mcl [--smoke]``
"""
import os
import time

from experiments import _study

STEPS = 200       # per MCL stage; the baselines train 2 * STEPS
REPS = ("digits, no easy channel", "InfoNCE (2S steps)", "MCL stage 1", "MCL stage 2",
        "MCL concat")
METRICS = ("digit_probe", "easy_probe", "digit_knn", "easy_knn")


def base_config(smoke):
  from configs.mcl_digits import get_config
  c = get_config()
  c.num_steps = 3 if smoke else STEPS
  c.optim.warmup_steps = 1 if smoke else 20
  c.eval.probe_l2 = (1e-4,)
  c.eval.probe_steps = 10 if smoke else 100
  if smoke:
    c.model.encoder_kwargs = {"hidden": [32, 16]}
    c.model.head_hidden = 32
  return c


def settings(smoke):
  """``[(name, config), ...]``: the three runs of a seed (configs with an ``mcl`` block)."""
  mcl = base_config(smoke)
  plain = base_config(smoke)
  plain.num_steps = 2 * mcl.num_steps
  plain.mcl.num_stages = 1
  plain.checkpoint.every = plain.num_steps
  reference = plain.copy_and_resolve_references()
  reference.data.name = "digits"
  return [("reference", reference), ("plain", plain), ("mcl", mcl)]


def run_config(config, seed):
  """The config a study run trains: quiet, no end-of-run evaluation (the recipe evaluates)."""
  c = _study.quiet(config.copy_and_resolve_references())
  c.eval.at_end = False
  c.seed = seed
  return c


def run(smoke, seeds, keep=None):
  from jaxcl.recipes import mcl
  _study.compile_cache()
  rows, nmi = [], []
  names = {"reference": {"stage 1": REPS[0]}, "plain": {"stage 1": REPS[1]},
           "mcl": {"stage 1": REPS[2], "stage 2": REPS[3], "concat": REPS[4]}}
  for seed in seeds:
    for kind, config in settings(smoke):
      c = run_config(config, seed)
      t0 = time.time()
      with _study.run_dir(keep, f"{kind}_seed{seed}") as workdir:
        res = mcl.train(c, workdir)
      wall = round(time.time() - t0, 1)
      for rep, label in names[kind].items():
        r = res["representations"][rep]
        row = {"setting": {"representation": label}, "seed": seed, "wall_s": wall,
               "digit_probe": r["label"]["linear_probe"], "digit_knn": r["label"]["knn"]}
        if "easy" in r:
          row.update(easy_probe=r["easy"]["linear_probe"], easy_knn=r["easy"]["knn"])
        rows.append(row)
        _study.log(f"  seed {seed} {label}: digit {100 * row['digit_probe']:.1f}%  easy "
                   f"{100 * row.get('easy_probe', float('nan')):.1f}%  ({wall} s)")
      if kind == "mcl":
        nmi.append({"seed": seed, **res["stages"][0]["cluster_nmi"],
                    "group_sizes": res["stages"][1]["group_sizes"],
                    "rows_per_epoch": res["stages"][1]["rows_per_epoch"]})
  return rows, nmi


def verdict(summary):
  ms = lambda rep, m: _study.mean_std(summary, m, representation=rep)
  ref, plain = ms(REPS[0], "digit_probe"), ms(REPS[1], "digit_probe")
  s1, s2, cat = (ms(r, "digit_probe") for r in REPS[2:])
  easy_plain, easy_s2, easy_cat = (ms(r, "easy_probe") for r in (REPS[1], REPS[3], REPS[4]))
  pts = lambda a, b: f"{100 * (a[0] - b[0]):+.1f} points{_study.spread_note(a, b)}"
  suppressed = plain[0] < ref[0] and _study.separated(plain, ref)
  recovers = s2[0] > plain[0] and _study.separated(s2, plain)
  keeps = (cat[0] > plain[0] and _study.separated(cat, plain)
           and not (easy_cat[0] < easy_plain[0] and _study.separated(easy_cat, easy_plain)))
  lines = [
      f"Suppression: the easy channel changes InfoNCE's digit probe by {pts(plain, ref)} "
      f"(digits_easy vs plain digits, same recipe and budget) -- "
      + ("**reproduced**." if suppressed else "**not reproduced**."),
      f"Recovery: MCL stage 2 vs the equal-budget InfoNCE, digit probe {pts(s2, plain)} "
      f"(stage 1 alone: {pts(s1, plain)}); easy probe of stage 2 {pts(easy_s2, easy_plain)} -- "
      + ("**reproduced**." if recovers else "**not reproduced**."),
      f"Concatenation vs the equal-budget InfoNCE: digit probe {pts(cat, plain)}, easy probe "
      f"{pts(easy_cat, easy_plain)} -- "
      + ("**keeps both** (reproduced)." if keeps else "**does not keep both** (not reproduced).")
      + " The concatenation is twice as wide as one encoder, as in the paper.",
  ]
  head = ("The proxy **reproduces** the claim (suppression, recovery by stage 2, concatenation "
          "keeps both)." if suppressed and recovers and keeps else
          "The proxy **does not fully reproduce** the claim; per part:")
  return head + "\n\n" + "\n".join(f"- {l}" for l in lines)


def main(argv=None):
  import json
  import numpy as np
  args = _study.parse_args(argv)
  seeds = (0,) if args.smoke else (0, 1, 2)
  if args.replot:
    with open(os.path.join(args.out, "mcl.json")) as f:
      saved = json.load(f)
    rows, nmi, info = saved["runs"], saved["clusters"], saved["machine"]
  else:
    rows, nmi = run(args.smoke, seeds, args.keep_runs)
    info = None
  summary = _study.summarize(rows, METRICS)
  cfg = base_config(args.smoke)
  plt = _study.pyplot()
  fig, ax = plt.subplots(figsize=(8, 3.8))
  width = 0.38
  for k, (m, color) in enumerate((("digit_probe", "tab:blue"), ("easy_probe", "tab:orange"))):
    stats = [_study.mean_std(summary, m, representation=r) for r in REPS]
    xs = np.arange(len(REPS)) + (k - 0.5) * width
    ax.bar(xs, [100 * s[0] for s in stats], width, yerr=[100 * s[1] for s in stats],
           capsize=3, color=color, label=m.replace("_", " "))
  ax.set_xticks(np.arange(len(REPS)))
  ax.set_xticklabels([r.replace(" (", "\n(").replace(", ", ",\n") for r in REPS], fontsize=8)
  ax.set_ylabel("linear-probe test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.legend(loc="lower right")
  fig.suptitle(f"digits_easy, MLP {list(cfg.model.encoder_kwargs['hidden'])}, S = "
               f"{cfg.num_steps} steps per stage, {len(seeds)} seeds")
  mean = lambda k: float(np.mean([n[k] for n in nmi])) if nmi else float("nan")
  setup = (
      f"Data: `digits_easy` (1,437 train / 360 test): sklearn digits plus a second channel "
      f"that is constant over the image at 1 of 5 levels (the easy label, drawn independently "
      f"of the digit); colour jitter off, so both views share it exactly. Recipe "
      f"`configs/mcl_digits.py`: MLP encoder {list(cfg.model.encoder_kwargs['hidden'])} "
      f"(probed), 2-layer head to {cfg.model.head_out}, NT-Xent T = "
      f"{cfg.loss.kwargs['temperature']}, AdamW lr {cfg.optim.lr}, global batch "
      f"{cfg.batch_size}, S = {cfg.num_steps} steps per MCL stage; InfoNCE baselines train "
      f"2 S = {2 * cfg.num_steps} steps (equal budget) with the same recipe. MCL: spherical "
      f"k-means (K = {cfg.mcl.num_clusters}) of the stage-1 head embeddings; stage 2 is a "
      f"fresh encoder trained on cluster-homogeneous global batches (mechanism "
      f"`{cfg.mcl.mechanism}`, the reference code's). Concatenation: each stage's features "
      f"L2-normalised, then concatenated (twice the width). Linear probe (one l2 = 1e-4) and "
      f"kNN (k = 20) on the frozen encoder for the digit and for the easy label; mean ± std "
      f"over seeds {list(seeds)}.\n\n"
      f"The stage-1 clusters agree with the easy label at NMI {mean('easy'):.2f} and with the "
      f"digit at NMI {mean('label'):.2f} (mean over seeds); stage 2 sees "
      f"{int(mean('rows_per_epoch'))} of 1,437 rows per epoch (clusters cut into whole "
      f"batches).\n\n"
      f"Why a 16-wide encoder: with the trainer's default 256-wide MLP the easy channel "
      f"costs the encoder's digit probe nothing measurable (94.7% digit, 96.1% easy after 400 "
      f"steps, one seed, while developing this study) -- a wide MLP keeps the digit linearly "
      f"decodable whatever the loss prefers. The 16-wide last layer makes the features "
      f"compete for the representation, which is the regime of the feature-suppression claim; "
      f"the easy feature itself was not made stronger.")
  table = _table(summary)
  _study.write("mcl", args.out, title="MCL: feature suppression and its recovery (digits_easy "
               "proxy)", command=_study.command("mcl", args.smoke), setup_text=setup,
               summary=summary, rows=rows, table_md=table, verdict=verdict(summary), figure=fig,
               extra={"clusters": nmi}, info=info)


def _table(summary):
  """Markdown table, every metric as a percentage (``_study.table`` only formats metrics
  named ``linear_probe`` / ``knn`` so)."""
  head = ["representation", "digit probe (%)", "easy probe (%)", "digit kNN (%)",
          "easy kNN (%)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [_study.fmt(s.get(m), percent=True) for m in METRICS]
    lines.append(f"| {s['setting']['representation']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
