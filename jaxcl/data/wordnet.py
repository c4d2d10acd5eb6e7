"""WordNet 3.0 offline: a pure-Python parser of the Princeton data files and derived text tasks.

Reads ``data.noun`` / ``data.verb`` / ``data.adj`` / ``data.adv`` (the ``wndb(5WN)`` format) from
the Debian package ``wordnet-base`` (``apt-get install -y --no-install-recommends wordnet-base``:
files in ``/usr/share/wordnet``) or any directory holding them (the Princeton tarball's
``dict/`` too): ``path=`` > ``$JAXCL_WORDNET_DIR`` > ``/usr/share/wordnet``. Nothing is
downloaded; missing files raise :class:`WordNetNotFoundError`, which names the package and the
variable. WordNet 3.0 has 117,659 synsets (82,115 nouns, 13,767 verbs, 18,156 adjectives incl.
satellites, 3,621 adverbs); parsing takes about 1 s and is cached per directory.

Synsets are integers ``0 .. S-1`` in file order (nouns, verbs, adjectives, adverbs; offsets
ascending), the label of every derived task. Derived tasks (all pure functions of the parsed
data and a seed; the synset split is :func:`split_synsets`, so test synsets never appear in a
train task):

* :func:`synonym_pairs`: two distinct lemmas of one synset, ``label`` = synset (lexical
  specialization, Green et al. 2022, arXiv:2208.01018);
* :func:`synonym_gloss_pairs`: a lemma and its synset's definition;
* :func:`reverse_dictionary`: query = definition, corpus = every lemma of the selected parts of
  speech, positives = the synset's lemmas (held-out synsets in ``split="test"``);
* :func:`similarity_pairs`: lemma pairs graded by :func:`wu_palmer` on the hypernym graph
  (Wu & Palmer 1994, "Verb semantics and lexical selection"), an STS-style target in [0, 1];
* :func:`gloss_corpus`: the 117,659 glosses (definition plus examples) for language modelling.

Example:
  >>> from jaxcl.data import wordnet
  >>> wn = wordnet.load_wordnet()
  >>> dog = wn.lookup("dog", "n")[0]
  >>> wn.lemmas[dog][:2], wn.definitions[dog][:24]
  (('dog', 'domestic_dog'), 'a member of the genus Ca')
  >>> round(wordnet.wu_palmer(wn, dog, wn.lookup("cat", "n")[0]), 3)
  0.857
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re

import numpy as np

ENV_VAR = "JAXCL_WORDNET_DIR"
DEFAULT_DIR = "/usr/share/wordnet"
APT_COMMAND = "apt-get install -y --no-install-recommends wordnet-base"
POS_FILES = (("n", "noun"), ("v", "verb"), ("a", "adj"), ("r", "adv"))
ALL_POS = ("n", "v", "a", "r")
NEAR_TRIES = 32  # similarity_pairs: random walks tried for a near neighbour in the split
HYPERNYM_SYMBOLS = ("@", "@i")  # hypernym and instance hypernym
_MARKER = re.compile(r"\([a-z]+\)$")  # adjective syntactic markers: (a), (p), (ip)


class WordNetNotFoundError(FileNotFoundError):
  """The WordNet data files are missing (install ``wordnet-base`` or set ``$JAXCL_WORDNET_DIR``)."""


@dataclasses.dataclass(frozen=True, eq=False)
class WordNet:
  """Parsed WordNet synsets, index ``i`` in ``0 .. S-1``.

  Fields: ``offsets`` int64 [S] (byte offset in the data file), ``pos`` <U1 [S] (``n v a s r``,
  ``s`` = adjective satellite), ``lemmas`` tuple of lemma tuples (underscores kept, adjective
  markers removed), ``glosses`` (definition plus quoted examples), ``definitions`` (the gloss
  before its first quoted example), ``hypernyms`` tuple of synset-index tuples (``@`` and
  ``@i``), ``directory`` where the files were read.
  """
  offsets: np.ndarray
  pos: np.ndarray
  lemmas: tuple
  glosses: tuple
  definitions: tuple
  hypernyms: tuple
  directory: str
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  def __len__(self):
    return len(self.offsets)

  def key(self, i: int) -> str:
    """The synset's WordNet id, e.g. ``'02084071-n'``."""
    return f"{int(self.offsets[i]):08d}-{self.pos[i]}"

  def index(self, pos: str, offset: int) -> int:
    """The synset index of (``pos`` in ``n v a r``, ``s`` = ``a``; data-file ``offset``)."""
    table = self._memo("index", lambda: {(_file_pos(p), f"{o:08d}"): i for i, (p, o) in
                                         enumerate(zip(self.pos.tolist(), self.offsets.tolist()))})
    return table[(_file_pos(pos), f"{int(offset):08d}")]

  def lookup(self, lemma: str, pos: str | None = None) -> list:
    """Synsets containing ``lemma`` (case-insensitive, spaces = underscores), WordNet's sense
    order (most frequent first, from ``index.<pos>``) within each part of speech."""
    word = lemma.lower().replace(" ", "_")
    out = []
    for file_pos, name in POS_FILES:
      if pos is None or _file_pos(pos) == file_pos:
        line = self._memo(f"index.{name}", functools.partial(self._index_lines, name)).get(word)
        if line is not None:
          fields = line.split()
          out += [self.index(file_pos, int(o)) for o in fields[len(fields) - int(fields[0]):]]
    return out

  def hyponyms(self, i: int) -> tuple:
    """Synsets whose hypernyms include ``i``."""
    return self._memo("hyponyms", self._hyponym_table)[i]

  def depth(self, i: int) -> int:
    """Nodes on the shortest hypernym path from ``i`` to a root (a root has depth 1)."""
    return int(self._memo("depth", self._depths)[i])

  def ancestors(self, i: int) -> dict:
    """``{ancestor: fewest hypernym edges from i}``, ``i`` itself at 0 (memoised)."""
    cache = self._memo("ancestors", dict)
    if i not in cache:
      dist = {i: 0}
      for h in self.hypernyms[i]:
        for a, d in self.ancestors(h).items():
          if d + 1 < dist.get(a, 1 << 30):
            dist[a] = d + 1
      cache[i] = dist
    return cache[i]

  def _memo(self, name, build):
    if name not in self._cache:
      self._cache[name] = build()
    return self._cache[name]

  def _index_lines(self, name):
    """``index.<name>`` as ``{lemma: rest of its line}`` (parsed on lookup)."""
    path = os.path.join(self.directory, f"index.{name}")
    if not os.path.isfile(path):
      raise WordNetNotFoundError(f"wordnet: lookup needs {path!r}; install `{APT_COMMAND}` or "
                                 f"point ${ENV_VAR} at a full WordNet 3.0 dict directory")
    with open(path, encoding="utf-8") as f:
      return dict(line.split(" ", 2)[::2] for line in f if line[0] != " ")

  def _hyponym_table(self):
    down = [[] for _ in range(len(self))]
    for i, hs in enumerate(self.hypernyms):
      for h in hs:
        down[h].append(i)
    return tuple(tuple(d) for d in down)

  def _depths(self):
    depth = np.zeros(len(self), np.int64)
    def visit(i):
      if depth[i] == 0:
        depth[i] = 1 + min((visit(h) for h in self.hypernyms[i]), default=0)
      return depth[i]
    for i in range(len(self)):
      visit(i)
    return depth


