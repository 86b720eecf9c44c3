"""Prompts for promptable segmentation, derived from masks: pure functions with explicit randomness.

Frames: "original" = pixels of the image as given (x right, y down, (H, W) arrays); "model" = pixels of the
letterboxed S x S model input (see :func:`medlite.data.segmentation.letterbox`, mode "pad"). Boxes are
xyxy with inclusive pixel extents (x1 = last foreground column), as in the MedSAM challenge.

Evaluation prompts (deterministic, as in the challenge): the box is the ground-truth mask's bounding box;
the point prompt is one positive point at the mask's most interior pixel (maximum of the Euclidean
distance transform; the first such pixel in raster order).

Training prompts (:func:`sample_prompt`): a box with uniform jitter of up to ``box_jitter`` px per
coordinate (5 px in the model frame, as in Swin-LiteMedSAM), 1-3 positive points inside the mask and 0-2
negative points in a band around it, or synthetic scribbles (a polyline through 2-4 interior points, drawn
3 px wide and clipped to the mask, plus sometimes a background stroke).
"""

from __future__ import annotations

import numpy as np

from medlite.data.frames import (  # noqa: F401 (re-exported: prompts in the model frame)
    LABEL_BOX_BR,
    LABEL_BOX_TL,
    LABEL_NEG,
    LABEL_PAD,
    LABEL_POS,
    box_prompt,
    scribble_to_model_frame,
    to_model_frame,
)

MAX_POINTS = 5  # sparse prompt slots used in training (box corners or up to 5 points; padded with -1)
PROMPT_KINDS = ("box", "points", "scribble")


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (4,) float32 xyxy bounding box (inclusive); zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (2,) float32 (x, y) of the pixel farthest from the background (distance transform)."""
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask) > 0
    if not m.any():
        raise ValueError("interior_point: the mask is empty")
    d = distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return np.array([x, y], np.float32)


def pad_points(coords: np.ndarray, labels: np.ndarray, n: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Pad (K, 2) / (K,) prompts to n slots with label -1 (ignored by the prompt encoder)."""
    k = len(labels)
    if k > n:
        raise ValueError(f"{k} sparse prompts do not fit in {n} slots")
    c = np.zeros((n, 2), np.float32)
    lab = np.full(n, LABEL_PAD, np.float32)
    c[:k], lab[:k] = coords, labels
    return c, lab


def _line_stroke(shape, pts: np.ndarray, width: int) -> np.ndarray:
    import cv2

    canvas = np.zeros(shape, np.uint8)
    cv2.polylines(canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, 1, thickness=width)
    return canvas.astype(bool)


def synthetic_scribble(mask: np.ndarray, rng: np.random.Generator, width: int = 3,
                       background: bool | None = None) -> np.ndarray:
    """(H, W) mask -> (H, W) float32 scribble map: +1 on a foreground stroke, -1 on a background stroke.

    The foreground stroke is a polyline through 2-4 random mask pixels, clipped to the mask; the optional
    background stroke (probability 0.5 unless ``background`` is given) joins 2 random pixels of the band
    between the mask and its bounding box grown by 10 %, clipped to the background.
    """
    m = np.asarray(mask) > 0
    out = np.zeros(m.shape, np.float32)
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return out
    k = int(rng.integers(2, 5))
    idx = rng.choice(len(xs), size=k, replace=len(xs) < k)
    fg = _line_stroke(m.shape, np.stack([xs[idx], ys[idx]], 1), width) & m
    fg[ys[idx[0]], xs[idx[0]]] = True  # a stroke is never empty
    out[fg] = 1.0
    if background is None:
        background = bool(rng.random() < 0.5)
    if background:
        x0, y0, x1, y1 = box_from_mask(m).astype(int)
        gx, gy = max(2, (x1 - x0) // 10), max(2, (y1 - y0) // 10)
        band = np.zeros_like(m)
        band[max(0, y0 - gy):y1 + gy + 1, max(0, x0 - gx):x1 + gx + 1] = True
        band &= ~m
        by, bx = np.nonzero(band)
        if len(bx) >= 2:
            j = rng.choice(len(bx), size=2, replace=False)
            bg = _line_stroke(m.shape, np.stack([bx[j], by[j]], 1), width) & ~m
            out[bg] = -1.0
    return out


def sample_prompt(mask: np.ndarray, rng: np.random.Generator, kind: str | None = None,
                  probs: tuple[float, float, float] = (0.5, 0.3, 0.2), box_jitter: float = 5.0,
                  n_slots: int = MAX_POINTS) -> dict[str, np.ndarray]:
    """A random training prompt for one model-frame mask.

    Args:
        mask: (S, S) {0, 1} mask in the model frame.
        rng: the only source of randomness.
        kind: "box", "points" or "scribble"; None draws one with ``probs``.
    Returns:
        {"coords": (n_slots, 2) float32, "labels": (n_slots,) float32, "dense": (S, S) float32,
        "has_dense": () float32, "kind": str}.
    """
    m = np.asarray(mask) > 0
    size = m.shape[-1]
    if kind is None:
        kind = PROMPT_KINDS[int(rng.choice(3, p=np.asarray(probs) / np.sum(probs)))]
    dense = np.zeros(m.shape, np.float32)
    has_dense = 0.0
    if kind == "box" or not m.any():
        box = box_from_mask(m) + rng.uniform(-box_jitter, box_jitter, 4).astype(np.float32)
        box = np.clip(box, 0, size - 1)
        box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
        coords, labels = box_prompt(box)
    elif kind == "points":
        ys, xs = np.nonzero(m)
        n_pos = int(rng.integers(1, 4))
        i = rng.choice(len(xs), size=n_pos)
        coords, labels = np.stack([xs[i], ys[i]], 1), np.full(n_pos, LABEL_POS, np.float32)
        n_neg = int(rng.integers(0, 3))
        if n_neg:
            x0, y0, x1, y1 = box_from_mask(m).astype(int)
            g = max(3, (x1 - x0 + y1 - y0) // 10)
            band = np.zeros_like(m)
            band[max(0, y0 - g):y1 + g + 1, max(0, x0 - g):x1 + g + 1] = True
            by, bx = np.nonzero(band & ~m)
            if len(bx):
                j = rng.choice(len(bx), size=n_neg)
                coords = np.concatenate([coords, np.stack([bx[j], by[j]], 1)])
                labels = np.concatenate([labels, np.full(n_neg, LABEL_NEG, np.float32)])
    elif kind == "scribble":
        dense, has_dense = synthetic_scribble(m, rng), 1.0
        coords, labels = np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    else:
        raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}; got {kind!r}")
    coords, labels = pad_points(np.asarray(coords, np.float32), labels, n_slots)
    return {"coords": coords, "labels": labels, "dense": dense, "has_dense": np.float32(has_dense), "kind": kind}
