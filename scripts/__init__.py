"""Benchmarks and reports whose figures the docs quote; run each from the root as `python -m scripts.<name>`."""