def _file_pos(p) -> str:
  return "a" if p == "s" else str(p)


def resolve_dir(path: str | os.PathLike | None = None) -> str:
  """The WordNet directory: ``path`` > ``$JAXCL_WORDNET_DIR`` > ``/usr/share/wordnet``.

  A directory with a ``dict/`` subfolder (the Princeton tarball) resolves to ``dict/``. Raises
  :class:`WordNetNotFoundError` naming the package and the variable when a data file is missing.
  """
  source = "path=" if path is not None else (f"${ENV_VAR}" if os.environ.get(ENV_VAR) else
                                             "the default")
  directory = os.fspath(path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_DIR)
  if not os.path.isfile(os.path.join(directory, "data.noun")) and os.path.isfile(
      os.path.join(directory, "dict", "data.noun")):
    directory = os.path.join(directory, "dict")
  missing = [f"data.{name}" for _, name in POS_FILES
             if not os.path.isfile(os.path.join(directory, f"data.{name}"))]
  if missing:
    raise WordNetNotFoundError(
        f"wordnet: WordNet 3.0 data files {missing} not found in {directory!r} ({source}). "
        f"Install the Debian/Ubuntu package with `{APT_COMMAND}` (files in {DEFAULT_DIR}), or "
        f"pass `path=` / set ${ENV_VAR} to a directory holding data.noun, data.verb, data.adj "
        f"and data.adv (e.g. the Princeton WordNet-3.0 tarball's dict/).")
  return os.path.abspath(directory)


