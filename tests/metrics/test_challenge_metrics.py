from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# ------------------------------------------------ the official script's values on committed cases
def test_challenge_case_metrics_match_the_official_scoring_on_fixtures():
    from medlite.metrics.segmentation import challenge_case_metrics

    expected = json.loads((DATA / "challenge_cases.json").read_text())
    npz = np.load(DATA / "challenge_cases.npz")
    assert len(expected) == 10
    for name, want in expected.items():
        got = challenge_case_metrics(npz[f"{name}__seg"], npz[f"{name}__gt"])
        assert _same(got["dsc"], want["dsc"]) and _same(got["nsd"], want["nsd"]), (name, got, want)


def test_the_official_rules_on_edge_cases():
    from medlite.metrics.segmentation import challenge_case_metrics

    npz = np.load(DATA / "challenge_cases.npz")
    # an empty ground truth: DSC NaN, NSD 0 whatever the prediction (medlite's own dice says 0 or 1)
    for name in ("empty_gt", "both_empty"):
        r = challenge_case_metrics(npz[f"{name}__seg"], npz[f"{name}__gt"])
        assert math.isnan(r["dsc"]) and r["nsd"] == 0.0
    # the DSC > 0.2 gate applies to the case's mean DSC over labels, not to each label
    lab = np.zeros((40, 40), np.uint8)
    lab[2:20, 2:20], lab[25:28, 25:28] = 1, 2
    seg = np.where(lab == 2, 0, lab).astype(np.uint8)
    seg[30:33, 30:33] = 2  # label 2 missed: DSC 0, label 1 perfect: mean 0.5 > 0.2
    r = challenge_case_metrics(seg, lab)
    assert r["dsc"] == pytest.approx(0.5) and r["nsd"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="spacing"):
        challenge_case_metrics(np.ones((2, 4, 4), np.uint8), np.ones((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="integer"):
        challenge_case_metrics(np.ones((4, 4), np.float32), np.ones((4, 4), np.uint8))


def test_challenge_nsd_is_not_the_boundary_nsd():
    """In a one-slice volume every foreground pixel is surface: the challenge NSD of a box-inscribed
    ellipse is far above the 2-D contour NSD of the same pair (the gap the ecosystem issue measured)."""
    from medlite.metrics.segmentation import challenge_metrics

    npz = np.load(DATA / "challenge_cases.npz")
    r = challenge_metrics(npz["box_ellipse_vs_blob__seg"], npz["box_ellipse_vs_blob__gt"])
    assert r["nsd"] > 0.9 and r["boundary_nsd"] < r["nsd"] - 0.3, r


def test_challenge_metrics_binary_and_accumulated():
    from medlite.metrics.segmentation import ChallengeMetrics, challenge_label_metrics, challenge_metrics, nsd

    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1  # 100 px
    pred = np.zeros_like(gt)
    pred[5:15, 7:17] = 1  # shifted 2 px right: overlap 10 x 8 = 80
    r = challenge_metrics(pred, gt)
    assert r["dsc"] == pytest.approx(2 * 80 / 200)
    assert r["boundary_nsd"] == pytest.approx(nsd(pred, gt, 2.0)) == pytest.approx(1.0)
    far = np.zeros_like(gt)
    far[0:3, 0:3] = 1
    far[5:6, 5:6] = 1  # 1 px overlap: DSC = 2 / 110 < 0.2, so NSD is 0 by the challenge rule
    r = challenge_metrics(far, gt)
    assert r["dsc"] == pytest.approx(2 / 110) and r["nsd"] == 0.0
    seg = np.zeros((20, 20), np.uint8)
    seg[5:15, 5:15] = 1
    lab = seg.copy()
    lab[0:2, 0:2] = 2  # label 2 is missed entirely
    per = challenge_label_metrics(seg, lab)
    assert per[1]["dsc"] == 1.0 and per[1]["nsd"] == 1.0 and per[2]["dsc"] == 0.0 and per[2]["nsd"] == 0.0
    m = ChallengeMetrics()
    m.update(pred, gt, "a")
    m.update(far, gt, "b")
    m.update(np.zeros_like(gt), np.zeros_like(gt), "empty")  # DSC NaN: left out of the DSC mean
    out = m.compute()
    assert out["dsc"]["n"] == 2 and out["nsd"]["n"] == 3
    assert out["dsc"]["mean"] == pytest.approx((0.8 + 2 / 110) / 2)
    shifted_nsd = challenge_metrics(pred, gt)["nsd"]
    assert 0.5 < shifted_nsd <= 1.0 and out["nsd"]["mean"] == pytest.approx(shifted_nsd / 3)
