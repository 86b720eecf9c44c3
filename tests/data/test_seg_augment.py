"""Joint image + mask augmentation (medlite.data.seg_augment): seeded, geometry shared by image and mask,
and the photometric level leaves geometry alone (the distillation stage relies on it); the same for the batched
torch version (``augment_batch``, for a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("albumentations", reason="pip install 'medlite[seg]'")

from medlite.data.seg_augment import augment_batch, augment_pairs  # noqa: E402

FNS = pytest.mark.parametrize("fn", [augment_pairs, augment_batch], ids=["albumentations", "batched"])


def _square_batch(n: int = 16, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright off-centre squares on a textured background, and their masks."""
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(20, 60, (n, 3, size, size), dtype=np.uint8))
    masks = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, :, 4:14, 6:18] = 220
    masks[:, :, 4:14, 6:18] = 1
    return images, masks


@FNS
def test_none_is_identity_and_unknown_level_is_refused(fn):
    x, m = _square_batch(2)
    assert fn(x, m, np.random.default_rng(0), "none") == (x, m)
    with pytest.raises(ValueError, match="photometric"):
        fn(x, m, np.random.default_rng(0), "heavy")


@FNS
@pytest.mark.parametrize("level", ["photometric", "light", "strong"])
def test_seeded(fn, level):
    x, m = _square_batch()
    a = fn(x, m, np.random.default_rng(3), level)
    b = fn(x, m, np.random.default_rng(3), level)
    c = fn(x, m, np.random.default_rng(4), level)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == x.shape and a[0].dtype == torch.uint8 and a[1].shape == m.shape


@FNS
def test_photometric_changes_intensity_only(fn):
    x, m = _square_batch(32)
    y, ym = fn(x, m, np.random.default_rng(0), "photometric")
    assert torch.equal(ym, m)  # masks untouched: no geometry
    changed = (y.int() - x.int()).abs().flatten(1).amax(1) > 0
    assert changed.sum() >= 8  # most images get some intensity change
    inside = y[:, :, 6:12, 8:16].float().mean((1, 2, 3))
    outside = y[:, :, 20:, 20:].float().mean((1, 2, 3))
    assert (inside > outside + 60).all()  # the square stays where it was, still the brightest part


@FNS
@pytest.mark.parametrize("level", ["light", "strong"])
def test_geometric_levels_move_image_and_mask_together(fn, level):
    x, m = _square_batch(32)
    y, ym = fn(x, m, np.random.default_rng(0), level)
    assert not torch.equal(ym, m)  # some geometry happened
    for img, mask in zip(y, ym, strict=True):
        if mask.sum() < 10:
            continue
        fg = img[:, mask[0].bool()].float().mean()
        bg = img[:, ~mask[0].bool()].float().mean()
        assert fg > bg + 60  # the mask still covers the bright square


def test_batched_augmentation_keeps_masks_binary_and_aligned():
    """Nearest sampling keeps masks in {0, 1}; the affine moves image and mask by the same map."""
    x, m = _square_batch(64)
    y, ym = augment_batch(x, m, np.random.default_rng(1), "light")
    assert set(ym.unique().tolist()) <= {0, 1} and ym.dtype == m.dtype
    bright = (y.float().mean(1, keepdim=True) > 140).float()
    inter = (bright * ym).sum()
    assert inter / ((bright + ym).clamp(max=1).sum()) > 0.8  # the bright square is where its mask went
