"""int8 (dynamic and static QDQ): working models that mostly agree with fp32, metadata kept, AUC/ACC compared."""

from __future__ import annotations

import numpy as np
import pytest

from medlite.export.meta import read_onnx_meta
from medlite.export.quantize import compare_on, quantize_dynamic_int8, quantize_static_int8
from medlite.export.runtime import OnnxClassifier

pytest.importorskip("onnxruntime.quantization")


def _check_int8(fp32, int8, test_set, method: str) -> None:
    meta32, meta8 = read_onnx_meta(fp32), read_onnx_meta(int8)
    assert meta8["export"]["precision"] == "int8"
    assert meta8["export"]["quantization"]["method"] == method
    assert {k: v for k, v in meta8.items() if k != "export"} == {k: v for k, v in meta32.items() if k != "export"}
    assert int8.stat().st_size < fp32.stat().st_size
    x, y = test_set
    q = compare_on(fp32, int8, x, y, "multi-class", threads=1)
    assert q["n"] == len(x)
    assert q["fp32"]["acc"] > 0.9  # the fixture model learned the task
    assert q["agreement"] >= 0.95
    assert abs(q["delta_auc"]) < 0.02 and abs(q["delta_acc"]) < 0.05
    probs = OnnxClassifier(int8, threads=1).predict_array(x[:4])
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_dynamic_int8(trained_onnx, tmp_path, test_set):
    out = quantize_dynamic_int8(trained_onnx, tmp_path / "d.int8.onnx")
    assert out == tmp_path / "d.int8.onnx"
    _check_int8(trained_onnx, out, test_set, "dynamic")


def test_static_int8_qdq(trained_onnx, tmp_path, test_set, calib_images):
    out = quantize_static_int8(trained_onnx, tmp_path / "s.int8.onnx", calib_images)
    _check_int8(trained_onnx, out, test_set, "static")
    meta = read_onnx_meta(out)
    assert meta["export"]["quantization"]["calibration_images"] == 64
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format


def test_static_int8_rejects_wrong_calibration_shape(trained_onnx, tmp_path):
    with pytest.raises(ValueError, match="expected"):
        quantize_static_int8(trained_onnx, tmp_path / "s.onnx", np.zeros((4, 3, 16, 16), np.float32))


def test_static_int8_on_a_cnn(tmp_path, calib_images):
    """The convolution path (QDQ Conv) of the CNN baselines quantizes and runs too."""
    import medlite
    from medlite.export.meta import default_meta
    from medlite.export.onnx import export_onnx

    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=16)
    export_onnx(model, default_meta("resnet18", 3, 1, 16), tmp_path / "r.onnx")
    out = quantize_static_int8(tmp_path / "r.onnx", tmp_path / "r.int8.onnx", calib_images)
    import onnx

    convs = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    assert convs and all(i.endswith("_DequantizeLinear_Output") for n in convs for i in n.input[:2])
    probs = OnnxClassifier(out, threads=1).predict_array(calib_images[:8])
    assert probs.shape == (8, 3) and np.isfinite(probs).all()
