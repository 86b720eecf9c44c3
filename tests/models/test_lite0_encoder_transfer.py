"""litesam_lite0_md8 (LiteSAM on an EfficientNet-Lite0 encoder) and moving that encoder into the lite0
segmentation models: key for key, every tensor, or a clear error naming the file.

Tests that need the ImageNet weights package skip without it, with the reason; under CI=true they fail."""

from __future__ import annotations

import pytest
import torch
from pretrained_extra import require_package

import medlite
from medlite.engine.checkpoint import read_checkpoint, save_checkpoint
from medlite.engine.tasks.promptable.train import SamTrainConfig, model_meta
from medlite.errors import ConfigError
from medlite.models import efficientnet_lite as el
from medlite.models.medlitenet import LITE0_ENCODER_PREFIXES, lite0_encoder, load_lite0_encoder


def _litesam(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return medlite.create_model("litesam_lite0_md8", num_classes=1, img_size=64)


def _saved(model, tmp_path, name="litesam_lite0_md8"):
    return save_checkpoint(tmp_path / "src" / "best.safetensors", model,
                           model_meta(model, SamTrainConfig(model=name, img_size=64)))


def test_lite0_litesam_gives_a_stride_8_embedding_and_answers_a_box():
    model = _litesam().eval()
    assert model.cfg.encoder == "lite0" and model.cfg.embed_stride == 8 and model.cfg.embed_dim == 256
    with torch.no_grad():
        feats = model.forward_features(torch.rand(2, 3, 64, 64))
        assert feats.embedding.shape == (2, 256, 8, 8) and feats.skips == ()
        logits, iou = model.forward_head(feats, torch.tensor([[[8.0, 8.0], [40.0, 50.0]]] * 2),
                                         torch.tensor([[2.0, 3.0]] * 2), torch.zeros(2, 1, 64, 64),
                                         torch.zeros(2))
    assert logits.shape[0] == 2 and torch.isfinite(logits).all() and torch.isfinite(iou).all()
    with pytest.raises(ValueError, match="stride-8 or stride-16"):
        medlite.create_model("litesam_lite0_md8", num_classes=1, img_size=64, embed_stride=4)


@pytest.mark.parametrize("target", ["medlitenet_lite0_s4", "unet_lite0"])
def test_encoder_moves_key_for_key_into_the_segmentation_models(target, tmp_path):
    src = _litesam()
    path = _saved(src, tmp_path)
    torch.manual_seed(1)
    seg = medlite.create_model(target, num_classes=1, img_size=64)
    assert load_lite0_encoder(seg, str(path)) == "litesam_lite0_md8"
    ref = src.image_encoder.backbone.state_dict()
    got = lite0_encoder(seg).state_dict()
    assert got.keys() == ref.keys() and len(got) > 200
    for k in got:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)
    # and back out of a segmentation checkpoint (the prefix table covers every lite0 model)
    assert set(LITE0_ENCODER_PREFIXES.values()) == {"image_encoder.backbone.", "encoder.model.", "encoder."}
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lite0_encoder(seg.eval())(x)[-1], src.image_encoder.backbone.eval()(x)[-1])


def test_a_checkpoint_without_a_lite0_encoder_is_refused_by_name(tmp_path):
    from litesam_tiny import TINY, tiny

    model = tiny()
    path = save_checkpoint(tmp_path / "swin" / "best.safetensors", model,
                           model_meta(model, SamTrainConfig(model="litesam_swin_xs", img_size=64, model_kwargs=TINY)))
    seg = medlite.create_model("medlitenet_lite0_s4", num_classes=1, img_size=64)
    with pytest.raises(ConfigError, match=f"{path}.*no EfficientNet-Lite0 encoder"):
        load_lite0_encoder(seg, str(path))
    with pytest.raises(ConfigError, match="has no EfficientNet-Lite0 encoder"):
        load_lite0_encoder(medlite.create_model("unet", num_classes=1, img_size=64), str(path))


def test_pretrained_lite0_litesam_starts_its_backbone_from_imagenet(tmp_path, monkeypatch):
    require_package()
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path / "cache"))
    model = medlite.create_model("litesam_lite0_md8", num_classes=1, pretrained=True)
    ref = el.imagenet_state(3)
    got = model.image_encoder.backbone.state_dict()
    assert len(got) == 288 and all(k in ref for k in got)
    for k in ("conv_stem.weight", "blocks.3.1.conv_pw.weight", "blocks.6.0.conv_pwl.weight"):
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0, msg=k)


def test_segmentation_run_starts_from_a_distilled_encoder(seg_folder, tmp_path, monkeypatch):
    """SegTrainConfig.encoder_init: the run's encoder starts as the checkpoint's (a rate of 1e-9 leaves it
    there) and the record says where it came from; `pretrained` is then not needed."""
    from medlite.engine.tasks.segment.train import SegTrainConfig, train_segmentation

    src = _litesam(3)
    path = _saved(src, tmp_path)
    monkeypatch.setattr("medlite.models.efficientnet_lite.load_weights",
                        lambda *a, **k: pytest.fail("encoder_init must not read the ImageNet weights"))
    cfg = SegTrainConfig(model="medlitenet_lite0_s4", data=str(seg_folder), layout="folder", size=64, epochs=1,
                         batch_size=4, folds=4, fold=0, val_fraction=0.15, augment="none", out=str(tmp_path / "run"),
                         threads=1, progress=False, plots=False, max_steps_per_epoch=1, lr=1e-9,
                         pretrained=True, encoder_init=str(path))
    train_segmentation(cfg)
    weights, meta, _ = read_checkpoint(tmp_path / "run" / "best.safetensors")
    ref = src.image_encoder.backbone.state_dict()
    for k in ("conv_stem.weight", "blocks.3.1.conv_pw.weight", "blocks.6.0.conv_pwl.weight"):
        torch.testing.assert_close(weights[f"encoder.{k}"], ref[k], rtol=0, atol=1e-6, msg=k)
    assert meta["train_config"]["encoder_init"] == str(path)
