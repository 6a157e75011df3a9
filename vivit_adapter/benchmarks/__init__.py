"""Benchmarks: train-step time and memory, and a plain PyTorch reference to compare with."""
