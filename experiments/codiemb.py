"""Study `codiemb`: joint reverse-dictionary retrieval + graded word similarity on WordNet with the
pretrained all-MiniLM-L6-v2 tower -- naive mixed batches with one InfoNCE vs CoDiEmb (methods.md
section 17; issue #8 item 3).

Claim (Zhang et al., arXiv 2508.11442): training one encoder for IR and STS with one
contrastive loss on mixed batches trades one task for the other; CoDiEmb's task-specific losses
(multi-positive IR InfoNCE with hard negatives; 2 (1 - Pearson) + 0.5 PRO + 5 RankKL on the
cosines, with the sort-based average-tie rank) on single-task batches from a balancing sampler
give a smaller trade-off, and delta-guided checkpoint fusion beats plain averaging.

Arms, same budget (``configs/codiemb_wordnet.py``: 60 AdamW steps at lr 5e-5 with the same
warm-up and cosine decay, batch 16 rows, the same 512 IR + 512 STS training rows of each seed,
T = 0.02 for every InfoNCE, no tuning per arm):

* ``naive``: rows drawn uniformly (mixed IR / STS batches), one InfoNCE over every positive
  pair of the batch (a definition with each of its 2 lemmas, a Wu-Palmer pair with score >=
  0.75; the co-hyponym hard negatives as extra candidates);
* ``codiemb``: single-task batches (alternating, equal counts), IR loss on IR batches, STS
  losses on STS batches. Its checkpoints at steps 20 / 40 / 60 are also fused: ``average``
  (uniform soup) and ``delta_guided`` (:mod:`jaxcl.fusion`: per-element weights
  ``|theta_k - theta_0| / sum_j |theta_j - theta_0|`` from the pretrained weights, this
  library's reading of the paper's one-sentence description).

Metrics on held-out synsets (never in a training row): reverse-dictionary MRR@10 / nDCG@10 /
Recall@10 of 200 test definitions against their lemmas + 1000 random noun lemmas, and the
Spearman of cosine vs Wu-Palmer over 400 test noun pairs; ``pretrained`` = the starting
weights. Seeds change the IR training rows and the batch order (the STS pool, the evaluation
sets and the starting weights are fixed).

``python -m experiments.codiemb [--smoke]``
"""
import math
import tempfile
import time

from experiments import _study

STEPS = 60
ARMS = {"naive": ("info_nce", False), "codiemb": ("codiemb", True)}  # form, single-task batches
METRICS = ("mrr@10", "ndcg@10", "recall@10", "spearman")
COLUMNS = ("arm", "variant", "batches")


def _config(arm, smoke):
  from configs.codiemb_wordnet import get_config
  c = get_config()
  form, single = ARMS[arm]
  c.loss.kwargs.form = form
  m = c.codiemb
  m.single_task = single
  m.fuse_checkpoints = 3 if arm == "codiemb" else 1
  m.eval_queries, m.eval_distractors, m.eval_pairs = 200, 1000, 400
  c.num_steps = STEPS
  if smoke:  # a tiny BERT (MiniLM's vocabulary) from scratch, 3 steps, a small evaluation
    c.model.pretrained = ""
    c.model.encoder_kwargs = dict(vocab=30522, dim=16, depth=1, heads=2, mlp_dim=32,
                                  max_len=16)
    c.num_steps, c.optim.warmup_steps = 3, 1
    m.ir_rows = m.sts_rows = 32
    m.eval_queries, m.eval_distractors, m.eval_pairs = 32, 20, 32
  return c


def _label(arm, variant):
  return {"arm": arm, "variant": variant,
          "batches": "-" if arm == "pretrained" else
          ("single-task" if ARMS[arm][1] else "mixed")}


def _rows(smoke, seeds):
  from jaxcl.recipes import codiemb
  _study.compile_cache()
  rows, pretrained = [], None
  for arm in ARMS:
    for seed in seeds:
      c = _config(arm, smoke)
      c.seed = seed
      c.codiemb.eval_pretrained = pretrained is None
      t0, cpu0 = time.time(), _study._cpu_seconds()
      with tempfile.TemporaryDirectory() as w:
        res = codiemb.run(c, w)
      wall, cpu = round(time.time() - t0, 2), round(_study._cpu_seconds() - cpu0, 2)
      if pretrained is None:
        pretrained = res.pop("pretrained")
        rows.append({"setting": _label("pretrained", "-"), "seed": 0, **pretrained})
      for v in codiemb.VARIANTS:
        if v in res:
          rows.append({"setting": _label(arm, v), "seed": seed, "wall_s": wall, "cpu_s": cpu,
                       "train/loss": res["train_loss"], **res[v]})
      _study.log(f"  {arm} seed {seed}: " + ", ".join(
          f"{k} {res['final'][k]:.3f}" for k in METRICS) + f"  ({wall:.0f} s, cpu {cpu:.0f} s)")
  return rows


