"""The torch-free promptable runtime (ONNX Runtime) against the PyTorch predictor it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from litesam_tiny import TINY, tiny

from medlite.engine.tasks.promptable.train import SamTrainConfig, model_meta
from medlite.export.meta import ModelFileError
from medlite.export.sam_onnx import export_litesam
from medlite.export.sam_runtime import OnnxSamPredictor, is_sam_folder
from medlite.models.litesam import LiteSAMPredictor


@pytest.fixture(params=["litesam_swin_xs", "litemedsam_xs"])
def pair(request, tmp_path):
    m = tiny(request.param).eval()
    meta = model_meta(m, SamTrainConfig(model=request.param, model_kwargs=TINY, img_size=64))
    export_litesam(m, meta, tmp_path)
    return LiteSAMPredictor(m), OnnxSamPredictor(tmp_path)


def _scribble(h, w):
    s = np.zeros((h, w), np.float32)
    s[20:23, 10:40], s[40:42, 50:70] = 1, -1
    return s


@pytest.mark.parametrize("prompt", [
    {"box": [10, 5, 60, 40]},
    {"points": [[30, 20]], "point_labels": [1]},
    {"points": [[30, 20], [70, 45]], "point_labels": [1, 0]},
    {"box": [10, 5, 60, 40], "points": [[30, 20]], "point_labels": [1]},
    {"scribble": "s"},
])
def test_onnx_predictor_matches_pytorch(pair, prompt):
    torch_p, onnx_p = pair
    img = np.random.default_rng(0).integers(0, 255, (50, 90, 3), dtype=np.uint8)
    prompt = {k: (_scribble(50, 90) if v == "s" else v) for k, v in prompt.items()}
    torch_p.set_image(img)
    onnx_p.set_image(img)
    want, want_iou = torch_p.segment(**prompt, return_probs=True)
    got, got_iou = onnx_p.segment(**prompt, return_probs=True)
    assert got.shape == (50, 90) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert got_iou == pytest.approx(want_iou, abs=1e-4)
    assert onnx_p.encoder_calls == 1


def test_onnx_predictor_refuses_what_pytorch_refuses(pair):
    _, p = pair
    with pytest.raises(RuntimeError, match="set_image"):
        p.segment(box=[1, 1, 5, 5])
    p.set_image(np.zeros((30, 70), np.uint8))
    for kw, msg in [({"box": [5, 5, 200, 25]}, "outside the 70 x 30 image"),
                    ({"box": [40, 25, 5, 5]}, "x0 < x1"),
                    ({"box": [np.nan, 5, 40, 25]}, "finite"),
                    ({"points": [[90, 10]]}, "outside"),
                    ({"points": [[9, 10]], "point_labels": [7]}, "point_labels"),
                    ({"scribble": np.zeros((3, 3))}, "scribble is (3, 3)"),
                    ({}, "at least one prompt")]:
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            p.segment(**kw)


def test_a_folder_without_graphs_is_a_named_error(tmp_path):
    assert not is_sam_folder(tmp_path)
    with pytest.raises(ModelFileError, match="no encoder.onnx"):
        OnnxSamPredictor(tmp_path)
