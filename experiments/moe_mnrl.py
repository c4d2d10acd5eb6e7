"""Study `moe_mnrl`: MNRL fine-tuning of all-MiniLM-L6-v2 on three WordNet domains (nouns /
verbs / adjectives) -- one shared model vs one model per domain vs domain experts with enforced
routing (methods.md section 26, CPU proxy; :mod:`jaxcl.recipes.moe_mnrl`).

Claim (Hallee et al., arXiv 2401.15713, abstract): an MoE whose N experts are copies of the BERT
MLPs, each sequence routed to its domain's expert, matches N individually fine-tuned models,
and a single shared model is worse on multi-domain data (expected: shared < MoE ~ per-domain).

Equal budget and tuning: every arm starts from the same pretrained MiniLM (the MoE's experts
are copies of its FFNs), uses the same loss (MNR, scale 20), lr / warmup fraction / weight
decay, batch 32 and the same single-domain batches: ``shared`` and ``moe`` run ``STEPS`` steps
(round-robin over the domains), ``per_domain`` runs ``STEPS / 3`` steps per domain model, which
are exactly that domain's batches of the shared run. Nothing was tuned per arm. ``pretrained``
(no fine-tuning) is the reference every arm starts from. The size (steps, lemma length 8, 400
held-out pairs per domain) keeps the full study within 10 minutes on an idle 2-core CPU; a
CPU-sized budget means small fine-tuning effects, so differences are only called beyond the
seed spread.

``python -m experiments.moe_mnrl [--smoke]``
"""
import math
import tempfile
import time

from experiments import _study

STEPS = 60
ARMS = ("pretrained", "shared", "per_domain", "moe")
DOMAINS = {"n": "nouns", "v": "verbs", "a": "adjectives"}
METRICS = ("mrr@10", "recall@1", "pair_f1", "pair_auc")
PER_DOMAIN = tuple(f"{p}/{m}" for p in DOMAINS for m in ("mrr@10", "pair_f1"))
COLUMNS = ("arm",)


