"""medlitenet_lite0 and unet_lite0 with pretrained=True: every tensor of the features_only EfficientNet-Lite0
encoder comes from the ImageNet weights (the classifier head is dropped), the grey stem is the RGB stem summed,
and nothing outside the encoder is touched.

Tests that need the weights package skip without it, with the reason; under CI=true they fail instead."""

from __future__ import annotations

import pytest
import torch
from pretrained_extra import require_package

import medlite
from medlite.errors import ConfigError
from medlite.models import efficientnet_lite as el
from medlite.weights import load_weights

MODELS = ["medlitenet_lite0", "unet_lite0"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the module: the weights are converted once, not per test."""
    return tmp_path_factory.mktemp("medlite-cache")


@pytest.fixture
def imagenet(shared_cache, monkeypatch) -> dict[str, torch.Tensor]:
    """The ImageNet state dict (timm keys); create_model(..., pretrained=True) reads the same cache."""
    require_package()
    monkeypatch.setenv("MEDLITE_CACHE", str(shared_cache))
    return load_weights(el.WEIGHTS.name)


def _encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The timm features_only module (MedLiteNet: ``encoder``; smp's U-Net: ``encoder.model``)."""
    return getattr(model.encoder, "model", model.encoder)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_loads_every_encoder_tensor(name, imagenet):
    torch.manual_seed(0)
    scratch = medlite.create_model(name, num_classes=1, img_size=64)
    torch.manual_seed(0)
    model = medlite.create_model(name, num_classes=1, img_size=64, pretrained=True)
    enc = _encoder(model).state_dict()
    expected = {k: v for k, v in imagenet.items() if not k.startswith(el.HEAD_PREFIXES)}
    assert set(enc) == set(expected) and len(enc) == 288  # 296 ImageNet tensors less the 8 of the head
    for k, v in enc.items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(_encoder(model).blocks[3][1].conv_pw.weight, imagenet["blocks.3.1.conv_pw.weight"],
                               rtol=0, atol=0)
    # outside the encoder nothing changes: the decoder is the seeded random one
    rest = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    for k, v in rest.items():
        torch.testing.assert_close(v, scratch.state_dict()[k], rtol=0, atol=0, msg=k)
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1, 64, 64) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_grey_stem_is_the_rgb_stem_summed(name, imagenet):
    model = medlite.create_model(name, num_classes=1, in_chans=1, img_size=64, pretrained=True).eval()
    stem = _encoder(model).conv_stem.weight
    torch.testing.assert_close(stem, imagenet["conv_stem.weight"].sum(1, keepdim=True), rtol=0, atol=0)
    rgb = medlite.create_model(name, num_classes=1, in_chans=3, img_size=64, pretrained=True).eval()
    grey = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():  # a grey image repeated into RGB gives the same features
        a = _encoder(model)(grey)[-1]
        b = _encoder(rgb)(grey.repeat(1, 3, 1, 1))[-1]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="in_chans 1 .* or 3, got 2"):
        medlite.create_model(name, num_classes=1, in_chans=2, img_size=64, pretrained=True)


def test_pretrained_needs_the_lite0_encoder(imagenet):
    with pytest.raises(ConfigError, match="tf_efficientnet_lite0 encoder only"):
        medlite.create_model("medlitenet_lite0", num_classes=1, img_size=64, pretrained=True, encoder="resnet18")
