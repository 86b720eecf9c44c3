"""MedMNIST 2D: subset registry, ``.npz`` / DermaMNIST-JPEG loaders and a checked download.

Facts (tasks, label names, split sizes, URLs, MD5s) are those of the ``medmnist`` package v3.0.2,
``INFO`` dict; medlite does not depend on that package.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medlite.data.base import ArraySplit, ClassificationData, DataError, data_root

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)  # image sizes published on zenodo (28 = MedMNIST v2, others = MedMNIST+)
SPLITS = ("train", "val", "test")
_ZENODO = "https://zenodo.org/records/10519652/files/{file}?download=1"
# MedMNIST's task strings -> ours
_TASK_MAP = {
    "binary-class": "binary",
    "multi-class": "multi-class",
    "ordinal-regression": "ordinal",
    "multi-label, binary-class": "multi-label",
}


@dataclass(frozen=True)
class SubsetInfo:
    """One MedMNIST 2D subset as published (official files, not whatever copy is on disk)."""

    name: str  # lower-case subset name, e.g. "breastmnist"
    task: str  # one of TASKS
    label_names: tuple[str, ...]  # in label-index order (per label for multi-label)
    channels: int  # 1 = grey, 3 = RGB
    n_samples: dict[str, int]  # official split sizes {"train", "val", "test"}
    urls: dict[int, str]  # image size (28/64/128/224) -> zenodo download URL
    md5: dict[int, str]  # image size -> MD5 of the official file
    license: str

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def filename(self, size: int = 28) -> str:
        """Official file name: ``<name>.npz`` for 28 px, ``<name>_<size>.npz`` otherwise."""
        _check_size(size)
        return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"


def _check_size(size: int) -> None:
    if size not in SIZES:
        raise DataError(f"MedMNIST files exist for sizes {SIZES}, not {size}")


def _subset(name, task, channels, n, labels, md5s, license="CC BY 4.0") -> SubsetInfo:
    md5 = dict(zip(SIZES, md5s.split(), strict=True))
    files = {s: (f"{name}.npz" if s == 28 else f"{name}_{s}.npz") for s in SIZES}
    return SubsetInfo(
        name=name,
        task=_TASK_MAP[task],
        label_names=tuple(labels),
        channels=channels,
        n_samples=dict(zip(SPLITS, n, strict=True)),
        urls={s: _ZENODO.format(file=f) for s, f in files.items()},
        md5=md5,
        license=license,
    )


_ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen")  # fmt: skip

MEDMNIST: dict[str, SubsetInfo] = {s.name: s for s in [
    _subset("pathmnist", "multi-class", 3, (89996, 10004, 7180),
            ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
             "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
            "a8b06965200029087d5bd730944a56c1 55aa9c1e0525abe5a6b9d8343a507616 "
            "ac42d08fb904d92c244187169d1fd1d9 2c51a510bcdc9cf8ddb2af93af1eadec"),
    _subset("chestmnist", "multi-label, binary-class", 1, (78468, 11219, 22433),
            ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
             "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
            "02c8a6516a18b556561a56cbdd36c4a8 9de6cd0b934ebb5b7426cfba5efbae16 "
            "db107e5590b27930b62dbaf558aebee3 45bd33e6f06c3e8cdb481c74a89152aa"),
    _subset("dermamnist", "multi-class", 3, (7007, 1003, 2005),
            ["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
             "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
             "vascular lesions"],
            "0744692d530f8e62ec473284d019b0c7 b70a2f5635c6199aeaa28c31d7202e1f "
            "2defd784463fa5243564e855ed717de1 8974907d8e169bef5f5b96bc506ae45d", "CC BY-NC 4.0"),
    _subset("octmnist", "multi-class", 1, (97477, 10832, 1000),
            ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
            "c68d92d5b585d8d81f7112f81e2d0842 e229e9440236b774d9f0dfef9d07bdaf "
            "0a97e76651ace45c5d943ee3f65b63ae abc493b6d529d5de7569faaef2773ba3"),
    _subset("pneumoniamnist", "binary-class", 1, (4708, 524, 624), ["normal", "pneumonia"],
            "28209eda62fecd6e6a2d98b1501bb15f 8f4eceb4ccffa70c672198ea285246c6 "
            "05b46931834c231683c68f40c47b2971 d6a3c71de1b945ea11211b03746c1fe1"),
    _subset("retinamnist", "ordinal-regression", 3, (1080, 120, 400), ["0", "1", "2", "3", "4"],
            "bd4c0672f1bba3e3a89f0e4e876791e4 afda852cc34dcda56f86ad2b2457dbcc "
            "e48e916a24454daf90583d4e6efb1a18 eae7e3b6f3fcbda4ae613ebdcbe35348"),
    _subset("breastmnist", "binary-class", 1, (546, 78, 156), ["malignant", "normal, benign"],
            "750601b1f35ba3300ea97c75c52ff8f6 742edef2a1fd1524b2efff4bd7ba9364 "
            "363e4b3f8d712e9b5de15470a2aaadf1 b56378a6eefa9fed602bb16d192d4c8b"),
    _subset("bloodmnist", "multi-class", 3, (11959, 1712, 3421),
            ["basophil", "eosinophil", "erythroblast",
             "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
             "monocyte", "neutrophil", "platelet"],
            "7053d0359d879ad8a5505303e11de1dc 2b94928a2ae4916078ca51e05b6b800b "
            "adace1e0ed228fccda1f39692059dd4c b718ff6835fcbdb22ba9eacccd7b2601"),
    _subset("tissuemnist", "multi-class", 1, (165466, 23640, 47280),
            ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
             "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
             "Proximal Tubule Segments", "Thick Ascending Limb"],
            "ebe78ee8b05294063de985d821c1c34b 123ece2eba09d0aa5d698fda57103344 "
            "61b955355d7425a89687b06cca3ce0c2 b077128c4a949f0a4eb01517f9037b9c"),
    _subset("organamnist", "multi-class", 1, (34561, 6491, 17778), _ORGANS,
            "68e3f8846a6bd62f0c9bf841c0d9eacc 2dcccc29b88e6da5a01161ef20cda288 "
            "eeae80d0a227a8d099027e1b3cfd3b60 50747347e05c87dd3aaf92c49f9f3170"),
    _subset("organcmnist", "multi-class", 1, (12975, 2392, 8216), _ORGANS,
            "b9ceb9546e10131b32923c5bbeaea2b1 3ce34a8724ea6f548e6db4744d03b6a9 "
            "773c1f009daa3fe5d9a2a201b2a7ed94 050f5e875dc056f6768abf94ec9995d1"),
    _subset("organsmnist", "multi-class", 1, (13932, 2452, 8827), _ORGANS,
            "9ab87b696fb54e2a387ebe992d6ed5f1 53a6d115339d874c25e309a994ff46d3 "
            "ded0c5fa01a95dc4978b956f613e9b8e b354719e553fbbb2513d5533f52a4cb1"),
]}  # fmt: skip


def cache_root() -> Path:
    """Folder for decoded-data caches: ``$XDG_CACHE_HOME/medlite``, else ``~/.cache/medlite``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "medlite"


