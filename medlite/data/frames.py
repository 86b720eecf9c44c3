"""Frames of promptable and letterboxed segmentation, in numpy and Pillow only (no torch), so the torch-free
runtime (:mod:`medlite.export.sam_runtime`) and the web page server share them with training.

"original" = pixels of the image as given (x right, y down, (H, W) arrays); "model" = pixels of the S x S
model input, made by :func:`letterbox` (plain resize, or longest side to S + zero padding, as LiteMedSAM
does). :class:`Geometry` records the placement and :func:`restore` maps a model-frame probability map
back to the original size. Boxes are xyxy with inclusive pixel extents, as in the MedSAM challenge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MODES = ("resize", "pad")

# sparse prompt labels (SAM's ONNX convention), shared with medlite.models.litesam.prompt_encoder
LABEL_PAD, LABEL_NEG, LABEL_POS, LABEL_BOX_TL, LABEL_BOX_BR = -1, 0, 1, 2, 3


@dataclass(frozen=True)
class Geometry:
    """How an (height, width) image was placed into the size x size model input.

    The image was scaled by (scale_y, scale_x) to (new_h, new_w) and pasted at (top, left).
    """

    height: int
    width: int
    size: int
    new_h: int
    new_w: int
    top: int = 0
    left: int = 0

    @classmethod
    def of(cls, height: int, width: int, size: int, mode: str) -> Geometry:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if mode == "resize":
            return cls(height, width, size, size, size)
        s = size / max(height, width)
        nh, nw = max(1, round(height * s)), max(1, round(width * s))
        return cls(height, width, size, nh, nw, (size - nh) // 2, (size - nw) // 2)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def letterbox(image: np.ndarray, size: int, mode: str = "resize", mask: bool = False) -> tuple[np.ndarray, Geometry]:
    """Place an (H, W[, C]) uint8 array into size x size: plain resize or longest side + zero padding.

    Images are resized bilinearly (antialiased), masks (``mask=True``, {0, 1}) by nearest neighbour.
    Returns the (size, size[, C]) array and its :class:`Geometry`.
    """
    h, w = image.shape[:2]
    g = Geometry.of(h, w, size, mode)
    resample = Image.Resampling.NEAREST if mask else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(image).resize((g.new_w, g.new_h), resample))
    if mode == "resize":
        return resized, g
    out = np.zeros((size, size) + image.shape[2:], dtype=image.dtype)
    out[g.top:g.top + g.new_h, g.left:g.left + g.new_w] = resized
    return out, g


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a half-pixel bilinear resize (PyTorch's ``align_corners=False``)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                     np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, w1


def restore(prob, geometry: Geometry) -> np.ndarray:
    """Map a model-frame probability map back to the original image: crop the padding, resize bilinearly.

    The resize is PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing), in
    numpy.

    Args:
        prob: (S, S) float probabilities (or logits) in the model frame; a numpy array or a CPU tensor.
    Returns:
        (H, W) float32 at the original size; threshold probabilities at 0.5 for the mask.
    """
    g = geometry
    t = np.asarray(prob, dtype=np.float32)[g.top:g.top + g.new_h, g.left:g.left + g.new_w]
    y0, y1, wy = _bilinear_taps(t.shape[0], g.height)
    x0, x1, wx = _bilinear_taps(t.shape[1], g.width)
    wy, wx = wy[:, None], wx[None, :]
    top = (np.float32(1) - wx) * t[y0][:, x0] + wx * t[y0][:, x1]
    bottom = (np.float32(1) - wx) * t[y1][:, x0] + wx * t[y1][:, x1]
    return ((np.float32(1) - wy) * top + wy * bottom).astype(np.float32)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any (H, W[, C]) array -> (H, W, 3) uint8.

    (H, W, 1) is grey, (H, W, 4) drops alpha, other channel counts are averaged; any dtype other than
    uint8 is min-max scaled to 0..255.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    elif a.ndim == 3 and a.shape[2] != 3:
        a = a.astype(np.float32).mean(axis=2)
    if a.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C); got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        lo, hi = float(a.min()), float(a.max())
        a = np.round((a - lo) / max(hi - lo, 1e-8) * 255).astype(np.uint8)
    return np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a


def minmax(image: np.ndarray) -> np.ndarray:
    """(3, S, S) uint8 letterboxed image -> float32 in [0, 1], min-max over the whole image (LiteMedSAM)."""
    x = np.asarray(image, np.float32)
    lo, hi = x.min(), x.max()
    return (x - lo) / max(hi - lo, np.float32(1e-8))


def to_model_frame(xy: np.ndarray, g: Geometry) -> np.ndarray:
    """(..., 2) or (..., 4) original-frame coordinates -> model frame (scale then offset by the padding)."""
    xy = np.asarray(xy, np.float32)
    sx, sy = g.new_w / g.width, g.new_h / g.height
    scale = np.array([sx, sy] * (xy.shape[-1] // 2), np.float32)
    offset = np.array([g.left, g.top] * (xy.shape[-1] // 2), np.float32)
    return xy * scale + offset


def _any_in_cells(hits: np.ndarray, n_out_h: int, n_out_w: int) -> np.ndarray:
    """(H, W) bool -> (n_out_h, n_out_w) bool: any hit in each cell of an area (adaptive pooling) resize."""
    h, w = hits.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = hits.astype(np.int64).cumsum(0).cumsum(1)
    i = np.arange(n_out_h)
    j = np.arange(n_out_w)
    r0, r1 = (i * h) // n_out_h, -((-(i + 1) * h) // n_out_h)  # floor start, ceil end, as adaptive pooling
    c0, c1 = (j * w) // n_out_w, -((-(j + 1) * w) // n_out_w)
    total = (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])
    return total > 0


def scribble_to_model_frame(scribble: np.ndarray, g: Geometry) -> np.ndarray:
    """(H, W) scribble map in {-1, 0, 1} -> (S, S) float32 in the model frame.

    Each sign is area-resized and kept where any of its pixels fell, so thin strokes survive downscaling.
    """
    s = np.asarray(scribble)
    out = np.zeros((g.size, g.size), np.float32)
    window = out[g.top:g.top + g.new_h, g.left:g.left + g.new_w]
    for sign in (1.0, -1.0):
        window[_any_in_cells(s == sign, g.new_h, g.new_w)] = sign
    return out


def box_prompt(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(4,) xyxy -> point_coords (2, 2), point_labels (2,) (box corners as labelled points)."""
    b = np.asarray(box, np.float32)
    return b.reshape(2, 2), np.array([LABEL_BOX_TL, LABEL_BOX_BR], np.float32)


