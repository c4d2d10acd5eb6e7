"""Benchmarks, one module per benchmark: ``python -m experiments.benchmarks.<name>``."""
