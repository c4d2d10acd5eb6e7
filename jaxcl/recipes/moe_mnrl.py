"""MoE-MNRL: MNRL fine-tuning of a pretrained sentence tower on several domains -- one shared
model, one model per domain, or the tower's FFNs copied into per-domain experts with enforced
routing (Hallee et al., "Contrastive Learning and Mixture of Experts Enables Precise Vector
Embeddings", arXiv 2401.15713; methods.md ``moe_mnrl``).

Proxy (the paper's co-cited biomedical abstracts are not available offline): the three WordNet
"domains" nouns / verbs / adjectives (``config.moe_mnrl.domains``), synonym pairs
(:func:`jaxcl.data.wordnet.synonym_pairs`: two distinct lemmas of one synset) as the (anchor,
positive) pairs, tokenized by all-MiniLM-L6-v2's WordPiece into ``max_len`` tokens
(:func:`jaxcl.data.text.register_texts`, two token blocks per example, one shared bi-encoder
tower: ``config.model.shared_tower``).

Objective: sentence-transformers' ``MultipleNegativesRankingLoss`` (the canonical MNR; the
reference repository's own ``MNR_loss`` is a row-wise cosine CE and appears broken, methods.md):
``L = mean_i CE(20 * cos(a_i, [p_1 .. p_B]), i)``, one direction, in-batch negatives = the other
positives of the global batch. That is :func:`jaxcl.losses.info_nce` with ``temperature =
0.05`` (scale 20) on columns 0 (anchor) and 1 (positive), the trainer's ``info_nce`` pair
adapter -- no new loss.

Arms (``config.moe_mnrl.arm``), all with the same data, budget and tuning:

* ``shared``: one MiniLM fine-tuned on all domains for ``num_steps`` steps;
* ``per_domain``: one MiniLM per domain, ``num_steps / len(domains)`` steps each (so every
  domain gets the same number of batches -- the same batches -- as in the shared run, and the
  three runs together cost the shared run's steps);
* ``moe``: :class:`jaxcl.models.BertMoE` (every FFN copied into one expert per domain, each
  initialised from the pretrained FFN by :func:`jaxcl.models.bert_moe.warm_start`; attention,
  embeddings and LayerNorms shared), the example's domain id riding in column 0 of each token
  block (:func:`route_blocks`) so each sequence uses only its domain's expert; ``num_steps``.

Batches are single-domain (``text.batches(groups=domain)``, round-robin over the domains), so
every arm sees only in-domain negatives -- the per-domain models cannot see anything else, and
mixed batches would hand the shared / MoE arms easier (cross-domain) negatives, confounding the
comparison. ``train_pairs`` pairs per domain are drawn (by ``config.seed``) from the training
synsets; evaluation uses held-out synsets (``split_seed``) only.

Metrics per domain (:func:`domain_metrics`) on ``eval_pairs`` held-out synonym pairs: retrieval
(query = lemma a, corpus = the b lemmas of the test part, relevant = the corpus rows that are
lemmas of the query's synset; MRR@10 / Recall@1 by :func:`jaxcl.eval.ranking.ranking_metrics`),
and pair classification (synonym pairs vs as many in-domain non-synonym pairs) by a cosine
threshold chosen for the best F1 on the validation part (``val_fraction``), F1 reported on the
test part, plus the threshold-free ROC-AUC. ``train`` returns (and writes to
``workdir/moe_mnrl.json``) ``{"domains": {pos: metrics}, "macro": mean over domains}``.

``python -m jaxcl.main --config=configs/moe_mnrl_wordnet.py --workdir=runs/moe_mnrl``
(``--config.moe_mnrl.arm=shared|per_domain|moe|pretrained``; ``pretrained`` evaluates the
un-fine-tuned tower).
"""
from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np

from jaxcl import jsonio

ARMS = ("pretrained", "shared", "per_domain", "moe")
NAME = "moe_mnrl_pairs"  # the registered datasets: NAME (dense arms), NAME + "_routed" (moe)
METRICS = ("mrr@10", "recall@1", "pair_f1", "pair_auc")


