"""Similarity kernels: the one place where ``<q_i, k_j> / T`` and its row reductions are computed."""
from jaxcl.kernels.lse import LSEResult, contrastive_lse, logits, IMPLS
from jaxcl.kernels.sigmoid import sigmoid_row_sum

__all__ = ["LSEResult", "contrastive_lse", "logits", "sigmoid_row_sum", "IMPLS"]
