"""Ring benchmark: per-device XLA temp memory of InfoNCE fwd+bwd on 1, 2, 4, 8 devices.

``B_local`` rows per device are fixed, so the global batch grows with the device count. For
each device count the fwd+bwd of :func:`jaxcl.losses.info_nce` inside ``jax.shard_map`` is
compiled (8 virtual CPU devices, ``--xla_force_host_platform_device_count=8``) and
``compiled.memory_analysis().temp_size_in_bytes`` (per device) is reported for ``dense``
(all-gathered keys, ``B_local x B_global`` logits), ``blockwise`` (all-gathered keys, tiled) and
``ring`` (keys passed round the ring, recomputing backward). Nothing is executed, so the
numbers do not depend on the machine's load.

Usage::

    python -m experiments.benchmarks.ring
    python -m experiments.benchmarks.ring --b-local 4096 --dim 128 --block 1024

Writes ``experiments/results/ring.{json,md}``.
"""
from __future__ import annotations

import os

if "jax" not in __import__("sys").modules:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402

from experiments.benchmarks import _bench  # noqa: E402

NAME = "ring"


def temp_bytes(n_dev: int, b_local: int, dim: int, impl: str, block: int) -> int:
  import jax
  import jax.numpy as jnp

  import jaxcl
  mesh = jax.make_mesh((n_dev,), ("d",), devices=jax.devices()[:n_dev],
                       axis_types=(jax.sharding.AxisType.Auto,))
  per = jax.shard_map(
      lambda q, k: jaxcl.losses.info_nce(q, k, impl=impl, block_size=block, axis_name="d"),
      mesh=mesh, in_specs=(jax.P("d"), jax.P("d")), out_specs=jax.P("d"))
  f = jax.jit(jax.value_and_grad(lambda q, k: per(q, k).mean(), argnums=(0, 1)))
  x = jax.ShapeDtypeStruct((n_dev * b_local, dim), jnp.float32)
  with jax.sharding.set_mesh(mesh):
    return f.lower(x, x).compile().memory_analysis().temp_size_in_bytes


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--b-local", type=int, default=4096)
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--block", type=int, default=1024)
  p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
  p.add_argument("--impls", nargs="+", default=["dense", "blockwise", "ring"])
  args = p.parse_args(argv)
  rows = []
  for impl in args.impls:
    for n in args.devices:
      t = temp_bytes(n, args.b_local, args.dim, impl, args.block)
      rows.append(dict(impl=impl, devices=n, b_local=args.b_local, b_global=n * args.b_local,
                       dim=args.dim, block=args.block, temp_bytes=t))
      print(impl, n, f"{t / 2**20:.2f} MiB", flush=True)
  for r in rows:
    base = [x for x in rows if x["impl"] == r["impl"]]
    r["vs_first"] = r["temp_bytes"] / base[0]["temp_bytes"]
  cols = [("impl", lambda r: r["impl"]), ("devices", lambda r: str(r["devices"])),
          ("B_local", lambda r: f"{r['b_local']:,}"), ("B_global", lambda r: f"{r['b_global']:,}"),
          ("temp MiB / device", lambda r: f"{r['temp_bytes'] / 2**20:,.2f}"),
          (f"vs {args.devices[0]} device(s)", lambda r: f"{r['vs_first']:.2f}x")]
  table = _bench.markdown_table(rows, cols)
  notes = (f"info_nce fwd+bwd, D={args.dim}, block {args.block}, per-device "
           f"`memory_analysis().temp_size_in_bytes` (compile only). The ring is chunk-major: "
           f"one `{args.block} x D` key tile and its gradient accumulator travel round the ring "
           f"at a time, so over one device it adds only those tiles and their receive buffers, "
           f"whatever the device count; `blockwise` all-gathers the keys (grows with the global "
           f"batch) and `dense` also materialises `B_local x B_global` logits.")
  path = _bench.write_results(NAME, dict(machine=_bench.machine(), rows=rows, args=vars(args)),
                              table, notes)
  print(table)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