def _config(arm, smoke):
  from configs.moe_mnrl_wordnet import get_config
  c = get_config()
  c.moe_mnrl.arm = arm
  if smoke:  # plumbing only: a tiny random BERT (MiniLM's vocabulary), 3 steps per run
    c.model.pretrained = ""
    c.model.encoder_kwargs = {"dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32, "max_len": 16}
    c.num_steps, c.optim.warmup_steps, c.batch_size = 3, 1, 16
    c.checkpoint.every = 3
    c.moe_mnrl.train_pairs, c.moe_mnrl.eval_pairs = 64, 40
  else:
    c.num_steps = STEPS
  return c


def settings(smoke):
  arms = ("moe",) if smoke else ARMS
  return [({"arm": a}, _config(a, smoke)) for a in arms]


def run(grid, seeds):
  from jaxcl.recipes import moe_mnrl
  _study.compile_cache()
  rows = []
  for label, config in grid:
    for seed in seeds:
      c = config.copy_and_resolve_references()
      c.seed = seed
      t0, cpu0 = time.time(), _study._cpu_seconds()
      with tempfile.TemporaryDirectory() as workdir:
        out = moe_mnrl.train(c, workdir)
      row = {"setting": label, "seed": seed, "wall_s": round(time.time() - t0, 2),
             "cpu_s": round(_study._cpu_seconds() - cpu0, 2), **out["macro"],
             **{f"{p}/{m}": v for p, r in out["domains"].items() for m, v in r.items()}}
      rows.append(row)
      _study.log(f"  {label} seed {seed}: mrr@10 {row['mrr@10']:.3f} recall@1 "
                 f"{row['recall@1']:.3f} pair_f1 {row['pair_f1']:.3f} ({row['wall_s']:.1f} s)")
  return rows


def _cmp(summary, metric, a, b):
  x = _study.mean_std(summary, metric, arm=a)
  y = _study.mean_std(summary, metric, arm=b)
  if math.isnan(x[0]) or math.isnan(y[0]):
    return None, f"{a} vs {b}: not run"
  sign = (1 if x[0] > y[0] else -1) if _study.separated(x, y) else 0
  word = {1: "above", 0: "level with", -1: "below"}[sign]
  return sign, (f"{metric}: {a} {x[0]:.3f} ± {x[1]:.3f} vs {b} {y[0]:.3f} ± {y[1]:.3f} "
                f"({word}{_study.spread_note(x, y)})")


def verdict(summary):
  lines, signs = [], {}
  for metric in METRICS:
    for a, b in (("moe", "shared"), ("per_domain", "shared"), ("moe", "per_domain"),
                 ("shared", "pretrained")):
      signs[(metric, a, b)], text = _cmp(summary, metric, a, b)
      lines.append(text)
  if any(v is None for v in signs.values()):
    return "Not all arms were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  main = ("mrr@10", "pair_f1")
  moe_gt_shared = [m for m in main if signs[(m, "moe", "shared")] > 0]
  sep_gt_shared = [m for m in main if signs[(m, "per_domain", "shared")] > 0]
  moe_vs_sep = {m: signs[(m, "moe", "per_domain")] for m in main}
  fmt = lambda m, a: "{:.3f} ± {:.3f}".format(*_study.mean_std(summary, m, arm=a))
  nums = "; ".join(f"{m}: shared {fmt(m, 'shared')}, per-domain {fmt(m, 'per_domain')}, "
                   f"MoE {fmt(m, 'moe')}, pretrained {fmt(m, 'pretrained')}" for m in main)
  match = all(v >= 0 for v in moe_vs_sep.values())
  if len(moe_gt_shared) == len(main) and match:
    head = ("**Reproduces** the claimed direction on the proxy: the MoE is above the shared "
            "model beyond the seed spread and not below the per-domain models")
  elif not moe_gt_shared and not sep_gt_shared:
    head = ("**Does not reproduce on the proxy**: neither the MoE nor the per-domain models "
            "are above the shared model beyond the seed spread on MRR@10 or pair F1 (on this "
            "proxy -- three parts of speech of one lexicon, a CPU-sized fine-tuning budget -- "
            "separate FFNs bring no measurable gain)")
  else:
    head = ("**Partly reproduces**: above the shared model beyond the seed spread -- MoE on "
            f"{moe_gt_shared or 'nothing'}, per-domain on {sep_gt_shared or 'nothing'}; MoE vs "
            "per-domain " + ", ".join(f"{m}: {({1: 'above', 0: 'level', -1: 'below'})[s]}"
                                      for m, s in moe_vs_sep.items()))
  return head + f". Macro means over the 3 domains: {nums}.\n\n" + "\n".join(
      f"- {l}" for l in lines)


def main(argv=None):
  args = _study.parse_args(argv)
  grid = settings(args.smoke)
  seeds = (0,) if args.smoke else (0, 1, 2)
  if args.replot:
    import json
    import os
    with open(os.path.join(args.out, "moe_mnrl.json")) as f:
      saved = json.load(f)
    rows, info = saved["runs"], saved["machine"]
  else:
    rows, info = run(grid, seeds), None
  summary = _study.summarize(rows, METRICS + PER_DOMAIN + ("wall_s", "cpu_s"))
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  arms = [s["setting"]["arm"] for s in summary]
  colors = {"pretrained": "tab:gray", "shared": "tab:blue", "per_domain": "tab:green",
            "moe": "tab:orange"}
  width = 0.8 / max(len(arms), 1)
  for ax, m in zip(axes, ("mrr@10", "pair_f1")):
    for k, s in enumerate(summary):
      means = [s[f"{p}/{m}"]["mean"] for p in DOMAINS]
      stds = [s[f"{p}/{m}"]["std"] for p in DOMAINS]
      ax.bar([i + k * width for i in range(len(DOMAINS))], means, width, yerr=stds, capsize=2,
             color=colors[s["setting"]["arm"]], label=s["setting"]["arm"])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(DOMAINS))], list(DOMAINS.values()))
    lo = min(s[f"{p}/{m}"]["mean"] for s in summary for p in DOMAINS)
    ax.set_ylim(max(0.0, lo - 0.1), None)
    ax.set_ylabel({"mrr@10": "MRR@10 (held-out synonyms)", "pair_f1": "pair F1"}[m])
  axes[0].legend(fontsize=8)
  c0 = grid[0][1]
  fig.suptitle(f"MNRL on WordNet domains: shared vs per-domain vs MoE ({c0.num_steps} steps, "
               f"batch {c0.batch_size}; mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  b = c0.moe_mnrl
  setup = (
      f"all-MiniLM-L6-v2 (6 layers, 384 wide, mean pooling, L2-normalised) fine-tuned with "
      f"MNR (sentence-transformers' MultipleNegativesRankingLoss: one direction, in-batch "
      f"negatives, scale 20 = `info_nce` at T = 0.05) on WordNet synonym pairs (two lemmas "
      f"of one synset, {b.max_len} WordPiece tokens) of three domains: nouns, verbs, "
      f"adjectives; {b.train_pairs} training pairs per domain (drawn by the seed from the "
      f"training synsets), single-domain batches of {c0.batch_size} pairs round-robin over "
      f"the domains, AdamW lr {c0.optim.lr}, weight decay {c0.optim.weight_decay}, warmup "
      f"{c0.optim.warmup_steps / c0.num_steps:.0%} then cosine, no dropout. Arms: `shared` one "
      f"model, {c0.num_steps} steps; `per_domain` one model per domain, "
      f"{c0.num_steps // 3} steps each (the shared run's batches of that domain); `moe` every "
      f"FFN copied into 3 experts (initialised from the pretrained FFN; attention, "
      f"embeddings, LayerNorms shared), each sequence routed to its domain's expert (domain "
      f"id carried as an input column), {c0.num_steps} steps; `pretrained` no fine-tuning. "
      f"Evaluation per domain on {b.eval_pairs} pairs of held-out synsets: {b.val_fraction:.0%}"
      f" validation (cosine threshold with the best F1), the rest test: retrieval (query "
      f"lemma -> the test pairs' other lemmas; relevant = lemmas of the query's synset) "
      f"MRR@10 / Recall@1, pair F1 and ROC-AUC of synonym pairs vs as many random in-domain "
      f"non-synonym pairs. Columns: macro mean over the domains, then per domain; mean ± std "
      f"over seeds {list(seeds)} (pretrained: the same numbers every seed). A difference is "
      f"called only when the means differ by more than the sum of the std's. Runs' wall time "
      f"{sum(r['wall_s'] for r in rows):.0f} s in all ({sum(r['cpu_s'] for r in rows):.0f} CPU "
      f"s of this process) on this machine, shared with other jobs while it ran.")
  _study.write("moe_mnrl", args.out, title="MoE-MNRL: shared vs per-domain vs domain experts "
               "(WordNet)", command=_study.command("moe_mnrl", args.smoke), setup_text=setup,
               summary=summary, rows=rows, figure=fig, info=info, verdict=verdict(summary),
               table_md=_study.table(summary, COLUMNS, METRICS + PER_DOMAIN + ("cpu_s",)))


if __name__ == "__main__":
  main()
