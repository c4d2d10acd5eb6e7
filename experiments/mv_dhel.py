"""Study `mv_dhel`: pairwise-sum NT-Xent ("pwe") vs MV-InfoNCE vs MV-DHEL for K = 2..5 views
on digits (methods.md section 2).

Claim (Koromilas et al., arXiv 2507.06979): MV-DHEL's accuracy grows with K and it keeps the
full embedding rank (no dimensional collapse) at K >= 4. Equal budget: same steps, lr and
temperature for every loss and K.

``python -m experiments.mv_dhel [--smoke]``
"""
from experiments import _study

LOSSES = (("pwe", "nt_xent"), ("mv_info_nce", "mv_info_nce"), ("mv_dhel", "mv_dhel"))
T = 0.2          # the reference code's default, for all three losses
STEPS = 100


def settings(smoke):
  from configs.mv_dhel_digits import get_config
  ks = (3,) if smoke else (2, 4)
  out = []
  for k in ks:
    for label, name in (LOSSES[::2] if smoke else LOSSES):
      c = get_config()
      c.views.num = k
      c.loss.name, c.loss.kwargs = name, {"temperature": T}
      c.batch_size = 16 if smoke else 128
      c.num_steps = 3 if smoke else STEPS
      c.optim.warmup_steps = 1 if smoke else 20
      c.eval.probe_l2 = (1e-4,)
      c.eval.probe_steps = 10 if smoke else 100
      out.append(({"K": k, "loss": label}, c))
  return out


def verdict(summary, ks):
  acc = {k: _study.mean_std(summary, "linear_probe", K=k, loss="mv_dhel") for k in ks}
  rank = {(k, l): _study.mean_std(summary, "effective_rank", K=k, loss=l)
          for k in ks for l, _ in LOSSES}
  a0, a1 = acc[ks[0]], acc[ks[-1]]
  gains = a1[0] > a0[0] and _study.separated(a1, a0)
  big = [k for k in ks if k >= 4]
  top_rank = bool(big) and all(
      all(_study.separated(rank[(k, "mv_dhel")], rank[(k, l)]) and
          rank[(k, "mv_dhel")][0] > rank[(k, l)][0] for l, _ in LOSSES if l != "mv_dhel")
      for k in big)
  parts = [
      f"MV-DHEL linear probe from K={ks[0]} to K={ks[-1]}: {100 * a0[0]:.2f} ± {100 * a0[1]:.2f}%"
      f" → {100 * a1[0]:.2f} ± {100 * a1[1]:.2f}%" + _study.spread_note(a1, a0) + ".",
      "Effective rank of the test features at K ≥ 4: " + ("; ".join(
          f"K={k}: " + ", ".join(f"{l} {rank[(k, l)][0]:.1f} ± {rank[(k, l)][1]:.1f}"
                                 for l, _ in LOSSES) for k in big) or "not run") + ".",
  ]
  head = ("The proxy **reproduces** both parts of the claim." if gains and top_rank else
          "Partly: " + ("MV-DHEL keeps the highest effective rank at K ≥ 4, beyond the seed "
                        "spread (no dimensional collapse), " if top_rank else
                        "MV-DHEL does **not** have the highest effective rank at K ≥ 4, ") +
          ("and its accuracy grows with K." if gains else
           "but the proxy **does not reproduce** an accuracy gain with K (the change is inside "
           "the seed spread; digits is near its ceiling)."))
  return head + "\n\n" + "\n".join(f"- {p}" for p in parts)


def main(argv=None):
  args, grid, seeds, rows, summary, info = _study.start("mv_dhel", settings, argv)
  ks = sorted({s["K"] for s, _ in grid})
  labels = [l for l, _ in LOSSES if any(s["loss"] == l for s, _ in grid)]
  plt = _study.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, m in zip(axes, ("linear_probe", "effective_rank")):
    scale = 100 if m == "linear_probe" else 1
    for l in labels:
      ms = [_study.mean_std(summary, m, K=k, loss=l) for k in ks]
      ax.errorbar(ks, [scale * a for a, _ in ms], [scale * s for _, s in ms], marker="o",
                  capsize=3, label=l)
    ax.set_xlabel("views per example K")
    ax.set_ylabel("linear probe (%)" if scale == 100 else "effective rank (test features)")
    ax.legend()
  c0 = grid[0][1]
  fig.suptitle(f"digits, MLP, batch {c0.batch_size}, {c0.num_steps} steps, T={T}")
  setup = (f"sklearn digits, MLP encoder + 2-layer head, batch {c0.batch_size}, "
           f"{c0.num_steps} steps, AdamW lr {c0.optim.lr}, T = {T} for every loss. "
           f"pwe = NT-Xent averaged over all C(K,2) view pairs (the trainer's pair adapter). "
           f"Linear probe (l2 = 1e-4) and effective rank of the encoder's test features "
           f"(exp entropy of normalised singular values; encoder width bounds it); mean ± std "
           f"over seeds {list(seeds)}.")
  _study.write("mv_dhel", args.out, title="Multi-view objectives vs number of views (digits)",
               command=_study.command("mv_dhel", args.smoke), setup_text=setup,
               summary=summary, rows=rows, figure=fig, info=info, verdict=verdict(summary, ks),
               table_md=_study.table(summary, ("K", "loss"),
                                     ("linear_probe", "knn", "effective_rank")))


if __name__ == "__main__":
  main()
