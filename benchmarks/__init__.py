"""Benchmarks (not tests): `python -m benchmarks.throughput`."""
