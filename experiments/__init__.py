"""Studies and benchmarks; results under ``experiments/results/``."""
