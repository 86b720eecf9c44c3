"""Joint image + mask augmentation for segmentation, built on albumentations (the ``seg`` extra).

Levels:
- ``none``: identity.
- ``photometric``: intensity only (brightness / contrast, gamma, CLAHE, Gaussian noise and blur), no geometry:
  for targets that cannot follow a geometric change, such as a teacher's cached image embedding.
- ``light``: horizontal flip, small affine (scale 0.9–1.1, rotate ±15°, shift ±5 %), brightness/contrast.
- ``strong`` (the MedLiteNet recipe): ``light`` plus vertical flip, elastic deformation, CLAHE, Gaussian
  noise and Gaussian blur, each with a modest probability.

Randomness comes only from the ``generator`` argument (a ``numpy.random.Generator``): the same generator
state gives the same batch, so a resumed run replays the same augmentation.
"""

from __future__ import annotations

import importlib
import os
from functools import lru_cache

import numpy as np
import torch

LEVELS = ("none", "photometric", "light", "strong")


def _albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check when the library loads
    try:
        return importlib.import_module("albumentations")
    except ImportError as e:
        raise ImportError("segmentation augmentation needs albumentations: pip install 'medlite[seg]'") from e


@lru_cache(maxsize=4)
def pipeline(level: str):
    """The albumentations Compose for ``level`` (cached; reseeded per call by :func:`augment_pairs`)."""
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}; got {level!r}")
    A = _albumentations()
    if level == "photometric":
        return A.Compose([A.RandomBrightnessContrast(0.2, 0.2, p=0.5), A.RandomGamma((80, 120), p=0.3),
                          A.CLAHE(clip_limit=2.0, p=0.15), A.GaussNoise(std_range=(0.02, 0.06), p=0.2),
                          A.GaussianBlur(blur_limit=(3, 5), p=0.2)])
    ops = [A.HorizontalFlip(p=0.5),
           A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), translate_percent=(-0.05, 0.05), p=0.5),
           A.RandomBrightnessContrast(0.15, 0.15, p=0.3)]
    if level == "strong":
        ops += [A.VerticalFlip(p=0.5),
                A.ElasticTransform(alpha=30, sigma=6, p=0.15),
                A.CLAHE(clip_limit=2.0, p=0.15),
                A.GaussNoise(std_range=(0.02, 0.06), p=0.15),
                A.GaussianBlur(blur_limit=(3, 5), p=0.15)]
    return A.Compose(ops)


def augment_pairs(images: torch.Tensor, masks: torch.Tensor, generator: np.random.Generator,
                  level: str = "strong") -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch, image and mask with the same geometry.

    Args:
        images: (B, 3, S, S) uint8.
        masks: (B, 1, S, S) uint8 in {0, 1}.
        generator: the only source of randomness.
    Returns:
        images (B, 3, S, S) uint8 and masks (B, 1, S, S) uint8, new tensors.
    """
    if level == "none" or len(images) == 0:
        return images, masks
    t = pipeline(level)
    t.set_random_seed(int(generator.integers(2**31 - 1)))
    x = images.permute(0, 2, 3, 1).numpy()
    m = masks[:, 0].numpy()
    out_x, out_m = np.empty_like(x), np.empty_like(m)
    for i in range(len(x)):  # albumentations works per image; at 256 px this is ~1 ms, small next to a step
        r = t(image=np.ascontiguousarray(x[i]), mask=np.ascontiguousarray(m[i]))
        out_x[i], out_m[i] = r["image"], r["mask"]
    return torch.from_numpy(out_x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(out_m).unsqueeze(1)


def augment_batch(images: torch.Tensor, masks: torch.Tensor, generator: np.random.Generator,
                  level: str = "light") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment_pairs` in batched torch on the tensors' own device (a GPU's batches are not held up by
    per-image work on the CPU). Same levels, same draws per image where torch has the operation: flips, the
    ``light`` affine (one ``affine_grid``; bilinear for images, nearest for masks, zeros outside), brightness /
    contrast, gamma, Gaussian noise and blur; CLAHE and the elastic deformation have no batched counterpart
    and are left out. Random parameters come from ``generator`` alone (drawn on the CPU), so a resumed run
    replays the same batch. Returns uint8 images and masks, new tensors.
    """
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}; got {level!r}")
    if level == "none" or len(images) == 0:
        return images, masks
    import torch.nn.functional as F

    b, dev = len(images), images.device

    def draw(lo: float, hi: float) -> torch.Tensor:
        return torch.from_numpy(generator.uniform(lo, hi, b).astype(np.float32)).to(dev)

    def coin(p: float) -> torch.Tensor:
        return torch.from_numpy(generator.random(b) < p).to(dev)

    x, m = images.float(), masks.float()
    if level in ("light", "strong"):
        flip = coin(0.5).view(b, 1, 1, 1)
        x, m = torch.where(flip, x.flip(-1), x), torch.where(flip, m.flip(-1), m)
        if level == "strong":
            flip = coin(0.5).view(b, 1, 1, 1)
            x, m = torch.where(flip, x.flip(-2), x), torch.where(flip, m.flip(-2), m)
        on = coin(0.5)
        scale, angle = draw(0.9, 1.1), torch.deg2rad(draw(-15.0, 15.0))
        shift = torch.stack([draw(-0.1, 0.1), draw(-0.1, 0.1)], 1)  # ±5 % of the side = ±0.1 in [-1, 1] units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input: the inverse map
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=dev).expand(b, 2, 3)
        theta = torch.where(on.view(b, 1, 1), theta, eye)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    limit, p_bc = (0.2, 0.5) if level == "photometric" else (0.15, 0.3)
    on = coin(p_bc).view(b, 1, 1, 1)
    alpha, beta = 1.0 + draw(-limit, limit).view(b, 1, 1, 1), 255.0 * draw(-limit, limit).view(b, 1, 1, 1)
    x = torch.where(on, x * alpha + beta, x).clamp(0, 255)
    if level == "photometric":
        on, gamma = coin(0.3).view(b, 1, 1, 1), draw(0.8, 1.2).view(b, 1, 1, 1)
        x = torch.where(on, 255.0 * (x / 255.0) ** gamma, x)
    if level in ("photometric", "strong"):
        p = 0.2 if level == "photometric" else 0.15
        on, std = coin(p).view(b, 1, 1, 1), 255.0 * draw(0.02, 0.06).view(b, 1, 1, 1)
        noise = torch.from_numpy(generator.standard_normal(x.shape).astype(np.float32)).to(dev)
        x = torch.where(on, x + std * noise, x).clamp(0, 255)
        on, sigma = coin(p).view(b, 1, 1, 1), draw(0.5, 1.1)
        k = torch.arange(-2, 3, device=dev, dtype=torch.float32)
        w = torch.exp(-k[None] ** 2 / (2 * sigma[:, None] ** 2))
        w = w / w.sum(1, keepdim=True)  # (B, 5) one 5-tap Gaussian per image, applied separably per channel
        c = x.shape[1]
        blurred = x.reshape(1, b * c, *x.shape[2:])
        wk = w.repeat_interleave(c, 0)
        blurred = F.conv2d(F.pad(blurred, (2, 2, 0, 0), mode="replicate"), wk.view(b * c, 1, 1, 5), groups=b * c)
        blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), wk.view(b * c, 1, 5, 1), groups=b * c)
        x = torch.where(on, blurred.view_as(x), x)
    return x.round().clamp(0, 255).to(torch.uint8), (m > 0.5).to(masks.dtype)
