"""Duplicates within and across the splits of a dataset: exact copies and near copies (re-encoded, resized,
slightly cropped), the train/test leakage that public medical sets often carry.

Two fingerprints per image, computed on the images as the model sees them (decoded, resized to the
training size, uint8):

- **exact**: a BLAKE2 digest of the pixel bytes. Byte-identical files, and different files that decode to
  the same pixels, share it.
- **near**: two steps. Candidates: a 64-bit perceptual hash (pHash: the image in grey, resized to 32x32,
  2-D DCT, the 8x8 lowest frequencies without the DC term compared with their median) within
  ``threshold`` bits (default :data:`THRESHOLD` = 10). Confirmed: the mean absolute pixel difference of
  the two images (same size, all channels, 0-255) is at most ``max_mad`` (default :data:`MAX_MAD` = 6).
  The hash alone cannot tell a re-encoded copy from a different scan of similar anatomy (on
  PneumoniaMNIST hundreds of distinct test X-rays lie within 10 bits of a training image); the pixel
  check can (re-encodes and resizes differ by 0-5 grey levels, distinct X-rays by 9 or more).

The defaults are measured, not guessed: ``benchmarks/leakage.py`` plants copies, JPEG re-encodes,
resizes and 1-pixel crops of test images into train on the shared MedMNIST subsets and records the share of
planted leaks found and what the check reports on the untouched data (``benchmarks/results/leakage.md``).

Entry points: :func:`find_duplicates` (the pairs), :func:`leakage_report` (counts per split pair and class,
label conflicts, the test images with a twin in train), :func:`write_pairs` (the CSV in a run folder).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from medlite.data.base import ArraySplit, ClassificationData

THRESHOLD = 10  # pHash bits of 64 for a candidate; see benchmarks/results/leakage.md
MAX_MAD = 6.0  # mean absolute pixel difference (0-255) that confirms a candidate
HASH_SIZE = 8
PAIR_ORDER = ("train", "val", "test")
_NEAR_WITHIN_MAX = 40_000  # within one split, near pairs cost N^2 / 2 comparisons: exact only above this


@dataclass(frozen=True)
class DuplicatePair:
    """Image ``index_a`` of ``split_a`` and image ``index_b`` of ``split_b`` (a before b in train, val,
    test order; a < b within one split). ``distance``: differing pHash bits; ``mad``: mean absolute pixel
    difference (both 0 for exact copies)."""

    split_a: str
    index_a: int
    split_b: str
    index_b: int
    kind: str  # "exact" | "near"
    distance: int
    mad: float
    label_a: str
    label_b: str


def exact_hashes(images: torch.Tensor | np.ndarray) -> list[bytes]:
    """(N, C, H, W) uint8 -> N digests of the pixel bytes."""
    a = np.ascontiguousarray(np.asarray(images))
    return [hashlib.blake2b(x.tobytes(), digest_size=16).digest() for x in a]


def phash(images: torch.Tensor | np.ndarray, batch: int = 4096) -> np.ndarray:
    """(N, C, H, W) uint8 (or float in [0, 1]) -> (N,) uint64 perceptual hashes (see the module docstring)."""
    from scipy.fft import dctn

    x = torch.as_tensor(np.asarray(images))
    out = np.empty(len(x), np.uint64)
    weights = 2 ** np.arange(63, -1, -1, dtype=np.uint64)
    for i in range(0, len(x), batch):
        b = x[i:i + batch].float()
        if b.shape[1] == 3:
            b = (0.299 * b[:, 0] + 0.587 * b[:, 1] + 0.114 * b[:, 2])[:, None]
        b = torch.nn.functional.interpolate(b[:, :1], size=(4 * HASH_SIZE, 4 * HASH_SIZE), mode="bilinear",
                                            antialias=True, align_corners=False)[:, 0].numpy()
        low = dctn(b, axes=(1, 2), norm="ortho")[:, :HASH_SIZE, :HASH_SIZE].reshape(len(b), -1)
        bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
        out[i:i + batch] = (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return out


def _label_strings(split: ArraySplit, names: list[str]) -> list[str]:
    y = split.labels.numpy()
    if y.ndim == 2:  # multi-label: the set of present labels
        return ["+".join(names[j] for j in np.flatnonzero(r > 0.5)) or "(none)" for r in y]
    return [names[int(v)] if 0 <= int(v) < len(names) else str(int(v)) for v in y]


def _near_pairs(ha: np.ndarray, hb: np.ndarray, xa: torch.Tensor, xb: torch.Tensor, threshold: int,
                max_mad: float, same: bool, chunk: int = 1024):
    """(i, j, distance, mad): pHash within ``threshold`` bits and pixels within ``max_mad`` (i < j if ``same``)."""
    for s in range(0, len(ha), chunk):
        d = np.bitwise_count(ha[s:s + chunk, None] ^ hb[None, :])
        ii, jj = np.nonzero(d <= threshold)
        if same:
            keep = s + ii < jj
            ii, jj = ii[keep], jj[keep]
        for c in range(0, len(ii), 8192):
            i, j = ii[c:c + 8192], jj[c:c + 8192]
            mad = (xa[s + i].float() - xb[j].float()).abs().flatten(1).mean(1).numpy()
            for k in np.flatnonzero(mad <= max_mad).tolist():
                yield s + int(i[k]), int(j[k]), int(d[i[k], j[k]]), round(float(mad[k]), 2)


def find_duplicates(data: ClassificationData, threshold: int = THRESHOLD,
                    max_mad: float = MAX_MAD) -> list[DuplicatePair]:
    """Every exact and near duplicate pair within and across train / val / test.

    Near pairs within one split are searched only up to 40,000 images in it (exact ones always).
    An exact pair is not listed again as near.
    """
    if not 0 <= threshold <= 64:
        raise ValueError(f"threshold must be 0..64 bits; got {threshold}")
    splits = data.splits()
    labels = {k: _label_strings(v, data.label_names) for k, v in splits.items()}
    exact = {k: exact_hashes(v.images) for k, v in splits.items()}
    near = {k: phash(v.images) for k, v in splits.items()}
    pairs: list[DuplicatePair] = []
    seen: set[tuple[str, int, str, int]] = set()
    by_digest: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
    for k in PAIR_ORDER:
        for i, h in enumerate(exact[k]):
            by_digest[h].append((k, i))
    for members in by_digest.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                (sa, ia), (sb, ib) = members[x], members[y]
                seen.add((sa, ia, sb, ib))
                pairs.append(DuplicatePair(sa, ia, sb, ib, "exact", 0, 0.0, labels[sa][ia], labels[sb][ib]))
    for a_i, sa in enumerate(PAIR_ORDER):
        for sb in PAIR_ORDER[a_i:]:
            if sa == sb and len(near[sa]) > _NEAR_WITHIN_MAX:
                continue
            for ia, ib, dist, mad in _near_pairs(near[sa], near[sb], splits[sa].images, splits[sb].images,
                                                 threshold, max_mad, same=sa == sb):
                if (sa, ia, sb, ib) not in seen:
                    pairs.append(DuplicatePair(sa, ia, sb, ib, "near", dist, mad, labels[sa][ia], labels[sb][ib]))
    return pairs


def leakage_report(data: ClassificationData, threshold: int = THRESHOLD, max_mad: float = MAX_MAD,
                   pairs: list[DuplicatePair] | None = None) -> dict:
    """Counts of duplicate pairs per split pair and kind, per class of the second image, label conflicts
    (duplicates with different labels), and the val / test images with a twin in train.

    Returns:
        {"threshold", "pairs": n, "by_splits": {"train-test": {"exact": n, "near": n}, ...},
         "by_class": {"train-test": {class: n}}, "label_conflicts": n,
         "twinned": {"val": [indices], "test": [indices]}, "twinned_counts": {"val": n, "test": n},
         "clean": {"val": n, "test": n}}
    """
    pairs = find_duplicates(data, threshold, max_mad) if pairs is None else pairs
    by_splits: dict[str, Counter] = defaultdict(Counter)
    by_class: dict[str, Counter] = defaultdict(Counter)
    twinned: dict[str, set[int]] = {"val": set(), "test": set()}
    for p in pairs:
        key = f"{p.split_a}-{p.split_b}"
        by_splits[key][p.kind] += 1
        by_class[key][p.label_b] += 1
        if p.split_a == "train" and p.split_b in twinned:
            twinned[p.split_b].add(p.index_b)
    return {"threshold": threshold, "max_mad": max_mad, "pairs": len(pairs),
            "by_splits": {k: dict(v) for k, v in sorted(by_splits.items())},
            "by_class": {k: dict(v) for k, v in sorted(by_class.items())},
            "label_conflicts": sum(p.label_a != p.label_b for p in pairs),
            "twinned": {k: sorted(v) for k, v in twinned.items()},
            "twinned_counts": {k: len(v) for k, v in twinned.items()},
            "clean": {k: len(getattr(data, k)) - len(v) for k, v in twinned.items()}}


def summary_line(report: dict) -> str:
    """One line for a log: the leaks that matter (train-test, train-val) with counts, else 'none'."""
    parts = []
    for key in ("train-test", "train-val"):
        c = report["by_splits"].get(key)
        if c:
            n = report["twinned_counts"][key.split("-")[1]]
            classes = ", ".join(f"'{k}' {v}" for k, v in sorted(report.get("by_class", {}).get(key, {}).items()))
            parts.append(f"{n} {key.split('-')[1]} image(s) have a twin in train ({c.get('exact', 0)} exact, "
                         f"{c.get('near', 0)} near pairs{'; pairs by class: ' + classes if classes else ''})")
    within = sum(sum(c.values()) for k, c in report["by_splits"].items() if k.split("-")[0] == k.split("-")[1])
    if within:
        parts.append(f"{within} duplicate pair(s) within splits")
    if report["label_conflicts"]:
        parts.append(f"{report['label_conflicts']} duplicate pair(s) carry different labels")
    return "; ".join(parts) if parts else "no duplicates across or within the splits"


def clean_split(split: ArraySplit, twinned: list[int]) -> ArraySplit:
    """``split`` without the images listed in ``twinned`` (those with a twin in train)."""
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[torch.as_tensor(twinned, dtype=torch.long)] = False
    return ArraySplit(split.images[keep], split.labels[keep])


def write_pairs(pairs: list[DuplicatePair], path: str | os.PathLike) -> Path:
    """The pairs as CSV (one row per pair, the fields of :class:`DuplicatePair`)."""
    from medlite.files import atomic_write

    path = Path(path)
    fields = list(DuplicatePair.__dataclass_fields__)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(asdict(p) for p in pairs)

    atomic_write(path, write)
    return path