def check_boxes(boxes: np.ndarray, g: Geometry, what: str = "box") -> np.ndarray:
    """(N, 4) xyxy boxes in original pixels, refused unless finite, x0 < x1, y0 < y1 and inside the image
    (a box outside it, inverted or empty would still give a mask: a silent wrong answer)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = g.height, g.width
    for x0, y0, x1, y1 in b:
        text = f"{what} {x0:g},{y0:g},{x1:g},{y1:g}"
        if not np.isfinite([x0, y0, x1, y1]).all():
            raise ValueError(f"{text}: coordinates must be finite numbers")
        if not (x0 < x1 and y0 < y1):
            raise ValueError(f"{text}: needs x0 < x1 and y0 < y1 (a box with an area)")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"{text}: outside the {w} x {h} image (x in 0..{w}, y in 0..{h})")
    return b.astype(np.float32)


def check_points(points: np.ndarray, g: Geometry) -> np.ndarray:
    """(K, 2) (x, y) in original pixels, refused unless finite and inside the image."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = g.height, g.width
    for x, y in pts:
        if not np.isfinite([x, y]).all() or not (0 <= x <= w and 0 <= y <= h):
            raise ValueError(f"point {x:g},{y:g}: outside the {w} x {h} image or not a finite number")
    return pts.astype(np.float32)


def sparse_prompt(box, points, point_labels, g: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """A box (4,) and / or points (K, 2) with labels (K,) (default all positive), in original pixels, checked
    -> model-frame coords (M, 2) and labels (M,): box corners labelled 2 / 3, points 1 / 0. With neither (a
    scribble alone) one padding slot (label -1), which keeps the decoder's token shapes valid."""
    coords, labels = [np.zeros((0, 2), np.float32)], [np.zeros(0, np.float32)]
    if box is not None:
        c, lab = box_prompt(to_model_frame(check_boxes(box, g)[0], g))
        coords.append(c)
        labels.append(lab)
    if points is not None and len(points):
        pts = check_points(points, g)
        lab = (np.full(len(pts), LABEL_POS, np.float32) if point_labels is None
               else np.asarray(point_labels, np.float32).reshape(-1))
        if len(lab) != len(pts) or not np.isin(lab, (LABEL_NEG, LABEL_POS)).all():
            raise ValueError("point_labels must give 0 (negative) or 1 (positive) for every point")
        coords.append(to_model_frame(pts, g))
        labels.append(lab)
    if len(coords) == 1:
        return np.zeros((1, 2), np.float32), np.full(1, LABEL_PAD, np.float32)
    return np.concatenate(coords), np.concatenate(labels)
