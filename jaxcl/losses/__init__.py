"""Pure contrastive objectives (see each module's docstring for the equation and semantics).

Conventions shared by every function here:
  * inputs are embeddings of any float dtype; logits, log-sum-exp and results are float32;
  * rows are L2-normalised inside unless ``normalize=False``;
  * ``axis_name`` (inside ``jax.shard_map``): each device passes its local rows, negatives come
    from the global batch through :mod:`jaxcl.collectives`, value and gradient equal the
    single-device call on the full batch;
  * the return value is per example for the local rows (``[B_local]``); its global mean is the
    published loss;
  * ``impl=`` selects the similarity kernel (``"dense"``, ``"blockwise"``, ``"ring"``, ``"auto"``).
"""
from jaxcl.losses.beclr import beclr_loss
from jaxcl.losses.crossentropy import softmax_cross_entropy
from jaxcl.losses.hydra import hydra, hydra_gates, hydra_partners, init_hydra_gates
from jaxcl.losses.infonce import clip_loss, info_nce
from jaxcl.losses.label_contrast import label_contrast
from jaxcl.losses.mochi import mochi_loss
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
           "mv_info_nce", "mv_dhel", "mv_average", "symile"]
__all__ += ["swav_loss", "prototype_scores", "normalize_prototypes", "freeze_prototypes_until",
            "mochi_loss", "truncated_info_nce"]
__all__ += ["supremix", "beclr_loss"]
__all__ += ["softmax_cross_entropy"]
__all__ += ["hydra", "hydra_partners", "hydra_gates", "init_hydra_gates"]
__all__ += ["label_contrast"]
