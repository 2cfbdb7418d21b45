"""Benchmarks for `make bench`: each bench_*.py module has a main() that prints its figures.

Every figure that matters is printed as a ratio against a baseline measured in the same run.
Benchmarks that need ../shared/data skip cleanly when it is absent.
"""
