"""Griffe extension for the docs build: two markup habits of jaxcl's docstrings, read for MkDocs.

* Doctests are titled ``Example:``; the Google-style parser only turns ``Examples:`` into an
  examples section (``>>>`` lines shown as Python console code) and would otherwise render
  ``Example:`` as an admonition whose ``>>>`` lines become nested Markdown quotes.
* Cross-references use Sphinx roles (:func:`jaxcl.kernels.contrastive_lse`), which Markdown
  shows literally; they become inline code (a leading ``~`` keeps only the last name).

Only the loaded docstring text changes; the source files are untouched.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
  target = match.group(2)
  return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class DocstringMarkup(griffe.Extension):
  """Renames ``Example:`` sections to ``Examples:`` and turns Sphinx roles into inline code."""

  def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
    if obj.docstring is not None and not obj.is_alias:
      text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
      obj.docstring.value = _ROLE.sub(_role, text)
