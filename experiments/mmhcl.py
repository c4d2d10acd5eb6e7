"""Study `mmhcl`: LightGCN + BPR vs MMHCL on a synthetic multimodal recommendation set, overall
and for sparse users (methods.md section 8, CPU proxy).

Claim (Xu et al., "MMHCL: Multi-Modal Hypergraph Contrastive Learning for Recommendation",
arXiv 2504.16576; code Xu107/MMHCL): adding user-user and item-item hypergraph encoders (items as
the users' hyperedges; kNN of the item modality features as the items') and a synergistic
contrast between the fused and the second-order embeddings improves Recall@20 / NDCG@20 over
graph collaborative filtering, with a larger benefit for sparse (cold-start-like) users.
methods.md's expectation on the proxy: MMHCL >= LightGCN, larger gap for sparse users.

Data (:mod:`jaxcl.data.recsys`, ``configs/mmhcl_synthetic.py``): 1000 users, 800 items, 8 latent
interest clusters, ~1.5 % density with heavy-tailed activity, two noisy "modality" projections
of the item latents, 70 / 10 / 20 train / val / test per user; regenerated from each seed.
Sparse users: <= 5 training interactions (about half of them).

Arms (``jaxcl.recipes.mmhcl``, the reference's defaults otherwise): ``lightgcn`` (LightGCN
L = 2 + BPR + L2), ``mmhcl`` (the code: fused vs second-order contrast), ``mmhcl_first_order``
(the paper's text: first-order vs second-order contrast), and ``mmhcl_no_cl`` (the hypergraph
encoders and fusion with lambda_i = lambda_u = 0: how much of the gain is side information
rather than contrast). Same budget for every arm: ``STEPS`` full-graph Adam steps of 1024-user
BPR batches, the same lr grid ``LRS``; for each (arm, seed) the lr with the best validation
Recall@20 is kept and its test metrics are reported (the per-lr numbers are in the JSON).
``STEPS`` = 300 was fixed on seed 0's validation split from LightGCN alone (its validation
recall peaks at 200-400 steps and falls after: it overfits the training interactions), the grid
brackets LightGCN's best rate. Reference rows (no training, seed-averaged, in the text): item
popularity and the generator's true preference ``<w_u, v_i>`` (an upper reference).

Metrics: Recall@20 / NDCG@20 over all 800 items with training (and validation) items removed,
all users and sparse users; mean ± std over 3 seeds.

``python -m experiments.mmhcl [--smoke]``
"""
from __future__ import annotations

import math

import numpy as np

from experiments import _study

STEPS = 300
LRS = (1e-3, 3e-3, 1e-2)
ARMS = {
    "lightgcn": dict(method="lightgcn"),
    "mmhcl": dict(method="mmhcl", view="fused"),
    "mmhcl_first_order": dict(method="mmhcl", view="first_order"),
    "mmhcl_no_cl": dict(method="mmhcl", view="fused", lambda_i=0.0, lambda_u=0.0),
}
COLUMNS = ("method",)
METRICS = ("recall_all", "ndcg_all", "recall_sparse", "ndcg_sparse", "recall_active",
           "ndcg_active", "val_recall_all", "lr", "wall_s")
NAMES = {"lightgcn": "LightGCN + BPR", "mmhcl": "MMHCL (code: fused vs 2nd order)",
         "mmhcl_first_order": "MMHCL (paper: 1st vs 2nd order)",
         "mmhcl_no_cl": "MMHCL encoders, no contrast"}


def _config(smoke):
  from configs.mmhcl_synthetic import get_config
  c = get_config()
  if smoke:
    c.data.num_users, c.data.num_items, c.data.mean_interactions = 120, 100, 8.0
    c.mmhcl.steps, c.mmhcl.batch_size, c.mmhcl.dim = 3, 64, 16
  else:
    c.mmhcl.steps = STEPS
  return c


def arms(smoke):
  return ("lightgcn", "mmhcl") if smoke else tuple(ARMS)


