from __future__ import annotations

import numpy as np
import pytest
import torch
from litesam_tiny import tiny

from medlite.export.meta import read_onnx_meta
from medlite.export.sam_onnx import export_litesam, session


@pytest.mark.parametrize("name", ["litesam_swin_xs", "litemedsam_xs", "litesam_swin_xs_md", "litesam_swin_xs_md8"])
def test_two_graphs_match_pytorch(tmp_path, name):
    m = tiny(name)
    res = export_litesam(m, {"model": {"name": name}}, tmp_path)
    assert res["encoder_max_abs_diff"] < 1e-3 and res["decoder_max_abs_diff"] < 1e-3
    assert read_onnx_meta(tmp_path / "encoder.onnx")["export"]["part"] == "encoder"
    assert m.training  # the exporter leaves the model's mode as it found it


def test_decoder_graph_answers_many_prompts_from_one_encoding(tmp_path):
    """The device flow: encoder once, decoder per prompt (dynamic prompt and point counts)."""
    m = tiny().eval()
    export_litesam(m, {"model": {"name": "litesam_swin_xs"}}, tmp_path)
    enc, dec = session(tmp_path / "encoder.onnx"), session(tmp_path / "decoder.onnx")
    x = torch.rand(1, 3, 64, 64)
    feats = enc.run(None, {"image": x.numpy()})
    names = [i.name for i in enc.get_outputs()]
    with torch.no_grad():
        ref_feats = m.forward_features(x)
    for n_prompts, n_points in ((1, 2), (4, 1), (2, 5)):
        coords = np.random.default_rng(n_points).random((n_prompts, n_points, 2)).astype(np.float32) * 64
        labels = np.ones((n_prompts, n_points), np.float32)
        dense = np.zeros((n_prompts, 1, 64, 64), np.float32)
        has = np.zeros(n_prompts, np.float32)
        masks, iou = dec.run(None, {**dict(zip(names, feats, strict=True)), "point_coords": coords,
                                    "point_labels": labels, "dense_prompt": dense, "has_dense": has})
        assert masks.shape == (n_prompts, 1, 64, 64) and iou.shape == (n_prompts, 1)
        with torch.no_grad():
            ref, _ = m.forward_head(ref_feats, torch.from_numpy(coords), torch.from_numpy(labels),
                                    torch.from_numpy(dense), torch.from_numpy(has))
        np.testing.assert_allclose(masks, ref.numpy(), atol=1e-3)
