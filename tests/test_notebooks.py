"""Executes colab/01_quickstart.ipynb end to end with a 3-step budget."""
import os

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCL_NB_STEPS", "3")
  monkeypatch.setenv("JAXCL_NB_WORKDIR", str(tmp_path / "run"))
  nb = nbformat.read(os.path.join(ROOT, "colab", "01_quickstart.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  out = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "| random encoder |" in out and "linear probe" in out
  assert os.path.exists(tmp_path / "run" / "plots" / "embeddings_pca.png")
  assert os.path.exists(tmp_path / "run" / "metrics.jsonl")
