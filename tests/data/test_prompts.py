from __future__ import annotations

import numpy as np
import pytest

from medlite.data.prompts import (
    LABEL_BOX_BR,
    LABEL_BOX_TL,
    LABEL_NEG,
    LABEL_PAD,
    LABEL_POS,
    MAX_POINTS,
    box_from_mask,
    interior_point,
    pad_points,
    sample_prompt,
    scribble_to_model_frame,
    synthetic_scribble,
)
from medlite.data.segmentation import Geometry


def _mask():
    m = np.zeros((40, 50), np.uint8)
    m[10:30, 5:25] = 1  # 20 x 20 square: rows 10..29, cols 5..24
    return m


def test_box_and_interior_point():
    m = _mask()
    np.testing.assert_array_equal(box_from_mask(m), [5, 10, 24, 29])
    np.testing.assert_array_equal(box_from_mask(np.zeros((4, 4))), [0, 0, 0, 0])
    x, y = interior_point(m)
    assert 14 <= x <= 15 and 19 <= y <= 20  # the centre of the square
    ring = np.zeros((30, 30), np.uint8)
    ring[5:25, 5:25] = 1
    ring[12:18, 12:18] = 0  # a hole: the point must stay on the lesion, off the hole
    x, y = interior_point(ring)
    assert ring[int(y), int(x)] == 1
    with pytest.raises(ValueError, match="empty"):
        interior_point(np.zeros((3, 3)))


def test_sample_box_prompt_jitter_bounded():
    m = _mask()
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = sample_prompt(m, rng, kind="box", box_jitter=3)
        assert p["labels"][:2].tolist() == [LABEL_BOX_TL, LABEL_BOX_BR]
        assert (p["labels"][2:] == LABEL_PAD).all() and p["has_dense"] == 0
        box = p["coords"][:2].reshape(4)
        assert np.abs(box - box_from_mask(m)).max() <= 3 + 1e-6
        assert box[0] <= box[2] and box[1] <= box[3]


def test_sample_points_inside_and_outside():
    m = _mask()
    rng = np.random.default_rng(1)
    seen_neg = False
    for _ in range(30):
        p = sample_prompt(m, rng, kind="points")
        for (x, y), lab in zip(p["coords"], p["labels"], strict=True):
            if lab == LABEL_POS:
                assert m[int(y), int(x)] == 1
            elif lab == LABEL_NEG:
                assert m[int(y), int(x)] == 0
                seen_neg = True
        assert (p["labels"] == LABEL_POS).sum() >= 1
    assert seen_neg


def test_synthetic_scribble_stays_on_its_side():
    m = _mask().astype(bool)
    rng = np.random.default_rng(2)
    s = synthetic_scribble(m, rng, background=True)
    assert (s == 1).any() and (s == -1).any()
    assert m[s == 1].all() and not m[s == -1].any()
    p = sample_prompt(m, rng, kind="scribble")
    assert p["has_dense"] == 1 and (p["labels"] == LABEL_PAD).all() and (p["dense"] == 1).any()


def test_scribble_survives_downscaling():
    g = Geometry.of(400, 200, 64, "pad")
    s = np.zeros((400, 200), np.float32)
    s[100, 20:180] = 1  # one pixel wide, 6x downscaled
    s[300, 50:60] = -1
    out = scribble_to_model_frame(s, g)
    assert out.shape == (64, 64) and (out == 1).any() and (out == -1).any()
    assert (out[:, : g.left] == 0).all()  # padding stays empty


def test_pad_points():
    c, lab = pad_points(np.ones((2, 2), np.float32), np.array([1, 0], np.float32))
    assert c.shape == (MAX_POINTS, 2) and lab.tolist() == [1, 0, -1, -1, -1]
    with pytest.raises(ValueError, match="slots"):
        pad_points(np.ones((6, 2)), np.ones(6), 5)