def load_wordnet(path: str | os.PathLike | None = None) -> WordNet:
  """Parse the four WordNet data files (cached in memory per resolved directory).

  Args:
    path: directory of ``data.noun`` etc.; default ``$JAXCL_WORDNET_DIR`` or
      ``/usr/share/wordnet`` (``apt-get install wordnet-base``).
  Returns:
    :class:`WordNet` (117,659 synsets for WordNet 3.0).
  Example:
    >>> len(load_wordnet())
    117659
  """
  return _parse(resolve_dir(path))


@functools.lru_cache(maxsize=4)
def _parse(directory: str) -> WordNet:
  offsets, keys, pos, lemmas, glosses, raw_hyper = [], [], [], [], [], []
  for file_pos, name in POS_FILES:
    unmark = functools.partial(_MARKER.sub, "") if file_pos == "a" else None
    with open(os.path.join(directory, f"data.{name}"), encoding="utf-8") as f:
      for line in f:
        if line[0] == " ":  # license header
          continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        at = 4 + 2 * int(fields[3], 16)
        words = fields[4:at:2]
        offsets.append(int(fields[0]))
        keys.append((file_pos, fields[0]))
        pos.append(fields[2])
        lemmas.append(tuple(map(unmark, words)) if unmark else tuple(words))
        glosses.append(gloss.rstrip())
        end = at + 1 + 4 * int(fields[at])
        raw_hyper.append([(fields[k + 2], fields[k + 1]) for k in range(at + 1, end, 4)
                          if fields[k] in HYPERNYM_SYMBOLS])
  index = {k: i for i, k in enumerate(keys)}
  hypernyms = tuple(tuple(index[("a" if p == "s" else p, o)] for p, o in hs) for hs in raw_hyper)
  definitions = tuple(g.split('; "')[0].strip() if not g.startswith('"') else g for g in glosses)
  return WordNet(offsets=np.asarray(offsets, np.int64), pos=np.asarray(pos, "<U1"),
                 lemmas=tuple(lemmas), glosses=tuple(glosses), definitions=definitions,
                 hypernyms=hypernyms, directory=directory, _cache={"index": index})


def text(lemma: str) -> str:
  """A lemma as text: underscores to spaces (``'domestic_dog'`` -> ``'domestic dog'``)."""
  return lemma.replace("_", " ")


def _select(wn: WordNet, pos) -> np.ndarray:
  pos = (pos,) if isinstance(pos, str) else tuple(pos)
  bad = [p for p in pos if p not in ALL_POS]
  if bad:
    raise ValueError(f"wordnet: 'pos' must be drawn from {ALL_POS}, got {bad}")
  file_pos = np.where(wn.pos == "s", "a", wn.pos)
  return np.flatnonzero(np.isin(file_pos, pos))


