"""Conch's benchmarks, run as modules from the repository root: `python -m bench.bench_text` (the Makefile
runs each so)."""
