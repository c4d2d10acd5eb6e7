"""JSON files of a run directory, written atomically and read without trusting them.

:func:`write_json` (and :func:`write_text`, e.g. for ``metrics.jsonl`` rewritten on resume)
writes a temporary file in the same directory, flushes it to disk and ``os.replace``-s it onto
the target, so a reader, or a run killed mid-write, sees the old file
or the new one, never part of one. :func:`read_json` returns ``default`` for a missing file
and, with a warning naming the file, for a damaged one (from before atomic writes, or a bad
disk), so a damaged result file never stops a run.

Example:
  >>> import os, tempfile
  >>> path = os.path.join(tempfile.mkdtemp(), "eval.json")
  >>> write_json(path, {"history": []})
  >>> read_json(path)
  {'history': []}
"""
from __future__ import annotations

import json
import os
import threading
import warnings


def write_text(path, text):
  """Writes ``text`` to ``path`` atomically: a temporary file in the same directory, flushed
  to disk, then ``os.replace``."""
  path = os.fspath(path)
  tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"  # same dir: replace is atomic
  try:
    with open(tmp, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path, obj, **dump_kwargs):
  """``json.dumps(obj, **dump_kwargs)`` into ``path``, atomically (:func:`write_text`)."""
  write_text(path, json.dumps(obj, **dump_kwargs))


def read_json(path, default=None):
  """The JSON content of ``path``; ``default`` if it is missing or (with a RuntimeWarning
  naming it) unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return default
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    warnings.warn(f"{path} is unreadable ({type(e).__name__}: {e}); ignoring it (it will be "
                  f"rewritten)", RuntimeWarning, stacklevel=2)
    return default
