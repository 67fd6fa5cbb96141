"""Benchmarks: the training step's throughput against peer implementations (`run`, `workload`, `peers`) and the
input pipeline's speed (`input`). The scripts experiments/benchmark.py and experiments/benchmark_input.py drive them.
"""
