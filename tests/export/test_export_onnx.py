"""ONNX export: every registered classifier matches PyTorch in ONNX Runtime; metadata travels with the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import medlite
from medlite.export.meta import ExportError, default_meta, read_onnx_meta
from medlite.export.onnx import export_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CLASSIFIERS = [n for n in medlite.list_models() if medlite.model_card(n).task == "classification"]


def _calibrate_batchnorm(model: torch.nn.Module) -> None:
    """Fresh CNNs in eval mode give near-zero logits (efficientnet: ~1e-5; BN running stats 0 / 1 do not
    match the activations), which would make the parity check vacuous. Set every BN's running mean to that
    of one training-mode batch and its running variance to max(batch variance, 1): untrained nets have
    near-constant channels whose 1 / sqrt(var + eps) gain makes logits ~1e3 and float32 itself inexact
    (PyTorch fp32 vs fp64 differs by 0.04 there, ORT by as much); the floor keeps logits O(1)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, the batch's statistics
    if bns:
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 1, 32, 32))
        for m in bns:
            m.running_var.clamp_(min=1.0)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_exports_and_matches_pytorch(name, tmp_path):
    torch.manual_seed(0)
    model = medlite.create_model(name, num_classes=3, in_chans=1, img_size=32)
    _calibrate_batchnorm(model)
    meta = default_meta(name, num_classes=3, in_chans=1, img_size=32)
    res = export_onnx(model, meta, tmp_path / f"{name}.onnx")
    assert res["max_abs_diff"] is not None and res["max_abs_diff"] <= 1e-4, res
    assert model.training  # the caller's mode is restored
    sess = ort.InferenceSession(res["path"], providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 32, 32)  # another batch than the export's: the batch axis is dynamic
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    assert got.shape == (5, 3)
    assert ref.std() > 1e-2  # logits are not trivially zero
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_dynamo_exporter(tmp_path):
    model = medlite.create_model("medlit_nano_28", num_classes=3, in_chans=1, img_size=16)
    res = export_onnx(model, default_meta("medlit_nano_28", 3, 1, 16), tmp_path / "d.onnx", exporter="dynamo")
    assert res["max_abs_diff"] <= 1e-4


def test_metadata_round_trip(trained_onnx, trained_run):
    meta = json.loads((trained_run / "best.json").read_text())
    stored = read_onnx_meta(trained_onnx)
    export = stored.pop("export")
    assert stored == meta
    assert export["format"] == "onnx" and export["precision"] == "fp32" and export["opset"] == 18
    sess = ort.InferenceSession(str(trained_onnx), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    assert json.loads(props["medlite"])["data"]["label_names"] == ["left", "middle", "right"]
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_meta_is_validated(tmp_path):
    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=16)
    meta = default_meta("resnet18", 3, 1, 16)
    del meta["data"]["label_names"]
    with pytest.raises(ExportError, match="label_names"):
        export_onnx(model, meta, tmp_path / "x.onnx", check=False)
    meta = default_meta("resnet18", 3, 1, 16, label_names=["a", "b"])
    with pytest.raises(ExportError, match="2 label names for a model with 3 outputs"):
        export_onnx(model, meta, tmp_path / "x.onnx", check=False)
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_raises_and_leaves_no_file(tmp_path):
    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=16)
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(model, default_meta("resnet18", 3, 1, 16), tmp_path / "x.onnx", atol=-1.0)
    assert list(tmp_path.iterdir()) == []
