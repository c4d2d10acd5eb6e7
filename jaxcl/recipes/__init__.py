"""Recipes that run the shared trainer more than once or around their own data (multistage
methods such as MCL; the class-incremental tasks of COCONUT; the text recipes, which build
tokenized datasets with :mod:`jaxcl.data.text` and evaluate with :mod:`jaxcl.eval.ranking`).

A config with ``recipe = "<name>"`` is run by ``python -m jaxcl.main`` as
``jaxcl.recipes.<name>.train(config, workdir)``; :func:`trainer_config` strips the recipe's own
blocks so the rest is an ordinary trainer config."""
from __future__ import annotations

import importlib
import re


def run(config, workdir):
  """``jaxcl.recipes.<config.recipe>.train(config, workdir)``; a clear error if unknown."""
  name = config.recipe
  if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
    raise ValueError(f"config.recipe must be a recipe module name, got {name!r}")
  try:
    module = importlib.import_module(f"jaxcl.recipes.{name}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.recipe={name!r}: no module jaxcl.recipes.{name}") from e
  return module.train(config, workdir)


def trainer_config(config, *blocks):
  """A copy of ``config`` without ``recipe`` and the recipe's own ``blocks`` (e.g. ``"text"``):
  what :func:`jaxcl.train.train` validates."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    for k in ("recipe",) + tuple(blocks):
      if k in c:
        del c[k]
  return c
