"""Executes the colab notebooks end to end with a 3-step budget (01_quickstart, 02_multimodal,
03_text_embeddings: needs WordNet and the text extra, tests/optional.py)."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.long  # notebooks: the second test tier
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


@pytest.mark.requires("wordnet", "text", "minilm")
def test_text_embeddings_notebook(tmp_path, monkeypatch):
  # colab/03_text_embeddings.ipynb: MiniLM + WordNet, 2 MNRL steps, 128 glosses indexed.
  monkeypatch.setenv("JAXCL_NB_STEPS", "2")
  monkeypatch.setenv("JAXCL_NB_ROWS", "128")
  nb = nbformat.read(os.path.join(ROOT, "colab", "03_text_embeddings.ipynb"), as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": ROOT}}).execute()
  out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                for o in c.get("outputs", []))
  assert "embedded 128 noun definitions" in out and "MNRL loss" in out
  assert "pretrained" in out and "fine-tuned (2 steps)" in out
