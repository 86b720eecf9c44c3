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