def run(smoke):
  from jaxcl.recipes import mmhcl
  _study.compile_cache()
  seeds = (0,) if smoke else (0, 1, 2)
  lrs = (1e-2,) if smoke else LRS
  base = _config(smoke)
  rows, grid_rows, refs = [], [], []
  for seed in seeds:
    data = mmhcl.data_from_config(base, seed)
    refs.append(_references(data, base))
    for arm in arms(smoke):
      trials = []
      for lr in lrs:
        cfg = base.mmhcl.copy_and_resolve_references()
        cfg.update(ARMS[arm])
        cfg.lr = lr
        _, _, m = mmhcl.fit(cfg, data, seed)
        trials.append((lr, m))
        grid_rows.append({"method": arm, "seed": seed, "lr": lr, **m})
        _study.log(f"  seed {seed} {arm} lr {lr:g}: val R@20 {m['val/recall_all']:.4f}, test "
                   f"R@20 {m['test/recall_all']:.4f} (sparse {m['test/recall_sparse']:.4f}) "
                   f"({m['wall_s']:.1f} s)")
      lr, m = max(trials, key=lambda t: t[1]["val/recall_all"])
      rows.append({"setting": {"method": arm}, "seed": seed, "lr": lr,
                   "wall_s": round(sum(t[1]["wall_s"] for t in trials), 2),
                   "val_recall_all": m["val/recall_all"],
                   **{k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("test/")},
                   **{k: v for k, v in m.items() if k.startswith("train/")}})
  return rows, grid_rows, refs


def _references(data, base):
  """Popularity and the generator's true preferences ``<w_u, v_i>`` through the same metric."""
  from jaxcl.recipes import mmhcl
  pop = np.bincount(data.train[1], minlength=data.num_items).astype(np.float32)
  emb = {"popularity": {"user": np.ones((data.num_users, 1), np.float32), "item": pop[:, None]},
         "oracle": {"user": data.user_latent, "item": data.item_latent}}
  out = {}
  for name, e in emb.items():
    m = mmhcl.evaluate(e, data, base.mmhcl.k, base.mmhcl.sparse_max)
    out[name] = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("test/")}
  return out


