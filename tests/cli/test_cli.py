"""The command line: help for newcomers, listing commands, train + evaluate end to end, clear errors."""

import json
import re

import numpy as np
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


# ------------------------------------------------------------------- hardening: silent wrong results
def _npz(path, train, val, test, n_img=None):
    rng = np.random.default_rng(0)

    def imgs(n):
        return rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)

    np.savez(path, train_images=imgs(len(train)), train_labels=np.array(train, np.uint8),
             val_images=imgs(len(val)), val_labels=np.array(val, np.uint8),
             test_images=imgs(len(test) if n_img is None else n_img), test_labels=np.array(test, np.uint8))
    return path


@pytest.mark.parametrize("labels, fragment", [
    (([0, 1] * 10, [0, 1], [0, 1, 7]), r"test_labels hold \[7\], which train_labels never have"),
    (([0, 1, 5] * 6, [0, 1], [0, 1]), r"train_labels skip class\(es\) \[2, 3, 4\]"),
    (([1] * 20, [1, 1], [1, 1]), r"train_labels hold 1 class\(es\)"),
    (([0, 1] * 10, [0, 1], []), "split\\(s\\) test hold no images"),
])
def test_npz_that_would_train_a_wrong_model_is_refused(tmp_path, labels, fragment):
    """Issue 15, items 1, 2, 9: a label outside train's, a gap, one class, an empty split: exit 2 with the
    file named, before any training (no run folder is written)."""
    path = _npz(tmp_path / "data.npz", *labels)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "resnet18", "--data", str(path), "--size", "16", "--epochs", "1",
                            "--out", str(out), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert re.search(fragment, " ".join(r.output.split())) and str(path.name) in r.output
    assert not (out / "best.safetensors").exists() and not (out / "last.safetensors").exists()


def test_text_file_named_npz_says_it_is_not_a_zip(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    r = runner.invoke(app, ["train", "resnet18", "--data", str(path), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "not an .npz archive" in " ".join(r.output.split()) and "pickle" not in r.output
