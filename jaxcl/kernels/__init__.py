"""Similarity kernels: the one place where ``<q_i, k_j> / T`` and its row reductions are computed.

``precision=`` (every kernel) is the ``precision`` of the one similarity product
(:func:`product`); :func:`bfloat16_products` is a testing hook rounding its operands to
bfloat16 (TPU's default precision, emulated on any backend).
"""
from jaxcl.kernels.lse import (LSEResult, bfloat16_products, contrastive_lse, logits, product,
                               IMPLS)
from jaxcl.kernels.sigmoid import sigmoid_row_sum

__all__ = ["LSEResult", "contrastive_lse", "logits", "product", "bfloat16_products",
           "sigmoid_row_sum", "IMPLS"]
