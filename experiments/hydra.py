"""Study `hydra`: Hydra / SimLAP vs SimCLR (NT-Xent) vs SupCon on digits (methods.md section 7,
CPU proxy).

Claims (Wu et al., arXiv 2410.18200): with *arbitrary* class pairs as positives, compared in a
learned class-pair gated subspace, (i) the linear probe is competitive with or better than
SimCLR and SupCon (not below either beyond the seed spread), and (ii) the representation
suffers less dimensional collapse (here: a higher effective rank of the encoder features than
both SimCLR's and SupCon's, beyond the seed spread). Hydra's ``identical`` (y2 = y1) and
``distinct`` (y2 != y1) partner modes are run too.

Equal budget: every method trains the same encoder and head, the same number of steps at the
same batch and lr, on the same views (the cheap digit views of ``configs/hydra_digits.py``:
1-pixel shift, random erasing, Gaussian noise), all at T = 0.1 (SupCon's and Hydra's default;
Hydra's is its learnable scale's initial value, as in the reference). SupCon gets both views
as anchors (its definition), Hydra view 0 against view-1 keys (the reference's one direction);
``hydra_arbitrary_sym`` makes both views anchors (not in the reference), to see whether the
one-direction loss is what separates Hydra from SupCon. The verdict is about the reference
form (``hydra_arbitrary``).

``python -m experiments.hydra [--smoke]``
"""
import math

from experiments import _study

STEPS = 300
BATCH = 128
T = 0.1
METHODS = {  # method -> (loss name, Hydra partner mode or None)
    "simclr": ("nt_xent", None),
    "supcon": ("supcon", None),
    "hydra_identical": ("hydra", "identical"),
    "hydra_distinct": ("hydra", "distinct"),
    "hydra_arbitrary": ("hydra", "arbitrary"),
    # Both views as anchors, as SupCon / NT-Xent have (not the reference's one direction).
    "hydra_arbitrary_sym": ("hydra", "arbitrary"),
}
HEALTH = ("train/loss", "train/hydra/temperature", "train/hydra/gate_mean",
          "train/hydra/gate_entropy")
COLUMNS = ("method", "loss", "partners")
METRICS = ("linear_probe", "knn", "effective_rank")


def _config(method, smoke):
  from configs.hydra_digits import get_config
  c = get_config()
  loss, partners = METHODS[method]
  if loss == "hydra":
    c.loss.kwargs.partners = partners
    c.loss.kwargs.temperature = T
    c.loss.kwargs.symmetric = method.endswith("_sym")
  else:
    c.loss.name, c.loss.kwargs = loss, {"temperature": T}
  c.batch_size = 32 if smoke else BATCH
  c.num_steps = 3 if smoke else STEPS
  c.optim.warmup_steps = 1 if smoke else 30
  c.eval.probe_l2 = (1e-4,)
  c.eval.probe_steps = 10 if smoke else 100
  return c


def settings(smoke):
  methods = ("simclr", "hydra_arbitrary") if smoke else tuple(METHODS)
  return [({"method": m, "loss": METHODS[m][0], "partners": METHODS[m][1] or "-"},
           _config(m, smoke)) for m in methods]


def _cmp(summary, metric, a, b, percent):
  x = _study.mean_std(summary, metric, method=a)
  y = _study.mean_std(summary, metric, method=b)
  if math.isnan(x[0]) or math.isnan(y[0]):
    return None, f"{a} vs {b}: not run"
  sign = (1 if x[0] > y[0] else -1) if _study.separated(x, y) else 0
  f = (lambda m: f"{100 * m[0]:.1f} ± {100 * m[1]:.1f}%") if percent else (
      lambda m: f"{m[0]:.1f} ± {m[1]:.1f}")
  word = {1: "above", 0: "level with", -1: "below"}[sign]
  return sign, f"{a} {f(x)} vs {b} {f(y)} ({word}{_study.spread_note(x, y)})"


