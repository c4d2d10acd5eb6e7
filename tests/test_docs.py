"""The documentation site (mkdocs.yml, docs/) builds with ``mkdocs build --strict``.

Strict mode turns every warning into an error: broken links between pages, docstrings the API
reference cannot parse, references that do not resolve. The API page of ``jaxcl.losses`` must
document every name in ``jaxcl.losses.__all__`` (and the contrib page every name of
``jaxcl.losses.contrib.__all__``).
"""
import os
import re
import subprocess
import sys

import pytest

from tests import optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")


def _nav_pages(nav):
  """Every Markdown path in an mkdocs ``nav`` (a list of strings / {title: entry} dicts)."""
  if isinstance(nav, str):
    return [] if "://" in nav else [nav]
  if isinstance(nav, list):
    return [p for item in nav for p in _nav_pages(item)]
  if isinstance(nav, dict):
    return [p for value in nav.values() for p in _nav_pages(value)]
  return []


def _nav():
  import yaml
  with open(os.path.join(ROOT, "mkdocs.yml")) as f:
    config = yaml.safe_load(f)
  pages = _nav_pages(config["nav"])
  assert pages, "mkdocs.yml has an empty nav"
  return pages


@pytest.mark.xdist_group("docs")
def test_nav_pages_exist():
  optional.require("docs")
  absent = [p for p in _nav() if not os.path.isfile(os.path.join(DOCS, p))]
  assert not absent, f"pages in mkdocs.yml's nav missing from docs/: {absent}"


@pytest.mark.xdist_group("docs")
def test_mkdocs_build_strict(tmp_path):
  optional.require("docs")
  site = tmp_path / "site"
  proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"

  for page in _nav():
    stem = page[:-len(".md")]
    html = site / ("index.html" if stem == "index" else os.path.join(stem, "index.html"))
    assert html.is_file(), f"{page} was not rendered ({html})"

  import jaxcl.losses
  for page, space in (("losses", jaxcl.losses), ("contrib", jaxcl.losses.contrib)):
    html = (site / "api" / page / "index.html").read_text()
    prefix = space.__name__
    ids = set(re.findall(r'id="(' + re.escape(prefix) + r'\.[\w.]+)"', html))
    undocumented = [n for n in space.__all__ if n != "contrib" and f"{prefix}.{n}" not in ids
                    and not any(i.endswith(f".{n}.{n}") for i in ids)]
    assert not undocumented, (
        f"{prefix}.__all__ names missing from docs/api/{page}.md's page: {undocumented} (a "
        "function named like its own submodule needs its own '::: jaxcl.losses.<mod>.<name>')")
  api = (site / "api" / "losses" / "index.html").read_text()
  for name in ("info_nce", "clip_loss"):
    assert f'id="jaxcl.losses.{name}"' in api, f"{name} missing from the jaxcl.losses API page"
