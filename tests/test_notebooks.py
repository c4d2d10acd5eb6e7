"""Executes the colab notebooks end to end with a 3-step budget (01_quickstart, 02_multimodal)."""
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


def test_multimodal_notebook(tmp_path, monkeypatch):
  # colab/02_multimodal.ipynb: a small CLIP on digits_captions, 3 steps with tiny towers.
  monkeypatch.setenv("JAXCL_NB_STEPS", "3")
  monkeypatch.setenv("JAXCL_NB_WORKDIR", str(tmp_path / "run"))
  nb = nbformat.read(os.path.join(ROOT, "colab", "02_multimodal.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  out = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "zero-shot accuracy" in out and "i2t R@1" in out and "own caption rank" in out
  assert "pred" in out and "caption:" in out
  for name in ("zero_shot.png", "retrieval_grid.png", "retrieval_t2i.png"):
    assert os.path.getsize(tmp_path / "run" / name) > 0
