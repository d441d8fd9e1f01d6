"""Experiments: the benchmark runner and its sections, the demo, seeds, latency, FLOPs, extra evaluation
sets, the reproductions."""
