"""Mask post-processing for single-lesion segmentation: pure functions on binary masks.

Lesion datasets such as BUSI, PH2 and ISIC have one connected lesion per image, so a model trained from
few images often leaves stray blobs and holes that a clinician would never draw. ``"largest"`` keeps the
largest 8-connected component and fills its holes. Whether it helps is a property of the data and the model,
so training chooses it on the validation split (:func:`medlite.engine.tasks.segment.evaluate.choose_postprocess`),
records the choice in the checkpoint, and prediction applies the recorded choice.
"""

from __future__ import annotations

import numpy as np

POSTPROCESS = ("none", "largest")


def postprocess_mask(mask: np.ndarray, mode: str) -> np.ndarray:
    """Post-process one binary mask.

    Args:
        mask: (H, W) bool or {0, 1} array.
        mode: "none" (returned unchanged, as bool) or "largest" (largest 8-connected component, holes
            filled). An empty mask stays empty.
    Returns:
        (H, W) bool.
    """
    m = np.asarray(mask).astype(bool)
    if mode == "none" or not m.any():
        return m
    if mode != "largest":
        raise ValueError(f"postprocess must be one of {POSTPROCESS}; got {mode!r}")
    from scipy.ndimage import binary_fill_holes, label

    lab, n = label(m, structure=np.ones((3, 3), dtype=bool))
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(sizes.argmax())
    return binary_fill_holes(m)
