"""Pure contrastive objectives (see each module's docstring for the equation and semantics).

Conventions shared by every function here:
  * inputs are embeddings of any float dtype; logits, log-sum-exp and results are float32;
  * rows are L2-normalised inside unless ``normalize=False``;
  * ``axis_name`` (inside ``jax.shard_map``): each device passes its local rows, negatives come
    from the global batch through :mod:`jaxcl.collectives`, value and gradient equal the
    single-device call on the full batch;
  * the return value is per example for the local rows (``[B_local]``); its global mean is the
    published loss, and :func:`global_mean` (the mean over the valid rows of the global batch,
    ``psum``-ed along ``axis_name``) is the right reduction under padding;
  * ``impl=`` selects the similarity kernel (``"dense"``, ``"blockwise"``, ``"ring"``, ``"auto"``).
    ``"blockwise"`` / ``"ring"`` are ``jax.custom_vjp`` functions: reverse mode only (``grad``,
    ``vjp``, ``hessian``); forward mode (``jvp``, ``jacfwd``, ``linearize``) needs
    ``impl="dense"`` (a ``TypeError`` naming ``impl`` otherwise). ``"ring"`` needs
    ``jax.shard_map`` mesh axes (over a named ``vmap`` axis ``"auto"`` stays blockwise);
  * ``precision=`` (InfoNCE family, SigLIP) is the ``precision`` of the one similarity product
    (``None``: JAX's default, bfloat16 operands on TPU; ``"highest"``: float32); positives and
    candidates come from that same product, so a loss >= 0 in exact arithmetic stays >= 0.
"""
from jaxcl.losses.beclr import beclr_loss
from jaxcl.losses.coconut import coconut_mm, nspt
from jaxcl.losses.core_tuning import contrast_head, core_tuning, core_tuning_pairs, init_contrast_head  # noqa: E501
from jaxcl.losses.crossentropy import softmax_cross_entropy
from jaxcl.losses.hydra import hydra, hydra_gates, hydra_partners, init_hydra_gates
from jaxcl.losses.infonce import clip_loss, info_nce
from jaxcl.losses.label_contrast import label_contrast
from jaxcl.losses.laso import analytic_op, init_laso, laso_loss, laso_op, laso_partners
from jaxcl.losses.mochi import mochi_loss
from jaxcl.losses.reduce import global_mean
from jaxcl.losses.multiview import mv_average, mv_dhel, mv_info_nce
from jaxcl.losses.ntxent import dcl, dclw, nt_xent
from jaxcl.losses.siglip import siglip_loss
from jaxcl.losses.supcon import supcon
from jaxcl.losses.supremix import supremix
from jaxcl.losses.swav import (freeze_prototypes_until, normalize_prototypes,
                               prototype_scores, swav_loss)
from jaxcl.losses.symile import symile
from jaxcl.losses.truncated import truncated_info_nce

__all__ = ["info_nce", "clip_loss", "nt_xent", "dcl", "dclw", "siglip_loss", "supcon",
           "mv_info_nce", "mv_dhel", "mv_average", "symile", "global_mean"]
__all__ += ["swav_loss", "prototype_scores", "normalize_prototypes", "freeze_prototypes_until",
            "mochi_loss", "truncated_info_nce"]
__all__ += ["supremix", "beclr_loss"]
__all__ += ["softmax_cross_entropy"]
__all__ += ["hydra", "hydra_partners", "hydra_gates", "init_hydra_gates"]
__all__ += ["label_contrast"]
from jaxcl.losses.sepclr import sepclr, sepclr_align, sepclr_kjem, sepclr_terms, sepclr_uniformity
__all__ += ["sepclr", "sepclr_terms", "sepclr_align", "sepclr_uniformity", "sepclr_kjem"]
__all__ += ["nspt", "coconut_mm"]
__all__ += ["core_tuning", "core_tuning_pairs", "init_contrast_head", "contrast_head"]
__all__ += ["laso_loss", "init_laso", "laso_op", "analytic_op", "laso_partners"]
from jaxcl.losses.cmim import a_mim, cmim, informative_embeddings, init_mim_decoder, mim_decoder, posterior_nce, posterior_sample, split_posterior  # noqa: E501,E402
__all__ += ["cmim", "a_mim", "posterior_nce", "posterior_sample", "split_posterior", "init_mim_decoder", "mim_decoder", "informative_embeddings"]
from jaxcl.losses.dat import dat_loss, lse_energy; __all__ += ["dat_loss", "lse_energy"]  # noqa: E402,E702
from jaxcl.losses.improved_vlp import cl2l_loss, smoothed_info_nce; __all__ += ["cl2l_loss", "smoothed_info_nce"]  # noqa: E402,E702,E501
from jaxcl.losses.m3col import init_m3col_heads, m3co_loss, m3co_mix, m3co_mixing, m3col_heads, soft_clip_loss; __all__ += ["m3co_loss", "m3co_mix", "m3co_mixing", "soft_clip_loss", "init_m3col_heads", "m3col_heads"]  # noqa: E402,E702,E501
from jaxcl.losses.tcl import distilled_info_nce, tcl_cma, tcl_imc, tcl_lmi, tcl_loss, tcl_terms; __all__ += ["distilled_info_nce", "tcl_cma", "tcl_imc", "tcl_lmi", "tcl_loss", "tcl_terms"]  # noqa: E402,E501,E702
from jaxcl.losses.whitenedcse import shuffled_group_whitening, whitenedcse, whitenedcse_loss; __all__ += ["shuffled_group_whitening", "whitenedcse", "whitenedcse_loss"]  # noqa: E402,E702,E501
from jaxcl.losses.codiemb import average_rank, codiemb_ir, codiemb_sts, codiemb_sts_terms, soft_rank; __all__ += ["average_rank", "codiemb_ir", "codiemb_sts", "codiemb_sts_terms", "soft_rank"]  # noqa: E402,E702,E501
from jaxcl.losses.simctg import simctg_loss; __all__ += ["simctg_loss"]  # noqa: E402,E702
from jaxcl.losses.lexical import label_nt_xent; __all__ += ["label_nt_xent"]  # noqa: E402,E702
from jaxcl.losses.graph import bpr_loss, grace_loss; __all__ += ["bpr_loss", "grace_loss"]  # noqa: E402,E702
from jaxcl.losses.codiemb_joint import codiemb_joint, codiemb_labels, codiemb_unpack_labels; __all__ += ["codiemb_joint", "codiemb_labels", "codiemb_unpack_labels"]  # noqa: E402,E702,E501
from jaxcl.losses.mclrec import margin_regularizer, mclrec_meta_loss; __all__ += ["margin_regularizer", "mclrec_meta_loss"]  # noqa: E402,E702
from jaxcl.losses.meow import adameow_info_nce, concentration, init_weight_mlp, meow_info_nce, proto_nce; __all__ += ["adameow_info_nce", "concentration", "init_weight_mlp", "meow_info_nce", "proto_nce"]  # noqa: E402,E702,E501
from jaxcl.losses.table_integration import adversarial_positive, ssacl_loss; __all__ += ["adversarial_positive", "ssacl_loss"]  # noqa: E402,E702
from jaxcl.losses.instructue import instructue_loss; __all__ += ["instructue_loss"]  # noqa: E402,E702
