"""GradCache benchmark: memory and time of a SimCLR encoder step, plain vs GradCache.

For a small ResNet and a small ViT (``jaxcl.models.build_encoder``) on 16x16 images, one
training step (two views, NT-Xent over the global batch, gradient + SGD update) at growing batch
size, with the plain full-batch ``jax.value_and_grad`` and with ``jaxcl.grad_cache`` (chunks of
``--chunk`` rows). Reports XLA's compiled ``memory_analysis()`` temp bytes, the process peak
RSS (each configuration in a fresh subprocess) and the step time (best of ``--repeats``). The NT-Xent uses the
blockwise kernel, so the loss's own memory stays small and the table shows the encoder's.

BatchNorm (ResNet): the plain step normalises with full-batch statistics, GradCache with
per-chunk statistics (see :mod:`jaxcl.grad_cache`); their gradients differ by that choice only.

Usage::

    python -m experiments.benchmarks.grad_cache                 # default sweep, writes results
    python -m experiments.benchmarks.grad_cache --batches 64 256 --encoders vit

Writes ``experiments/results/grad_cache.{md,json}``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(__file__), "..", "results")
ENCODERS = {
    # A thin ResNet-18-style CNN (one block per stage) and a 2-layer ViT.
    "resnet": dict(name="resnet18", width=8, stage_sizes=(1, 1, 1, 1)),
    "vit": dict(name="vit_tiny", dim=96, depth=2, heads=3, patch_size=4),
}
# Default sweeps. The ResNet stops early: XLA:CPU runs convolution gradients inside a while
# loop (GradCache's lax.scan) 6-20x slower than outside one, so its GradCache step is slow here.
BATCHES = {"resnet": (64, 128, 256), "vit": (64, 256, 1024, 2048)}
IMAGE = (16, 16, 3)


def _step_fn(encoder: str, method: str, chunk: int, loss_impl: str):
  import jax
  import jax.numpy as jnp

  import jaxcl
  from jaxcl import grad_cache, models

  spec = dict(ENCODERS[encoder])
  model = models.build_encoder(spec.pop("name"), **spec)

  def loss_fn(params, emb):
    return jaxcl.losses.nt_xent(*emb, temperature=0.2, impl=loss_impl, block_size=256).mean()

  def step(params, stats, x1, x2):
    def embed(p, x, rng):
      # Both views in one call: one set of BatchNorm statistics per (chunk of) batch.
      e, state = model.apply({"params": p, "batch_stats": stats}, jnp.concatenate(x),
                             train=True, mutable=["batch_stats"])
      n = x[0].shape[0]
      return (e[:n], e[n:]), state.get("batch_stats", {})

    if method == "plain":
      def full(p):
        emb, state = embed(p, (x1, x2), None)
        return loss_fn(p, emb), state
      (loss, new_stats), grads = jax.value_and_grad(full, has_aux=True)(params)
    else:
      loss, grads, new_stats = grad_cache.value_and_grad(embed, loss_fn, chunk,
                                                         has_state=True)(params, (x1, x2))
    params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    return loss, params, new_stats

  return model, step


def run_config(encoder: str, method: str, batch: int, chunk: int, loss_impl: str,
               repeats: int) -> dict:
  """One configuration in this process: compile, memory analysis, timed steps, peak RSS."""
  import jax

  model, step = _step_fn(encoder, method, chunk, loss_impl)
  k = jax.random.split(jax.random.key(0), 3)
  x1 = jax.random.normal(k[0], (batch,) + IMAGE)
  x2 = x1 + 0.1 * jax.random.normal(k[1], x1.shape)
  variables = model.init(k[2], x1[:1])
  params, stats = variables["params"], variables.get("batch_stats", {})
  jax.block_until_ready((x1, x2, params))
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10

  t0 = time.perf_counter()
  compiled = jax.jit(step).lower(params, stats, x1, x2).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  times = []  # the step is compiled ahead of time, so the first call is timed as well
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    loss, _, _ = jax.block_until_ready(compiled(params, stats, x1, x2))
    times.append(time.perf_counter() - t0)
  return dict(encoder=encoder, method=method, batch=batch,
              chunk=chunk if method == "grad_cache" else None,
              temp_mib=mem.temp_size_in_bytes / 2**20,
              argument_mib=mem.argument_size_in_bytes / 2**20,
              peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10,
              rss_before_compile_mib=rss_before,
              step_s=min(times), compile_s=compile_s, loss=float(loss),
              params=sum(x.size for x in jax.tree.leaves(params)))


def _subprocess(cfg: dict, timeout: float) -> dict:
  cmd = [sys.executable, "-m", "experiments.benchmarks.grad_cache", "--worker", json.dumps(cfg)]
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
  except subprocess.TimeoutExpired:
    return dict(cfg, error=f"timeout after {timeout:.0f}s")
  lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
  if out.returncode or not lines:
    return dict(cfg, error=(out.stderr.strip().splitlines() or ["no output"])[-1][:200])
  return json.loads(lines[-1])


def machine() -> dict:
  import jax
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return dict(cpu=cpu, cores=os.cpu_count(), jax=jax.__version__,
              backend=jax.default_backend(), python=platform.python_version())


def markdown(rows: list, meta: dict) -> str:
  out = ["# GradCache benchmark\n",
         f"`{meta['command']}` on {meta['date']}; {meta['machine']['cpu']}, "
         f"{meta['machine']['cores']} cores, jax {meta['machine']['jax']} "
         f"({meta['machine']['backend']}). Step = two views of 16x16x3 images, NT-Xent "
         f"(`impl={meta['loss_impl']!r}`), gradient and SGD update; GradCache chunk "
         f"{meta['chunk']} rows. Temp = XLA compiled `memory_analysis().temp_size_in_bytes`; "
         f"peak RSS = the configuration's own process (includes the JAX runtime and compiler, "
         f"about {meta['baseline_rss_mib']:.0f} MiB before compiling at the smallest batch).\n",
         "| encoder | batch | plain temp MiB | GradCache temp MiB | plain peak RSS MiB | "
         "GradCache peak RSS MiB | plain step s | GradCache step s |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
  by = {(r["encoder"], r["batch"], r["method"]): r for r in rows}
  fmt = lambda r, key, f: "error" if r is None or "error" in r else f.format(r[key])
  for enc in dict.fromkeys(r["encoder"] for r in rows):
    for b in sorted({r["batch"] for r in rows if r["encoder"] == enc}):
      p, g = by.get((enc, b, "plain")), by.get((enc, b, "grad_cache"))
      out.append(f"| {enc} | {b} | {fmt(p, 'temp_mib', '{:.1f}')} | "
                 f"{fmt(g, 'temp_mib', '{:.1f}')} | {fmt(p, 'peak_rss_mib', '{:.0f}')} | "
                 f"{fmt(g, 'peak_rss_mib', '{:.0f}')} | {fmt(p, 'step_s', '{:.3f}')} | "
                 f"{fmt(g, 'step_s', '{:.3f}')} |")
  errors = [r for r in rows if "error" in r]
  for r in errors:
    out.append(f"\nerror: {r['encoder']} {r['method']} B={r['batch']}: {r['error']}")
  return "\n".join(out) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
  ap.add_argument("--batches", nargs="+", type=int, help="default: per encoder, see BATCHES")
  ap.add_argument("--chunk", type=int, default=64)
  ap.add_argument("--loss-impl", default="blockwise")
  ap.add_argument("--repeats", type=int, default=1, help="timed steps (min is reported)")
  ap.add_argument("--timeout", type=float, default=240.0, help="seconds per configuration")
  ap.add_argument("--no-write", action="store_true")
  ap.add_argument("--worker", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    print(json.dumps(run_config(**json.loads(args.worker))), flush=True)
    return

  rows = []
  for enc in args.encoders:
    for b in args.batches or BATCHES[enc]:
      for method in ("plain", "grad_cache"):
        cfg = dict(encoder=enc, method=method, batch=b, chunk=args.chunk,
                   loss_impl=args.loss_impl, repeats=args.repeats)
        r = _subprocess(cfg, args.timeout)
        rows.append(r)
        print(json.dumps(r), flush=True)
  ok = [r for r in rows if "error" not in r]
  meta = dict(command="python -m experiments.benchmarks.grad_cache " + " ".join(argv or sys.argv[1:]),
              date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              machine=machine(), chunk=args.chunk, loss_impl=args.loss_impl,
              baseline_rss_mib=min((r["rss_before_compile_mib"] for r in ok), default=0.0))
  table = markdown(rows, meta)
  print(table)
  if not args.no_write:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "grad_cache.md"), "w") as f:
      f.write(table)
    with open(os.path.join(RESULTS, "grad_cache.json"), "w") as f:
      json.dump(dict(meta, rows=rows), f, indent=1)


if __name__ == "__main__":
  main()
