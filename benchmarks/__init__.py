"""Benchmark scripts: each prints its figures (run with `python -m benchmarks.<name>`)."""
