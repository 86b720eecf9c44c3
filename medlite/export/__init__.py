"""Deployment: export to ONNX (fp32, int8) and ExecuTorch, and a torch-free ONNX Runtime classifier.

Nothing is imported eagerly, so ``import medlite.export.runtime`` works on a machine with only numpy,
Pillow and onnxruntime (no torch). Names are resolved on first use:

- :func:`export_onnx` (``medlite.export.onnx``): PyTorch -> ONNX with a parity check;
- :func:`quantize_dynamic_int8`, :func:`quantize_static_int8`, :func:`compare_on` (``.quantize``);
- :func:`export_executorch` (``.executorch``, needs ``pip install medlite[mobile]``);
- :class:`OnnxClassifier` (``.runtime``): load an exported file and predict from paths or arrays.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from medlite.export.executorch import export_executorch
    from medlite.export.meta import ExportError, ModelFileError, read_onnx_meta
    from medlite.export.onnx import export_onnx
    from medlite.export.quantize import compare_on, quantize_dynamic_int8, quantize_static_int8
    from medlite.export.runtime import OnnxClassifier

_LAZY = {
    "export_onnx": "medlite.export.onnx",
    "read_onnx_meta": "medlite.export.meta",
    "quantize_dynamic_int8": "medlite.export.quantize",
    "quantize_static_int8": "medlite.export.quantize",
    "compare_on": "medlite.export.quantize",
    "export_executorch": "medlite.export.executorch",
    "OnnxClassifier": "medlite.export.runtime",
    "ExportError": "medlite.export.meta",
    "ModelFileError": "medlite.export.meta",
}
__all__ = [  # noqa: F822 (resolved by __getattr__)
    "ExportError", "ModelFileError", "OnnxClassifier", "compare_on", "export_executorch", "export_onnx",
    "quantize_dynamic_int8", "quantize_static_int8", "read_onnx_meta",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medlite.export' has no attribute '{name}'")
