"""Benchmarks: measured figures with their targets and their ratio to a baseline. Run with `make bench`."""
