"""Synthetic data-lake tables with duplicate tuples (methods.md ``table_integration``): entities
from small built-in vocabularies, each written as one clean tuple plus noisy duplicates carrying
typos, abbreviations, reordered tokens and synonyms; ground-truth entity ids. No downloads.

A tuple is the string ``"name | company | city | title"``. :func:`make_table` draws ``num_entities``
entities (a name = first + last, a company = stem + suffix, a city, a job title; collisions of
single attributes between entities are frequent, so near-duplicates that are *not* the same
entity exist) and ``1 + Poisson-ish`` copies of each; every copy after the first is corrupted by
:func:`corrupt` at strength ``noise``. :func:`augment` is SSACL's self-supervised positive
generator (attribute removal / substitution, word removal / substitution, word swap, character
typo); :func:`hash_ngrams` is the character-3-gram hashing featuriser of the CPU proxy.
All randomness comes from an explicit ``numpy.random.Generator``.
"""
from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

FIRST = ("john", "mary", "james", "linda", "robert", "susan", "michael", "karen", "david",
         "nancy", "william", "lisa", "richard", "betty", "thomas", "helen", "charles", "sandra",
         "daniel", "donna", "matthew", "carol", "anthony", "ruth", "mark", "sharon")
LAST = ("smith", "johnson", "williams", "brown", "jones", "miller", "davis", "garcia",
        "wilson", "anderson", "taylor", "moore", "jackson", "martin", "lee", "thompson",
        "white", "harris", "clark", "lewis", "walker", "young", "allen", "king")
STEMS = ("acme", "globex", "initech", "umbrella", "stark", "wayne", "hooli", "vandelay",
         "wonka", "cyberdyne", "soylent", "tyrell", "oscorp", "gringotts", "monarch", "virtucon")
SUFFIX = {"corporation": "corp", "incorporated": "inc", "limited": "ltd", "company": "co",
          "international": "intl", "industries": "ind"}
CITIES = {"new york": "ny", "los angeles": "la", "san francisco": "sf", "washington": "dc",
          "chicago": "chi", "boston": "bos", "houston": "hou", "philadelphia": "phl",
          "seattle": "sea", "denver": "den", "atlanta": "atl", "miami": "mia"}
# Job-title synonym groups (a word of a group may be replaced by any other of the group).
SYNONYMS = (("engineer", "developer", "programmer"), ("manager", "supervisor", "lead"),
            ("senior", "principal", "staff"), ("sales", "commercial"),
            ("analyst", "specialist"), ("director", "head"), ("assistant", "associate"),
            ("software", "application"), ("data", "information"), ("marketing", "promotion"))
TITLES = ("software engineer", "senior software engineer", "data analyst", "sales manager",
          "marketing director", "senior data engineer", "sales assistant", "marketing analyst",
          "software manager", "data director")
ATTRS = ("name", "company", "city", "title")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SYN = {w: g for g in SYNONYMS for w in g}
_ABBR = {**SUFFIX, **CITIES}


class Table(NamedTuple):
  """Tuples (``"a | b | c | d"`` strings) and their ground-truth entity ids (``[N]`` int)."""
  tuples: list
  entity: np.ndarray


def _check_rng(rng, fn):
  if not isinstance(rng, np.random.Generator):
    raise TypeError(f"{fn}: 'rng' must be a numpy.random.Generator, got {type(rng).__name__}")


def typo(word: str, rng) -> str:
  """One character edit of ``word``: substitution, deletion, insertion or adjacent swap."""
  _check_rng(rng, "typo")
  if len(word) < 2:
    return word
  i = int(rng.integers(len(word)))
  op = int(rng.integers(4))
  c = LETTERS[int(rng.integers(26))]
  if op == 0:
    return word[:i] + c + word[i + 1:]
  if op == 1:
    return word[:i] + word[i + 1:]
  if op == 2:
    return word[:i] + c + word[i:]
  j = min(i + 1, len(word) - 1) if i < len(word) - 1 else i - 1
  a, b = sorted((i, j))
  return word[:a] + word[b] + word[a + 1:b] + word[a] + word[b + 1:]


def split(t: str) -> list:
  return [a.strip() for a in t.split("|")]


def join(attrs) -> str:
  return " | ".join(attrs)


