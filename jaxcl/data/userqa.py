"""A generated "UserQA" set with known structure (InstructUE's CPU proxy; methods.md
``instructue``): users with latent attributes, behaviour sequences generated from them, and
templated questions about one attribute with a one-word answer. Pure NumPy, from a seed, no
downloads.

Structure (all from ``np.random.default_rng(seed)``):
  * user ``u`` has ``num_attrs`` categorical attributes ``attrs[u, a] in [0, num_values)``
    (uniform, independent);
  * each (attribute, value) owns ``events_per_value`` behaviour event ids; a behaviour sequence
    is ``seq_len`` events: with probability ``noise`` a uniform event (any attribute / value),
    else attribute ``a`` uniform and one of the events of ``(a, attrs[u, a])`` uniform. Event
    ids are ``1..num_events`` (0 = padding, unused here: every sequence is full);
  * word vocabulary: ``PAD, BOS, EOS, SEP``, the template words, one word per attribute name and
    one answer word per (attribute, value) (so an answer word names its attribute's value);
  * questions: ``TEMPLATES`` over the attribute's name; the last template is held out (the test
    questions use it: same words, unseen order). The answer to (user ``u``, attribute ``a``) is
    the single word ``value_word(a, attrs[u, a])`` followed by ``EOS``.
  * users ``[0, num_train)`` train, the rest test (held-out users *and* held-out template).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

PAD, BOS, EOS, SEP = 0, 1, 2, 3
SPECIAL = ("<pad>", "<bos>", "<eos>", "<sep>")
# "{}" = the attribute's name word. The last template is held out for the test questions.
TEMPLATES = (("what", "is", "the", "user", "'s", "{}", "?"),
             ("which", "{}", "does", "the", "user", "have", "?"),
             ("the", "user", "'s", "{}", "is", "what", "?"))
ATTR_NAMES = ("city", "sport", "music", "diet", "pet", "job", "car", "food")


class UserQA(NamedTuple):
  attrs: np.ndarray        # [U, A] int attribute values
  events: np.ndarray       # [U, seq_len] int32 event ids 1..num_events
  vocab: tuple             # word strings; index = word id
  num_events: int
  num_train: int
  num_attrs: int
  num_values: int

  def attr_word(self, a):
    return len(SPECIAL) + len(_template_words()) + a

  def value_word(self, a, v):
    return len(SPECIAL) + len(_template_words()) + self.num_attrs + a * self.num_values + v


def _template_words():
  return tuple(sorted({w for t in TEMPLATES for w in t if w != "{}"}))


def _int(name, v, lo=1):
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
    raise ValueError(f"make_userqa: {name!r} must be an int >= {lo}, got {v!r}")


def make_userqa(seed, *, num_users=600, num_train=400, num_attrs=4, num_values=6,
                events_per_value=4, seq_len=16, noise=0.3) -> UserQA:
  """The set (module docstring). ``noise`` in ``[0, 1]`` = the share of uniform events."""
  for name, v in (("num_users", num_users), ("num_attrs", num_attrs),
                  ("num_values", num_values), ("events_per_value", events_per_value),
                  ("seq_len", seq_len), ("num_train", num_train)):
    _int(name, v)
  if num_attrs > len(ATTR_NAMES):
    raise ValueError(f"make_userqa: 'num_attrs' must be <= {len(ATTR_NAMES)}, got {num_attrs}")
  if num_train >= num_users:
    raise ValueError(f"make_userqa: 'num_train'={num_train} must be < 'num_users'={num_users}")
  if not 0.0 <= noise <= 1.0:
    raise ValueError(f"make_userqa: 'noise' must be in [0, 1], got {noise!r}")
  rng = np.random.default_rng(seed)
  attrs = rng.integers(0, num_values, (num_users, num_attrs))
  num_events = num_attrs * num_values * events_per_value
  a = rng.integers(0, num_attrs, (num_users, seq_len))
  e = rng.integers(0, events_per_value, (num_users, seq_len))
  v = np.take_along_axis(attrs, a, 1)
  signal = 1 + (a * num_values + v) * events_per_value + e
  uniform = rng.integers(1, num_events + 1, (num_users, seq_len))
  events = np.where(rng.random((num_users, seq_len)) < noise, uniform, signal)
  vocab = SPECIAL + _template_words() + ATTR_NAMES[:num_attrs] + tuple(
      f"{ATTR_NAMES[i]}_{j}" for i in range(num_attrs) for j in range(num_values))
  return UserQA(attrs, events.astype(np.int32), vocab, num_events, num_train, num_attrs,
                num_values)


def question(data: UserQA, attr, template):
  """Word ids of template ``template`` asking about attribute ``attr``."""
  words = {w: i for i, w in enumerate(data.vocab)}
  return [data.attr_word(attr) if w == "{}" else words[w] for w in TEMPLATES[template]]


def examples(data: UserQA, split, templates=None):
  """All (user, attribute, template) questions of ``split`` ("train": the train users and every
  template but the last; "test": the test users and the held-out last template). Returns a dict
  of arrays: ``user [N]``, ``attr [N]``, ``question [N, Q]`` word ids (all templates have the
  same length Q), ``answer [N]`` the answer word id, ``answer_id [N] = attr * V + value``."""
  if split not in ("train", "test"):
    raise ValueError(f"examples: 'split' must be 'train' or 'test', got {split!r}")
  users = (np.arange(data.num_train) if split == "train"
           else np.arange(data.num_train, len(data.attrs)))
  if templates is None:
    templates = range(len(TEMPLATES) - 1) if split == "train" else (len(TEMPLATES) - 1,)
  rows = [(u, a, t) for u in users for a in range(data.num_attrs) for t in templates]
  u, a, t = (np.array(x, np.int32) for x in zip(*rows))
  qs = np.array([question(data, ai, ti) for ai, ti in zip(a, t)], np.int32)
  val = data.attrs[u, a]
  answer_id = (a * data.num_values + val).astype(np.int32)
  answer = np.array([data.value_word(ai, vi) for ai, vi in zip(a, val)], np.int32)
  return {"user": u, "attr": a, "question": qs, "answer": answer, "answer_id": answer_id}