# HAM10000 `dx` codes in DermaMNIST label order (alphabetical, as MedMNIST assigned them)
DERMA_DX = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def get_subset(name: str) -> SubsetInfo:
    """Registry entry for ``name`` (case-insensitive); DataError listing the valid names otherwise."""
    info = MEDMNIST.get(name.lower())
    if info is None:
        raise DataError(f"unknown MedMNIST subset {name!r}; known: {', '.join(MEDMNIST)}")
    return info


def subset_from_filename(path: str | os.PathLike) -> SubsetInfo | None:
    """``breastmnist.npz`` / ``breastmnist_64.npz`` -> the breastmnist entry; None if not a subset name."""
    stem = re.sub(r"_\d+$", "", Path(path).stem.lower())
    return MEDMNIST.get(stem)


# --------------------------------------------------------------------------------------------- npz
def load_npz(path: str | os.PathLike, subset: str | None = None) -> ClassificationData:
    """Load a MedMNIST ``.npz`` (keys ``{train,val,test}_{images,labels}``).

    Args:
        path: the file. Images are (N, H, W) grey or (N, H, W, 3) RGB uint8; labels are (N,), (N, 1)
            or (N, L) for multi-label.
        subset: registry name; inferred from the file name when None. A file whose name is not a
            subset gives a dataset whose task and label names are inferred from the labels.

    Returns:
        ClassificationData with images (N, C, H, W) uint8 and labels (N,) int64, or (N, L) float32
        for multi-label. Split sizes that differ from the official ones give a warning, not an error.
    """
    path = Path(path)
    info = get_subset(subset) if subset is not None else subset_from_filename(path)
    return _from_arrays(path, _read_npz(path), info)


