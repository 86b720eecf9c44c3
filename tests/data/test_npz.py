from __future__ import annotations

import numpy as np
import pytest

from medlite.data.base import DataError
from medlite.data.npz import labels_to_masks, load_npz, masks_to_labels, read_npz, write_npz


def _case(rng, h=30, w=45):
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    gts = np.zeros((h, w), np.uint8)
    gts[3:10, 4:15] = 1
    gts[15:25, 20:40] = 2
    boxes = np.array([[4, 3, 14, 9], [20, 15, 39, 24]], np.float32)
    return img, gts, boxes


def test_npz_round_trip(tmp_path):
    img, gts, boxes = _case(np.random.default_rng(0))
    np.savez(tmp_path / "case.npz", imgs=img, gts=gts, boxes=boxes)
    c = read_npz(tmp_path / "case.npz")
    np.testing.assert_array_equal(c["imgs"], img)
    np.testing.assert_array_equal(c["gts"], gts)
    np.testing.assert_array_equal(c["boxes"], boxes)
    masks = labels_to_masks(c["gts"], len(c["boxes"]))
    assert masks.shape == (2, 30, 45)
    write_npz(tmp_path / "out" / "case.npz", segs=masks_to_labels(masks), boxes=c["boxes"])
    back = np.load(tmp_path / "out" / "case.npz")
    np.testing.assert_array_equal(back["segs"], gts)
    assert back["segs"].dtype == np.uint16
    np.testing.assert_array_equal(back["boxes"], boxes)


def test_npz_grey_and_errors(tmp_path):
    np.savez(tmp_path / "grey.npz", imgs=np.zeros((8, 9), np.uint8), boxes=np.zeros((0, 4)))
    assert read_npz(tmp_path / "grey.npz")["imgs"].shape == (8, 9, 3)
    np.savez(tmp_path / "bad.npz", gts=np.zeros((8, 9)))
    with pytest.raises(DataError, match="imgs"):
        read_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "mismatch.npz", imgs=np.zeros((8, 9, 3), np.uint8), gts=np.zeros((5, 5)))
    with pytest.raises(DataError, match="gts"):
        read_npz(tmp_path / "mismatch.npz")


def test_load_npz_one_case_per_label(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(6):
        img, gts, boxes = _case(rng)
        np.savez(tmp_path / f"c{i}.npz", imgs=img, gts=gts, boxes=boxes)
    data = load_npz(tmp_path, size=32, val_fraction=0.2, test_fraction=0.34)
    total = len(data.train) + len(data.val) + len(data.test)
    assert total == 12  # 6 files x 2 labels
    assert data.train.images.shape[1:] == (3, 32, 32)
    assert all(o.shape == (30, 45) for o in data.test.originals)
    assert {n.split("#")[1] for n in data.train.names} == {"1", "2"}
