"""Benchmarks: `make bench` (benchmarks/run.py) and `make bench-policy` (policy_bench.py)."""
