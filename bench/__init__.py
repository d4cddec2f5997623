"""Benchmarks: each prints one JSON line last with the figures its issue names."""
