"""``load_classification``: the one entry point the engine and CLI use to get in-memory data.

It accepts a MedMNIST subset name or a path to an ``.npz``, a DermaMNIST JPEG ``.zip``, a ``.csv`` or a
class folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from medlite.data.base import ClassificationData, DataError, data_root
from medlite.data.folder import load_csv, load_image_folder
from medlite.data.medmnist import (
    MEDMNIST,
    SIZES,
    download,
    find_subset_file,
    load_dermamnist_jpeg_zip,
    load_npz,
)
from medlite.data.transforms import resize_batch

log = logging.getLogger(__name__)

_RESIZE_CHUNK = 4096  # images per resize call: bounds the float32 intermediate


def load_classification(
    spec: str | os.PathLike,
    size: int = 28,
    root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    split_file_out: str | os.PathLike | None = None,
) -> ClassificationData:
    """Load a classification dataset with images of ``size`` x ``size``.

    Args:
        spec: a MedMNIST subset name (case-insensitive; looked up under ``data_root(root)``), or a path
            to an ``.npz`` (MedMNIST layout), a ``.zip`` (DermaMNIST JPEG layout), a ``.csv``
            (``path,label[,split]``) or a folder of class subfolders.
        size: output image side; stored data of another size is resized (bilinear, antialias).
        download: fetch the official MedMNIST file when no file of this size is found.
        seed, split_file_out: for users' data without given splits (see :func:`load_image_folder`).

    Returns:
        ClassificationData with (N, C, size, size) uint8 images in every split.
    """
    path = Path(spec).expanduser()
    name = str(spec).lower()
    if name in MEDMNIST and not path.exists():
        data = _load_subset(name, size, root, download)
    elif path.is_dir():
        data = load_image_folder(path, size, seed, split_file_out=split_file_out)
    elif path.suffix.lower() == ".csv":
        data = load_csv(path, size, seed, split_file_out=split_file_out)
    elif path.suffix.lower() == ".zip":
        data = load_dermamnist_jpeg_zip(path)
    elif path.suffix.lower() == ".npz":
        data = load_npz(path)
    elif not path.exists():
        raise DataError(
            f"{spec}: neither a MedMNIST subset ({', '.join(MEDMNIST)}) nor an existing file or folder"
        )
    else:
        raise DataError(f"{path}: unsupported data file; expected .npz, .zip, .csv or a folder")
    return _resize_data(data, size)


def _load_subset(name: str, size: int, root, fetch: bool) -> ClassificationData:
    found = find_subset_file(name, size, root)
    stored = _stored_size(found) if found else None
    if fetch and stored != size and size in SIZES:
        found = download(name, size, root)
    if found is None:
        base = data_root(root)
        raise DataError(
            f"{name}: no data file under {base} (looked for {name}/{name}.npz, {name}.npz, "
            f"{name}_{size}.npz, {name}/{name}_{size}.npz); download it with "
            f"load_classification({name!r}, size={size}, download=True) or set MEDLITE_DATA"
        )
    if found.suffix == ".zip":
        return load_dermamnist_jpeg_zip(found)
    return load_npz(found, subset=name)


def _stored_size(path: Path) -> int:
    """Image size from an official file name: ``x_64.npz`` -> 64, ``x.npz`` / jpeg28 zip -> 28."""
    tail = path.stem.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 28


def _resize_data(data: ClassificationData, size: int) -> ClassificationData:
    stored = tuple(data.train.images.shape[-2:])
    if stored == (size, size):
        return data
    log.info("resizing %s from %s to %d px", data.name, stored, size)
    for split in data.splits().values():
        split.images = torch.cat([resize_batch(x, size) for x in split.images.split(_RESIZE_CHUNK)])
    data.info["resized_from"] = list(stored)
    return data
