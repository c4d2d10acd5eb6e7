"""Subprocess entry for tests/test_train.py: runs 3 sharded train steps on a fixed global
batch in one process of a (possibly multi-process) CPU job and writes loss and parameters.

  python tests/train_worker.py OUT.npz --devices=2 --num_processes=2 --process_id=0 --port=P
"""
import argparse
import os
import sys


def main():
  p = argparse.ArgumentParser()
  p.add_argument("out")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--num_processes", type=int, default=1)
  p.add_argument("--process_id", type=int, default=0)
  p.add_argument("--port", type=int, default=0)
  a = p.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax
  if a.num_processes > 1:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{a.port}",
                               num_processes=a.num_processes, process_id=a.process_id)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import numpy as np
  from test_train import run_steps, tiny_config
  rows = tiny_config().batch_size // a.num_processes
  losses, params = run_steps(tiny_config(), local_rows=slice(a.process_id * rows,
                                                             (a.process_id + 1) * rows))
  if jax.process_index() == 0:
    np.savez(a.out, losses=losses, **params)


if __name__ == "__main__":
  main()
