"""Segmentation data layer: every layout from a tiny generated folder, splits, geometry, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medlite.data.base import DataError
from medlite.data.segmentation import (
    Geometry,
    find_pairs,
    kfold_indices,
    letterbox,
    load_builtin,
    load_segmentation,
    read_mask,
    restore,
    split_cases,
)


def _case(img_path: Path, mask_path: Path, h: int = 40, w: int = 60, colour: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if colour else (h, w)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(img_path)
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: w // 2] = 255
    Image.fromarray(m).save(mask_path)


def _folder(root: Path, n: int = 10, suffix: str = "", img_ext: str = ".png", mask_ext: str = ".png") -> Path:
    for i in range(n):
        _case(root / "images" / f"c{i:02d}{img_ext}", root / "masks" / f"c{i:02d}{suffix}{mask_ext}", seed=i)
    return root


@pytest.mark.parametrize("suffix", ["", "_mask", "_segmentation"])
def test_folder_layout_detects_suffix(tmp_path, suffix):
    pairs = find_pairs(_folder(tmp_path, 4, suffix), "folder")
    assert [p.name for p in pairs] == ["c00", "c01", "c02", "c03"]
    assert pairs[0].mask[0].name == f"c00{suffix}.png"


def test_busi_layouts(tmp_path):
    # UNeXt layout: images/<class> (k).png + masks/0/<class> (k).png
    for name in ("benign (1)", "malignant (2)"):
        _case(tmp_path / "a" / "images" / f"{name}.png", tmp_path / "a" / "masks" / "0" / f"{name}.png", colour=False)
    assert {p.name for p in find_pairs(tmp_path / "a", "busi")} == {"benign (1)", "malignant (2)"}
    # original download: extra masks of one image are merged
    b = tmp_path / "b"
    _case(b / "benign" / "benign (1).png", b / "benign" / "benign (1)_mask.png")
    m2 = np.zeros((40, 60), np.uint8)
    m2[0:5, 50:60] = 255
    Image.fromarray(m2).save(b / "benign" / "benign (1)_mask_1.png")
    pairs = find_pairs(b, "busi")
    assert len(pairs) == 1 and len(pairs[0].mask) == 2
    d = load_segmentation(b, "busi", size=32, folds=0, test_fraction=0.0, val_fraction=0.0)
    merged = d.train.originals[0] if len(d.train) else d.test.originals[0]
    assert merged[0:5, 50:60].all() and merged[20, 20] == 1


def test_ph2_isic_kvasir_layouts(tmp_path):
    _case(tmp_path / "ph2" / "images" / "IMD002.png", tmp_path / "ph2" / "masks" / "IMD002_lesion.png")
    assert find_pairs(tmp_path / "ph2", "ph2")[0].name == "IMD002"
    orig = tmp_path / "ph2o" / "PH2 Dataset images" / "IMD003"
    _case(orig / "IMD003_Dermoscopic_Image" / "IMD003.bmp", orig / "IMD003_lesion" / "IMD003_lesion.bmp")
    assert find_pairs(tmp_path / "ph2o", "ph2")[0].name == "IMD003"
    isic = tmp_path / "isic"
    _case(isic / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg",
          isic / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png")
    assert find_pairs(isic, "isic")[0].name == "ISIC_0000000"
    kv = _folder(tmp_path / "kvasir", 2, img_ext=".jpg", mask_ext=".jpg")
    d = load_segmentation(kv, "kvasir", size=32, folds=0, test_fraction=0.5, val_fraction=0.5)
    assert set(np.unique(d.test.masks.numpy())) <= {0, 1}  # lossy JPEG masks are thresholded


def test_load_split_geometry_and_restore(tmp_path):
    root = _folder(tmp_path, 10)
    d = load_segmentation(root, "folder", size=32, mode="pad", folds=5, fold=1)
    assert (len(d.train), len(d.val), len(d.test)) == (7, 1, 2)
    assert d.train.images.shape == (7, 3, 32, 32) and d.train.masks.shape == (7, 1, 32, 32)
    g = d.test.geometry[0]
    assert (g.height, g.width, g.new_w, g.new_h) == (40, 60, 32, 21)
    back = restore(d.test.masks[0, 0].float(), g) > 0.5
    assert back.shape == (40, 60)
    # the mask survives the round trip up to resampling at the edges
    inter = (back & (d.test.originals[0] > 0)).sum()
    assert 2 * inter / (back.sum() + d.test.originals[0].sum()) > 0.9


def test_split_lists_and_kfold(tmp_path):
    root = _folder(tmp_path, 10)
    (tmp_path / "train.txt").write_text("\n".join(f"c{i:02d}" for i in range(7)) + "\n")
    (tmp_path / "test.txt").write_text("c07.png\nc08\nc09\n")
    idx, rec = split_cases(find_pairs(root), train_list=tmp_path / "train.txt", test_list=tmp_path / "test.txt")
    assert sorted(idx["test"].tolist()) == [7, 8, 9] and len(idx["train"]) + len(idx["val"]) == 7
    assert rec["kind"] == "lists"
    tests = [kfold_indices(23, 5, f, seed=3)[1] for f in range(5)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(23))  # every case tested once


def test_letterbox_modes():
    a = np.zeros((50, 100, 3), np.uint8)
    x, g = letterbox(a, 64, "resize")
    assert x.shape == (64, 64, 3) and g == Geometry(50, 100, 64, 64, 64)
    x, g = letterbox(a, 64, "pad")
    assert x.shape == (64, 64, 3) and (g.new_h, g.new_w, g.top, g.left) == (32, 64, 16, 0)


# ---------------------------------------------------------------------------------------------- bad input
def test_image_without_mask(tmp_path):
    root = _folder(tmp_path, 3)
    _case(root / "images" / "orphan.png", tmp_path / "elsewhere.png")
    with pytest.raises(DataError, match="orphan.png: no mask"):
        find_pairs(root)


def test_size_mismatch(tmp_path):
    root = _folder(tmp_path, 2)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "c01.png")
    with pytest.raises(DataError, match=r"c01.png: mask is 10x10 .* is 60x40"):
        load_segmentation(root, size=32, folds=0, test_fraction=0.5, val_fraction=0.5)


def test_non_binary_mask(tmp_path):
    p = tmp_path / "m.png"
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).save(p)
    with pytest.raises(DataError, match="m.png: mask is not binary"):
        read_mask(p)
    assert read_mask(p, threshold=50).sum() == 50


def test_unreadable_files(tmp_path):
    root = _folder(tmp_path, 2)
    (root / "images" / "c01.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="c01.png"):
        load_segmentation(root, size=32, folds=0, test_fraction=0.5, val_fraction=0.5)
    (root / "images" / "c01.png").unlink()
    (root / "masks" / "c00.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="c00.png: cannot read mask"):
        load_segmentation(root, size=32, folds=0, test_fraction=0.5, val_fraction=0.5)


def test_missing_folder_and_unknown_names(tmp_path):
    with pytest.raises(DataError, match="not found"):
        find_pairs(tmp_path / "nope")
    root = _folder(tmp_path / "d", 3)
    (tmp_path / "t.txt").write_text("ghost\n")
    with pytest.raises(DataError, match="t.txt: 1 names not in the dataset"):
        split_cases(find_pairs(root), test_list=tmp_path / "t.txt")


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.data
def test_real_busi_and_ph2(real_data_root):
    busi = load_builtin("busi", size=64, root=real_data_root)
    assert (len(busi.train) + len(busi.val), len(busi.test)) == (452, 195)
    assert set(busi.train.names).isdisjoint(busi.test.names)
    ph2 = load_builtin("ph2", size=64, root=real_data_root, fold=4)
    assert (len(ph2.train), len(ph2.val), len(ph2.test)) == (72, 8, 20)
    assert all(m.any() for m in ph2.test.originals)
    for g, m in zip(ph2.test.geometry, ph2.test.originals, strict=True):
        assert m.shape == (g.height, g.width) and m.shape[1] > 600  # PH2 images are about 765 x 572
