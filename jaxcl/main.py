"""Command line: ``python -m jaxcl.main --config=configs/simclr_mnist1d.py --workdir=runs/x``.

Any config field can be overridden with ``--config.<key>=<value>`` (e.g.
``--config.num_steps=200 --config.optim.lr=3e-3``); an unknown key is an error that names it.
Re-running with the same ``--workdir`` resumes from its latest checkpoint. Exit status: 0
done; 1 a config error, a non-finite step or no readable checkpoint (one line ``jaxcl: error:
...``); 2 an unknown ``--config.`` key or a value of the wrong type (one line, e.g. ``jaxcl:
error: --config.batch_size=abc: expected int``); 143 / 130 stopped by SIGTERM / SIGINT at a step
boundary after saving a checkpoint (``preempted at step N``; rerun to resume). The same command
runs on every process of a multi-host job (see :mod:`jaxcl.train.distributed`). Installed as
the ``jaxcl`` console script. A config with an ``mcl`` block (``configs/mcl_digits.py``) runs
the multistage recipe :mod:`jaxcl.recipes.mcl` instead of a single training run; a config with
``recipe = "<name>"`` runs ``jaxcl.recipes.<name>.train(config, workdir)`` (the text recipes).
"""
from __future__ import annotations

import re
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file with get_config().",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # orbax / tfds log every file they touch at INFO
  from jaxcl.train import CheckpointError, ConfigError, NonFiniteLossError, Preempted, train
  try:
    if "mcl" in _CONFIG.value:  # multistage recipe (configs/mcl_*.py): stages of train()
      from jaxcl.recipes import mcl
      mcl.train(_CONFIG.value, _WORKDIR.value)
    elif "coconut" in _CONFIG.value:  # class-incremental tasks (configs/coconut_*.py)
      from jaxcl.recipes import coconut
      coconut.train(_CONFIG.value, _WORKDIR.value)
    elif "recipe" in _CONFIG.value:  # config.recipe = "<name>": jaxcl.recipes.<name>.train
      from jaxcl import recipes
      recipes.run(_CONFIG.value, _WORKDIR.value)
    else:
      train(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, NonFiniteLossError, CheckpointError) as e:
    print(f"jaxcl: error: {e}", file=sys.stderr, flush=True)
    return 1
  except Preempted as e:  # SIGTERM / SIGINT: checkpoint saved, "preempted at step N" printed
    return e.exit_code
  return 0


# What a --config.<key>= value must parse as, by the type of the config field.
_EXPECTED = {int: "int", float: "float", bool: "bool (true / false)", str: "str"}


def _bad_value(argv, error):
  """``--config.<key>=<value>: expected <type>`` for absl's error on an override that does not
  parse as the field's type (the type read from the loaded config), else absl's message."""
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  for arg in argv[1:]:
    if not (arg.startswith("--config.") and "=" in arg and text.startswith(f"flag {arg}:")):
      continue
    key = arg[len("--config."):arg.index("=")]
    try:
      node, *path = flags.FLAGS["config"].value, *key.split(".")
      for part in path[:-1]:
        node = node[part]
      kind = node.get_type(path[-1])
    except Exception:  # pylint: disable=broad-except  (no config: absl's own words)
      kind = None
    return f"{arg}: expected {_EXPECTED.get(kind, getattr(kind, '__name__', 'another value'))}"
  return text.removeprefix("flag ")


def _parse(argv):
  """absl's parser, with a one-line error naming the key for a bad ``--config.`` override (an
  unknown key, or a value that is not of the field's type), exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.IllegalFlagValueError as e:  # e.g. --config.batch_size=abc; --workdir missing
    print(f"jaxcl: error: {_bad_value(argv, e)}", file=sys.stderr, flush=True)
    sys.exit(2)
  except (AttributeError, KeyError) as e:
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
    text = str(e).replace("\\n", " ").replace("\\", "")
    key = re.search(r"\w+", text)
    hint = re.search(r"Did you mean [^?]*\?", text)
    print(f"jaxcl: error: unknown config key '{key.group(0) if key else text}' in overrides "
          f"{overrides}" + (f" ({hint.group(0)})" if hint else ""), file=sys.stderr, flush=True)
    sys.exit(2)


def run():
  """Console-script entry point (``jaxcl --config=... --workdir=...``)."""
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=_parse)


if __name__ == "__main__":
  run()
