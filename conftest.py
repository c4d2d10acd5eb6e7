"""Test harness: 8 virtual CPU devices so sharding is tested without accelerators.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Embedded datasets are prepared once into the checkout (shared by xdist workers through the
# builders' file lock), never into the user's ~/tensorflow_datasets.
os.environ.setdefault("JAXCL_DATA_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     ".pytest_data"))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
