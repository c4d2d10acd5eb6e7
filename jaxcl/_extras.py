"""Which optional install a subpackage needs, checked when it is imported.

The core (``pip install jaxcl``: losses, kernels, collectives, metrics) needs only jax and numpy;
the trainer, encoders, data and evaluation need the ``train`` extra. Importing one of those
without it raises one ImportError that names every missing package and the install command,
instead of the first ``ModuleNotFoundError`` deep inside.
"""
import importlib.util

# extra: (import names it provides, install command)
EXTRAS = {
    "train": (("flax", "optax", "ml_collections", "orbax.checkpoint", "tensorflow_datasets",
               "grain", "sklearn", "matplotlib", "tqdm"), "pip install 'jaxcl[train]'"),
}


def absent(name: str) -> bool:
  """Whether the module ``name`` (dotted names too) cannot be imported here."""
  try:
    return importlib.util.find_spec(name) is None
  except ImportError:  # e.g. the parent package of a dotted name is missing
    return True


def require(extra: str, module: str) -> None:
  """ImportError naming ``module``, the missing packages and the install command of ``extra``."""
  names, command = EXTRAS[extra]
  missing = [n for n in names if absent(n)]
  if missing:
    raise ImportError(f"{module} needs the '{extra}' extra (missing: {', '.join(missing)}): "
                      f"{command}")
