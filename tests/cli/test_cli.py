"""The command line: help for newcomers, listing commands, train + evaluate end to end, clear errors."""

import json

import pytest
from typer.testing import CliRunner

from medlite.cli import app

runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["train"], ["evaluate"], ["datasets"], ["models"]])
def test_help_is_useful(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0
    assert "Usage" in r.output


def test_train_help_explains_data_forms():
    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert "breastmnist" in r.output and ".csv" in r.output


def test_datasets_lists_all_twelve_subsets(tmp_path):
    r = runner.invoke(app, ["datasets", "--root", str(tmp_path)], terminal_width=250)
    assert r.exit_code == 0, r.output
    for name in ("pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
                 "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"):
        assert name in r.output


def test_models_lists_baselines():
    r = runner.invoke(app, ["models", "--family", "baseline"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "resnet18" in r.output and "efficientnet_b0" in r.output


def test_train_then_evaluate(tiny_npz, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "vit_tiny_patch16_224", "--data", str(tiny_npz), "--size", "16",
                            "--epochs", "2", "--batch-size", "32", "--out", str(out), "--no-progress",
                            "--model-opt", "depth=1", "--model-opt", "embed_dim=32",
                            "--model-opt", "num_heads=2"])
    assert r.exit_code == 0, r.output
    assert "AUC" in r.output and (out / "report.md").is_file()
    ev = tmp_path / "eval"
    r = runner.invoke(app, ["evaluate", str(out), "--data", str(tiny_npz), "--n-boot", "50", "--out", str(ev)])
    assert r.exit_code == 0, r.output
    rep = json.loads((ev / "evaluation.json").read_text())
    saved = json.loads((out / "results.json").read_text())
    assert rep["auc"] == pytest.approx(saved["test"]["auc"])
    assert (ev / "roc.png").is_file() and (ev / "confusion.png").is_file()


def test_missing_dataset_is_a_clear_error(tmp_path):
    r = runner.invoke(app, ["train", "resnet18", "--data", "breastmnist", "--data-root", str(tmp_path),
                            "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 2
    assert "breastmnist" in r.output and "download" in r.output


def test_evaluate_missing_run_names_it(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "nothing" in r.output


def test_explain_writes_overlay(tmp_path):
    import numpy as np
    from PIL import Image

    import medlite
    from medlite.engine.checkpoint import save_checkpoint

    tiny = {"embed_dim": 48, "depth": 2, "num_heads": 2, "num_kv_groups": 1, "experts_per_stage": [2, 2],
            "expert_hidden_start": 32, "expert_hidden_end": 16}
    model = medlite.create_model("medlit_nano_28", num_classes=3, in_chans=1, img_size=28, **tiny)
    meta = {"model": {"name": "medlit_nano_28", "num_classes": 3, "in_chans": 1, "img_size": 28, "kwargs": tiny},
            "preprocessing": {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]},
            "data": {"task": "multi-class", "label_names": ["a", "b", "c"]}}
    save_checkpoint(tmp_path / "run" / "best.safetensors", model, meta)
    img = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)).save(img)
    r = runner.invoke(app, ["explain", str(tmp_path / "run"), str(img), "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "x.png").size[0] > 200
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    r = runner.invoke(app, ["explain", str(tmp_path / "run"), str(bad)])
    assert r.exit_code == 2 and "bad.png" in r.output
