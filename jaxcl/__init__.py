"""jaxcl: contrastive representation learning in JAX.

``jaxcl.losses`` holds the pure objectives, ``jaxcl.metrics`` the representation metrics,
``jaxcl.kernels`` the similarity kernels and ``jaxcl.collectives`` every cross-device op.
"""
from jaxcl import collectives, kernels, losses, metrics

__version__ = "0.1.0"
__all__ = ["collectives", "kernels", "losses", "metrics"]
