"""Dice / IoU / HD95 / NSD against hand-computed cases, including empty masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlite.metrics.segmentation import SegmentationMetrics, dice, hd95, iou, nsd


def _sq(r0, r1, c0, c1, shape=(20, 20)):
    m = np.zeros(shape, np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


def test_dice_iou_by_hand():
    a, b = _sq(5, 10, 5, 10), _sq(5, 10, 7, 12)  # 25 px each, overlap 15
    assert dice(a, b) == pytest.approx(2 * 15 / 50)
    assert iou(a, b) == pytest.approx(15 / 35)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    # float probabilities are thresholded at 0.5
    assert dice(a * 0.7, b.astype(bool)) == pytest.approx(0.6)


def test_surface_metrics_by_hand():
    a, b = _sq(5, 10, 5, 10), _sq(5, 10, 7, 12)  # the same square shifted 2 px to the right
    # every boundary pixel of one lies within 2 px of the other's boundary: HD95 = 2
    assert hd95(a, b) == pytest.approx(2.0)
    assert nsd(a, b, tolerance=2) == pytest.approx(1.0)
    # at 1 px: left/right edges (5 px each, of 16 boundary px per square) are 2 px away; the rows of
    # top/bottom edges that lie in the other square's span are within 1 px -> 10/16 per side
    assert nsd(a, b, tolerance=1) == pytest.approx(10 / 16)
    assert hd95(a, a) == 0.0 and nsd(a, a, 0) == 1.0


def test_empty_mask_rules():
    e, a = np.zeros((20, 20), np.uint8), _sq(5, 10, 5, 10)
    assert (dice(e, e), iou(e, e), hd95(e, e), nsd(e, e)) == (1.0, 1.0, 0.0, 1.0)
    assert (dice(e, a), iou(e, a), nsd(e, a)) == (0.0, 0.0, 0.0)
    assert hd95(a, e) == pytest.approx(math.hypot(20, 20))  # image diagonal
    assert hd95(a, e, spacing=(0.5, 2.0)) == pytest.approx(math.hypot(10, 40))


def test_errors():
    with pytest.raises(ValueError, match="differ in size"):
        dice(np.zeros((4, 4)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="2-D"):
        dice(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))


def test_metric_object():
    m = SegmentationMetrics(tolerance=2)
    a, b = _sq(5, 10, 5, 10), _sq(5, 10, 7, 12)
    m.update(a, a, "same")
    m.update(a, b, "shift")
    s = m.compute()
    assert s["dice"]["mean"] == pytest.approx((1 + 0.6) / 2) and s["dice"]["n"] == 2
    assert s["dice"]["std"] == pytest.approx(0.2)
    assert [c["case"] for c in m.cases] == ["same", "shift"]
    m.reset()
    with pytest.raises(ValueError, match="no cases"):
        m.compute()
