"""ONNX export of the full-size 28 px MedLiT models: ONNX Runtime matches PyTorch in eval mode."""

import io

import numpy as np
import pytest
import torch

import medlite

ort = pytest.importorskip("onnxruntime")


def _export(model, x, dynamo: bool, tmp_path) -> str | bytes:
    if dynamo:
        path = str(tmp_path / "model.onnx")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["logits"], opset_version=18,
                          dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        return path
    f = io.BytesIO()
    torch.onnx.export(model, (x,), f, input_names=["x"], output_names=["logits"], opset_version=17,
                      dynamo=False, dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return f.getvalue()


def _check(name: str, dynamo: bool, tmp_path) -> None:
    torch.manual_seed(0)
    model = medlite.create_model(name, num_classes=7, in_chans=3).eval()
    graph = _export(model, torch.randn(2, 3, 28, 28), dynamo, tmp_path)
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 28, 28)  # another batch size than exported: the batch axis is dynamic
    (got,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["medlit_seed_28", "medlit_nano_28"])
def test_onnx_matches_pytorch(name, tmp_path):
    _check(name, dynamo=False, tmp_path=tmp_path)


@pytest.mark.slow
def test_onnx_dynamo_matches_pytorch(tmp_path):
    """The default (torch.export-based) exporter too; slower, so one model."""
    _check("medlit_nano_28", dynamo=True, tmp_path=tmp_path)
