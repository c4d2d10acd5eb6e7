"""Accelerator benchmark: the ``losses`` table on a GPU, bfloat16 inputs, B up to 1,048,576.

For each batch ``B`` (``D = 512``) and implementation, a fresh subprocess compiles the fwd+bwd
of the mean of :func:`jaxcl.losses.info_nce` on bfloat16 inputs (pre-normalised,
``normalize=False`` so the kernel's matmuls run in bfloat16 with float32 accumulation) and
reports the time, the achieved TFLOP/s counted as ``6 B^2 D / time`` (the dense algorithm's
flops; the tiled backward actually does ``8 B^2 D``), the chip's bfloat16 matmul rate ``R``
measured in the same process (``[8192, 8192] x [8192, 8192]``), ``time / (6 B^2 D / R)``, XLA's
temp memory and the device's peak bytes in use.

The sweep stops early when the next size would not fit the time budget (default 9 minutes in
all, so the script finishes in under 10). Without a GPU it prints a note and exits 0.

Usage::

    python -m experiments.benchmarks.device                 # writes results/device.{json,md}
    python -m experiments.benchmarks.device --sizes 65536 262144 --block 8192

Writes ``experiments/results/device.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from experiments.benchmarks import _bench

NAME = "device"
SIZES = (16384, 65536, 262144, 1048576)


def _child(cfg: dict) -> dict:
  import jax
  import jax.numpy as jnp

  import jaxcl

  b, d, impl = cfg["B"], cfg["D"], cfg["impl"]
  norm = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  q = norm(jax.random.normal(jax.random.key(0), (b, d))).astype(jnp.bfloat16)
  k = norm(q.astype(jnp.float32) + 0.5 * jax.random.normal(jax.random.key(1), (b, d)))
  k = k.astype(jnp.bfloat16)
  loss = lambda q, k: jaxcl.losses.info_nce(q, k, temperature=0.05, normalize=False, impl=impl,
                                             block_size=cfg["block"]).mean()
  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(q, k).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  rate = _bench.matmul_rate("bfloat16", 8192, 8192, 8192, reps=10)
  jax.block_until_ready(compiled(q, k))
  reps = 3 if b <= 65536 else 1
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(q, k))
    times.append(time.perf_counter() - t)
  best = min(times)
  flops = 6.0 * b * b * d
  stats = jax.devices()[0].memory_stats() or {}
  return dict(cfg, time_s=best, tflops=flops / best / 1e12, rate_tflops=rate / 1e12,
              ratio=best / (flops / rate), temp_bytes=temp,
              peak_device_bytes=stats.get("peak_bytes_in_use"))


COLUMNS = [
    ("impl", lambda r: r["impl"]),
    ("B", lambda r: f"{r['B']:,}"),
    ("block", lambda r: str(r["block"]) if r["impl"] != "dense" else "-"),
    ("fwd+bwd s", lambda r: f"{r['time_s']:.3f}"),
    ("TFLOP/s (6B²D)", lambda r: f"{r['tflops']:.1f}"),
    ("matmul R TFLOP/s", lambda r: f"{r['rate_tflops']:.1f}"),
    ("time/floor", lambda r: f"{r['ratio']:.2f}"),
    ("XLA temp GiB", lambda r: f"{r['temp_bytes'] / 2**30:.2f}"),
    ("peak device GiB", lambda r: f"{r['peak_device_bytes'] / 2**30:.2f}"),
    ("note", lambda r: r.get("error", "")),
]


def _has_gpu() -> bool:
  import jax
  try:
    return len(jax.devices("gpu")) > 0
  except RuntimeError:
    return False


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
  p.add_argument("--dim", type=int, default=512)
  p.add_argument("--impls", nargs="+", default=["dense", "blockwise"])
  p.add_argument("--block", type=int, default=8192)
  p.add_argument("--dense-max", type=int, default=32768)
  p.add_argument("--budget", type=float, default=540, help="seconds for the whole sweep")
  p.add_argument("--child")
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(_child(json.loads(args.child))))
    return
  if not _has_gpu():
    print("device benchmark: no GPU visible to JAX; nothing to do (skipped).")
    return

  start = time.perf_counter()
  machine = _bench.machine()
  rows = []
  last_time = {}
  for b in sorted(args.sizes):
    for impl in args.impls:
      if impl == "dense" and b > args.dense_max:
        continue
      left = args.budget - (time.perf_counter() - start)
      # Quadratic cost: the previous size's time scaled, plus ~30 s of process start/compile.
      prev = last_time.get(impl)
      guess = 30 + (prev[1] * (b / prev[0]) ** 2 * 3 if prev else 0)
      if guess > left:
        print(f"skipping {impl} B={b}: estimated {guess:.0f}s > {left:.0f}s left",
              file=sys.stderr)
        continue
      cfg = dict(impl=impl, B=b, D=args.dim, block=min(args.block, b))
      row = {**cfg, **_bench.run_child(f"experiments.benchmarks.{NAME}", cfg, max(left, 60))}
      if "time_s" in row:
        last_time[impl] = (b, row["time_s"])
      rows.append(row)
      print(_bench.markdown_table([row], COLUMNS).splitlines()[-1], flush=True)
  notes = (f"info_nce fwd+bwd, bfloat16 inputs (normalize=False), D={args.dim}; floor = 6 B^2 D "
           f"/ R with R the bfloat16 8192^3 matmul rate measured in the same process.")
  path = _bench.write_results(NAME, dict(machine=machine, rows=rows, args=vars(args)),
                              _bench.markdown_table(rows, COLUMNS), notes)
  print(_bench.markdown_table(rows, COLUMNS))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
