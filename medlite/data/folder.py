"""Users' own classification data: a folder of class subfolders, or a CSV of ``path,label[,split]``.

Images of any size and format Pillow reads (PNG, JPEG, BMP, TIFF; 16-bit scaled to 8 bits) are
resized to ``size`` x ``size`` (bilinear with antialiasing; the aspect ratio is not kept). If any image
is colour the dataset is RGB, grey images repeated over 3 channels; otherwise it is single-channel.
Without given splits, a seeded stratified split is made and can be written out as a CSV that
:func:`load_csv` reads back, so a run is reproducible.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from medlite.data.base import ArraySplit, ClassificationData, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
Record = tuple[Path, str, str]  # (image file, class name, split or "" when not given)


def load_image_folder(
    path: str | os.PathLike,
    size: int,
    seed: int = 0,
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_file_out: str | os.PathLike | None = None,
) -> ClassificationData:
    """Load ``path/<class>/*.png``, or ``path/{train,val,test}/<class>/*`` when already split.

    With ``train/`` present, ``test/`` is required and a missing ``val/`` is carved out of train
    (stratified, seeded). Files with other extensions are ignored; an empty class folder is an error.

    Returns:
        ClassificationData: images (N, C, size, size) uint8, labels (N,) int64 indexing the sorted
        class names.
    """
    root = Path(path)
    records = folder_records(root, seed, split_ratios)
    return _build(records, root.name, root, size, seed, split_ratios, split_file_out)


def folder_records(root: Path, seed: int = 0, split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
                   ) -> list[Record]:
    """The (file, class, split) records of a class folder, nothing decoded (split "" when not pre-split)."""
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    if (root / "train").is_dir():
        if not (root / "test").is_dir():
            raise DataError(f"{root}: has train/ but no test/ folder")
        records = [r for s in SPLITS if (root / s).is_dir() for r in _scan_classes(root / s, s)]
        if not (root / "val").is_dir():
            records = _carve_val(records, seed, split_ratios)
        return records
    return _scan_classes(root, "")


def load_csv(
    path: str | os.PathLike,
    size: int,
    seed: int = 0,
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_file_out: str | os.PathLike | None = None,
    allow_outside: bool = False,
) -> ClassificationData:
    """Load a CSV with header ``path,label[,split]``; paths relative to the CSV, labels class names.

    When a ``split`` column is present every row needs train, val or test; otherwise a seeded
    stratified split is made with ``split_ratios`` (train, val, test).

    Every path must resolve inside the CSV's folder (``../`` and absolute paths that leave it are refused
    before any file is opened), so a CSV from elsewhere cannot make medlite read arbitrary files. To allow
    it on purpose: ``allow_outside=True``, or set the environment variable ``MEDLITE_CSV_ALLOW_OUTSIDE=1``
    (for the CLI).
    """
    path = Path(path)
    return _build(csv_records(path, allow_outside), path.stem, path, size, seed, split_ratios, split_file_out)


def csv_records(path: Path, allow_outside: bool = False) -> list[Record]:
    """The (file, class, split) records of a CSV (see :func:`load_csv`), nothing decoded."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    allow_outside = allow_outside or os.environ.get("MEDLITE_CSV_ALLOW_OUTSIDE", "") == "1"
    base = path.parent.resolve()
    try:
        records = _read_csv_rows(path, base, allow_outside)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text CSV ({e.reason} at byte {e.start})") from e
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from e
    if not records:
        raise DataError(f"{path}: no rows")
    return records


def _read_csv_rows(path: Path, base: Path, allow_outside: bool) -> list[Record]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if not {"path", "label"} <= set(fields):
            raise DataError(f"{path}: header must contain path,label[,split]; got {fields}")
        reader.fieldnames = fields
        has_split = "split" in fields
        records = []
        for line, row in enumerate(reader, start=2):
            split = (row.get("split") or "").strip().lower() if has_split else ""
            if has_split and split not in SPLITS:
                raise DataError(f"{path}, line {line}: unknown split {row.get('split')!r} (train/val/test)")
            label = (row.get("label") or "").strip()
            if not label or not (row.get("path") or "").strip():
                raise DataError(f"{path}, line {line}: empty path or label")
            image = path.parent / row["path"].strip()
            if not allow_outside and not image.resolve().is_relative_to(base):
                raise DataError(f"{path}, line {line}: {row['path'].strip()!r} resolves outside the CSV's folder "
                                f"{base}; move the images under it, or allow it explicitly with "
                                "MEDLITE_CSV_ALLOW_OUTSIDE=1")
            records.append((image, label, split))
    return records


# ----------------------------------------------------------------------------------------- helpers
def _scan_classes(folder: Path, split: str) -> list[Record]:
    records = []
    for cls in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in cls.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(f"{cls}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} files)")
        records += [(f, cls.name, split) for f in files]
    return records


def _stratified_split(labels: list[str], seed: int, ratios: tuple[float, float, float]) -> list[str]:
    """Per class: shuffle with ``seed``, then round(n * val) to val, round(n * test) to test, the rest
    (at least one) to train. Returns one split name per label."""
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise DataError(f"split_ratios must be 3 non-negative numbers (train, val, test), got {ratios}")
    r = np.asarray(ratios, dtype=float) / sum(ratios)
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    for cls in sorted(by_class):
        idx = np.asarray(by_class[cls])[rng.permutation(len(by_class[cls]))]
        n = len(idx)
        n_test = min(int(round(n * r[2])), n - 1)
        n_val = min(int(round(n * r[1])), n - 1 - n_test)
        for j, i in enumerate(idx):
            out[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return out


def _carve_val(records: list[Record], seed: int, ratios: tuple[float, float, float]) -> list[Record]:
    train = [r for r in records if r[2] == "train"]
    tr, va, _ = ratios
    splits = _stratified_split([r[1] for r in train], seed, (tr, va, 0.0))
    return [(p, c, s) for (p, c, _), s in zip(train, splits, strict=True)] + [
        r for r in records if r[2] != "train"
    ]


def _build(records, name, source, size, seed, split_ratios, split_file_out) -> ClassificationData:
    classes = sorted({r[1] for r in records})
    if len(classes) < 2:
        raise DataError(f"{source}: needs at least 2 classes, found {classes}")
    given = all(r[2] for r in records)
    if not given:
        splits = _stratified_split([r[1] for r in records], seed, split_ratios)
        records = [(p, c, s) for (p, c, _), s in zip(records, splits, strict=True)]
    seen = {r[1] for r in records if r[2] == "train"}
    for p, c, s in records:
        if c not in seen:
            raise DataError(f"{source}: class {c!r} of {p} ({s}) never appears in train")
    empty = [s for s in SPLITS if not any(r[2] == s for r in records)]
    if empty:
        raise DataError(f"{source}: split(s) {empty} would be empty; add images or change split_ratios")
    if split_file_out is not None:
        write_split_file(records, split_file_out)
    images, colour = _decode_all([r[0] for r in records], size)
    index = {c: i for i, c in enumerate(classes)}
    parts = {}
    for s in SPLITS:
        rows = [i for i, r in enumerate(records) if r[2] == s]
        x = _stack([images[i] for i in rows], colour)
        y = torch.tensor([index[records[i][1]] for i in rows], dtype=torch.int64)
        parts[s] = ArraySplit(x, y)
    counts = {s: dict(Counter(r[1] for r in records if r[2] == s)) for s in SPLITS}
    log.info("%s: %s", source, {s: len(parts[s]) for s in SPLITS})
    return ClassificationData(
        name=name,
        task="binary" if len(classes) == 2 else "multi-class",
        label_names=classes,
        **parts,
        source=str(source),
        info={
            "split": "given" if given else "seeded",
            "seed": seed,
            "split_ratios": list(split_ratios),
            "split_file": str(split_file_out) if split_file_out else None,
            "class_counts": counts,
        },
    )


def write_split_file(records: list[Record], out: str | os.PathLike) -> Path:
    """Write ``path,label,split`` with paths relative to the CSV's folder (what load_csv reads). The images
    usually lie outside that folder (a run folder), so reading the file back needs ``allow_outside=True``
    (``MEDLITE_CSV_ALLOW_OUTSIDE=1`` for the CLI)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = os.path.abspath(out.parent)  # abspath, not resolve: keep the user's symlinks
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for p, c, s in records:
            w.writerow([Path(os.path.relpath(os.path.abspath(p), base)).as_posix(), c, s])
    log.info("wrote split file %s", out)
    return out


def _decode_all(paths: list[Path], size: int) -> tuple[list[np.ndarray], bool]:
    """Decode and resize with a thread pool -> [(size, size) or (size, size, 3) uint8], any colour?"""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: _read_image(p, size), paths))
    return images, any(a.ndim == 3 for a in images)


def _stack(images: list[np.ndarray], colour: bool) -> torch.Tensor:
    """List of (H, W) / (H, W, 3) uint8 -> (N, C, H, W) uint8, grey repeated when ``colour``."""
    if colour:
        images = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in images]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return torch.from_numpy(np.stack(images)).unsqueeze(1)


def _read_image(path: Path, size: int) -> np.ndarray:
    """One file -> (size, size) uint8 if grey, (size, size, 3) uint8 if colour."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                # 16-bit data -> 8 bits by the full 16-bit range (65535 -> 255)
                a = np.asarray(im, dtype=np.float32)
                if not np.isfinite(a).all():
                    raise DataError(f"{path}: image holds NaN or infinite values")
                sixteen = im.mode.startswith("I;16") or a.max(initial=0) > 255
                im = Image.fromarray(np.clip(np.round(a / 257.0 if sixteen else a), 0, 255).astype(np.uint8))
            elif im.mode in ("1", "L", "LA"):
                im = im.convert("L")
            else:  # RGB, RGBA, P, CMYK, YCbCr, ...: alpha is dropped
                im = im.convert("RGB")
            im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable or corrupt image: {e}") from e