def default_block() -> ml_collections.ConfigDict:
  b = ml_collections.ConfigDict()
  b.arm = "moe"              # pretrained | shared | per_domain | moe
  b.domains = ("n", "v", "a")  # WordNet parts of speech, one domain (and expert) each
  b.train_pairs = 2000       # synonym pairs per domain (training synsets, drawn by config.seed)
  b.eval_pairs = 400         # held-out pairs per domain: val_fraction for the threshold, rest test
  b.val_fraction = 0.4
  b.split_seed = 0           # wordnet.split_synsets seed (held-out synsets, fixed across runs)
  b.max_len = 8              # tokens per lemma incl. [CLS] / [SEP]
  b.moe_layers = ()          # layers with experts; () = every layer
  b.eval_batch = 512
  return b


def _check(config):
  b = config.moe_mnrl
  if b.arm not in ARMS:
    raise ValueError(f"config.moe_mnrl.arm must be one of {ARMS}, got {b.arm!r}")
  if len(b.domains) < 1 or len(set(b.domains)) != len(b.domains):
    raise ValueError(f"config.moe_mnrl.domains must be distinct parts of speech, got "
                     f"{tuple(b.domains)}")
  if not 0.0 < b.val_fraction < 1.0:
    raise ValueError(f"config.moe_mnrl.val_fraction must be in (0, 1), got {b.val_fraction}")
  if b.arm == "pretrained" and config.model.pretrained != "minilm":
    raise ValueError("config.moe_mnrl.arm='pretrained' evaluates all-MiniLM-L6-v2: it needs "
                     "config.model.pretrained='minilm' (and its default encoder_kwargs)")
  if b.arm == "per_domain" and config.num_steps < len(b.domains):
    raise ValueError(f"config.num_steps={config.num_steps} must be >= the number of domains "
                     f"({len(b.domains)}) for arm 'per_domain'")


# --- data ---------------------------------------------------------------------------------

def domain_pairs(wn, domains, split, n, *, seed, split_seed):
  """Up to ``n`` synonym pairs per domain of ``split``: ``{"a", "b": [P] str, "synset",
  "domain": int64 [P]}``, domain-major (domain ``d`` = index in ``domains``); a seeded subset
  (``seed``) of each domain's pairs, kept in synset order."""
  from jaxcl.data import wordnet
  out = {"a": [], "b": [], "synset": [], "domain": []}
  for d, pos in enumerate(domains):
    p = wordnet.synonym_pairs(wn, split, seed=split_seed, pos=pos)
    keep = np.sort(np.random.default_rng([seed, d, 0x4D4F45]).permutation(len(p["a"]))[:n])
    out["a"] += [p["a"][i] for i in keep]
    out["b"] += [p["b"][i] for i in keep]
    out["synset"] += [int(p["label"][i]) for i in keep]
    out["domain"] += [d] * len(keep)
  return {"a": np.array(out["a"], object), "b": np.array(out["b"], object),
          "synset": np.array(out["synset"], np.int64), "domain": np.array(out["domain"], np.int64)}


def route_blocks(x, domain, num_blocks):
  """``x [N, M*L]`` token blocks -> ``[N, M*(1+L)]``: the row's ``domain`` id in front of every
  block (the input of :class:`jaxcl.models.BertMoE`)."""
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or x.shape[1] % num_blocks:
    raise ValueError(f"route_blocks: 'x' must be [N, {num_blocks} * L], got {x.shape}")
  d = np.asarray(domain, np.float32).reshape(-1, 1)
  if len(d) != len(x):
    raise ValueError(f"route_blocks: 'domain' has {len(d)} rows for {len(x)} in 'x'")
  return np.concatenate([np.concatenate([d, b], 1) for b in np.split(x, num_blocks, 1)], 1)


