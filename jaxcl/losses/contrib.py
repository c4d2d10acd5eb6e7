"""Paper-specific objectives, with their parameter initialisers and heads.

Everything here builds on the core of :mod:`jaxcl.losses` (the kernel, the InfoNCE family) and
follows its conventions; each function's own module (``jaxcl.losses.<module>``) holds its
equations and the paper-vs-code choices. ``from jaxcl.losses import contrib`` then
``contrib.hydra(...)``, or ``from jaxcl.losses.hydra import hydra``.
"""
from jaxcl.losses.beclr import beclr_loss
from jaxcl.losses.cmim import (a_mim, cmim, informative_embeddings, init_mim_decoder, mim_decoder,
                               posterior_nce, posterior_sample, split_posterior)
from jaxcl.losses.coconut import coconut_mm, nspt
from jaxcl.losses.codiemb import average_rank, codiemb_ir, codiemb_sts, codiemb_sts_terms, soft_rank
from jaxcl.losses.codiemb_joint import codiemb_joint, codiemb_labels, codiemb_unpack_labels
from jaxcl.losses.core_tuning import (contrast_head, core_tuning, core_tuning_pairs,
                                      init_contrast_head)
from jaxcl.losses.crossentropy import softmax_cross_entropy
from jaxcl.losses.dat import dat_loss, lse_energy
from jaxcl.losses.graph import bpr_loss, grace_loss
from jaxcl.losses.hydra import hydra, hydra_gates, hydra_partners, init_hydra_gates
from jaxcl.losses.improved_vlp import cl2l_loss, smoothed_info_nce
from jaxcl.losses.instructue import instructue_loss
from jaxcl.losses.label_contrast import label_contrast
from jaxcl.losses.laso import analytic_op, init_laso, laso_loss, laso_op, laso_partners
from jaxcl.losses.lexical import label_nt_xent
from jaxcl.losses.m3col import (init_m3col_heads, m3co_loss, m3co_mix, m3co_mixing, m3col_heads,
                                soft_clip_loss)
from jaxcl.losses.mclrec import margin_regularizer, mclrec_meta_loss
from jaxcl.losses.meow import (adameow_info_nce, concentration, init_weight_mlp, meow_info_nce,
                               proto_nce)
from jaxcl.losses.mochi import mochi_loss
from jaxcl.losses.sepclr import sepclr, sepclr_align, sepclr_kjem, sepclr_terms, sepclr_uniformity
from jaxcl.losses.simctg import simctg_loss
from jaxcl.losses.supremix import supremix
from jaxcl.losses.swav import freeze_prototypes_until
from jaxcl.losses.table_integration import adversarial_positive, ssacl_loss
from jaxcl.losses.tcl import distilled_info_nce, tcl_cma, tcl_imc, tcl_lmi, tcl_loss, tcl_terms
from jaxcl.losses.truncated import truncated_info_nce
from jaxcl.losses.whitenedcse import shuffled_group_whitening, whitenedcse, whitenedcse_loss

__all__ = ["beclr_loss", "a_mim", "cmim", "informative_embeddings", "init_mim_decoder",
           "mim_decoder", "posterior_nce", "posterior_sample", "split_posterior", "coconut_mm",
           "nspt", "average_rank", "codiemb_ir", "codiemb_sts", "codiemb_sts_terms", "soft_rank",
           "codiemb_joint", "codiemb_labels", "codiemb_unpack_labels", "contrast_head",
           "core_tuning", "core_tuning_pairs", "init_contrast_head", "softmax_cross_entropy",
           "dat_loss", "lse_energy", "bpr_loss", "grace_loss", "hydra", "hydra_gates",
           "hydra_partners", "init_hydra_gates", "cl2l_loss", "smoothed_info_nce",
           "instructue_loss", "label_contrast", "analytic_op", "init_laso", "laso_loss", "laso_op",
           "laso_partners", "label_nt_xent", "init_m3col_heads", "m3co_loss", "m3co_mix",
           "m3co_mixing", "m3col_heads", "soft_clip_loss", "margin_regularizer",
           "mclrec_meta_loss", "adameow_info_nce", "concentration", "init_weight_mlp",
           "meow_info_nce", "proto_nce", "mochi_loss", "sepclr", "sepclr_align", "sepclr_kjem",
           "sepclr_terms", "sepclr_uniformity", "simctg_loss", "supremix",
           "freeze_prototypes_until", "adversarial_positive", "ssacl_loss", "distilled_info_nce",
           "tcl_cma", "tcl_imc", "tcl_lmi", "tcl_loss", "tcl_terms", "truncated_info_nce",
           "shuffled_group_whitening", "whitenedcse", "whitenedcse_loss"]
