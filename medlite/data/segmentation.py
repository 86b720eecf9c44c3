"""2D binary segmentation data: image/mask folders in the layouts users have, held in memory as tensors.

Layouts (``find_pairs(root, layout)``):

- ``folder``: ``root/images/<name>.<ext>`` and ``root/masks/<name><suffix>.<ext>``. The suffix is
  ``mask_suffix`` if given, else the first of ``"", "_mask", "_lesion", "_segmentation", "_Segmentation"``
  that matches every image.
- ``busi``: the UNeXt layout ``images/<class> (k).png`` + ``masks/0/<class> (k).png``, or the original
  BUSI download ``<class>/<class> (k).png`` + ``<class> (k)_mask.png`` (extra ``_mask_1`` … masks of the
  same image are merged; ``normal`` images, which have empty masks, are skipped).
- ``ph2``: ``images/IMDxxx.png`` + ``masks/IMDxxx_lesion.png``, or the original
  ``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` + ``IMDxxx_lesion/IMDxxx_lesion.bmp``.
- ``isic`` (ISIC 2018 Task 1): a folder whose name contains ``Input`` with ``ISIC_nnnnnnn.jpg`` and one whose
  name contains ``GroundTruth`` with ``ISIC_nnnnnnn_segmentation.png``.
- ``kvasir`` (Kvasir-SEG): ``images/cjxxx.jpg`` + ``masks/cjxxx.jpg`` (JPEG masks are thresholded at 128).

Every image is read once, turned into 3 channels (grey repeated) and resized to ``size`` x ``size`` either
by plain resizing (``mode="resize"``) or longest side + zero padding (``mode="pad"``). The :class:`Geometry`
of each case maps a prediction back to the original size (:func:`restore`), where metrics are computed
and masks saved. Original-size masks are kept in memory for that.

Bad input raises :class:`~medlite.data.base.DataError` naming the file: unreadable image or mask, an image
without a mask, a mask whose size differs from its image, a non-binary mask, an empty layout.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medlite.data.base import DataError, data_root
from medlite.data.frames import MODES, Geometry, letterbox, restore  # noqa: F401 (re-exported)
from medlite.data.io import PIL_EXTENSIONS, SUPPORTED_EXTENSIONS, ImageReadError, read_image, to_rgb8

log = logging.getLogger(__name__)

LAYOUTS = ("folder", "busi", "ph2", "isic", "kvasir")
MASK_SUFFIXES = ("", "_mask", "_lesion", "_segmentation", "_Segmentation")


@dataclass(frozen=True)
class SegPair:
    """One case: ``mask`` may be a tuple of files that are merged (BUSI's extra masks)."""

    name: str
    image: Path
    mask: tuple[Path, ...]


@dataclass
class SegSplit:
    """One split in memory.

    Attributes:
        images: (N, 3, S, S) uint8, RGB (grey images repeated).
        masks: (N, 1, S, S) uint8 in {0, 1}, in the model's frame.
        names: case names, N.
        geometry: per case, how to map back to the original size.
        originals: per case the original-size mask, (H, W) uint8 in {0, 1}.
        pairs: the files each case came from.
    """

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    geometry: list[Geometry]
    originals: list[np.ndarray]
    pairs: list[SegPair] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class SegmentationData:
    """Train / val / test splits of one dataset at one input size."""

    name: str
    train: SegSplit
    val: SegSplit
    test: SegSplit
    size: int
    mode: str
    split: dict = field(default_factory=dict)  # how the split was made (files, fold, seed), for the run record

    def splits(self) -> dict[str, SegSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}


# ---------------------------------------------------------------------------------------------- layouts
def _images_in(folder: Path, exts: Sequence[str] = SUPPORTED_EXTENSIONS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(tuple(exts))
                  and not p.name.startswith("."))


def _need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: folder not found (expected by layout '{layout}')")
    return path


def _stem(p: Path) -> str:
    return p.name[:-7] if p.name.lower().endswith(".nii.gz") else p.stem


def _match(images: list[Path], mask_dir: Path, suffixes: Sequence[str], layout: str) -> list[SegPair]:
    masks = {_stem(p): p for p in _images_in(mask_dir)}
    for suffix in suffixes:
        if all(_stem(i) + suffix in masks for i in images):
            return [SegPair(_stem(i), i, (masks[_stem(i) + suffix],)) for i in images]
    # name the first image that has no mask under any suffix, so the user knows what to fix
    for i in images:
        if not any(_stem(i) + s in masks for s in suffixes):
            raise DataError(f"{i}: no mask for this image in {mask_dir} (tried suffixes {list(suffixes)}; "
                            f"layout '{layout}')")
    raise DataError(f"{mask_dir}: masks use different suffixes {list(suffixes)}; pass mask_suffix")


def find_pairs(root: str | os.PathLike, layout: str = "folder", mask_suffix: str | None = None) -> list[SegPair]:
    """List the (image, mask) cases under ``root`` for one of :data:`LAYOUTS` (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    suffixes = (mask_suffix,) if mask_suffix is not None else MASK_SUFFIXES
    if layout == "busi" and not (root / "images").is_dir():
        pairs = _busi_original(root)
    elif layout == "ph2" and not (root / "images").is_dir():
        pairs = _ph2_original(root)
    elif layout == "isic":
        inp = [d for d in root.iterdir() if d.is_dir() and "input" in d.name.lower()]
        gt = [d for d in root.iterdir() if d.is_dir() and "groundtruth" in d.name.lower()]
        if len(inp) != 1 or len(gt) != 1:
            raise DataError(f"{root}: ISIC layout needs exactly one '*Input*' and one '*GroundTruth*' folder")
        pairs = _match(_images_in(inp[0], PIL_EXTENSIONS), gt[0], ("_segmentation",), layout)
    else:
        images = _images_in(_need_dir(root / "images", layout))
        mask_dir = _need_dir(root / "masks", layout)
        if layout == "busi" and (mask_dir / "0").is_dir():
            mask_dir = mask_dir / "0"
        if layout == "ph2":
            suffixes = ("_lesion",)
        pairs = _match(images, mask_dir, suffixes, layout)
    if not pairs:
        raise DataError(f"{root}: no images found for layout '{layout}'")
    return pairs


def _busi_original(root: Path) -> list[SegPair]:
    pairs = []
    for cls in ("benign", "malignant"):
        folder = root / cls
        if not folder.is_dir():
            continue
        files = _images_in(folder, PIL_EXTENSIONS)
        masks: dict[str, list[Path]] = {}
        for f in files:
            m = re.fullmatch(r"(.+)_mask(_\d+)?", f.stem)
            if m:
                masks.setdefault(m.group(1), []).append(f)
        for f in files:
            if "_mask" in f.stem:
                continue
            if f.stem not in masks:
                raise DataError(f"{f}: no mask for this image (expected '{f.stem}_mask.png'; layout 'busi')")
            pairs.append(SegPair(f.stem, f, tuple(sorted(masks[f.stem]))))
    if not pairs:
        raise DataError(f"{root}: BUSI layout needs images/ + masks/ or benign/ and malignant/ folders")
    return pairs


def _ph2_original(root: Path) -> list[SegPair]:
    base = root / "PH2 Dataset images" if (root / "PH2 Dataset images").is_dir() else root
    pairs = []
    for case in sorted(d for d in base.iterdir() if d.is_dir() and d.name.startswith("IMD")):
        img = case / f"{case.name}_Dermoscopic_Image" / f"{case.name}.bmp"
        mask = case / f"{case.name}_lesion" / f"{case.name}_lesion.bmp"
        if not img.is_file():
            raise DataError(f"{img}: dermoscopic image missing (layout 'ph2')")
        if not mask.is_file():
            raise DataError(f"{img}: no lesion mask at {mask} (layout 'ph2')")
        pairs.append(SegPair(case.name, img, (mask,)))
    return pairs


# ----------------------------------------------------------------------------------------- reading files
def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Any image medlite reads (PNG/JPEG/BMP/TIFF/DICOM/NIfTI) -> (H, W, 3) uint8 RGB, grey repeated."""
    try:
        return to_rgb8(read_image(path))
    except ImageReadError as e:
        raise DataError(str(e)) from e


def read_mask(path: str | os.PathLike, threshold: int | None = None) -> np.ndarray:
    """A mask file -> (H, W) uint8 in {0, 1}.

    PNG/BMP/TIFF masks must be binary: one background value 0 and at most one foreground value (1, 255 or
    any other single value); anything else raises DataError. JPEG masks (lossy) are thresholded at
    ``threshold`` (default 128); ``threshold`` forces thresholding for any format.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            a = np.asarray(im.convert("L") if im.mode not in ("1", "L", "I;16", "I") else im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: mask file not found") from e
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from e
    if a.ndim != 2:
        raise DataError(f"{path}: mask must have one channel; got shape {a.shape}")
    if threshold is None and path.suffix.lower() in (".jpg", ".jpeg"):
        threshold = 128
    if threshold is not None:
        return (a >= threshold).astype(np.uint8)
    values = np.unique(a)
    fg = values[values != 0]
    if len(fg) > 1:
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise DataError(f"{path}: mask is not binary (values {shown}); pass a threshold to binarise it")
    return (a != 0).astype(np.uint8)


def read_pair(pair: SegPair, threshold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> image (H, W, 3) uint8, mask (H, W) uint8 {0, 1}; several mask files are merged (union)."""
    image = read_rgb(pair.image)
    mask = None
    for m in pair.mask:
        a = read_mask(m, threshold)
        if a.shape != image.shape[:2]:
            raise DataError(f"{m}: mask is {a.shape[1]}x{a.shape[0]} (w x h) but its image {pair.image.name} "
                            f"is {image.shape[1]}x{image.shape[0]}")
        mask = a if mask is None else np.maximum(mask, a)
    return image, mask


# ------------------------------------------------------------------------------------------- geometry
# -------------------------------------------------------------------------------------------- splits
def read_name_list(path: str | os.PathLike) -> list[str]:
    """A split list: one case name per line (extensions are dropped; blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split list not found")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    return [n.rsplit(".", 1)[0] if n.lower().endswith(SUPPORTED_EXTENSIONS) else n for n in names]


def kfold_indices(n: int, k: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-fold: (train_idx, test_idx) for ``fold`` in [0, k)."""
    if not 0 <= fold < k or k < 2:
        raise ValueError(f"need 2 <= k and 0 <= fold < k; got k={k}, fold={fold}")
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(perm, k)
    test = np.sort(parts[fold])
    return np.sort(np.concatenate([p for i, p in enumerate(parts) if i != fold])), test


def _carve(idx: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed + 1).permutation(idx)
    n_val = max(1, round(len(idx) * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _list_indices(path, index: dict[str, int]) -> np.ndarray:
    names = read_name_list(path)
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(f"{path}: {len(missing)} names not in the dataset, e.g. '{missing[0]}'")
    return np.array(sorted(index[n] for n in names), dtype=np.int64)


def split_cases(pairs: list[SegPair], *, train_list=None, test_list=None, folds: int | None = None,
                fold: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0) -> tuple[dict[str, np.ndarray], dict]:
    """Indices of train / val / test, and a record of how they were chosen.

    - ``train_list`` / ``test_list`` (files of names): test = test_list, train = train_list (or the rest);
    - else ``folds``: seeded k-fold, test = fold ``fold``;
    - else a seeded random split with ``test_fraction``.
    Validation is always carved (seeded) from the training cases, so checkpoint selection never sees test.
    """
    names = [p.name for p in pairs]
    index = {n: i for i, n in enumerate(names)}
    if test_list is not None:
        test = _list_indices(test_list, index)
        if train_list is not None:
            train = _list_indices(train_list, index)
        else:
            train = np.setdiff1d(np.arange(len(names)), test)
        overlap = np.intersect1d(train, test)
        if len(overlap):
            raise DataError(f"{train_list}: {len(overlap)} cases are in both the train and test lists")
        record = {"kind": "lists", "train_list": str(train_list), "test_list": str(test_list)}
    elif folds:
        train, test = kfold_indices(len(names), folds, fold, seed)
        record = {"kind": "kfold", "folds": folds, "fold": fold}
    else:
        perm = np.random.default_rng(seed).permutation(len(names))
        n_test = max(1, round(len(names) * test_fraction))
        train, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
        record = {"kind": "random", "test_fraction": test_fraction}
    train, val = _carve(train, val_fraction, seed)
    record.update(seed=seed, val_fraction=val_fraction, n_train=len(train), n_val=len(val), n_test=len(test))
    return {"train": train, "val": val, "test": test}, record


def _load_case(pair: SegPair, size: int, mode: str, threshold: int | None):
    image, mask = read_pair(pair, threshold)
    x, g = letterbox(image, size, mode)
    m, _ = letterbox(mask, size, mode, mask=True)
    return x, m, g, mask


def build_split(pairs: list[SegPair], size: int, mode: str = "resize", threshold: int | None = None,
                progress: bool = False) -> SegSplit:
    """Read, check and resize ``pairs`` (a thread pool decodes) into one :class:`SegSplit`."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        cases = list(pool.map(lambda p: _load_case(p, size, mode, threshold), pairs))
    if not cases:
        return SegSplit(torch.zeros(0, 3, size, size, dtype=torch.uint8),
                        torch.zeros(0, 1, size, size, dtype=torch.uint8), [], [], [], [])
    images = torch.from_numpy(np.stack([c[0] for c in cases])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([c[1] for c in cases])).unsqueeze(1).contiguous()
    return SegSplit(images, masks, [p.name for p in pairs], [c[2] for c in cases], [c[3] for c in cases], pairs)


def load_segmentation(root: str | os.PathLike, layout: str = "folder", size: int = 256, mode: str = "resize",
                      mask_suffix: str | None = None, threshold: int | None = None, name: str | None = None,
                      **split_kwargs) -> SegmentationData:
    """Find, split and load a segmentation dataset into memory (see :func:`split_cases` for the split
    arguments). Empty ground-truth masks are allowed but logged, since Dice is undefined-by-convention there
    (see :mod:`medlite.metrics.segmentation`)."""
    pairs = find_pairs(root, layout, mask_suffix)
    idx, record = split_cases(pairs, **split_kwargs)
    splits = {k: build_split([pairs[i] for i in v], size, mode, threshold) for k, v in idx.items()}
    empty = [n for s in splits.values() for n, m in zip(s.names, s.originals, strict=True) if not m.any()]
    if empty:
        log.warning("%d case(s) have an empty mask, e.g. %s", len(empty), empty[0])
    record.update(root=str(root), layout=layout)
    return SegmentationData(name or Path(root).name, splits["train"], splits["val"], splits["test"], size, mode,
                            record)


def load_train_test(train_root: str | os.PathLike, test_root: str | os.PathLike, layout: str = "folder",
                    size: int = 256, mode: str = "resize", mask_suffix: str | None = None, seed: int = 0,
                    val_fraction: float = 0.1) -> SegmentationData:
    """Train on every case of ``train_root`` (validation carved from it, seeded) and test on every case of
    ``test_root`` (another hospital, another device), both in ``layout``."""
    train_pairs, test_pairs = find_pairs(train_root, layout, mask_suffix), find_pairs(test_root, layout, mask_suffix)
    train, val = _carve(np.arange(len(train_pairs)), val_fraction, seed)
    splits = {"train": build_split([train_pairs[i] for i in train], size, mode),
              "val": build_split([train_pairs[i] for i in val], size, mode),
              "test": build_split(test_pairs, size, mode)}
    record = {"kind": "folders", "train_root": str(train_root), "test_root": str(test_root), "layout": layout,
              "seed": seed, "val_fraction": val_fraction, "n_train": len(train), "n_val": len(val),
              "n_test": len(test_pairs)}
    return SegmentationData(Path(train_root).name, splits["train"], splits["val"], splits["test"], size, mode,
                            record)


BUILTIN = {
    # name: (folder under MEDLITE_DATA, layout, default split arguments)
    "busi": ("busi", "busi", {"train_list": "busi_train1.txt", "test_list": "busi_val1.txt"}),
    "ph2": ("ph2", "ph2", {"folds": 5}),
}


def load_builtin(name: str, size: int = 256, mode: str = "resize", root: str | os.PathLike | None = None,
                 fold: int = 0, split: int = 1, seed: int = 0, val_fraction: float = 0.1) -> SegmentationData:
    """BUSI (the shipped split lists ``busi_train{split}.txt`` / ``busi_val{split}.txt``; the shipped 'val'
    list is our test set and validation is carved from train) or PH2 (5-fold, ``fold``)."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in segmentation dataset {name!r}; choose from {list(BUILTIN)}")
    folder, layout, kwargs = BUILTIN[name]
    base = data_root(root) / folder
    kwargs = dict(kwargs)
    if name == "busi":
        kwargs = {"train_list": base / f"busi_train{split}.txt", "test_list": base / f"busi_val{split}.txt"}
    else:
        kwargs["fold"] = fold
    return load_segmentation(base, layout, size, mode, name=name, seed=seed, val_fraction=val_fraction, **kwargs)
