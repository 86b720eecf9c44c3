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
