"""Multi-process start-up: ``jax.distributed.initialize`` when the config or the environment
says the job spans several processes (TPU pods, SLURM, Open MPI, or an explicit coordinator).

Example (two processes on one machine, each run with its own ``process_id``)::

    python -m jaxcl.main --config=configs/simclr_mnist1d.py --workdir=runs/x \
        --config.distributed.coordinator_address=127.0.0.1:12345 \
        --config.distributed.num_processes=2 --config.distributed.process_id=0
"""
from __future__ import annotations

import os

import jax

# Variables whose presence means a cluster launcher started several processes.
_ENV_HINTS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def _env_multiprocess():
  if any(os.environ.get(k) for k in _ENV_HINTS):
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts or not hosts
  for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(os.environ.get(k, "1") or 1) > 1:
      return True
  return False


def maybe_initialize(dist_config) -> bool:
  """Initialises jax.distributed once if needed. Returns whether it is multi-process."""
  if jax.distributed.is_initialized():
    return True
  if dist_config.coordinator_address or dist_config.num_processes > 1:
    jax.distributed.initialize(
        coordinator_address=dist_config.coordinator_address or None,
        num_processes=dist_config.num_processes or None,
        process_id=dist_config.process_id if dist_config.process_id >= 0 else None)
    return True
  if _env_multiprocess():
    jax.distributed.initialize()
    return True
  return False


def all_processes_max(value: int) -> int:
  """The maximum of an int over every process (collective: every process must call it at the
  same point, e.g. a step boundary); the value itself when single-process."""
  if jax.process_count() == 1:
    return int(value)
  import numpy as np
  from jax.experimental import multihost_utils
  return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))
