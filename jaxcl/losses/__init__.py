"""Pure contrastive objectives: the core every contrastive codebase uses.

Conventions shared by every function here (``docs/losses.md``):
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

Naming rule for the whole surface: a function is named for the objective it computes
(``info_nce``, ``nt_xent``, ``supcon``, ``dcl``), with a ``_loss`` suffix where the bare name
would be a model or a method rather than an objective (``clip_loss``, ``siglip_loss``,
``swav_loss``, ``beclr_loss``); arguments are ``query`` / ``key`` (the embeddings contrasted),
``temperature``, ``valid`` (``[B] bool`` padding mask), ``rng`` (a PRNG key, never ``key``),
``axis_name``, ``impl``, ``normalize``.

Paper-specific objectives, their parameter initialisers and heads live in
:mod:`jaxcl.losses.contrib` (one import for all of them, as ``optax.contrib``) and in their own
submodules (``jaxcl.losses.hydra``, ``jaxcl.losses.tcl``, ...).
"""
from jaxcl.losses.infonce import clip_loss, info_nce
from jaxcl.losses.multiview import mv_average, mv_dhel, mv_info_nce
from jaxcl.losses.ntxent import dcl, dclw, nt_xent
from jaxcl.losses.reduce import global_mean
from jaxcl.losses.siglip import siglip_loss
from jaxcl.losses.supcon import supcon
from jaxcl.losses.swav import normalize_prototypes, prototype_scores, swav_loss
from jaxcl.losses.symile import symile
from jaxcl.losses import contrib  # noqa: E402  (after the core: contrib builds on it)

__all__ = ["info_nce", "clip_loss", "nt_xent", "dcl", "dclw", "siglip_loss", "supcon",
           "mv_info_nce", "mv_dhel", "mv_average", "symile", "swav_loss", "prototype_scores",
           "normalize_prototypes", "global_mean", "contrib"]


def __getattr__(name):
  # The paper-specific names lived here before jaxcl.losses.contrib: say where they went.
  if name in contrib.__all__:
    raise AttributeError(f"jaxcl.losses.{name} moved to jaxcl.losses.contrib.{name} "
                         f"(paper-specific objectives live in jaxcl.losses.contrib)")
  raise AttributeError(f"module 'jaxcl.losses' has no attribute {name!r}")
