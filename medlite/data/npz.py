"""The MedSAM-on-laptop challenge ``.npz`` format (2D), read and written.

A case file holds ``imgs`` (H, W, 3) uint8 (grey (H, W) is accepted), ``boxes`` (N, 4) xyxy in image
pixels and, for labelled cases, ``gts`` (H, W) integer label map where label i belongs to box i (1-based).
Predictions are saved as ``segs`` (H, W) uint16 in the same layout (and ``boxes`` copied through).

:func:`load_npz` turns a folder of labelled cases into :class:`~medlite.data.segmentation.SegmentationData`
(one binary case per labelled target) so LiteSAM trains on it like on any other dataset.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from medlite.data.base import DataError
from medlite.data.segmentation import SegmentationData, SegSplit, letterbox, split_cases


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """-> {"imgs": (H, W, 3) uint8, "boxes": (N, 4) float32, and "gts": (H, W) int if present}."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from e
    if "imgs" not in data:
        raise DataError(f"{path}: challenge npz needs an 'imgs' array; found {sorted(data)}")
    imgs = data["imgs"]
    if imgs.ndim == 2:
        imgs = np.repeat(imgs[:, :, None], 3, axis=2)
    if imgs.ndim != 3 or imgs.shape[2] != 3:
        raise DataError(f"{path}: 'imgs' must be (H, W, 3) or (H, W); got {imgs.shape}")
    out = {"imgs": imgs.astype(np.uint8, copy=False)}
    boxes = data.get("boxes", np.zeros((0, 4), np.float32))
    out["boxes"] = np.asarray(boxes, np.float32).reshape(-1, 4)
    if "gts" in data:
        gts = data["gts"]
        if gts.shape != imgs.shape[:2]:
            raise DataError(f"{path}: 'gts' is {gts.shape} but 'imgs' is {imgs.shape[:2]}")
        out["gts"] = gts
    for k in ("segs", "spacing"):
        if k in data:
            out[k] = data[k]
    return out


def write_npz(path: str | os.PathLike, segs: np.ndarray | None = None, **arrays: np.ndarray) -> Path:
    """Write a challenge case (e.g. ``write_npz(p, segs=label_map, boxes=boxes)``) compressed, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if segs is not None:
        arrays["segs"] = np.asarray(segs).astype(np.uint16)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def labels_to_masks(gts: np.ndarray, n: int) -> np.ndarray:
    """(H, W) label map -> (n, H, W) uint8 binary masks, mask i for label i + 1."""
    return np.stack([(gts == i + 1).astype(np.uint8) for i in range(n)]) if n else np.zeros((0,) + gts.shape,
                                                                                         np.uint8)


def masks_to_labels(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) binary masks -> (H, W) uint16 label map; where masks overlap the later box wins."""
    masks = np.asarray(masks)
    out = np.zeros(masks.shape[1:], np.uint16)
    for i, m in enumerate(masks):
        out[m > 0] = i + 1
    return out


def _cases(files: list[Path], size: int) -> SegSplit:
    images, masks, names, geoms, originals = [], [], [], [], []
    for f in files:
        case = read_npz(f)
        if "gts" not in case:
            raise DataError(f"{f}: training/evaluation needs ground truth 'gts'")
        x, g = letterbox(case["imgs"], size, mode="pad")
        for lab in (int(v) for v in np.unique(case["gts"]) if v != 0):
            m = (case["gts"] == lab).astype(np.uint8)
            images.append(x)
            masks.append(letterbox(m, size, mode="pad", mask=True)[0])
            names.append(f"{f.stem}#{lab}")
            geoms.append(g)
            originals.append(m)
    if not images:
        return SegSplit(torch.zeros(0, 3, size, size, dtype=torch.uint8),
                        torch.zeros(0, 1, size, size, dtype=torch.uint8), [], [], [])
    return SegSplit(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(np.stack(masks)).unsqueeze(1).contiguous(), names, geoms, originals)


def load_npz(root: str | os.PathLike, size: int = 256, val_fraction: float = 0.1, test_fraction: float = 0.2,
             seed: int = 0) -> SegmentationData:
    """A folder of labelled challenge ``.npz`` cases -> SegmentationData (split by file, seeded; every
    label of a file becomes one binary case in the same split)."""
    root = Path(root)
    files = sorted(root.glob("*.npz")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no .npz cases found")
    idx, record = split_cases([SimpleNamespace(name=f.stem) for f in files], val_fraction=val_fraction,
                              test_fraction=test_fraction, seed=seed)
    splits = {k: _cases([files[i] for i in v], size) for k, v in idx.items()}
    record.update(root=str(root), layout="npz")
    return SegmentationData(root.name, splits["train"], splits["val"], splits["test"], size, "pad", record)
