"""MkDocs hooks for the docs build: serve ``experiments/results/`` as part of the site.

The study results live outside ``docs/`` (``experiments/results/<study>.md`` and its PNG), and
the pages link to them with repository-relative paths (``../experiments/results/dcl.md``), which
also work when the Markdown is read on a code host. These hooks add those files to the build
under ``results/`` and rewrite such links to the copies, so ``mkdocs build --strict`` checks them.
"""
from __future__ import annotations

import os
import posixpath
import re

from mkdocs.structure.files import File

RESULTS = "experiments/results"
SITE_DIR = "results"
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _root(config):
  return os.path.dirname(os.path.abspath(config.config_file_path))


def on_files(files, config):
  results = os.path.join(_root(config), *RESULTS.split("/"))
  for name in sorted(os.listdir(results)):
    if name.endswith((".md", ".png")):
      files.append(File.generated(config, f"{SITE_DIR}/{name}",
                                  abs_src_path=os.path.join(results, name)))
  return files


def on_page_markdown(markdown, page, config, files):
  docs = os.path.relpath(config.docs_dir, _root(config)).replace(os.sep, "/")
  here = posixpath.dirname(page.file.src_uri)

  def fix(match):
    target = match.group(1)
    if "://" in target or target.startswith(("#", "/")):
      return match.group(0)
    path, _, anchor = target.partition("#")
    in_repo = posixpath.normpath(posixpath.join(docs, here, path))
    if not in_repo.startswith(RESULTS + "/"):
      return match.group(0)
    new = posixpath.relpath(SITE_DIR + in_repo[len(RESULTS):], here or ".")
    return f"]({new}{'#' + anchor if anchor else ''})"

  return _LINK.sub(fix, markdown)
