"""Benchmarks: the end-to-end train step against a plain PyTorch implementation."""
