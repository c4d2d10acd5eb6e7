"""Full-node InfoNCE over all N graph nodes on CPU: ``losses.contrib.grace_loss`` with the blockwise
kernel, value and gradient, N up to 1e5 (issue #9: "full-node InfoNCE over all N nodes through
the blockwise kernel, N up to 1e5 on CPU").

For each N: one jitted value-and-gradient of the mean GRACE loss (inter- + intra-view negatives,
T = 0.6) of two random unit views ``[N, D]``; wall time of the second call (the first compiles),
peak RSS of the process, and a dense check at the smallest N. Writes
``experiments/results/full_node.{md,json}``.

Run: ``python -m experiments.benchmarks.full_node`` (``--sizes 1000,10000`` for fewer).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _study
from jaxcl import losses


def _rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n, dim, block):
  k1, k2 = jax.random.split(jax.random.key(n))
  z1 = jax.random.normal(k1, (n, dim))
  z2 = z1 + 0.3 * jax.random.normal(k2, (n, dim))
  f = jax.jit(jax.value_and_grad(
      lambda a, b: losses.contrib.grace_loss(a, b, impl="blockwise", block_size=block).mean(),
      argnums=(0, 1)))
  value, grads = f(z1, z2)
  jax.block_until_ready(grads)
  t0 = time.perf_counter()
  value, grads = f(z1, z2)
  jax.block_until_ready(grads)
  wall = time.perf_counter() - t0
  finite = bool(np.isfinite(float(value)) and all(bool(jnp.isfinite(g).all()) for g in grads))
  return {"N": n, "D": dim, "block": block, "loss": float(value), "fwd_bwd_s": round(wall, 3),
          "peak_rss_mib": round(_rss_mib(), 1), "finite": finite,
          "dense_bytes_if_materialised_mib": round(2 * n * n * 4 / 2**20, 1)}


def main(argv=None):
  p = argparse.ArgumentParser()
  p.add_argument("--sizes", default="1000,10000,100000")
  p.add_argument("--dim", type=int, default=32)
  p.add_argument("--block", type=int, default=1024)
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "results"))
  args = p.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(",")]
  n0 = sizes[0]
  k1, k2 = jax.random.split(jax.random.key(0))
  a, b = jax.random.normal(k1, (n0, args.dim)), jax.random.normal(k2, (n0, args.dim))
  dense = losses.contrib.grace_loss(a, b, impl="dense").mean()
  block = losses.contrib.grace_loss(a, b, impl="blockwise", block_size=args.block).mean()
  check = {"N": n0, "dense": float(dense), "blockwise": float(block),
           "abs_diff": float(abs(dense - block))}
  rows = []
  for n in sizes:
    rows.append(measure(n, args.dim, args.block))
    print(rows[-1], flush=True)
  info = _study.machine()
  md = ["# Full-node GRACE InfoNCE on CPU (blockwise kernel)", "",
        f"Command: `python -m experiments.benchmarks.full_node --sizes {args.sizes}`  ",
        f"Date: {info['date']}  ", f"Machine: {info['cpu']}, {info['cores']} cores, jax "
        f"{info['jax']} (peak RSS is the process maximum so far, cumulative over the rows)", "",
        "| N | D | block | loss | fwd+bwd s | peak RSS MiB | N×N×2 float32 if dense, MiB | finite |",
        "|---|---|---|---|---|---|---|---|"]
  md += [f"| {r['N']:,} | {r['D']} | {r['block']} | {r['loss']:.4f} | {r['fwd_bwd_s']} | "
         f"{r['peak_rss_mib']} | {r['dense_bytes_if_materialised_mib']:,} | {r['finite']} |"
         for r in rows]
  md += ["", f"Dense vs blockwise at N = {n0:,}: {check['dense']:.6f} vs {check['blockwise']:.6f} "
         f"(|diff| {check['abs_diff']:.2e})."]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "full_node.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  with open(os.path.join(args.out, "full_node.json"), "w") as f:
    json.dump({"command": f"python -m experiments.benchmarks.full_node --sizes {args.sizes}",
               "machine": info, "rows": rows, "dense_check": check}, f, indent=1)


if __name__ == "__main__":
  main()
