from __future__ import annotations

import json

import numpy as np
import pytest
from litesam_tiny import TINY, tiny
from PIL import Image
from typer.testing import CliRunner

from medlite.cli import app
from medlite.engine.checkpoint import save_checkpoint
from medlite.engine.tasks.promptable.train import SamTrainConfig, model_meta

runner = CliRunner()


@pytest.fixture
def tiny_ckpt(tmp_path):
    m = tiny()
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, img_size=64)
    return save_checkpoint(tmp_path / "run" / "best.safetensors", m, model_meta(m, cfg))


def test_sam_predict_image_and_npz(tmp_path, tiny_ckpt):
    img = np.random.default_rng(0).integers(0, 255, (30, 70, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png"), "--box", "5,5,40,25",
                            "--point", "20,15,1", "--point", "60,5,0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    mask = np.asarray(Image.open(out / "x_mask.png"))
    assert mask.shape == (30, 70)
    info = json.loads((out / "x.json").read_text())
    assert 0 <= info["iou_pred"] <= 1 and info["seconds"] > 0
    gts = np.zeros((30, 70), np.uint8)
    gts[5:20, 5:30], gts[10:25, 40:60] = 1, 2
    np.savez(tmp_path / "case.npz", imgs=img, gts=gts, boxes=np.array([[5, 5, 29, 19], [40, 10, 59, 24]]))
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "case.npz"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    segs = np.load(out / "case.npz")["segs"]
    assert segs.shape == (30, 70) and segs.dtype == np.uint16 and set(np.unique(segs)) <= {0, 1, 2}


def test_sam_predict_needs_a_prompt(tmp_path, tiny_ckpt):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "x.png")
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png")])
    assert r.exit_code != 0
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png"), "--box", "1,2,3"])
    assert r.exit_code != 0


def test_sam_export_cli(tmp_path, tiny_ckpt):
    r = runner.invoke(app, ["sam", "export", str(tiny_ckpt.parent), "--out", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "onnx" / "encoder.onnx").is_file() and (tmp_path / "onnx" / "decoder.onnx").is_file()
