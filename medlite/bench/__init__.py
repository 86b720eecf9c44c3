"""Benchmarks: parameter / MAC counts and CPU latency across runtimes (PyTorch, ONNX Runtime, ExecuTorch)."""

from medlite.bench.latency import bench, measure_peak_macs_per_s, to_markdown
from medlite.models.flops import count_macs, count_params

__all__ = ["bench", "count_macs", "count_params", "measure_peak_macs_per_s", "to_markdown"]