def _ms(summary, metric, arm, variant):
  return _study.mean_std(summary, metric, arm=arm, variant=variant)


def _cmp(summary, metric, a, b):
  x, y = _ms(summary, metric, *a), _ms(summary, metric, *b)
  if math.isnan(x[0]) or math.isnan(y[0]):
    return None, f"{metric}: not run"
  sign = (1 if x[0] > y[0] else -1) if _study.separated(x, y) else 0
  word = {1: "above", 0: "level with", -1: "below"}[sign]
  return sign, (f"{metric}: {'/'.join(a)} {x[0]:.3f} ± {x[1]:.3f} vs {'/'.join(b)} "
                f"{y[0]:.3f} ± {y[1]:.3f} ({word}{_study.spread_note(x, y)})")


def verdict(summary):
  C, N, P = ("codiemb", "final"), ("naive", "final"), ("pretrained", "-")
  lines, sign = [], {}
  for metric in METRICS:
    sign[metric], text = _cmp(summary, metric, C, N)
    lines.append(text)
  if any(sign[m] is None for m in METRICS):
    return "Not all settings were run: no verdict.\n\n" + "\n".join(f"- {l}" for l in lines)
  delta = {}
  for arm in (C, N):
    delta[arm] = {m: _ms(summary, m, *arm)[0] - _ms(summary, m, *P)[0] for m in METRICS}
  moves = "; ".join(
      f"{arm[0]}: nDCG@10 {delta[arm]['ndcg@10']:+.3f}, MRR@10 {delta[arm]['mrr@10']:+.3f}, "
      f"Spearman {delta[arm]['spearman']:+.3f}" for arm in (N, C))
  ir, sts = sign["ndcg@10"], sign["spearman"]
  if ir >= 0 and sts >= 0 and (ir > 0 or sts > 0):
    gains = any(delta[C][m] > 0 for m in METRICS)  # better than the starting point anywhere?
    head = (("**Reproduces on the proxy**" if gains else "**Partly reproduces on the proxy**")
            + ": CoDiEmb is not below the naive mixed-batch InfoNCE on "
            "either task and above it on " + ("both" if ir > 0 and sts > 0 else
                                             "retrieval" if ir > 0 else "similarity")
            + ("" if gains else " (a smaller loss from the pretrained tower, not a better "
               "joint model)"))
  elif ir > 0 or sts > 0:
    head = ("**Partly reproduces**: CoDiEmb is above the naive baseline on "
            + ("retrieval" if ir > 0 else "similarity") + " but below it on "
            + ("similarity" if ir > 0 else "retrieval") + ": a different trade-off, not a "
            "smaller one")
  elif ir == 0 and sts == 0:
    head = ("**Does not reproduce on the proxy**: CoDiEmb and the naive baseline are level on "
            "both tasks")
  else:
    head = ("**Does not reproduce on the proxy**: CoDiEmb is below the naive baseline on "
            + ("both tasks" if ir < 0 and sts < 0 else "retrieval" if ir < 0 else
               "similarity") + " and above it on neither")
  head += (f". Compared: nDCG@10 (retrieval) and Spearman (similarity); a difference counts "
           f"only beyond the seed spread. Change from the pretrained tower: {moves}.")
  gains = [f"{arm[0]} {m}" for arm in (C, N) for m in ("ndcg@10", "spearman")
           if delta[arm][m] > _ms(summary, m, *arm)[1]]
  if not gains:
    head += (" **Caveat: neither arm improves on the pretrained tower on either task** (held-out "
             "synsets, this budget): both fine-tunes lose ground and CoDiEmb loses less, so "
             "what the proxy shows is a *smaller loss* on similarity at level retrieval, not "
             "a better joint model than the starting point.")
  else:
    head += " Gains over the pretrained tower beyond the arm's seed std: " + ", ".join(gains) + "."
  fuse = []
  fsign = {}
  for metric in METRICS:
    fsign[metric], text = _cmp(summary, metric, ("codiemb", "delta_guided"),
                               ("codiemb", "average"))
    fuse.append(text)
  if any(fsign[m] is None for m in METRICS):
    ftext = "Fusion: not run."
  else:
    up = [m for m in METRICS if fsign[m] > 0]
    down = [m for m in METRICS if fsign[m] < 0]
    ftext = ("Fusion: delta-guided vs plain averaging of the 3 checkpoints: "
             + ("**better** on " + ", ".join(up) if up else "not better on any metric")
             + ("; **worse** on " + ", ".join(down) if down else "")
             + " beyond the seed spread" + ("" if up else
                                            " (the paper's claim does not reproduce here)")
             + ".")
  return (head + "\n\n" + "\n".join(f"- {l}" for l in lines) + "\n\n" + ftext + "\n\n"
          + "\n".join(f"- {l}" for l in fuse))


