"""WordNet 3.0 parser and derived tasks.

The parsing tests need `apt-get install wordnet-base` (tests/optional.py: skipped with that command
when the files are missing, failed instead under JAXCL_REQUIRE_OPTIONAL=1, as in CI); the
missing-files error is checked without them."""
import os

import numpy as np
import pytest

from jaxcl.data import wordnet as W
from tests import optional

pytestmark = pytest.mark.xdist_group("wordnet")  # one worker parses the files once


@pytest.fixture(scope="module")
def wn():
  optional.require("wordnet")
  return W.load_wordnet()


def test_counts(wn):
  assert len(wn) == 117659
  pos = wn.pos.tolist()
  assert [pos.count(p) for p in "nvasr"] == [82115, 13767, 7463, 10693, 3621]
  assert len(W.gloss_corpus(wn)) == 117659
  assert len(W.gloss_corpus(wn, pos="v", examples=False)) == 13767
  assert all(wn.lemmas) and all(wn.glosses)
  assert W.load_wordnet() is wn  # cached


def test_dog_facts(wn):
  dog = wn.lookup("dog", "n")[0]
  assert wn.key(dog) == "02084071-n"
  assert wn.lemmas[dog] == ("dog", "domestic_dog", "Canis_familiaris")
  assert wn.glosses[dog].startswith("a member of the genus Canis")
  assert '"' not in wn.definitions[dog] and '"the dog barked all night"' in wn.glosses[dog]
  assert wn.lookup("Domestic dog") == [dog]
  assert W.text(wn.lemmas[dog][1]) == "domestic dog"
  chain, i = [], dog
  while wn.hypernyms[i]:
    i = wn.hypernyms[i][0]
    chain.append(wn.lemmas[i][0])
  assert chain[:2] == ["canine", "carnivore"] and chain[-1] == "entity"
  entity = wn.index("n", 1740)
  assert wn.lemmas[entity] == ("entity",) and entity in wn.ancestors(dog)
  # shortest root path: dog, domestic_animal, animal, organism, living_thing, whole, object,
  # physical_entity, entity.
  assert wn.depth(dog) == 9 and wn.depth(entity) == 1
  able = wn.lookup("able", "a")[0]
  assert wn.definitions[able].endswith("to do something") and wn.pos[able] == "a"
  assert wn.lemmas[wn.lookup("galore")[0]] == ("galore",)  # 'galore(ip)' marker removed


def _all_paths(wn, i):
  """Every hypernym path from i up to a root, as lists starting at i (independent of W)."""
  if not wn.hypernyms[i]:
    return [[i]]
  return [[i] + p for h in wn.hypernyms[i] for p in _all_paths(wn, h)]


def _wup_by_paths(wn, i, j):
  paths_i, paths_j = _all_paths(wn, i), _all_paths(wn, j)
  best = 0.0
  for pi in paths_i:
    for pj in paths_j:
      for c in set(pi) & set(pj):
        n3 = min(len(p) for p in _all_paths(wn, c))
        best = max(best, 2 * n3 / (pi.index(c) + pj.index(c) + 2 * n3))
  return best


def test_wu_palmer(wn):
  dog, cat = wn.lookup("dog", "n")[0], wn.lookup("cat", "n")[0]
  # by hand: lcs carnivore (12 nodes to entity), dog -> canine -> carnivore, cat -> feline ->
  # carnivore: 2 * 12 / (2 + 2 + 2 * 12) = 6 / 7.
  assert W.wu_palmer(wn, dog, cat) == pytest.approx(6 / 7)
  assert W.wu_palmer(wn, dog, dog) == 1.0
  assert W.wu_palmer(wn, dog, wn.lookup("run", "v")[0]) == 0.0
  good, bad = wn.lookup("good", "a")[0], wn.lookup("bad", "a")[0]
  assert W.wu_palmer(wn, good, bad) == 0.0 and W.wu_palmer(wn, good, good) == 1.0
  pairs = [("dog", "cat", "n"), ("car", "bicycle", "n"), ("oak", "tulip", "n"),
           ("walk", "run", "v"), ("eat", "drink", "v")]
  for a, b, p in pairs:
    i, j = wn.lookup(a, p)[0], wn.lookup(b, p)[0]
    assert W.wu_palmer(wn, i, j) == pytest.approx(_wup_by_paths(wn, i, j)), (a, b)
    assert W.wu_palmer(wn, i, j) == W.wu_palmer(wn, j, i)
  sim = W.similarity_pairs(wn, 300, "test", seed=3)
  for k in range(0, 300, 30):
    i, j = sim["synset_a"][k], sim["synset_b"][k]
    assert sim["score"][k] == pytest.approx(_wup_by_paths(wn, i, j), abs=1e-6)


