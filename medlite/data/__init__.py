"""Data layer: loaders that return in-memory :class:`ClassificationData`, batched transforms, and file
reading (:mod:`medlite.data.io`).

Names are loaded on first use: the loaders need torch, while :mod:`medlite.data.io` must import on a
device without torch (the ONNX runtime uses it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    **dict.fromkeys(("TASKS", "ArraySplit", "ClassificationData", "DataError", "data_root"), "medlite.data.base"),
    **dict.fromkeys(("load_csv", "load_image_folder"), "medlite.data.folder"),
    **dict.fromkeys(("MEDMNIST", "SIZES", "SubsetInfo", "download", "find_subset_file",
                     "load_dermamnist_jpeg_zip", "load_npz"), "medlite.data.medmnist"),
    **dict.fromkeys(("augment_batch", "resize_batch", "to_float"), "medlite.data.transforms"),
    "load_classification": "medlite.data.load",
    **dict.fromkeys(("Geometry", "SegPair", "SegSplit", "SegmentationData", "find_pairs", "letterbox",
                     "load_builtin", "load_segmentation", "read_mask", "read_pair", "read_rgb", "restore"),
                    "medlite.data.segmentation"),
    "augment_pairs": "medlite.data.seg_augment",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from medlite.data.base import TASKS, ArraySplit, ClassificationData, DataError, data_root  # noqa: F401
    from medlite.data.folder import load_csv, load_image_folder  # noqa: F401
    from medlite.data.load import load_classification  # noqa: F401
    from medlite.data.medmnist import (  # noqa: F401
        MEDMNIST,
        SIZES,
        SubsetInfo,
        download,
        find_subset_file,
        load_dermamnist_jpeg_zip,
        load_npz,
    )
    from medlite.data.seg_augment import augment_pairs  # noqa: F401
    from medlite.data.segmentation import (  # noqa: F401
        Geometry,
        SegmentationData,
        SegPair,
        SegSplit,
        find_pairs,
        letterbox,
        load_builtin,
        load_segmentation,
        read_mask,
        read_pair,
        read_rgb,
        restore,
    )
    from medlite.data.transforms import augment_batch, resize_batch, to_float  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medlite.data' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
