"""Test harness: 8 virtual CPU devices so sharding is tested without accelerators.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""
import os

# Backend optimisation level 0: the suite's programs are tiny and compiled once each, so LLVM's
# optimisation passes cost more than they save (suite 20 min -> 15 min on 2 cores). Same kernels
# and tolerances; discrete near-ties (BECLR's k-means assignments) are compared tie-aware.
# Subprocesses (multi-host, notebooks) inherit it.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Embedded datasets are prepared once into the checkout (shared by xdist workers through the
# builders' file lock), never into the user's ~/tensorflow_datasets.
os.environ.setdefault("JAXCL_DATA_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     ".pytest_data"))

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# A persistent XLA compilation cache private to this test process (each xdist worker has its
# own, removed at exit): many tests compile the same train step / evaluation programs (the
# study smokes, the trainer tests), which are then compiled once per worker.
_XLA_CACHE = tempfile.mkdtemp(prefix="jaxcl_test_xla_")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _XLA_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)



# Optional parts (WordNet files, the text extra, the MiniLM weights): tests/optional.py.
import pytest  # noqa: E402

from tests import optional  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line("markers", optional.MARKER_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  optional.check_item(item)


# Test tiers: the README's test command runs the first, `-m "long and not slow"` the second.
# Doctests of the core install (what `pip install jaxcl` ships: the core losses, kernels,
# collectives, metrics, shared algorithms) stay in the first tier; the rest (encoders, data,
# recipes, paper-specific losses: examples that build models or run recipes) are `long`.
CORE_DOCTEST_MODULES = {"jaxcl", "jaxcl.collectives", "jaxcl.metrics", "jaxcl.sinkhorn",
                        "jaxcl.kmeans", "jaxcl.grad_cache", "jaxcl.kernels", "jaxcl.kernels.lse",
                        "jaxcl.kernels.blockwise", "jaxcl.kernels.sigmoid", "jaxcl.losses",
                        "jaxcl.losses._common", "jaxcl.losses.infonce", "jaxcl.losses.ntxent",
                        "jaxcl.losses.siglip", "jaxcl.losses.supcon", "jaxcl.losses.multiview",
                        "jaxcl.losses.symile", "jaxcl.losses.swav", "jaxcl.losses.reduce"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  for item in items:
    if isinstance(item, pytest.DoctestItem):
      module = item.dtest.globs.get("__name__") if item.dtest is not None else None
      if module not in CORE_DOCTEST_MODULES:
        item.add_marker(pytest.mark.long)
