"""Benchmarks: parameter / MAC counts and CPU latency across runtimes (PyTorch, ONNX Runtime, ExecuTorch)."""

from medlite.bench.flops import count_macs, count_params
from medlite.bench.latency import bench, measure_peak_macs_per_s, to_markdown

__all__ = ["bench", "count_macs", "count_params", "measure_peak_macs_per_s", "to_markdown"]
