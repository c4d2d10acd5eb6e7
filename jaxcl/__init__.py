"""jaxcl: contrastive representation learning in JAX.

``jaxcl.losses`` holds the pure objectives, ``jaxcl.metrics`` the representation metrics,
``jaxcl.kernels`` the similarity kernels, ``jaxcl.collectives`` every cross-device op,
``jaxcl.sinkhorn`` / ``jaxcl.kmeans`` the shared clustering and transport primitives and
``jaxcl.grad_cache`` gradient caching for batches whose activations do not fit.
"""
from jaxcl import collectives, grad_cache, kernels, kmeans, losses, metrics, sinkhorn

__version__ = "0.1.0"
__all__ = ["collectives", "grad_cache", "kernels", "kmeans", "losses", "metrics", "sinkhorn"]
