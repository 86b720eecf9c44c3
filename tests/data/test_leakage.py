"""Train/test leakage: planted copies, re-encodes and resizes are found; distinct images are not; training,
`medlite evaluate` and `medlite data check` report them (hardening issue, leakage section)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medlite.cli import app
from medlite.data.base import ArraySplit, ClassificationData
from medlite.data.leakage import clean_split, find_duplicates, leakage_report, phash

runner = CliRunner()


def _blobs(n: int, seed: int, size: int = 32) -> np.ndarray:
    """n distinct smooth grey images (random low-frequency fields), uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((n, 1, 5, 5)).astype(np.float32))
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (up.clamp(0, 1)[:, 0].numpy() * 255).astype(np.uint8)


def _jpeg(a: np.ndarray, quality: int = 75) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=quality)
    return np.asarray(Image.open(b)).copy()


def _resize(a: np.ndarray) -> np.ndarray:
    up = Image.fromarray(a).resize((45, 45), Image.Resampling.BILINEAR)
    return np.asarray(up.resize(a.shape[::-1], Image.Resampling.BILINEAR)).copy()


def _data(train: np.ndarray, test: np.ndarray) -> ClassificationData:
    def split(x):
        return ArraySplit(torch.from_numpy(x[:, None]), torch.arange(len(x)) % 2)

    return ClassificationData("synthetic", "binary", ["a", "b"], split(train), split(_blobs(4, 99)), split(test))


def test_planted_leaks_are_found_and_distinct_images_are_not():
    train, test = _blobs(40, 0), _blobs(20, 1)
    leaks = {0: test[0].copy(), 1: _jpeg(test[1]), 2: _resize(test[2]), 3: _jpeg(_resize(test[3]), 60)}
    planted = np.concatenate([train, np.stack(list(leaks.values()))])
    rep = leakage_report(_data(planted, test))
    assert rep["twinned"]["test"] == [0, 1, 2, 3]  # each planted kind, and nothing else
    assert rep["by_splits"]["train-test"] == {"exact": 1, "near": 3}
    assert leakage_report(_data(train, test))["pairs"] == 0  # the untouched data: no pair at all
    clean = clean_split(_data(planted, test).test, rep["twinned"]["test"])
    assert len(clean) == 16 and torch.equal(clean.images[0], torch.from_numpy(test[4])[None])


def test_pairs_within_splits_and_label_conflicts():
    train = _blobs(10, 0)
    train[5] = train[2]  # an exact copy within train with another label (index 5 -> label 1, 2 -> label 0)
    pairs = find_duplicates(_data(train, _blobs(5, 1)))
    assert [(p.split_a, p.index_a, p.split_b, p.index_b, p.kind) for p in pairs] == [("train", 2, "train", 5,
                                                                                        "exact")]
    assert pairs[0].label_a != pairs[0].label_b and leakage_report(_data(train, _blobs(5, 1)))["label_conflicts"] == 1


def test_phash_is_stable_under_reencoding_and_colour():
    a = _blobs(1, 3)[0]
    rgb = np.repeat(a[None, None], 3, axis=1)
    assert phash(a[None, None])[0] == phash(rgb)[0]  # grey and grey-as-RGB hash alike
    assert np.bitwise_count(phash(a[None, None]) ^ phash(_jpeg(a)[None, None]))[0] <= 4


@pytest.fixture
def leaky_folder(tmp_path):
    """A pre-split class folder whose test holds a byte copy and a JPEG re-encode of training images."""
    imgs = _blobs(40, 5, size=28)
    root = tmp_path / "leaky"
    for i, a in enumerate(imgs[:30]):
        p = root / "train" / ("a", "b")[i % 2] / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
    for i, a in enumerate(imgs[30:]):
        p = root / "test" / ("a", "b")[i % 2] / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
    (root / "test" / "a" / "copy.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    Image.fromarray(_jpeg(imgs[2])).save(root / "test" / "a" / "reencoded.jpg", quality=95)
    return root


def test_training_warns_writes_pairs_and_reports_clean_test_metrics(leaky_folder, tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "medlit_nano_28", "--data", str(leaky_folder), "--epochs", "1", "--size",
                            "28", "--batch-size", "8", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["leakage"]["twinned_counts"]["test"] == 2
    assert res["test"]["n"] == 12 and res["test_clean"]["n"] == 10
    assert (out / "duplicates.csv").read_text().count("\n") == 1 + res["leakage"]["pairs"]
    assert "have a twin in train" in r.output.replace("\n", " ")  # the report printed at the end
    assert "test without train twins" in (out / "report.md").read_text()
    ev = runner.invoke(app, ["evaluate", str(out), "--out", str(tmp_path / "ev")], env={"COLUMNS": "120"})
    assert ev.exit_code == 0 and "without train twins" in ev.output, ev.output
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["leakage"]["twinned_counts"]["test"] == 2 and saved["without_train_twins"]["n"] == 10
    off = runner.invoke(app, ["train", "medlit_nano_28", "--data", str(leaky_folder), "--epochs", "1", "--size",
                              "28", "--batch-size", "8", "--out", str(tmp_path / "off"), "--no-progress",
                              "--no-leakage"])
    assert off.exit_code == 0 and "leakage" not in json.loads((tmp_path / "off" / "results.json").read_text())


def test_data_check_table_json_and_exit_code(leaky_folder, tmp_path):
    r = runner.invoke(app, ["data", "check", str(leaky_folder), "--out", str(tmp_path / "c.json")],
                      env={"COLUMNS": "80"})
    assert r.exit_code == 1, r.output  # test images with a twin in train
    assert "2 test image(s) have a twin in train" in r.output.replace("\n", " ")
    assert "…" not in r.output
    rep = json.loads((tmp_path / "c.json").read_text())
    assert rep["files"]["files"] == 42 and rep["files"]["sizes"] == {"28x28": 42}
    assert rep["class_balance"]["test"] == {"a": 7, "b": 5} and rep["duplicates"]["twinned_counts"]["test"] == 2
    assert (tmp_path / "c.pairs.csv").is_file()
    (leaky_folder / "train" / "b" / "bad.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["data", "check", str(leaky_folder), "--out", str(tmp_path / "d.json")],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 1 and "bad.png" in r.output and "1 unreadable file" in r.output
    assert [u["file"] for u in json.loads((tmp_path / "d.json").read_text())["files"]["unreadable"]] == [
        str(leaky_folder / "train" / "b" / "bad.png")]
