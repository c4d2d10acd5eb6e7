"""The sharded pretraining system: config schema, mesh and shardings, train step, optimisers,
checkpoints, the training loop.

``jaxcl.train.train(config, workdir)`` runs a recipe from ``configs/``; see
``jaxcl/train/trainer.py`` for the order of work and ``jaxcl/train/step.py`` for the step.
"""
from jaxcl import _extras  # noqa: E402

_extras.require("train", __name__)

from jaxcl.train.checkpoint import CheckpointError
from jaxcl.train.config import ConfigError, default_config, validate
from jaxcl.train.preemption import Preempted
from jaxcl.train.trainer import NonFiniteLossError, setup, train

__all__ = ["CheckpointError", "ConfigError", "default_config", "validate", "NonFiniteLossError",
           "Preempted", "setup", "train"]
