"""Pictures of segmentation results: contour overlays, a best/worst case grid, training curves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

GT_COLOUR = (0, 220, 0)  # ground truth contour
PRED_COLOUR = (255, 40, 40)  # prediction contour


def contour(mask: np.ndarray) -> np.ndarray:
    """(H, W) {0, 1} -> (H, W) bool, the mask's inner boundary pixels (4-neighbourhood)."""
    m = mask.astype(bool)
    p = np.pad(m, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def overlay(image: np.ndarray, pred: np.ndarray | None = None, gt: np.ndarray | None = None,
            thickness: int = 2, fill_alpha: float = 0.25) -> np.ndarray:
    """Draw contours (prediction red, ground truth green) and a light red fill of the prediction.

    Args:
        image: (H, W) or (H, W, 3) uint8.
        pred, gt: (H, W) {0, 1} masks of the same size, or None.
    Returns:
        (H, W, 3) uint8.
    """
    out = np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image.copy()
    out = out.astype(np.float32)
    if pred is not None and fill_alpha > 0:
        sel = pred.astype(bool)
        out[sel] = (1 - fill_alpha) * out[sel] + fill_alpha * np.array(PRED_COLOUR, np.float32)
    for mask, colour in ((gt, GT_COLOUR), (pred, PRED_COLOUR)):
        if mask is None:
            continue
        edge = contour(mask)
        if thickness > 1:
            from scipy.ndimage import binary_dilation

            edge = binary_dilation(edge, iterations=thickness - 1)
        out[edge] = colour
    return np.clip(out, 0, 255).astype(np.uint8)


def save_overlay(path: str | os.PathLike, image: np.ndarray, pred: np.ndarray | None,
                 gt: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    Image.fromarray(overlay(image, pred, gt, thickness)).save(path)
    return path


def save_heat_overlay(path: str | os.PathLike, image: np.ndarray, heat: np.ndarray, mask: np.ndarray,
                      title: str = "") -> Path:
    """The image with a heat map (0-1, jet, colour bar) and the predicted mask's contour on top."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / max(1, image.shape[1]) + 0.6))
    ax.imshow(image)
    shown = ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
    ax.axis("off")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="relevance (0-1)")
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_case_grid(cases: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """A grid of overlays: one column per case, each with its name and Dice.

    Args:
        cases: dicts with ``image`` (H, W, 3) uint8, ``pred`` and ``gt`` (H, W) masks, ``name``, ``dice``,
            and an optional ``group`` ("best" / "worst") shown in the panel title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(cases)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, cases, strict=False):
        thickness = max(1, round(max(c["image"].shape[:2]) / 200))
        ax.imshow(overlay(c["image"], c["pred"], c["gt"], thickness))
        group = f"{c['group']}: " if c.get("group") else ""
        ax.set_title(f"{group}{c['name']}\nDice {c['dice']:.3f}", fontsize=8)
    fig.suptitle((title + "\n" if title else "") + "green: ground truth, red: prediction", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_seg_curves(rows: list[dict], path: str | os.PathLike) -> Path:
    """Training loss and validation Dice per epoch, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [r["train_loss"] for r in rows], "-o", ms=3, label="train loss")
    a.set(xlabel="epoch", ylabel="0.5 BCE + 0.5 Dice", title="Loss")
    dice = [r["val_dice"] for r in rows]
    b.plot(ep, dice, "-o", ms=3, label="val Dice")
    best = int(np.argmax(dice))
    b.plot([ep[best]], [dice[best]], "r*", ms=12, label=f"best {dice[best]:.3f} (epoch {ep[best]})")
    b.set(xlabel="epoch", ylabel="Dice", title="Validation Dice (model frame)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
