"""Shared fixtures: real data location, small synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _need_data(path: Path) -> Path:
    if path.exists():
        return path
    msg = f"real data not found at {path} (set MEDLITE_DATA to the shared data folder)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """``$MEDLITE_DATA``; under CI=true a missing folder fails the test instead of skipping it."""
    env = os.environ.get("MEDLITE_DATA")
    if not env:
        if os.environ.get("CI") == "true":
            pytest.fail("MEDLITE_DATA is not set; CI must point it at the shared data folder")
        pytest.skip("MEDLITE_DATA is not set")
    return _need_data(Path(env))


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """A learnable 3-class MedMNIST-style npz: class = which third of the image is bright."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, :, c * 5 : c * 5 + 5] += 150
        return x, y.astype(np.uint8).reshape(-1, 1)

    arrays = {}
    for split, n in (("train", 96), ("val", 48), ("test", 48)):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = make(n)
    path = tmp_path / "tiny.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture
def seg_folder(tmp_path: Path) -> Path:
    """12 cases of 48x72 images with a bright rectangle as the lesion."""
    rng = np.random.default_rng(0)
    for i in range(12):
        img = rng.integers(0, 60, (48, 72, 3), dtype=np.uint8)
        m = np.zeros((48, 72), np.uint8)
        r, c = rng.integers(4, 20), rng.integers(4, 40)
        m[r:r + 20, c:c + 24] = 255
        img[m > 0] += 150
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "images" / f"case{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"case{i}_mask.png")
    return tmp_path


@pytest.fixture
def make_npz(tmp_path):
    """``make_npz(name, **kw)`` writes ``tmp_path/name`` with :func:`write_npz` and returns its path."""
    return lambda name="tiny.npz", **kw: write_npz(tmp_path / name, **kw)


def write_npz(path: Path, sizes=(6, 3, 3), hw=(8, 8), colour=False, classes=2, label_shape="n1", **override):
    """Official-layout npz with random uint8 images; ``override`` replaces or (value None) drops keys."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        shape = (n, *hw, 3) if colour else (n, *hw)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        y = (np.arange(n) % classes).astype(np.uint8)
        arrays[f"{split}_labels"] = y[:, None] if label_shape == "n1" else y
    for k, v in override.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path
