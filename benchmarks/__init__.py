"""Benchmark harness for iii workers; run it with ``python -m benchmarks.run`` (see README.md)."""
