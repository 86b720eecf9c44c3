"""Pure, batched image transforms on (B, C, H, W) tensors.

No I/O and no hidden randomness: random transforms take an explicit ``torch.Generator`` and draw one
set of parameters per batch call, so a seeded generator reproduces an epoch exactly. Every op works on
the whole batch at once (no per-sample Python loop), on CPU or GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

AUGMENT_MODES = ("none", "flip", "light")
# "light" augmentation ranges
MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)
MAX_TRANSLATE = 0.10  # fraction of the image side


def to_float(
    images: torch.Tensor, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5
) -> torch.Tensor:
    """Scale to [0, 1] and normalise per channel.

    Args:
        images: (B, C, H, W) uint8 in [0, 255], or floating point already in [0, 1].
        mean, std: one value for all channels or one per channel (length C).

    Returns:
        (B, C, H, W) float32, ``(images / 255 - mean) / std``.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    c = x.shape[1]
    mean_t = _per_channel(mean, c, x)
    std_t = _per_channel(std, c, x)
    return (x - mean_t) / std_t


def _per_channel(v: float | Sequence[float], c: int, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=x.dtype, device=x.device).flatten()
    if t.numel() not in (1, c):
        raise ValueError(f"mean/std has {t.numel()} values for images with {c} channels")
    return t.view(1, -1, 1, 1)


def resize_batch(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing (for downscaling), keeping the dtype.

    Args:
        images: (B, C, H, W) uint8 or float.
        size: output side, or (H_out, W_out).

    Returns:
        (B, C, H_out, W_out), same dtype as ``images``; uint8 results are rounded and clamped.
        Returns ``images`` itself when it already has that size.
    """
    out_hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == out_hw:
        return images
    x = images.float() if not images.is_floating_point() else images
    y = F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=True)
    if images.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(images.dtype)


def augment_batch(x: torch.Tensor, generator: torch.Generator, mode: str = "light") -> torch.Tensor:
    """Random augmentation, parameters drawn independently per sample from ``generator``.

    Modes: "none" (identity), "flip" (horizontal flip with p = 0.5), "light" (flip + random affine:
    rotation +-15 deg, isotropic scale 0.9-1.1, translation +-10 % per axis), the latter done with a
    single ``affine_grid`` / ``grid_sample`` for the whole batch; pixels from outside the image repeat
    the border, which does not depend on how ``x`` was normalised.

    Args:
        x: (B, C, H, W) uint8 or float, any device.
        generator: torch.Generator on the CPU or on ``x.device``.

    Returns:
        (B, C, H, W), same dtype and device as ``x``.
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation mode {mode!r}; expected one of {AUGMENT_MODES}")
    if mode == "none" or x.shape[0] == 0:
        return x
    b = x.shape[0]
    u = torch.rand(b, 5, generator=generator, device=generator.device).to(x.device)
    flip = u[:, 0] < 0.5  # (B,)
    if mode == "flip":
        return torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    angle = (2 * u[:, 1] - 1) * math.radians(MAX_ROTATION_DEG)
    scale = SCALE_RANGE[0] + u[:, 2] * (SCALE_RANGE[1] - SCALE_RANGE[0])
    # normalised coordinates span [-1, 1], so a shift of t image sides is 2 t
    shift = (2 * u[:, 3:5] - 1) * MAX_TRANSLATE * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = 1.0 - 2.0 * flip.float()  # -1 mirrors the sampling x-coordinate
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * sign, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3): output pixel -> input sampling position
    xf = x if x.is_floating_point() else x.float()
    grid = F.affine_grid(theta.to(xf.dtype), list(xf.shape), align_corners=False)
    y = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if x.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(x.dtype)


def norm_stats(card, channels: int) -> tuple[list[float], list[float]]:
    """A model card's per-channel mean and std for ``channels`` input channels (one value is repeated)."""
    mean, std = list(card.mean), list(card.std)
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    return mean[:channels], std[:channels]
