"""Flax encoders and heads; ``build_encoder(name, **kwargs)`` maps a config name to a module.

Names: ``mlp``, ``cnn1d``, ``resnet18``, ``resnet50`` (CIFAR stem), ``vit_tiny``,
``vit_small``, ``vit_base`` (``patch_size`` kwarg, default 4), ``text_transformer`` (token
ids ``[B, L]``, :class:`TextTransformer`), ``bert`` (:class:`BertEncoder`, all-MiniLM-L6-v2's
shape; ``config.model.pretrained="minilm"`` loads its weights). ``kwargs`` override the
module's fields (e.g. ``width=16`` for a thin ResNet, ``bn_axis_name="data"``).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxcl import models
  >>> enc = models.build_encoder("resnet18", width=4)
  >>> v = enc.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  >>> enc.apply(v, jnp.zeros((2, 8, 8, 3))).shape
  (2, 32)
"""
from jaxcl import _extras  # noqa: E402

_extras.require("train", __name__)

from jaxcl.models.encoders import CNN1D, MLP, ResNet, ViT
from jaxcl.models.heads import ContrastiveModel, PredictionHead, ProjectionHead
from jaxcl.models.towers import MultiTower  # N towers on one input, outputs concatenated
from jaxcl.models.text import TextTransformer
from jaxcl.models.multimodal import MultiModal  # one tower per modality block of x
from jaxcl.models.bert import BertEncoder  # pretrained weights: jaxcl.models.pretrained
from jaxcl.models.bert_moe import BertMoE  # domain-expert FFNs, x[:, 0] = expert id (MoE-MNRL)
from jaxcl.models.locals import LocalsModel, MultiModalLocals  # patch / token locals (TCL)
from jaxcl.models.sasrec import SASRec  # causal self-attention sequence recommender (MCLRec)

_ENCODERS = {
    "mlp": (MLP, {}),
    "cnn1d": (CNN1D, {}),
    "resnet18": (ResNet, dict(stage_sizes=(2, 2, 2, 2), block="basic")),
    "resnet50": (ResNet, dict(stage_sizes=(3, 4, 6, 3), block="bottleneck")),
    "vit_tiny": (ViT, dict(dim=192, depth=12, heads=3)),
    "vit_small": (ViT, dict(dim=384, depth=12, heads=6)),
    "vit_base": (ViT, dict(dim=768, depth=12, heads=12)),
    "text_transformer": (TextTransformer, {}),
    "bert": (BertEncoder, {}),  # all-MiniLM-L6-v2's shape; config.model.pretrained loads it
    "bert_moe": (BertMoE, {}),  # BertEncoder + enforced-routing experts; bert_moe.warm_start
}
ENCODERS = tuple(_ENCODERS)


def build_encoder(name: str, **kwargs):
  """The encoder module ``name`` with its defaults overridden by ``kwargs``."""
  if name not in _ENCODERS:
    raise ValueError(f"build_encoder: unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
  cls, defaults = _ENCODERS[name]
  fields = set(cls.__dataclass_fields__) - {"parent", "name"}
  unknown = set(kwargs) - fields
  if unknown:
    raise ValueError(f"build_encoder: {name!r} has no option(s) {sorted(unknown)}; "
                     f"options: {sorted(fields)}")
  return cls(**{**defaults, **kwargs})


__all__ = ["ENCODERS", "build_encoder", "MLP", "CNN1D", "ResNet", "ViT", "ProjectionHead",
           "PredictionHead", "ContrastiveModel"]
__all__ += ["MultiTower", "MultiModal", "TextTransformer", "BertEncoder"]
__all__ += ["LocalsModel", "MultiModalLocals", "BertMoE", "SASRec"]