def table(summary):
  head = ["method", "Recall@20 all", "NDCG@20 all", "Recall@20 sparse", "NDCG@20 sparse",
          "Recall@20 active", "lr chosen (per seed)", "val Recall@20"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summary:
    cells = [s["setting"]["method"]] + [_study.fmt(s.get(m)) for m in
                                        ("recall_all", "ndcg_all", "recall_sparse",
                                         "ndcg_sparse", "recall_active")]
    cells += [s.get("lrs", "-"), _study.fmt(s.get("val_recall_all"))]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _cmp(summary, metric, a, b):
  x = _study.mean_std(summary, metric, method=a)
  y = _study.mean_std(summary, metric, method=b)
  if math.isnan(x[0]) or math.isnan(y[0]):
    return None, x, y
  return ((1 if x[0] > y[0] else -1) if _study.separated(x, y) else 0), x, y


def verdict(summary, seeds):
  word = {1: "above", 0: "level with", -1: "below", None: "not run"}
  lines, signs, rel = [], {}, {}
  for metric in ("recall_all", "ndcg_all", "recall_sparse", "ndcg_sparse"):
    sign, x, y = _cmp(summary, metric, "mmhcl", "lightgcn")
    signs[metric] = sign
    rel[metric] = (x[0] - y[0]) / y[0] if y[0] else float("nan")
    lines.append(f"{metric}: MMHCL {x[0]:.4f} ± {x[1]:.4f} vs LightGCN {y[0]:.4f} ± {y[1]:.4f} "
                 f"({word[sign]}{_study.spread_note(x, y)}; {100 * rel[metric]:+.1f} %)")
  if any(v is None for v in signs.values()):
    return "Not all arms were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  up_all = signs["recall_all"] == 1 and signs["ndcg_all"] == 1
  up_sparse = signs["recall_sparse"] == 1 and signs["ndcg_sparse"] == 1
  larger = rel["recall_sparse"] > rel["recall_all"]
  if up_all and up_sparse:
    head = ("**Reproduces**: MMHCL beats LightGCN + BPR on Recall@20 and NDCG@20, overall and "
            "for sparse users")
  elif up_all or up_sparse or signs["recall_all"] == 1:
    head = "**Partly reproduces**: MMHCL is above LightGCN on some of the four measures"
  elif -1 in signs.values():
    head = "**Does not reproduce**: MMHCL is below LightGCN on at least one measure, never above"
  else:
    head = "**Does not reproduce**: MMHCL is level with LightGCN (within the seed spread)"
  head += (f"; the relative Recall@20 gain is {'larger' if larger else 'not larger'} for sparse "
           f"users ({100 * rel['recall_sparse']:+.1f} %) than overall "
           f"({100 * rel['recall_all']:+.1f} %), so the cold-start part of the claim "
           f"{'holds' if larger and up_sparse else 'does not hold'} on this proxy")
  sign_cl, x, y = _cmp(summary, "recall_all", "mmhcl", "mmhcl_no_cl")
  if sign_cl is not None:
    head += (". Attribution: with the contrast switched off (lambda_i = lambda_u = 0, same "
             f"hypergraph encoders and fusion) Recall@20 is {y[0]:.4f} vs {x[0]:.4f} with it ("
             + ("the contrast adds a measurable gain" if sign_cl == 1 else
                "within the seed spread: on this proxy the gain comes from the u2u / i2i "
                "hypergraph encoders and the fused modality kNN side information, **not from "
                "the synergistic contrast**" if sign_cl == 0 else
                "the contrast lowers it") + ")")
  extra = []
  for arm, what in (("mmhcl_first_order", "the paper's first-order view"),
                    ("mmhcl_no_cl", "the encoders without contrast (lambda = 0)")):
    for metric in ("recall_all", "recall_sparse"):
      sign, x, y = _cmp(summary, metric, arm, "mmhcl")
      if sign is not None:
        extra.append(f"{what}, {metric}: {x[0]:.4f} ± {x[1]:.4f} vs the code's MMHCL "
                     f"{y[0]:.4f} ± {y[1]:.4f} ({word[sign]}{_study.spread_note(x, y)})")
  edge = [f"{s['setting']['method']} {s['lrs']}" for s in summary
          if s.get("lrs") and str(min(LRS)) in s["lrs"].split(", ")]
  if edge:
    extra.append(f"lr chosen on validation (per seed): {'; '.join(edge)}; the grid's lowest "
                 f"rate {min(LRS):g} was chosen for some runs, so a lower rate (not tried, for "
                 f"any arm) might still help")
  return (head + f" (differences called only beyond the sum of the two std's over "
          f"{len(seeds)} seeds; lr chosen per arm and seed on validation from the same grid)."
          + "\n\n" + "\n".join(f"- {l}" for l in lines + extra))


def main(argv=None):
  args = _study.parse_args(argv)
  seeds = (0,) if args.smoke else (0, 1, 2)
  rows, grid_rows, refs, info, wall, cpu = _study.replot_or_run(
      args, "mmhcl", lambda: run(args.smoke))
  summary = _study.summarize(rows, METRICS)
  for s in summary:
    s["lrs"] = ", ".join(f"{r['lr']:g}" for r in rows if r["setting"] == s["setting"])
  ref_mean = {name: {m: float(np.mean([r[name][m] for r in refs])) for m in
                     ("recall_all", "recall_sparse", "ndcg_all", "ndcg_sparse")}
              for name in refs[0]}
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  methods = [s["setting"]["method"] for s in summary]
  for ax, metric in zip(axes, ("recall", "ndcg")):
    width = 0.8 / max(len(methods), 1)
    for k, m in enumerate(methods):
      stats = [_study.mean_std(summary, f"{metric}_{g}", method=m) for g in ("all", "sparse",
                                                                             "active")]
      ax.bar(np.arange(3) + (k - (len(methods) - 1) / 2) * width, [s[0] for s in stats], width,
             yerr=[s[1] for s in stats], capsize=3, label=NAMES.get(m, m))
    ax.axhline(ref_mean["popularity"][f"{metric}_all"], color="gray", ls=":", lw=1,
               label="popularity (all users)")
    ax.set_xticks(range(3), ["all users", "sparse (<= 5 train)", "active (> 5)"])
    ax.set_ylabel(f"{'Recall' if metric == 'recall' else 'NDCG'}@20 (test)")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=5, bbox_to_anchor=(0.5, -0.06))
  base = _config(args.smoke)
  fig.suptitle(f"MMHCL vs LightGCN, synthetic {base.data.num_users} users x "
               f"{base.data.num_items} items, {base.mmhcl.steps} steps, "
               f"{len(seeds)} seed(s)", fontsize=10)
  ref_text = ", ".join(f"{name} Recall@20 {r['recall_all']:.4f} all / {r['recall_sparse']:.4f} "
                       f"sparse" for name, r in ref_mean.items())
  setup = (__doc__.split("\n\n", 1)[1].split("``python -m")[0].strip() +
           f"\n\nReferences without training (mean over seeds): {ref_text}. Study wall time: "
           f"{wall} s, {cpu} CPU s (all arms, lrs and seeds, one process; the CPU seconds do not "
           f"depend on other jobs sharing the machine).")
  _study.write("mmhcl", args.out, title="MMHCL vs LightGCN + BPR (synthetic multimodal "
               "recommendation)", command=_study.command("mmhcl", args.smoke), setup_text=setup,
               summary=summary, rows=rows, table_md=table(summary),
               verdict=verdict(summary, seeds), figure=fig,
               extra={"grid": grid_rows, "references": refs, "study_wall_s": wall,
                      "study_cpu_s": cpu}, info=info)
  _study.log(f"mmhcl study: {wall} s")


if __name__ == "__main__":
  main()