def _from_arrays(path: Path, arrays: dict[str, np.ndarray], info: SubsetInfo | None) -> ClassificationData:
    """Validate arrays in npz layout read from ``path`` and build the dataset."""
    images = {s: _check_images(path, s, arrays[f"{s}_images"]) for s in SPLITS}
    empty = [s for s in SPLITS if len(images[s]) == 0]
    if empty:
        raise DataError(f"{path}: split(s) {', '.join(empty)} hold no images; train, val and test each need some")
    shapes = {tuple(images[s].shape[1:]) for s in SPLITS}
    if len(shapes) > 1:
        raise DataError(f"{path}: splits have different image shapes (C, H, W): {sorted(shapes)}")
    task, label_names = _task_and_labels(path, info, arrays)
    splits = {}
    for s in SPLITS:
        labels = _check_labels(path, s, arrays[f"{s}_labels"], task, len(label_names))
        if len(labels) != len(images[s]):
            raise DataError(
                f"{path}: {s}_images has {len(images[s])} images but {s}_labels has {len(labels)} labels"
            )
        splits[s] = ArraySplit(images[s], labels)
    notes = []
    if info is not None:
        sizes = {s: len(splits[s]) for s in SPLITS}
        if sizes != info.n_samples:
            notes.append(
                f"{path}: split sizes {sizes} differ from the official {info.n_samples} of "
                f"{info.name}; this is not the official file"
            )
            warnings.warn(notes[-1], stacklevel=3)
    return ClassificationData(
        name=info.name if info else path.stem,
        task=task,
        label_names=list(label_names),
        **splits,
        source=str(path),
        info={"format": "medmnist-npz", "warnings": notes},
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle and say so, which misleads
        raise DataError(f"{path}: not an .npz archive (an .npz is a zip of .npy arrays; this file is not a zip: "
                        "wrong file, or truncated?)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz]
            if missing:
                raise DataError(f"{path}: missing keys {missing} (found {sorted(npz.files)})")
            return {k: npz[k] for k in npz.files if k.split("_")[0] in SPLITS}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz file (corrupt or truncated?): {e}") from e


def _check_images(path: Path, split: str, a: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 array -> (N, C, H, W) uint8 tensor."""
    if a.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images must be uint8, got {a.dtype}")
    if a.ndim == 3:
        return torch.from_numpy(a).unsqueeze(1)
    if a.ndim == 4 and a.shape[-1] in (1, 3):
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    raise DataError(f"{path}: {split}_images has shape {a.shape}; expected (N, H, W) or (N, H, W, 3)")


def _task_and_labels(path: Path, info: SubsetInfo | None, arrays) -> tuple[str, tuple[str, ...]]:
    """The task and class names: the subset's, or for another npz inferred from the TRAIN labels, which must
    be 0..K-1 with K >= 2 and every label present (a gap, a single class, or a val/test label train never
    has would silently train a model with the wrong number of outputs)."""
    if info is not None:
        return info.task, info.label_names
    lab = {s: arrays[f"{s}_labels"] for s in SPLITS}
    if lab["train"].ndim == 2 and lab["train"].shape[1] > 1:
        return "multi-label", tuple(str(i) for i in range(lab["train"].shape[1]))
    try:
        seen = {s: np.unique(np.asarray(y).reshape(len(y), -1)[:, 0]) if len(y) else np.zeros(0)
                for s, y in lab.items()}
        train = {float(v) for v in seen["train"]}
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: labels are not numeric: {e}") from e
    if len(train) < 2:
        raise DataError(f"{path}: train_labels hold {len(train)} class(es) {sorted(train)}; a classifier needs "
                        "at least 2")
    n = int(max(train)) + 1
    missing = sorted(set(range(n)) - {int(v) for v in train if float(v).is_integer()})
    if missing:
        raise DataError(f"{path}: train_labels skip class(es) {missing} of 0..{n - 1}; labels must be 0..K-1 with "
                        "every class in train (renumber them, or give the subset name)")
    for s in ("val", "test"):
        extra = sorted({float(v) for v in seen[s]} - train)
        if extra:
            raise DataError(f"{path}: {s}_labels hold {[int(v) if v.is_integer() else v for v in extra]}, "
                            f"which train_labels never have (train classes 0..{n - 1})")
    return ("binary" if n == 2 else "multi-class"), tuple(str(i) for i in range(n))


def _check_labels(path: Path, split: str, y: np.ndarray, task: str, n: int) -> torch.Tensor:
    """Validate one split's labels -> (N,) int64, or (N, L) float32 for multi-label."""
    name = f"{path}: {split}_labels"
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == np.bool_):
        raise DataError(f"{name} has non-numeric dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
        raise DataError(f"{name} contains NaN")
    if task == "multi-label":
        if y.ndim != 2 or y.shape[1] != n:
            raise DataError(f"{name} has shape {y.shape}; expected (N, {n}) for multi-label")
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{name}: multi-label values must be 0 or 1")
        return torch.from_numpy(y.astype(np.float32))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name} has shape {y.shape}; expected (N,) or (N, 1)")
    if np.issubdtype(y.dtype, np.floating) and (y != np.round(y)).any():
        raise DataError(f"{name} has non-integer values")
    if y.size and (y.min() < 0 or y.max() >= n):
        raise DataError(f"{name} has values in [{y.min()}, {y.max()}], outside [0, {n - 1}] ({n} classes)")
    return torch.from_numpy(y.astype(np.int64))


# ------------------------------------------------------------------------------- DermaMNIST JPEG zip
_DERMA_NAME = re.compile(r"(?:^|/)(DermaMNIST_(train|val|test)_(\d+))\.jpe?g$", re.IGNORECASE)


def load_dermamnist_jpeg_zip(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> ClassificationData:
    """Load the DermaMNIST JPEG layout: a zip of ``images/DermaMNIST_{split}_NNNNN.jpg`` (28x28 RGB)
    and ``HAM10000_metadata.csv`` (``image_id,dx,lesion_id``; ``image_id`` is the file stem).

    The split comes from the file name, the label from ``dx`` (index in DERMA_DX = MedMNIST order),
    images are ordered by NNNNN. Decoded arrays are cached in official npz layout under ``cache_dir``
    (default ``$XDG_CACHE_HOME/medlite`` or ``~/.cache/medlite``), keyed by the zip's size and mtime.

    Returns:
        ClassificationData "dermamnist": images (N, 3, 28, 28) uint8, labels (N,) int64.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    st = path.stat()
    cache_dir = Path(cache_dir).expanduser() if cache_dir else cache_root()
    cache = cache_dir / f"{path.stem}-{st.st_size}-{st.st_mtime_ns}.npz"
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            log.debug("loaded %s from cache %s", path, cache)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            log.warning("ignoring unreadable cache %s: %s", cache, e)
    if arrays is None:
        arrays = _decode_derma_zip(path)
        _write_cache(cache, arrays)
    data = _from_arrays(path, arrays, MEDMNIST["dermamnist"])
    data.info.update({"format": "dermamnist-jpeg-zip", "cache": str(cache), "lossy_jpeg": True})
    return data


def _decode_derma_zip(path: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable zip file: {e}") from e
    with zf:
        names = zf.namelist()
        meta = [n for n in names if n.endswith("HAM10000_metadata.csv")]
        if not meta:
            raise DataError(f"{path}: no HAM10000_metadata.csv inside the zip")
        with zf.open(meta[0]) as f:
            rows = list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
        if not rows or not {"image_id", "dx"} <= set(rows[0]):
            raise DataError(f"{path}: {meta[0]} needs columns image_id,dx")
        dx = {r["image_id"]: r["dx"] for r in rows}
        found = {s: [] for s in SPLITS}
        for n in names:
            m = _DERMA_NAME.search(n)
            if m:
                found[m.group(2).lower()].append((int(m.group(3)), m.group(1), n))
        if not any(found.values()):
            raise DataError(f"{path}: no images/DermaMNIST_<split>_<n>.jpg files inside the zip")
        out = {}
        for s in SPLITS:
            images, labels = [], []
            for _, image_id, member in sorted(found[s]):
                if image_id not in dx:
                    raise DataError(f"{path}: {member} has no row in {meta[0]}")
                if dx[image_id] not in DERMA_DX:
                    raise DataError(
                        f"{path}: {meta[0]} gives {image_id} unknown dx {dx[image_id]!r}; "
                        f"expected one of {DERMA_DX}"
                    )
                try:
                    with Image.open(io.BytesIO(zf.read(member))) as im:
                        images.append(np.asarray(im.convert("RGB")))
                except (OSError, SyntaxError, ValueError, zipfile.BadZipFile) as e:
                    raise DataError(f"{path}: cannot decode {member}: {e}") from e
                labels.append(DERMA_DX.index(dx[image_id]))
            if len({a.shape for a in images}) > 1:
                raise DataError(f"{path}: {s} images differ in size: {sorted({a.shape for a in images})}")
            out[f"{s}_images"] = np.stack(images) if images else np.zeros((0, 28, 28, 3), np.uint8)
            out[f"{s}_labels"] = np.asarray(labels, dtype=np.uint8)
    log.info("decoded %d JPEGs from %s", sum(len(v) for v in found.values()), path)
    return out


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError as e:  # a read-only home must not stop loading
        log.warning("could not write cache %s: %s", cache, e)


# ---------------------------------------------------------------------------------- finding, download
def find_subset_file(subset: str, size: int = 28, root: str | os.PathLike | None = None) -> Path | None:
    """First existing file for ``subset`` under ``data_root(root)``, files of the asked size first.

    Looks for ``<subset>/<subset>.npz``, ``<subset>.npz`` (28 px), ``<subset>_<size>.npz``,
    ``<subset>/<subset>_<size>.npz`` and, for dermamnist, ``dermamnist_jpeg28/dermamnist_jpeg28.zip``;
    a file of another size is returned only when none of the asked size exists (the caller resizes).
    """
    info = get_subset(subset)
    base, name = data_root(root), info.name
    plain = [base / name / f"{name}.npz", base / f"{name}.npz"]
    sized = [base / f"{name}_{size}.npz", base / name / f"{name}_{size}.npz"]
    candidates = plain + sized if size == 28 else sized + plain
    if name == "dermamnist":
        candidates.append(base / "dermamnist_jpeg28" / "dermamnist_jpeg28.zip")
    for p in candidates:
        if p.is_file():
            return p
    return None


def download(
    subset: str,
    size: int = 28,
    root: str | os.PathLike | None = None,
    url: str | None = None,
    progress: bool = True,
    md5: str | None = None,
) -> Path:
    """Download the official ``subset`` file of ``size`` px to ``data_root(root)/<subset>/``.

    Streams to ``<file>.part``; a left-over ``.part`` is resumed with an HTTP Range request when the
    server honours it (else restarted). The MD5 is checked before the atomic rename; on mismatch the
    ``.part`` is removed and DataError names the file and both MD5s. An existing file is returned as is.

    Args:
        url: mirror or test server instead of zenodo; ``md5`` overrides the official MD5 (for tests
            or re-packed mirrors).
    """
    info = get_subset(subset)
    _check_size(size)
    url = url or info.urls[size]
    expected = (md5 or info.md5[size]).lower()
    dest = data_root(root) / info.name / info.filename(size)
    if dest.is_file():
        log.info("%s already exists; not downloading", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _fetch(url, part, progress)
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"{part}: download of {url} failed ({e}); run again to resume") from e
    actual = _md5(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        raise DataError(
            f"{dest}: MD5 mismatch for {url}: expected {expected}, got {actual}; "
            f"the partial file {part} was removed"
        )
    os.replace(part, dest)
    log.info("downloaded %s (md5 %s)", dest, actual)
    return dest


def _fetch(url: str, part: Path, progress: bool, chunk: int = 1 << 20) -> None:
    """Stream ``url`` into ``part``, resuming from its current length when the server allows."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the .part is not a prefix we can extend; restart
            raise
        log.info("server refused to resume %s; restarting", part)
        part.unlink()
        have, resp = 0, urllib.request.urlopen(url, timeout=60)
    with resp:
        resumed = (
            have and resp.status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {have}-")
        )
        if have and not resumed:
            log.info("server does not support resuming %s; restarting", url)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length else None
        with (
            open(part, "ab" if resumed else "wb") as f,
            Progress(
                *Progress.get_default_columns()[:-1],
                DownloadColumn(),
                TransferSpeedColumn(),
                disable=not progress,
                transient=True,
            ) as bar,
        ):
            task = bar.add_task(f"{part.name.removesuffix('.part')}", total=total, completed=have)
            while block := resp.read(chunk):
                f.write(block)
                bar.advance(task, len(block))


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
