"""Mask post-processing: largest component + hole filling, and its choice on validation data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlite.data.seg_postprocess import postprocess_mask
from medlite.engine.tasks.segment.evaluate import choose_postprocess


def _blob_with_hole_and_speck() -> np.ndarray:
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[6, 6] = False  # a hole
    m[16:18, 16:18] = True  # a stray 4-pixel component
    return m


def test_largest_keeps_one_component_and_fills_holes():
    out = postprocess_mask(_blob_with_hole_and_speck(), "largest")
    expected = np.zeros((20, 20), bool)
    expected[2:12, 2:12] = True
    assert out.dtype == bool and np.array_equal(out, expected)


def test_none_and_empty_masks_are_unchanged():
    m = _blob_with_hole_and_speck()
    assert np.array_equal(postprocess_mask(m, "none"), m)
    assert not postprocess_mask(np.zeros((5, 5), np.uint8), "largest").any()


def test_diagonal_neighbours_are_one_component():
    m = np.eye(6, dtype=bool)  # 8-connected: one component, nothing removed
    assert np.array_equal(postprocess_mask(m, "largest"), m)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="postprocess must be one of"):
        postprocess_mask(np.ones((3, 3), bool), "crf")


def test_choice_follows_validation_dice():
    gt = np.zeros((2, 1, 20, 20), np.uint8)
    gt[:, 0, 2:12, 2:12] = 1
    noisy = torch.from_numpy(_blob_with_hole_and_speck().astype(np.float32))[None].repeat(2, 1, 1)
    mode, scores = choose_postprocess(noisy, torch.from_numpy(gt))
    assert mode == "largest" and scores["largest"] == pytest.approx(1.0) and scores["none"] < 1.0
    clean = torch.from_numpy(gt[:, 0].astype(np.float32))
    mode, scores = choose_postprocess(clean, torch.from_numpy(gt))
    assert mode == "none" and scores["none"] == scores["largest"]  # a tie keeps the raw masks