def split_synsets(wn: WordNet, split: str = "train", *, seed: int = 0,
                  test_fraction: float = 0.1, pos=ALL_POS) -> np.ndarray:
  """Sorted synset indices of ``split`` (``"train"`` / ``"test"`` / ``"all"``) among ``pos``.

  A seeded permutation of all ``S`` synsets; its first ``round(test_fraction * S)`` are the
  held-out test synsets, then restricted to ``pos``, so one seed gives the same held-out
  synsets to every task and part-of-speech selection.
  Example: ``split_synsets(wn, "test", seed=0, pos="n")``.
  """
  if split not in ("train", "test", "all"):
    raise ValueError(f"wordnet: 'split' must be 'train', 'test' or 'all', got {split!r}")
  if not 0.0 <= test_fraction <= 1.0:
    raise ValueError(f"wordnet: 'test_fraction' must be in [0, 1], got {test_fraction}")
  ids = _select(wn, pos)
  if split == "all":
    return ids
  perm = np.random.default_rng([seed, 0x574E]).permutation(len(wn))
  held_out = np.zeros(len(wn), bool)
  held_out[perm[:int(round(test_fraction * len(wn)))]] = True
  return ids[held_out[ids] == (split == "test")]


def _distinct(lemmas) -> list:
  return list({l.lower(): l for l in reversed(lemmas)}.values())[::-1]


def synonym_pairs(wn: WordNet, split: str = "train", *, seed: int = 0, test_fraction: float = 0.1,
                  pos=ALL_POS, pairs_per_synset: int = 1) -> dict:
  """Pairs of distinct lemmas of one synset: ``{"a", "b": tuple[str], "label": int64 [P]}``.

  Per synset of the split with >= 2 distinct lemmas (case-insensitive), up to
  ``pairs_per_synset`` unordered pairs drawn without replacement; ``label`` = synset index.
  Example: ``synonym_pairs(wn, "test", pos="n")["label"][:3]``.
  """
  rng = np.random.default_rng([seed, 1])
  a, b, label = [], [], []
  for i in split_synsets(wn, split, seed=seed, test_fraction=test_fraction, pos=pos):
    words = _distinct(wn.lemmas[i])
    if len(words) < 2:
      continue
    combos = [(x, y) for x in range(len(words)) for y in range(x + 1, len(words))]
    for c in rng.permutation(len(combos))[:pairs_per_synset]:
      x, y = combos[c]
      a.append(text(words[x]))
      b.append(text(words[y]))
      label.append(i)
  return {"a": tuple(a), "b": tuple(b), "label": np.asarray(label, np.int64)}


def synonym_gloss_pairs(wn: WordNet, split: str = "train", *, seed: int = 0,
                        test_fraction: float = 0.1, pos=ALL_POS) -> dict:
  """Every (lemma, its synset's definition) of the split: ``{"lemma", "gloss", "label"}``."""
  lemma, gloss, label = [], [], []
  for i in split_synsets(wn, split, seed=seed, test_fraction=test_fraction, pos=pos):
    for w in _distinct(wn.lemmas[i]):
      lemma.append(text(w))
      gloss.append(wn.definitions[i])
      label.append(i)
  return {"lemma": tuple(lemma), "gloss": tuple(gloss), "label": np.asarray(label, np.int64)}


def reverse_dictionary(wn: WordNet, split: str = "test", *, seed: int = 0,
                       test_fraction: float = 0.1, pos=ALL_POS) -> dict:
  """Retrieve a synset's lemmas from its definition.

  Returns ``{"queries": tuple[str]`` (definitions of the split's synsets, examples removed so the
  word is not given away), ``"synset": int64 [Q]``, ``"corpus": tuple[str]`` (every distinct
  lemma text of ``pos``, sorted, whatever the split), ``"positives": tuple`` of int64 arrays
  (corpus indices of each query's lemmas)``}``. ``split="test"`` queries are held-out synsets.
  """
  ids_all = _select(wn, pos)
  corpus = sorted({text(w) for i in ids_all for w in wn.lemmas[i]})
  where = {w: k for k, w in enumerate(corpus)}
  ids = split_synsets(wn, split, seed=seed, test_fraction=test_fraction, pos=pos)
  positives = tuple(np.unique([where[text(w)] for w in wn.lemmas[i]]) for i in ids)
  return {"queries": tuple(wn.definitions[i] for i in ids), "synset": ids.astype(np.int64),
          "corpus": tuple(corpus), "positives": positives}


