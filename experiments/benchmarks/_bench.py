"""Shared helpers of the kernel benchmarks: machine description, matmul rate, child processes,
Markdown tables and result files (``experiments/results/<name>.{json,md}``)."""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

RESULTS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "results"))


def machine() -> dict:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  devices = jax.devices()
  return {
      "cpu": cpu,
      "cores": os.cpu_count(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "device": devices[0].device_kind,
      "n_devices": len(devices),
      "load_average": os.getloadavg(),
  }


def matmul_rate(dtype="float32", m=4096, k=128, n=4096, reps=5) -> float:
  """Best FLOP/s of a jitted ``[m, k] x [k, n]`` matmul (the benchmarks' rate ``R``)."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (m, k)).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (k, n)).astype(dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  jax.block_until_ready(f(a, b))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t)
  return 2.0 * m * k * n / best


def peak_rss_bytes() -> int:
  """Peak resident set size of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(module: str, config: dict, timeout: float, env: dict | None = None) -> dict:
  """Runs ``python -m module --child JSON`` in a fresh process (so peak RSS is per config) and
  returns the JSON dict it prints last, or ``{"error": ...}``."""
  cmd = [sys.executable, "-m", module, "--child", json.dumps(config)]
  full_env = dict(os.environ, **(env or {}))
  try:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                         cwd=os.path.dirname(os.path.dirname(RESULTS)))
  except subprocess.TimeoutExpired:
    return {"error": f"timeout after {timeout:.0f}s"}
  for line in reversed(out.stdout.strip().splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def markdown_table(rows, columns) -> str:
  head = "| " + " | ".join(title for title, _ in columns) + " |"
  rule = "|" + "|".join("---" for _ in columns) + "|"
  body = []
  for row in rows:
    cells = []
    for _, fmt in columns:
      try:
        cells.append(fmt(row))
      except (KeyError, TypeError, ValueError):
        cells.append("-")
    body.append("| " + " | ".join(cells) + " |")
  return "\n".join([head, rule] + body)


def write_results(name: str, payload: dict, table: str, notes: str = "") -> str:
  """Writes ``<name>.json`` and ``<name>.md`` under ``experiments/results/``."""
  os.makedirs(RESULTS, exist_ok=True)
  payload = dict(payload)
  payload.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"))
  payload.setdefault("command", " ".join(["python -m", f"experiments.benchmarks.{name}"] +
                                         sys.argv[1:]))
  with open(os.path.join(RESULTS, f"{name}.json"), "w") as f:
    json.dump(payload, f, indent=1, default=str)
  m = payload.get("machine", {})
  md = (f"# Benchmark `{name}`\n\n"
        f"Command: `{payload['command']}`  \n"
        f"Date: {payload['date']}  \n"
        f"Machine: {m.get('cpu')} ({m.get('cores')} cores), {m.get('device')} "
        f"({m.get('backend')}), jax {m.get('jax')}, load average at start "
        f"{m.get('load_average')}\n\n{notes}\n\n{table}\n")
  path = os.path.join(RESULTS, f"{name}.md")
  with open(path, "w") as f:
    f.write(md)
  return path