def register_pairs(pairs, tokenize, max_len, num_classes, routed=False):
  """Registers (and returns ``(name, x, y)``) the pair dataset: :func:`text.register_texts` of
  columns (a, b), ``y`` = synset; ``routed``: also ``NAME + "_routed"`` with the domain column
  of :func:`route_blocks` (one token block of ``1 + max_len`` per text)."""
  from jaxcl.data import catalog, text
  info, x, y = text.register_texts(NAME, [list(pairs["a"]), list(pairs["b"])],
                                   tokenize=tokenize, max_len=max_len, y=pairs["synset"],
                                   num_classes=num_classes)
  if not routed:
    return NAME, x, y
  mods = tuple(dataclasses.replace(m, shape=(1 + max_len,)) for m in info.modalities)
  info = catalog.register(dataclasses.replace(info, name=NAME + "_routed",
                                              shape=(2 * (1 + max_len),), modalities=mods))
  return info.name, route_blocks(x, pairs["domain"], 2), y


def eval_sets(wn, domains, n, val_fraction, *, split_seed):
  """Per domain: held-out pairs split into val / test, the retrieval positives of the test
  queries and a non-synonym partner for every row (within its part): ``[{"pairs", "n_val",
  "positives", "negative"}]``. A pure function of WordNet and ``split_seed``."""
  from jaxcl.data import wordnet
  pairs = domain_pairs(wn, domains, "test", n, seed=split_seed, split_seed=split_seed)
  out = []
  for d in range(len(domains)):
    rows = np.flatnonzero(pairs["domain"] == d)
    p = {k: v[rows] for k, v in pairs.items()}
    syn = [{wordnet.text(w).lower() for w in wn.lemmas[s]} for s in p["synset"]]
    n_val = int(round(val_fraction * len(rows)))
    rng = np.random.default_rng([split_seed, d, 0x4E4547])
    negative = np.zeros(len(rows), np.int64)
    for part in (np.arange(n_val), np.arange(n_val, len(rows))):
      order = rng.permutation(part)
      for k, i in enumerate(order):  # the next row in a random cycle that is not a synonym
        for step in range(1, len(order)):
          j = order[(k + step) % len(order)]
          if p["b"][j].lower() not in syn[i]:
            negative[i] = j
            break
        else:
          raise ValueError(f"eval_sets: no non-synonym partner in domain {domains[d]!r}")
    test_b = [b.lower() for b in p["b"][n_val:]]
    positives = [np.array([j for j, b in enumerate(test_b) if b in syn[i]], np.int64)
                 for i in range(n_val, len(rows))]
    out.append({"pairs": p, "n_val": n_val, "positives": positives, "negative": negative})
  return out


# --- metrics ------------------------------------------------------------------------------

def best_f1_threshold(pos_scores, neg_scores):
  """``(threshold, f1)``: the cosine threshold (``score >= t`` = synonym) with the best F1 on
  these scores; ``t`` is the midpoint between the last accepted and the next score."""
  s = np.concatenate([pos_scores, neg_scores]).astype(np.float64)
  lab = np.concatenate([np.ones(len(pos_scores)), np.zeros(len(neg_scores))])
  if not len(pos_scores):
    raise ValueError("best_f1_threshold: 'pos_scores' is empty")
  order = np.argsort(-s, kind="stable")
  s, lab = s[order], lab[order]
  tp = np.cumsum(lab)
  k = np.arange(1, len(s) + 1)
  f1 = 2 * tp / (k + len(pos_scores))  # 2TP / (2TP + FP + FN), accepting the top k
  f1[:-1][s[:-1] == s[1:]] = -1.0      # a cut inside a run of ties is not a threshold
  best = int(np.argmax(f1))
  t = s[best] if best + 1 == len(s) else 0.5 * (s[best] + s[best + 1])
  return float(t), float(f1[best])


def f1_at(pos_scores, neg_scores, threshold):
  tp = float(np.sum(pos_scores >= threshold))
  fp = float(np.sum(neg_scores >= threshold))
  fn = len(pos_scores) - tp
  return 2 * tp / max(2 * tp + fp + fn, 1e-12)


