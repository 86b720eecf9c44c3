"""Does the compressed student look where its teacher looks?  Attention-map agreement on a data split.

Each model's spatial focus on an image is its attention-rollout heat map (Abnar & Zuidema 2020, see
:mod:`medlite.explain`) over its patch grid, read from :func:`medlite.compress.distill.forward_with_attention`
(MedLiT or timm ViT).  The teacher's map is resampled to the student's grid (bilinear).  The agreement of
one image is the IoU of the two models' top-``frac`` regions (the ``ceil(frac * cells)`` highest cells of
each map); the score of a split is the mean IoU over its images.  Two random maps on a 7x7 grid with
``frac = 0.1`` (5 cells each) have an expected IoU of about 0.06.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medlite.compress.distill import forward_with_attention, has_attention, token_layout
from medlite.explain import attention_rollout


@torch.no_grad()
def rollout_maps(model: nn.Module, x: Tensor, out_grid: tuple[int, int] | None = None) -> Tensor:
    """Attention-rollout maps (B, gh, gw) float32, summing to 1 per image, optionally resampled.

    Args:
        model: a model with readable attention (MedLiT, timm ViT) whose first prefix token is a cls token.
        x: (B, C, S, S) float32 normalised for ``model``.
        out_grid: grid to resample to (None: the model's own patch grid).
    """
    was = model.training
    model.eval()
    try:
        _, maps = forward_with_attention(model, x, need_attn=True)
    finally:
        model.train(was)
    if maps is None:
        raise ValueError(f"{type(model).__name__} exposes no attention maps")
    prefix, grid = token_layout(model)
    if prefix > 1:  # drop register tokens, keep the cls token (index 0) and the patches
        idx = torch.tensor([0, *range(prefix, maps[0].shape[-1])], device=maps[0].device)
        maps = [m[:, :, idx][..., idx] for m in maps]
        maps = [m / m.sum(-1, keepdim=True).clamp_min(1e-12) for m in maps]
    roll = attention_rollout(maps).view(-1, 1, *grid)
    if out_grid is not None and tuple(out_grid) != tuple(grid):
        roll = F.interpolate(roll, size=tuple(out_grid), mode="bilinear", align_corners=False)
    roll = roll.flatten(1).clamp_min(0)
    roll = roll / roll.sum(1, keepdim=True).clamp_min(1e-12)
    return roll.view(len(x), *(out_grid or grid))


def topk_iou(a: Tensor, b: Tensor, frac: float = 0.1) -> Tensor:
    """(B,) IoU of the top-``frac`` cells of two (B, gh, gw) maps on the same grid."""
    a, b = a.flatten(1), b.flatten(1)
    k = max(1, math.ceil(frac * a.shape[1]))
    ma = torch.zeros_like(a, dtype=torch.bool).scatter(1, a.topk(k, 1).indices, True)
    mb = torch.zeros_like(b, dtype=torch.bool).scatter(1, b.topk(k, 1).indices, True)
    return (ma & mb).sum(1).float() / (ma | mb).sum(1).float()


@torch.no_grad()
def attention_agreement(teacher: nn.Module, t_meta: dict[str, Any], student: nn.Module,
                        s_meta: dict[str, Any], images: Tensor, frac: float = 0.1, batch_size: int = 256,
                        keep: int = 0) -> dict[str, Any]:
    """Mean top-``frac`` IoU of teacher and student rollout maps over ``images``.

    Args:
        images: (N, C, S, S) uint8 images (e.g. the test split), normalised per model from its meta.
        keep: also return the first ``keep`` images' maps, for plots.

    Returns:
        {"iou": mean IoU (None if either model has no attention), "n", "frac", and with ``keep`` the
        arrays "teacher_maps", "student_maps" (keep, gh, gw)}.
    """
    from medlite.data.transforms import to_float

    if not (has_attention(teacher) and has_attention(student)):
        return {"iou": None, "n": 0, "frac": frac}
    _, grid = token_layout(student)
    ious, t_keep, s_keep = [], [], []
    for i in range(0, len(images), batch_size):
        xb = images[i : i + batch_size]
        t = rollout_maps(teacher, to_float(xb, t_meta["preprocessing"]["mean"], t_meta["preprocessing"]["std"]),
                         grid)
        s = rollout_maps(student, to_float(xb, s_meta["preprocessing"]["mean"], s_meta["preprocessing"]["std"]))
        ious.append(topk_iou(t, s, frac))
        if sum(len(v) for v in t_keep) < keep:
            t_keep.append(t)
            s_keep.append(s)
    out: dict[str, Any] = {"iou": float(torch.cat(ious).mean()), "n": int(len(images)), "frac": frac}
    if keep:
        out["teacher_maps"] = torch.cat(t_keep)[:keep].numpy()
        out["student_maps"] = torch.cat(s_keep)[:keep].numpy()
    return out


def plot_attention_pairs(images: np.ndarray, maps: dict[str, np.ndarray], path, title: str = ""):
    """A grid: one row per image, columns = the image, then each model's map overlaid on it.

    Args:
        images: (n, C, S, S) uint8 images.
        maps: model label -> (n, gh, gw) maps (any scale; each is min-max normalised for display).
        path: PNG file to write.
    """
    from PIL import Image

    from medlite.report.plots import _figure, _save

    n = len(images)
    fig, axes = _figure(n, 1 + len(maps), figsize=(2.2 * (1 + len(maps)), 2.2 * n))
    for r in range(n):
        img = images[r].transpose(1, 2, 0).astype(np.float32) / 255.0
        img = img[..., 0] if img.shape[-1] == 1 else img
        cmap = "gray" if img.ndim == 2 else None
        axes[r, 0].imshow(img, cmap=cmap)
        axes[r, 0].set_title("image" if r == 0 else "")
        for c, (label, m) in enumerate(maps.items(), start=1):
            h = np.asarray(m[r], dtype=np.float32)
            h = (h - h.min()) / max(float(h.max() - h.min()), 1e-12)
            up = np.asarray(Image.fromarray(h).resize(img.shape[:2][::-1], Image.BILINEAR))
            axes[r, c].imshow(img, cmap=cmap)
            axes[r, c].imshow(up, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(label, fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
