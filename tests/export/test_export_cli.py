"""``medlite export / predict / bench`` through the Typer app: good and bad files, JSON, overlays, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

cli = pytest.importorskip("medlite.cli")
if not all(hasattr(cli, name) for name in ("export", "predict", "bench")):
    pytest.fail("medlite.cli lacks the export / predict / bench commands (medlite.cli.deploy)")

runner = CliRunner()


@pytest.fixture
def files(tmp_path, test_set) -> dict[str, Path]:
    x, _ = test_set
    good = tmp_path / "good.png"
    Image.fromarray(((x[0, 0] * 0.5 + 0.5) * 255).round().astype(np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    unknown = tmp_path / "notes.xyz"
    unknown.write_text("not an image")
    pydicom = pytest.importorskip("pydicom")
    return {"good": good, "truncated": truncated, "unknown": unknown,
            "dicom": Path(pydicom.data.get_testdata_file("CT_small.dcm"))}


def _invoke(*args: str):
    # rich reads the width from COLUMNS: wide enough that the temporary paths are not wrapped in the table
    return runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})


def test_help():
    for cmd in ("export", "predict", "bench"):
        r = _invoke(cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output
    assert "onnx-int8-static" in _invoke("export", "--help").output


def test_predict_mixed_good_and_bad_files(trained_onnx, files):
    r = _invoke("predict", trained_onnx, files["good"], files["truncated"], files["unknown"], files["dicom"])
    assert r.exit_code == 1, r.output
    out = r.output
    assert "good.png" in out and "CT_small.dcm" in out and "middle" in out  # the table of the good ones
    assert "truncated.png: corrupt" in out
    assert "notes.xyz: unsupported extension '.xyz'" in out


def test_predict_all_good_exit_zero_and_json(trained_onnx, trained_run, files):
    r = _invoke("predict", trained_onnx, files["good"], "--json")
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert res["file"] == str(files["good"]) and set(res["probs"]) == {"left", "middle", "right"}
    r2 = _invoke("predict", trained_run, files["good"], files["truncated"], "--json")  # the checkpoint
    assert r2.exit_code == 1
    good, bad = json.loads(r2.stdout)
    np.testing.assert_allclose(list(good["probs"].values()), list(res["probs"].values()), atol=1e-4)
    assert "truncated.png" in bad["error"]


def test_predict_explain_writes_overlays(trained_run, files, tmp_path):
    r = _invoke("predict", trained_run, files["good"], "--explain", "--out", tmp_path / "ex")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ex" / "good_explain.png").is_file()


def test_predict_bad_model(tmp_path, files):
    r = _invoke("predict", tmp_path / "missing.onnx", files["good"])
    assert r.exit_code == 2 and "missing.onnx" in r.output


def test_export_onnx_then_predict(trained_run, tmp_path, files):
    out = tmp_path / "m.onnx"
    r = _invoke("export", trained_run, "--format", "onnx", "--out", out)
    assert r.exit_code == 0, r.output
    assert out.is_file() and "max |ONNX Runtime - PyTorch|" in r.output
    assert _invoke("predict", out, files["good"]).exit_code == 0


def test_export_static_int8_with_data(trained_run, tmp_path, toy_npz):
    out = tmp_path / "m.int8-static.onnx"
    r = _invoke("export", trained_run, "--format", "onnx-int8-static", "--out", out, "--data", toy_npz,
                "--calib-samples", 32)
    assert r.exit_code == 0, r.output
    assert out.is_file() and (tmp_path / "m.fp32.onnx").is_file()
    assert "fp32 vs int8" in r.output and "AUC" in r.output


def test_export_errors(trained_run, tmp_path):
    r = _invoke("export", trained_run, "--format", "tflite")
    assert r.exit_code == 2 and "unknown format" in r.output
    r = _invoke("export", tmp_path / "no-run", "--format", "onnx")
    assert r.exit_code == 2 and "no-run" in r.output


def test_bench_writes_markdown(trained_run, tmp_path):
    md = tmp_path / "bench.md"
    r = _invoke("bench", trained_run, "--threads", "1", "--runtime", "torch,onnx", "--warmup", 0,
                "--repeats", 2, "--batch", 2, "--out", md)
    assert r.exit_code == 0, r.output
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| model | runtime | threads |")
    assert len(lines[2].split("|")) == len(lines[0].split("|"))
    assert _invoke("bench", trained_run, "--runtime", "tensorflow").exit_code == 2


def test_predict_streams_many_files_in_bounded_batches(trained_onnx, files, tmp_path, monkeypatch):
    """Hardening issue, item 13: files are read and classified 64 at a time (not all decoded first), results
    come in order, JSON stays one valid list and a bad file in the middle does not stop the rest."""
    import medlite.export.classifier as classifier

    paths = [files["good"]] * 70 + [files["truncated"]] + [files["good"]] * 59
    seen = []
    real = classifier.read_image
    monkeypatch.setattr(classifier, "read_image", lambda p: seen.append(p) or real(p))
    batches = [len(r) for r, _ in classifier.iter_classify_files(
        _onnx(trained_onnx), paths, batch_size=64)]
    assert batches == [64, 64, 2] and len(seen) == 130
    r = _invoke("predict", trained_onnx, *paths, "--json")
    assert r.exit_code == 1
    res = json.loads(r.stdout)
    assert len(res) == 130 and "error" in res[70] and all("probs" in x for i, x in enumerate(res) if i != 70)
    t = _invoke("predict", trained_onnx, *paths)
    assert "files 1-64" in t.output and "files 129-130" in t.output and "truncated.png: corrupt" in t.output


def _onnx(path):
    from medlite.export.runtime import OnnxClassifier

    return OnnxClassifier(path)