def main(argv=None):
  args = _study.parse_args(argv)
  seeds = (0,) if args.smoke else (0, 1, 2)
  t0 = time.time()
  if args.replot:
    import json
    import os
    with open(os.path.join(args.out, "codiemb.json")) as f:
      saved = json.load(f)
    rows, info, total = saved["runs"], saved["machine"], saved.get("study_wall_s")
  else:
    rows, info = _rows(args.smoke, seeds), None
    total = round(time.time() - t0, 1)
  summary = _study.summarize(rows, METRICS + ("pearson", "wall_s", "cpu_s", "train/loss"))
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  colors = {"pretrained": "black", "naive": "tab:blue", "codiemb": "tab:orange"}
  marks = {"-": "*", "final": "o", "average": "s", "delta_guided": "D"}
  for ax, ir in zip(axes, ("ndcg@10", "mrr@10")):
    for s in summary:
      st = s["setting"]
      ax.errorbar(s["spearman"]["mean"], s[ir]["mean"], xerr=s["spearman"]["std"],
                  yerr=s[ir]["std"], fmt=marks[st["variant"]], color=colors[st["arm"]],
                  capsize=3, ms=8, label=f"{st['arm']} {st['variant']}".replace(" -", ""))
    ax.set_xlabel("similarity Spearman (cosine vs Wu-Palmer, held-out pairs)")
    ax.set_ylabel(f"reverse dictionary {ir} (held-out synsets)")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  c0 = _config("codiemb", args.smoke)
  fig.suptitle(f"IR vs STS trade-off: MiniLM, {c0.num_steps} steps, batch {c0.batch_size} "
               f"(mean ± std over {len(seeds)} seeds)")
  fig.tight_layout()
  m = c0.codiemb
  setup = (
      f"WordNet 3.0 nouns, a 10% synset split (split seed {m.split_seed}); training rows from "
      f"the training synsets only: {m.ir_rows} IR rows (definition, 2 of its lemmas, cycled "
      f"when it has one, 1 co-hyponym lemma as hard negative) and {m.sts_rows} STS rows (2 "
      f"Wu-Palmer-graded word pairs each), {m.text_len} tokens per text block. "
      f"{'A tiny BERT (smoke)' if args.smoke else 'all-MiniLM-L6-v2 (pretrained)'}, one shared "
      f"tower, mean pooling, no head; AdamW lr {c0.optim.lr}, weight decay "
      f"{c0.optim.weight_decay}, {c0.num_steps} steps (warm-up {c0.optim.warmup_steps}, "
      f"cosine to 0) at batch {c0.batch_size} rows for both arms. naive = mixed batches, one "
      f"InfoNCE (T = 0.02) over every positive pair (definition-lemma pairs, word pairs with "
      f"Wu-Palmer >= 0.75; other texts of the anchor's row are not negatives; hard negatives "
      f"as extra candidates). codiemb = single-task batches (alternating), multi-positive IR "
      f"InfoNCE (T = 0.02, in-batch + hard negatives) and 2 (1 - Pearson) + 0.5 PRO + 5 "
      f"RankKL (T = 0.05); average / delta_guided = fusion of its checkpoints at steps "
      f"{', '.join(str(k * c0.num_steps // 3) for k in (1, 2, 3))}. Evaluation (held-out "
      f"synsets): {m.eval_queries} definitions against a corpus of their lemmas + "
      f"{m.eval_distractors} random noun lemmas (MRR / nDCG / Recall @10), Spearman of the "
      f"cosine vs Wu-Palmer over {m.eval_pairs} held-out noun pairs (words at {m.word_len} "
      f"tokens). Mean ± std over seeds {list(seeds)} (pretrained: one evaluation). A "
      f"difference is called only when the means differ by more than the sum of the std's. "
      f"Study wall time {total} s on this machine (shared with other jobs; wall_s / cpu_s "
      f"per training run in the table).")
  _study.write("codiemb", args.out, title="CoDiEmb vs naive mixed-batch InfoNCE: reverse "
               "dictionary + word similarity (WordNet, MiniLM)",
               command=_study.command("codiemb", args.smoke), setup_text=setup,
               summary=summary, rows=rows, figure=fig, info=info, verdict=verdict(summary),
               table_md=_study.table(summary, COLUMNS, METRICS + ("pearson", "wall_s",
                                                                   "cpu_s", "train/loss")),
               extra={"study_wall_s": total})


if __name__ == "__main__":
  main()