def wu_palmer(wn: WordNet, i: int, j: int) -> float:
  """Wu-Palmer similarity ``2 N3 / (N1 + N2 + 2 N3)`` of synsets ``i`` and ``j``.

  Over common hypernym ancestors ``c`` (``@`` and ``@i`` edges, each synset its own ancestor):
  ``N1`` / ``N2`` = fewest edges from ``i`` / ``j`` up to ``c``, ``N3`` = ``wn.depth(c)`` (nodes
  from ``c`` to a root, root = 1); the best ``c`` is kept. 0 when there is no common ancestor
  (different parts of speech, verbs under different tops; no simulated root). Adjectives and
  adverbs have no hypernyms: 1 for ``i == j``, else 0. Wu & Palmer (1994).
  Example: ``wu_palmer(wn, i, i) == 1.0``.
  """
  ai, aj = wn.ancestors(int(i)), wn.ancestors(int(j))
  best = 0.0
  for c in ai.keys() & aj.keys():
    n3 = wn.depth(c)
    best = max(best, 2.0 * n3 / (ai[c] + aj[c] + 2.0 * n3))
  return best


def similarity_pairs(wn: WordNet, n_pairs: int = 2000, split: str = "test", *, seed: int = 0,
                     test_fraction: float = 0.1, pos=("n", "v"), near_fraction: float = 0.5,
                     ) -> dict:
  """Graded word pairs with a Wu-Palmer target: ``{"a", "b", "score" float32 [P],
  "synset_a", "synset_b"}``.

  Both synsets from the split among ``pos`` (nouns / verbs, which have a hierarchy), the same
  part of speech. ``a`` is uniform; with probability ``near_fraction`` ``b`` is a graph
  neighbour (1-3 hypernym steps up, 0-3 hyponym steps down, the first of ``NEAR_TRIES`` walks
  that ends in the split) so scores spread over [0, 1]; otherwise (or when no walk lands in the
  split) ``b`` is uniform. Words are each synset's first lemma as text.
  """
  if n_pairs < 1:
    raise ValueError(f"wordnet: 'n_pairs' must be >= 1, got {n_pairs}")
  ids = split_synsets(wn, split, seed=seed, test_fraction=test_fraction, pos=pos)
  member = set(ids.tolist())
  by_pos = {p: ids[np.where(wn.pos[ids] == "s", "a", wn.pos[ids]) == p] for p in ALL_POS}
  rng = np.random.default_rng([seed, 2])
  sa, sb = [], []
  while len(sa) < n_pairs:
    i = int(ids[rng.integers(len(ids))])
    pool = by_pos[_file_pos(wn.pos[i])]
    j = None
    if rng.random() < near_fraction:
      for _ in range(NEAR_TRIES):
        k = i
        for _ in range(rng.integers(1, 4)):
          if wn.hypernyms[k]:
            k = wn.hypernyms[k][rng.integers(len(wn.hypernyms[k]))]
        for _ in range(rng.integers(0, 4)):
          down = wn.hyponyms(k)
          if down:
            k = down[rng.integers(len(down))]
        if k in member and k != i:
          j = k
          break
    if j is None:
      j = int(pool[rng.integers(len(pool))])
    sa.append(i)
    sb.append(j)
  return {"a": tuple(text(wn.lemmas[i][0]) for i in sa),
          "b": tuple(text(wn.lemmas[j][0]) for j in sb),
          "score": np.asarray([wu_palmer(wn, i, j) for i, j in zip(sa, sb)], np.float32),
          "synset_a": np.asarray(sa, np.int64), "synset_b": np.asarray(sb, np.int64)}


def gloss_corpus(wn: WordNet, *, pos=ALL_POS, examples: bool = True) -> tuple:
  """Every synset's gloss (``examples=False``: definitions only), file order: 117,659 texts."""
  source = wn.glosses if examples else wn.definitions
  return tuple(source[i] for i in _select(wn, pos))
