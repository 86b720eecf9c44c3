"""In-memory classification data: the contract between the data layer and the engine.

Every loader (MedMNIST npz, DermaMNIST JPEG zip, class folders, CSV) returns a
:class:`ClassificationData` whose splits hold the whole split as tensors, so training never touches
the disk or runs per-sample Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medlite.errors import MedliteError

TASKS = ("binary", "multi-class", "ordinal", "multi-label")


class DataError(MedliteError, ValueError):
    """Bad input data. The message names the file and what is wrong with it."""


@dataclass
class ArraySplit:
    """One split held in memory.

    Attributes:
        images: (N, C, H, W) uint8, C in {1, 3}.
        labels: (N,) int64 class indices for binary / multi-class / ordinal tasks;
            (N, L) float32 in {0, 1} for multi-label tasks.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class ClassificationData:
    """A dataset with train / val / test splits and what the model needs to know about it."""

    name: str  # subset name ("breastmnist") or the folder / CSV name for users' own data
    task: str  # one of TASKS
    label_names: list[str]  # one name per class (per label for multi-label)
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    source: str = ""  # file or folder the data came from
    info: dict = field(default_factory=dict)  # free-form provenance (split file, warnings, ...)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.train.images.shape[-1])

    def splits(self) -> dict[str, ArraySplit]:
        return {"train": self.train, "val": self.val, "test": self.test}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Folder holding datasets: ``root`` if given, else ``$MEDLITE_DATA``, else ``~/.medlite/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MEDLITE_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".medlite" / "data"