def roc_auc(pos_scores, neg_scores):
  """P(pos > neg) + 0.5 P(pos = neg), over all (pos, neg) score pairs."""
  p = np.asarray(pos_scores, np.float64)[:, None]
  n = np.asarray(neg_scores, np.float64)[None, :]
  return float(np.mean((p > n) + 0.5 * (p == n)))


def domain_metrics(za, zb, ev):
  """Retrieval and pair-classification metrics of one domain from the embeddings of its eval
  pairs ``za, zb [P, D]`` (rows of ``ev["pairs"]``; see the module docstring)."""
  from jaxcl.eval.ranking import ranking_metrics
  za = za / np.maximum(np.linalg.norm(za, axis=1, keepdims=True), 1e-12)
  zb = zb / np.maximum(np.linalg.norm(zb, axis=1, keepdims=True), 1e-12)
  v = ev["n_val"]
  r = ranking_metrics(za[v:], zb[v:], ev["positives"], ks=(1, 10))
  pos = np.sum(za * zb, 1)
  neg = np.sum(za * zb[ev["negative"]], 1)
  t, _ = best_f1_threshold(pos[:v], neg[:v])
  return {"mrr@10": r["mrr@10"], "recall@1": r["recall@1"],
          "pair_f1": f1_at(pos[v:], neg[v:], t), "pair_auc": roc_auc(pos[v:], neg[v:]),
          "threshold": t}


# --- training -----------------------------------------------------------------------------

def tokenizer():
  """all-MiniLM-L6-v2's WordPiece tokenizer (without loading the weights)."""
  from jaxcl.models import pretrained
  return pretrained.make_tokenize_fn(pretrained.model_dir() / "tokenizer.json")


def arm_config(config, dataset, steps):
  """The trainer config of one run of an arm: the recipe's block stripped, ``dataset``,
  ``steps``; the MoE arm's tower is ``bert_moe`` (one expert per domain)."""
  from jaxcl.recipes import trainer_config
  b = config.moe_mnrl
  c = trainer_config(config, "moe_mnrl")
  c.data.name = dataset
  c.num_steps = steps
  c.checkpoint.every = min(c.checkpoint.every, steps)
  # The same schedule shape for a shorter run (per_domain): warmup scaled with the steps.
  c.optim.warmup_steps = int(round(config.optim.warmup_steps * steps / config.num_steps))
  if b.arm == "moe":
    kwargs = {**dict(config.model.encoder_kwargs), "num_experts": len(b.domains),
              "moe_layers": tuple(b.moe_layers) or None}
    c.model.modalities = {"text_0": {"encoder": "bert_moe", "encoder_kwargs": kwargs}}
    c.model.pretrained = ""  # the experts need their own warm start (bert_moe.warm_start)
  return c


def _run(c, workdir, x, y, groups, warm_start):
  """One trainer run on in-memory pairs; returns the final model parameters."""
  from jaxcl.data import text
  from jaxcl.train import train as train_fn
  it = text.batches(x, y, global_batch_size=c.batch_size, seed=c.seed, groups=groups)
  train_fn(c, workdir, iterator=it, warm_start=warm_start)
  return final_params(workdir)


