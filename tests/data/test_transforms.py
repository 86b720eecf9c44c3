"""Batched transforms: values, dtypes, determinism under an explicit generator."""

from __future__ import annotations

import pytest
import torch

from medlite.data.transforms import augment_batch, resize_batch, to_float


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_to_float_values_and_per_channel():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(2, 3, 1, 2)
    y = to_float(x, 0.5, 0.5)
    assert y.dtype == torch.float32 and y[0, 0, 0].tolist() == [-1.0, 1.0]
    z = to_float(x, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 2.0))
    assert z[0, :, 0, 1].tolist() == [1.0, 1.0, 0.0]
    assert torch.equal(to_float(x.float() / 255, 0.5, 0.5), y)  # float input is taken as [0, 1]
    with pytest.raises(ValueError, match="2 values for images with 3 channels"):
        to_float(x, (0.1, 0.2), 1.0)


def test_resize_batch_keeps_dtype_and_constants():
    x = torch.full((4, 3, 28, 28), 77, dtype=torch.uint8)
    assert resize_batch(x, 28) is x
    up = resize_batch(x, 64)
    assert up.shape == (4, 3, 64, 64) and up.dtype == torch.uint8 and up.unique().tolist() == [77]
    f = resize_batch(x.float(), (10, 12))
    assert f.dtype == torch.float32 and f.shape == (4, 3, 10, 12) and torch.allclose(f, torch.tensor(77.0))


def test_resize_batch_antialiases():
    checker = ((torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2 * 255).to(torch.uint8)
    small = resize_batch(checker.view(1, 1, 32, 32), 8)
    assert (small.float() - 127.5).abs().max() <= 2  # averaged, not aliased to 0 / 255


def test_augment_none_and_unknown_mode():
    x = torch.rand(3, 1, 8, 8)
    assert augment_batch(x, _gen(0), "none") is x
    with pytest.raises(ValueError, match="heavy"):
        augment_batch(x, _gen(0), "heavy")


def test_augment_flip_is_per_sample_and_seeded():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    y = augment_batch(x, _gen(1), "flip")
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    same = (y == x).flatten(1).all(1)
    assert (flipped | same).all() and 10 < flipped.sum() < 54
    assert torch.equal(y, augment_batch(x, _gen(1), "flip"))
    assert not torch.equal(y, augment_batch(x, _gen(2), "flip"))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_light(dtype):
    x = torch.randint(0, 256, (16, 3, 28, 28)).to(dtype)
    y = augment_batch(x, _gen(0), "light")
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.equal(y, augment_batch(x, _gen(0), "light"))
    assert not torch.equal(y, augment_batch(x, _gen(1), "light"))
    assert not torch.equal(y, x)
    const = torch.full((4, 1, 16, 16), 9).to(dtype)
    assert torch.allclose(augment_batch(const, _gen(0), "light").float(), const.float())  # border padding


def test_augment_light_is_a_mild_geometric_change():
    # a centred bright square stays mostly in place under +-15 deg, 0.9-1.1 scale, +-10 % shift
    x = torch.zeros(32, 1, 32, 32)
    x[:, :, 10:22, 10:22] = 1.0
    y = augment_batch(x, _gen(0), "light")
    area = y.sum(dim=(1, 2, 3)) / 144
    assert ((area > 0.75) & (area < 1.3)).all()  # scale 0.9-1.1 -> area 0.81-1.21
    assert (y[:, :, 15:17, 15:17] > 0.5).all()