def test_splits_deterministic_and_disjoint(wn):
  tr, te = W.split_synsets(wn, "train", seed=0), W.split_synsets(wn, "test", seed=0)
  assert len(te) == round(0.1 * len(wn)) and not np.intersect1d(tr, te).size
  assert len(tr) + len(te) == len(wn)
  np.testing.assert_array_equal(te, W.split_synsets(wn, "test", seed=0))
  assert not np.array_equal(te, W.split_synsets(wn, "test", seed=1))
  tr_n = W.split_synsets(wn, "train", seed=0, pos="n")
  assert set(wn.pos[tr_n]) == {"n"} and set(tr_n.tolist()) <= set(tr.tolist())  # one split
  a1, a2 = W.synonym_pairs(wn, "train", seed=0), W.synonym_pairs(wn, "train", seed=0)
  assert a1["a"] == a2["a"] and a1["b"] == a2["b"]
  np.testing.assert_array_equal(a1["label"], a2["label"])
  s1, s2 = W.similarity_pairs(wn, 200, seed=5), W.similarity_pairs(wn, 200, seed=5)
  assert s1["a"] == s2["a"] and s1["b"] == s2["b"]
  np.testing.assert_array_equal(s1["score"], s2["score"])


def test_held_out_tasks(wn):
  te = set(W.split_synsets(wn, "test", seed=0).tolist())
  syn = W.synonym_pairs(wn, "train", seed=0, pairs_per_synset=2)
  assert not te & set(syn["label"].tolist()) and len(syn["a"]) > 40000
  for a, b, y in list(zip(syn["a"], syn["b"], syn["label"]))[::5000]:
    lemmas = {W.text(l).lower() for l in wn.lemmas[y]}
    assert a.lower() != b.lower() and {a.lower(), b.lower()} <= lemmas
  syn_te = W.synonym_pairs(wn, "test", seed=0)
  assert set(syn_te["label"].tolist()) <= te
  gl = W.synonym_gloss_pairs(wn, "train", seed=0, pos="v")
  assert not te & set(gl["label"].tolist()) and set(wn.pos[gl["label"]]) == {"v"}
  assert gl["gloss"][0] == wn.definitions[gl["label"][0]]
  rd = W.reverse_dictionary(wn, "test", seed=0, pos="n")
  assert set(rd["synset"].tolist()) <= te and len(rd["queries"]) == len(rd["positives"])
  assert len(rd["corpus"]) == len(set(rd["corpus"]))
  for q in range(0, len(rd["queries"]), 997):
    i = rd["synset"][q]
    assert rd["queries"][q] == wn.definitions[i]
    assert {rd["corpus"][k] for k in rd["positives"][q]} == {W.text(l) for l in wn.lemmas[i]}
  sim = W.similarity_pairs(wn, 500, "test", seed=0)
  assert set(sim["synset_a"].tolist()) | set(sim["synset_b"].tolist()) <= te
  assert 0.0 <= sim["score"].min() and sim["score"].max() <= 1.0 and sim["score"].std() > 0.2


def test_missing_directory_error(tmp_path, monkeypatch):
  with pytest.raises(W.WordNetNotFoundError, match="apt-get install.*wordnet-base") as err:
    W.load_wordnet(tmp_path)
  assert W.ENV_VAR in str(err.value) and str(tmp_path) in str(err.value)
  assert isinstance(err.value, FileNotFoundError)
  monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "nowhere"))
  with pytest.raises(W.WordNetNotFoundError, match=r"\$JAXCL_WORDNET_DIR"):
    W.load_wordnet()


@pytest.mark.requires("wordnet")
def test_dict_subfolder_resolves_and_lookup_needs_the_index_files(tmp_path, monkeypatch):
  (tmp_path / "dict").mkdir()
  for name in ("noun", "verb", "adj", "adv"):
    os.symlink(os.path.join(W.DEFAULT_DIR, f"data.{name}"), tmp_path / "dict" / f"data.{name}")
  monkeypatch.setenv(W.ENV_VAR, str(tmp_path))
  assert W.resolve_dir() == str(tmp_path / "dict")
  with pytest.raises(W.WordNetNotFoundError, match="index.noun"):
    W.load_wordnet().lookup("dog")  # data files only: parses, but lookup needs index.*
  with pytest.raises(ValueError, match="'pos'"):
    W.split_synsets(W.load_wordnet(W.DEFAULT_DIR), pos="x")