def verdict(summary):
  lines = []
  probe = {}
  for base in ("simclr", "supcon"):
    for metric, pct in (("linear_probe", True), ("knn", True), ("effective_rank", False)):
      sign, text = _cmp(summary, metric, "hydra_arbitrary", base, pct)
      probe[(base, metric)] = sign
      lines.append(f"{metric.replace('_', ' ')}: {text}")
  for mode in ("hydra_identical", "hydra_distinct", "hydra_arbitrary_sym"):
    for metric, pct in (("linear_probe", True), ("effective_rank", False)):
      lines.append(f"{metric.replace('_', ' ')}: {_cmp(summary, metric, 'hydra_arbitrary', mode, pct)[1]}")
  bases = ("simclr", "supcon")
  names = {"simclr": "SimCLR", "supcon": "SupCon"}
  if any(probe[(b, m)] is None for b in bases for m in ("linear_probe", "effective_rank")):
    return "Not all settings were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  below = [names[b] for b in bases if probe[(b, "linear_probe")] < 0]
  not_above = [names[b] for b in bases if probe[(b, "effective_rank")] <= 0]
  acc, rank = not below, not not_above
  claims = ("(i) the linear probe of Hydra (arbitrary pairs) is "
            + ("**competitive with or above** both SimCLR and SupCon" if acc else
               "**below " + " and ".join(below) + "** beyond the seed spread")
            + "; (ii) the effective rank of its encoder features is "
            + ("**higher than both** SimCLR's and SupCon's beyond the seed spread (less "
               "dimensional collapse)" if rank else
               "**not higher than " + " and ".join(not_above) + "'s** beyond the seed spread"))
  if acc and rank:
    head = "**Reproduces** both claims on the proxy: "
  elif acc or rank:
    head = ("**Partly reproduces**: claim " + ("(i)" if acc else "(ii)") + " holds, claim "
            + ("(ii)" if acc else "(i)") + " **does not reproduce on the proxy**: ")
  else:
    head = "**Does not reproduce on the proxy** (neither claim holds): "
  probes = [e["linear_probe"]["mean"] for e in summary if "linear_probe" in e]
  ceiling = (f" The linear-probe means of all {len(probes)} methods lie within "
             f"{100 * (max(probes) - min(probes)):.1f} points (digits is near its ceiling).")
  return head + claims + "." + ceiling + "\n\n" + "\n".join(f"- {l}" for l in lines)


def main(argv=None):
  args, grid, seeds, rows, _, info = _study.start("hydra", settings, argv)
  summary = _study.summarize(rows, _study.METRICS + HEALTH)
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  names = [s["setting"]["method"].replace("_", "\n") for s in summary]
  colors = ["tab:blue" if s["setting"]["loss"] == "nt_xent" else
            "tab:green" if s["setting"]["loss"] == "supcon" else "tab:orange" for s in summary]
  for ax, m in zip(axes, METRICS):
    scale = 100 if m != "effective_rank" else 1
    means = [scale * s[m]["mean"] for s in summary]
    stds = [scale * s[m]["std"] for s in summary]
    ax.bar(range(len(summary)), means, yerr=stds, capsize=3, color=colors)
    ax.set_xticks(range(len(summary)), names, fontsize=8)
    lo = min(a - b for a, b in zip(means, stds))
    hi = max(a + b for a, b in zip(means, stds))
    pad = 0.15 * (hi - lo) + (0.5 if m != "effective_rank" else 1.0)
    ax.set_ylim(max(0, lo - pad), hi + pad if m == "effective_rank" else min(100, hi + pad))
    ax.set_ylabel({"linear_probe": "linear probe accuracy (%)", "knn": "kNN accuracy (%)",
                   "effective_rank": "effective rank (encoder, 256-d)"}[m])
  c0 = grid[0][1]
  fig.suptitle(f"Hydra vs SimCLR vs SupCon on digits, MLP, {c0.num_steps} steps, batch "
               f"{c0.batch_size}, T={T} (mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  setup = (f"sklearn digits (8x8, 1,437 train / 360 test), MLP encoder (256-256) + 2-layer "
           f"head (64-d), AdamW lr {c0.optim.lr}, {c0.num_steps} steps at batch "
           f"{c0.batch_size} for every method, the same views (integer shift by up to 1 pixel, "
           f"random erasing of 2-20% of the image with probability 0.5, Gaussian noise 0.1). "
           f"T = {T} for all; Hydra learns log(1/T) from there (the reference's learnable "
           f"scale) and its gate (label embeddings 10x128, ReLU-LN-Linear(128, 256)-ReLU-LN-"
           f"Linear(256, 64), sigmoid), fastssl form (gate squared on the anchor), anchors "
           f"view 0 vs view-1 keys (hydra_arbitrary_sym: both views anchors). SimCLR = NT-Xent, SupCon = L_out over both views. Linear "
           f"probe (l2 = 1e-4), kNN (k = 20) and effective rank (exp of the entropy of the "
           f"normalised singular values) of the encoder features of the test images; mean ± "
           f"std over seeds {list(seeds)}. A difference is called only when the means differ "
           f"by more than the sum of the two std's. Health columns: the last logged step.")
  _study.write("hydra", args.out, title="Hydra (arbitrary class pairs) vs SimCLR vs SupCon "
               "(digits)", command=_study.command("hydra", args.smoke), setup_text=setup,
               summary=summary, rows=rows, figure=fig, info=info, verdict=verdict(summary),
               table_md=_study.table(summary, COLUMNS, METRICS + HEALTH))


if __name__ == "__main__":
  main()
