from __future__ import annotations

import numpy as np
import pytest


# ------------------------------------------------------------------------------- challenge rule (LiteSAM)
def test_challenge_metrics_hand_computed():
    from medlite.metrics.segmentation import ChallengeMetrics, challenge_label_metrics, challenge_metrics

    gt = np.zeros((20, 20), np.uint8)
    gt[5:15, 5:15] = 1  # 100 px
    pred = np.zeros_like(gt)
    pred[5:15, 7:17] = 1  # shifted 2 px right: overlap 10 x 8 = 80
    r = challenge_metrics(pred, gt)
    assert r["dsc"] == pytest.approx(2 * 80 / 200)
    assert r["nsd"] == pytest.approx(1.0)  # every boundary pixel within 2 px of the other boundary
    far = np.zeros_like(gt)
    far[0:3, 0:3] = 1
    far[5:6, 5:6] = 1  # 1 px overlap: DSC = 2 / 110 < 0.2, so NSD is 0 by the challenge rule
    r = challenge_metrics(far, gt)
    assert r["dsc"] == pytest.approx(2 / 110) and r["nsd"] == 0.0
    seg = np.zeros((20, 20), np.uint8)
    seg[5:15, 5:15] = 1
    lab = np.zeros_like(seg)
    lab[5:15, 5:15] = 1
    lab[0:2, 0:2] = 2  # label 2 is missed entirely
    per = challenge_label_metrics(seg, lab)
    assert per[1] == {"dsc": 1.0, "nsd": 1.0} and per[2] == {"dsc": 0.0, "nsd": 0.0}
    m = ChallengeMetrics()
    m.update(pred, gt, "a")
    m.update(far, gt, "b")
    out = m.compute()
    assert out["dsc"]["mean"] == pytest.approx((0.8 + 2 / 110) / 2) and out["nsd"]["mean"] == pytest.approx(0.5)