def final_params(workdir):
  """The model parameters of the latest checkpoint in ``workdir/checkpoints`` (host arrays;
  no train state is rebuilt, so nothing is compiled)."""
  import orbax.checkpoint as ocp
  from jaxcl.train import checkpoint as ckpt
  mngr = ckpt.manager(os.path.abspath(os.path.join(workdir, "checkpoints")), use_async=False)
  saved = mngr.restore(mngr.latest_step(),
                       args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  mngr.close()
  return saved["params"]


def embed_pairs(c, params, x, batch=512):
  """``(za, zb) [N, D]``: the pair tokens ``x`` encoded by the model of trainer config ``c``
  (eval mode; one compiled shape: fixed-size chunks)."""
  from jaxcl.data import catalog
  from jaxcl.train.step import build_model
  model = build_model(c.model, modalities=catalog.info(c.data.name).modalities)
  fn = jax.jit(lambda p, xb: model.apply({"params": p}, xb, train=False)[1])
  x = np.asarray(x, np.float32)
  out = []
  for s in range(0, len(x), batch):
    chunk = x[s:s + batch]
    pad = np.zeros((batch - len(chunk), x.shape[1]), np.float32)
    out.append(np.asarray(fn(params, np.concatenate([chunk, pad])))[:len(chunk)])
  z = np.concatenate(out)
  return z[:, 0], z[:, 1]


def pretrained_params(c, example):
  """The parameters of trainer config ``c``'s model with all-MiniLM-L6-v2 in every BERT tower
  (what the trainer's ``config.model.pretrained`` warm start sets), for inputs like
  ``example [N, F]``."""
  from jaxcl.data import catalog
  from jaxcl.models import pretrained
  from jaxcl.train.step import build_model
  model = build_model(c.model, modalities=catalog.info(c.data.name).modalities)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros(
      (2,) + example.shape[1:]), train=False))["params"]
  return pretrained.copy_into(shapes, pretrained.load_minilm()[1])


def train(config, workdir):
  """Trains the configured arm, evaluates every domain; returns (and writes to
  ``workdir/moe_mnrl.json``) ``{"arm", "domains": {pos: metrics}, "macro": {metric: mean}}``."""
  from jaxcl.data import wordnet
  from jaxcl.models import bert_moe
  _check(config)
  b = config.moe_mnrl
  domains = tuple(b.domains)
  wn = wordnet.load_wordnet()
  tok = tokenizer()
  evs = eval_sets(wn, domains, b.eval_pairs, b.val_fraction, split_seed=b.split_seed)
  tr = domain_pairs(wn, domains, "train", b.train_pairs, seed=config.seed,
                    split_seed=b.split_seed)
  routed = b.arm == "moe"
  name, x, y = register_pairs(tr, tok, b.max_len, len(wn), routed=routed)
  ev_x = [register_pairs(ev["pairs"], tok, b.max_len, len(wn), routed=routed)[1] for ev in evs]
  os.makedirs(workdir, exist_ok=True)
  bounds = np.cumsum([0] + [len(e) for e in ev_x])
  all_x = np.concatenate(ev_x)  # every domain's eval pairs, encoded in one pass per model
  split = lambda za, zb: [(za[i:j], zb[i:j]) for i, j in zip(bounds[:-1], bounds[1:])]
  if b.arm == "pretrained":
    c = arm_config(config, name, config.num_steps)
    embeds = split(*embed_pairs(c, pretrained_params(c, all_x), all_x, b.eval_batch))
  elif b.arm == "per_domain":
    steps = config.num_steps // len(domains)
    embeds = []
    for d, pos in enumerate(domains):
      rows = tr["domain"] == d
      c = arm_config(config, name, steps)
      params = _run(c, os.path.join(workdir, pos), x[rows], y[rows], tr["domain"][rows], None)
      embeds.append(embed_pairs(c, params, ev_x[d], b.eval_batch))
  else:
    c = arm_config(config, name, config.num_steps)
    warm = None
    if routed and config.model.pretrained:
      warm = bert_moe.warm_start(len(domains), tuple(b.moe_layers) or None)
    params = _run(c, workdir, x, y, tr["domain"], warm)
    embeds = split(*embed_pairs(c, params, all_x, b.eval_batch))
  per = {pos: domain_metrics(za, zb, ev) for pos, (za, zb), ev in zip(domains, embeds, evs)}
  macro = {m: float(np.mean([per[p][m] for p in domains])) for m in METRICS}
  out = {"arm": b.arm, "domains": per, "macro": macro,
         "train_pairs": {p: int(np.sum(tr["domain"] == d)) for d, p in enumerate(domains)},
         "eval_pairs": {p: len(ev["pairs"]["a"]) for p, ev in zip(domains, evs)}}
  jsonio.write_json(os.path.join(workdir, "moe_mnrl.json"), out, indent=1)
  return out
