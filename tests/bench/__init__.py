"""Benchmarks run by `make bench`; figures go to BENCHMARKS.md."""