def corrupt(t: str, rng, noise: float) -> str:
  """A noisy duplicate of tuple ``t``: each word gets a typo with probability ``noise``; each
  abbreviable value (city, company suffix) is abbreviated, a first name shortened to its
  initial, a title word replaced by a synonym, and a name's tokens reordered (``last first``),
  each with probability ``min(1, 1.5 * noise)``."""
  _check_rng(rng, "corrupt")
  if not 0.0 <= noise <= 1.0:
    raise ValueError(f"corrupt: 'noise' must be in [0, 1], got {noise!r}")
  q = min(1.0, 1.5 * noise)
  name, company, city, title = split(t)
  first, last = name.split(" ")
  if rng.random() < q:
    first = first[0] + "."
  name = f"{last} {first}" if rng.random() < q else f"{first} {last}"
  words = company.split(" ")
  if rng.random() < q and words[-1] in SUFFIX:
    words[-1] = SUFFIX[words[-1]]
  company = " ".join(words)
  if rng.random() < q and city in CITIES:
    city = CITIES[city]
  tw = title.split(" ")
  tw = [(_SYN[w][int(rng.integers(len(_SYN[w])))] if w in _SYN and rng.random() < q else w)
        for w in tw]
  title = " ".join(tw)
  out = []
  for a in (name, company, city, title):
    out.append(" ".join(typo(w, rng) if rng.random() < noise else w for w in a.split(" ")))
  return join(out)


def make_table(seed: int, num_entities: int, *, mean_copies: float = 2.0,
               noise: float = 0.3) -> Table:
  """``num_entities`` entities, each a clean tuple plus ``Poisson(mean_copies - 1)`` (at least
  one) corrupted duplicates (:func:`corrupt` at ``noise``); rows shuffled."""
  if isinstance(num_entities, bool) or not isinstance(num_entities, int) or num_entities < 1:
    raise ValueError(f"make_table: 'num_entities' must be an int >= 1, got {num_entities!r}")
  if not mean_copies >= 2.0:
    raise ValueError(f"make_table: 'mean_copies' must be >= 2, got {mean_copies!r}")
  rng = np.random.default_rng(seed)
  tuples, ent, seen = [], [], set()
  while len(seen) < num_entities:
    e = join([f"{rng.choice(FIRST)} {rng.choice(LAST)}",
              f"{rng.choice(STEMS)} {rng.choice(list(SUFFIX))}",
              str(rng.choice(list(CITIES))), str(rng.choice(TITLES))])
    if e in seen:
      continue
    k = len(seen)
    seen.add(e)
    tuples.append(e)
    ent.append(k)
    for _ in range(max(1, int(rng.poisson(mean_copies - 1.0)))):
      tuples.append(corrupt(e, rng, noise))
      ent.append(k)
  perm = rng.permutation(len(tuples))
  return Table([tuples[i] for i in perm], np.asarray(ent, np.int64)[perm])


AUG_OPS = ("attr_remove", "attr_substitute", "word_remove", "word_substitute", "word_swap",
           "typo")


def augment(t: str, rng, pool=None, op=None) -> str:
  """One SSACL positive of tuple ``t`` (Robin ``data_augmentation.py``, simplified): ``op``
  (random from :data:`AUG_OPS` when None) = blank one attribute; replace one attribute by the
  same attribute of a random tuple of ``pool``; drop one word; replace one word by a synonym
  (title words; other words unchanged); swap two adjacent words of an attribute; one typo."""
  _check_rng(rng, "augment")
  if op is None:
    op = AUG_OPS[int(rng.integers(len(AUG_OPS)))]
  if op not in AUG_OPS:
    raise ValueError(f"augment: 'op' must be one of {AUG_OPS}, got {op!r}")
  attrs = split(t)
  a = int(rng.integers(len(attrs)))
  if op == "attr_remove":
    attrs[a] = ""
  elif op == "attr_substitute":
    if not pool:
      raise ValueError("augment: 'pool' (a list of tuples) is needed for attr_substitute")
    attrs[a] = split(pool[int(rng.integers(len(pool)))])[a]
  else:
    words = attrs[a].split(" ")
    i = int(rng.integers(len(words)))
    if op == "word_remove":
      words = words[:i] + words[i + 1:]
    elif op == "word_substitute":
      g = _SYN.get(words[i])
      if g:
        words[i] = g[int(rng.integers(len(g)))]
    elif op == "word_swap":
      if len(words) > 1:
        j = i + 1 if i + 1 < len(words) else i - 1
        words[i], words[j] = words[j], words[i]
    else:
      words[i] = typo(words[i], rng)
    attrs[a] = " ".join(words)
  return join(attrs)


def ngrams(t: str, n: int = 3) -> list:
  """Character ``n``-grams of each word of ``t`` padded with spaces (``"#"`` marks the
  attribute separators)."""
  out = []
  for w in t.replace("|", " # ").split():
    w = f" {w} "
    out += [w[i:i + n] for i in range(max(1, len(w) - n + 1))]
  return out


def hash_ngrams(tuples, dim: int = 1024, n: int = 3) -> np.ndarray:
  """``[N, dim]`` float32: counts of crc32-hashed character ``n``-grams, then ``log1p`` and L2
  normalisation (an all-zero row stays zero)."""
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
    raise ValueError(f"hash_ngrams: 'dim' must be an int >= 1, got {dim!r}")
  x = np.zeros((len(tuples), dim), np.float32)
  for r, t in enumerate(tuples):
    for g in ngrams(t, n):
      x[r, zlib.crc32(g.encode()) % dim] += 1.0
  x = np.log1p(x)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
