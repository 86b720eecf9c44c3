"""medlite: lightweight medical-image AI that trains on a laptop CPU and runs on a phone."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models", "model_card"]

if TYPE_CHECKING:
    from medlite.registry import create_model, list_models, model_card

# The registry imports torch; it is loaded on first use so that the torch-free parts (the ONNX runtime in
# medlite.export.runtime, medlite.data.io) import on machines without torch.
_LAZY = dict.fromkeys(("create_model", "list_models", "model_card"), "medlite.registry")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medlite' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
