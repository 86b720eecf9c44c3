"""Writes challenge_cases.npz (fixed mask pairs) and challenge_cases.json (their scores by the official
scoring path). Run once by hand: python tests/metrics/data/make_challenge_cases.py

The scores follow ``evaluation/compute_metrics.py`` of the MedSAM repository (CVPR 2024 "Segment Anything
in Medical Images on Laptop") step by step, calling DeepMind's ``surface-distance`` package as that script
calls its bundled copy: labels 1..gt.max(), mean DSC, NSD only when the mean DSC > 0.2, a 2-D case
expanded to (H, W, 1) with spacing (1, 1, 1). Only compute_dice_coefficient is replaced (its empty branch
uses np.NaN, which NumPy 2 removed); it is the same formula.
"""

import json
from pathlib import Path

import numpy as np
import surface_distance as sd

HERE = Path(__file__).parent


def _disk(shape, cy, cx, ry, rx):
    y, x = np.ogrid[:shape[0], :shape[1]]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    s = (64, 80)
    out = {}
    gt = _disk(s, 30, 40, 18, 25)
    out["ellipse_shift3"] = (np.roll(gt, 3, axis=1), gt)
    blob = gt & ~_disk(s, 20, 55, 10, 10) | _disk(s, 45, 22, 8, 6)
    ys, xs = np.nonzero(blob)
    box_ellipse = _disk(s, (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2,
                        (ys.max() - ys.min() + 1) / 2, (xs.max() - xs.min() + 1) / 2)
    out["box_ellipse_vs_blob"] = (box_ellipse, blob)
    noisy = blob ^ (rng.random(s) < 0.05)
    out["noisy"] = (noisy, blob)
    out["identical"] = (blob, blob)
    far = np.zeros(s, bool)
    far[0:6, 0:6] = True
    out["low_dsc"] = (far | _disk(s, 30, 40, 3, 3), gt)
    out["empty_pred"] = (np.zeros(s, bool), gt)
    out["empty_gt"] = (gt, np.zeros(s, bool))
    out["both_empty"] = (np.zeros(s, bool), np.zeros(s, bool))
    lab = np.zeros(s, np.uint8)
    lab[5:25, 5:30] = 1
    lab[30:60, 40:75] = 2
    lab[40:50, 5:20] = 3
    seg = np.roll(lab, 2, axis=0)
    seg[seg == 3] = 0
    seg[40:52, 6:18] = 3
    out["three_labels"] = (seg, lab)
    gap = lab.copy()
    gap[gap == 2] = 0  # labels 1 and 3 only: label 2 is absent from the truth
    out["label_gap"] = (np.where(seg == 2, 0, seg).astype(np.uint8), gap)
    return {k: (p.astype(np.uint8), g.astype(np.uint8)) for k, (p, g) in out.items()}


def official(seg: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    def dsc_one(g, s):
        total = g.sum() + s.sum()
        return float("nan") if total == 0 else 2 * (g & s).sum() / total

    labels = range(1, gt.max() + 1)
    dsc = float(np.mean([dsc_one(gt == i, seg == i) for i in labels])) if labels else float("nan")
    if dsc > 0.2:
        g3, s3 = np.expand_dims(gt, -1), np.expand_dims(seg, -1)
        nsd = float(np.mean([sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(g3 == i, s3 == i, spacing_mm=[1.0, 1.0, 1.0]), 2.0) for i in labels]))
    else:
        nsd = 0.0
    return {"dsc": dsc, "nsd": nsd}


if __name__ == "__main__":
    cs = cases()
    np.savez_compressed(HERE / "challenge_cases.npz", **{f"{k}__seg": p for k, (p, _) in cs.items()},
                        **{f"{k}__gt": g for k, (_, g) in cs.items()})
    scores = {k: official(p, g) for k, (p, g) in cs.items()}
    (HERE / "challenge_cases.json").write_text(json.dumps(scores, indent=1) + "\n")
    print(json.dumps(scores, indent=1))
