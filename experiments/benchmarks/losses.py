"""Loss-kernel benchmark: fwd+bwd time and peak memory of dense, blockwise and ring InfoNCE.

For each batch ``B`` (``D = 128``), input dtype and implementation, a fresh subprocess compiles
``jax.value_and_grad`` of the mean of :func:`jaxcl.losses.info_nce` (one direction, L2
normalisation inside, gradients w.r.t. queries and keys) and reports

* ``time``: wall seconds of one fwd+bwd (best of a few runs below 16k rows, one run above);
* ``floor``: ``6 B^2 D / R``, the three ``B x B x D`` matmuls of a dense fwd+bwd at the rate
  ``R`` of a ``[4096, 128] x [128, 4096]`` float32 matmul measured in the same process right
  before; ``time / floor`` is the kernel's efficiency (the blockwise backward recomputes the
  logits, so it does ``8 B^2 D`` flops: 1.33 at the matmul rate unless its tiles run faster);
* ``peak RSS``: the process's peak resident memory (it includes ~0.3 GiB of JAX runtime);
* ``XLA temp``: ``compiled.memory_analysis().temp_size_in_bytes``.

``ring`` runs inside ``shard_map`` on a one-device mesh (so it is the blockwise path plus the
ring plumbing). Dense is skipped above ``--dense-max`` rows (its logits and their gradient need
``~8 B^2`` bytes: 32 GiB at 65,536) unless ``--force-dense``. If PyTorch is importable, a plain
dense PyTorch InfoNCE is timed on the same shapes (``impl=torch``); it is not a dependency.

Usage::

    python -m experiments.benchmarks.losses                      # full sweep, ~30 min on 2 cores
    python -m experiments.benchmarks.losses --sizes 4096 65536 --impls dense blockwise

Writes ``experiments/results/losses.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from experiments.benchmarks import _bench

NAME = "losses"
SIZES = (1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _child(cfg: dict) -> dict:
  import jax
  import jax.numpy as jnp

  import jaxcl

  b, d, dtype, impl = cfg["B"], cfg["D"], cfg["dtype"], cfg["impl"]
  q = jax.random.normal(jax.random.key(0), (b, d)).astype(dtype)
  k = (q.astype(jnp.float32) + jax.random.normal(jax.random.key(1), (b, d))).astype(dtype)
  if impl == "torch":
    return _torch_child(cfg, q, k)
  kw = dict(temperature=0.1, impl=impl, block_size=cfg["block"])
  if impl == "ring":
    mesh = jax.make_mesh((1,), ("d",), devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,))
    per = jax.shard_map(lambda q, k: jaxcl.losses.info_nce(q, k, axis_name="d", **kw),
                        mesh=mesh, in_specs=(jax.P("d"), jax.P("d")), out_specs=jax.P("d"))
    jax.sharding.set_mesh(mesh)
  else:
    per = lambda q, k: jaxcl.losses.info_nce(q, k, **kw)
  f = jax.jit(jax.value_and_grad(lambda q, k: per(q, k).mean(), argnums=(0, 1)))
  t0 = time.perf_counter()
  compiled = f.lower(q, k).compile()
  compile_s = time.perf_counter() - t0
  temp = compiled.memory_analysis().temp_size_in_bytes
  rate = _bench.matmul_rate()
  reps = 1 if b >= 16384 else 3
  if reps > 1:
    jax.block_until_ready(compiled(q, k))
  times, cpus = [], []
  for _ in range(reps):
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(q, k))
    times.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
  best = min(times)
  floor = 6.0 * b * b * d / rate
  return dict(cfg, time_s=best, cpu_s=min(cpus), compile_s=compile_s, rate_gflops=rate / 1e9,
              floor_s=floor, ratio=best / floor, temp_bytes=temp,
              peak_rss_bytes=_bench.peak_rss_bytes())


def _torch_child(cfg, q, k):
  import numpy as np
  import torch  # optional; absent in the default environment
  b, d = cfg["B"], cfg["D"]
  tq = torch.tensor(np.asarray(q, np.float32), requires_grad=True)
  tk = torch.tensor(np.asarray(k, np.float32), requires_grad=True)

  def step():
    qn = torch.nn.functional.normalize(tq, dim=-1)
    kn = torch.nn.functional.normalize(tk, dim=-1)
    loss = torch.nn.functional.cross_entropy(qn @ kn.T / 0.1, torch.arange(b))
    loss.backward()

  step()
  t = time.perf_counter()
  step()
  best = time.perf_counter() - t
  rate = _bench.matmul_rate()
  floor = 6.0 * b * b * d / rate
  return dict(cfg, time_s=best, rate_gflops=rate / 1e9, floor_s=floor, ratio=best / floor,
              peak_rss_bytes=_bench.peak_rss_bytes())


COLUMNS = [
    ("impl", lambda r: r["impl"]),
    ("dtype", lambda r: r["dtype"]),
    ("B", lambda r: f"{r['B']:,}"),
    ("block", lambda r: str(r["block"]) if r["impl"] in ("blockwise", "ring") else "-"),
    ("fwd+bwd s", lambda r: f"{r['time_s']:.3f}"),
    ("floor s", lambda r: f"{r['floor_s']:.3f}"),
    ("time/floor", lambda r: f"{r['ratio']:.2f}"),
    ("R GFLOP/s", lambda r: f"{r['rate_gflops']:.1f}"),
    ("peak RSS MiB", lambda r: f"{r['peak_rss_bytes'] / 2**20:,.0f}"),
    ("XLA temp MiB", lambda r: f"{r['temp_bytes'] / 2**20:,.1f}"),
    ("note", lambda r: r.get("error", r.get("note", ""))),
]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  p.add_argument("--impls", nargs="+", default=["dense", "blockwise", "ring"])
  p.add_argument("--block", type=int, default=1024)
  p.add_argument("--dense-max", type=int, default=16384)
  p.add_argument("--force-dense", action="store_true")
  p.add_argument("--timeout", type=float, default=1800)
  p.add_argument("--note", default="")
  p.add_argument("--tag", default="", help="writes results/losses_<tag>.* instead")
  p.add_argument("--child")
  args = p.parse_args(argv)
  if args.child:
    print(json.dumps(_child(json.loads(args.child))))
    return

  impls = list(args.impls)
  try:
    import torch  # noqa: F401
    impls.append("torch")
  except ImportError:
    print("torch not importable: PyTorch comparison skipped", file=sys.stderr)
  machine = _bench.machine()
  rows = []
  for b in args.sizes:
    for dtype in args.dtypes:
      for impl in impls:
        cfg = dict(impl=impl, B=b, D=args.dim, dtype=dtype, block=args.block)
        if impl in ("dense", "torch") and b > args.dense_max and not args.force_dense:
          continue
        row = _bench.run_child(f"experiments.benchmarks.{NAME}", cfg, args.timeout)
        row = {**cfg, **row}
        rows.append(row)
        print(_bench.markdown_table([row], COLUMNS).splitlines()[-1], flush=True)
        _save(args, machine, rows)
  path = _save(args, machine, rows)
  print(_bench.markdown_table(rows, COLUMNS))
  print(f"wrote {path}")


def _save(args, machine, rows):
  notes = (f"Loss: `jaxcl.losses.info_nce` (one direction), D={args.dim}, gradients w.r.t. both "
           f"inputs; floor = 6 B^2 D / R with R the float32 [4096,128]x[128,4096] matmul rate "
           f"measured in the same process. Dense skipped above {args.dense_max:,} rows "
           f"(--force-dense to run it). Inputs are L2-normalised inside the loss in float32, so "
           f"bfloat16 inputs cost the same as float32 after the first op. {args.note}")
  order = {name: i for i, name in enumerate(["dense", "blockwise", "ring", "torch"])}
  rows = sorted(rows, key=lambda r: (r["dtype"], r["B"], order.get(r["impl"], 9)))
  name = f"{NAME}_{args.tag}" if args.tag else NAME
  command = " ".join(["python -m experiments.benchmarks.losses"] + sys.argv[1:])
  return _bench.write_results(name, dict(machine=machine, rows=rows, args=vars(args),
                                         command=command),
                              _bench.markdown_table(rows, COLUMNS), notes)


if __name__ == "__main__":
  main()
