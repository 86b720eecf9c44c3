from __future__ import annotations

import pytest
import torch
from litesam_tiny import tiny

from medlite.data.prompts import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_PAD, LABEL_POS
from medlite.models.litesam import LiteSAMConfig, config_for
from medlite.registry import create_model, list_models


def _prompts(b: int, s: int = 64):
    coords = torch.tensor([[[10.0, 12.0], [40.0, 44.0], [20.0, 20.0]]]).expand(b, -1, -1)
    labels = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR, LABEL_POS]], dtype=torch.float32).expand(b, -1)
    dense = torch.zeros(b, 1, s, s)
    dense[:, :, 20:24, 20:30] = 1.0
    return coords, labels, dense, torch.ones(b)


def test_variants_registered():
    assert {"litesam_swin_t", "litesam_swin_xs", "litemedsam", "litemedsam_xs"} <= set(list_models(family="litesam"))


@pytest.mark.parametrize("name", ["litesam_swin_xs", "litemedsam_xs"])
def test_forward_backward_shapes(name):
    m = tiny(name).train()
    x = torch.rand(2, 3, 64, 64)
    logits, iou = m(x, *_prompts(2))
    assert logits.shape == (2, 1, 64, 64) and iou.shape == (2, 1)
    (logits.mean() + iou.mean()).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), n


def test_feature_shapes(tiny_litesam, tiny_litemedsam):
    f = tiny_litesam.forward_features(torch.rand(1, 3, 64, 64))
    assert f.embedding.shape == (1, 32, 4, 4)  # stride 16
    assert [s.shape for s in f.skips] == [(1, 8, 8, 8), (1, 4, 16, 16)]
    g = tiny_litemedsam.forward_features(torch.rand(1, 3, 64, 64))
    assert g.embedding.shape == (1, 32, 16, 16) and g.skips == ()  # stride 4, no skips


def test_one_image_broadcast_over_prompts(tiny_litesam):
    """Features of batch 1 answer a batch of prompts exactly as if the image were repeated."""
    m = tiny_litesam
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, ia = m.forward_head(m.forward_features(x), *_prompts(3))
        b, ib = m(x.expand(3, -1, -1, -1), *_prompts(3))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ia, ib, atol=1e-5, rtol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="encoder"):
        LiteSAMConfig(encoder="resnet")
    with pytest.raises(ValueError, match="stride-4"):
        LiteSAMConfig(encoder="tinyvit", embed_stride=4, skips=True)
    with pytest.raises(TypeError, match="unknown"):
        config_for("litesam_swin_t", bogus=1)
    with pytest.raises(ValueError, match="binary"):
        create_model("litesam_swin_xs", num_classes=5)


def test_published_config():
    c = config_for("litesam_swin_t")
    assert (c.dims, c.depths, c.heads, c.windows[0], c.embed_dim) == ((64, 128, 160, 320), (2, 2, 6, 2),
                                                                       (2, 4, 5, 10), 8, 256)


# ------------------------------------------------------------------------------------- prompt encoder
def test_prompt_encoder_every_prompt_type(tiny_litesam):
    pe = tiny_litesam.prompt_encoder
    coords = torch.tensor([[[30.0, 30.0]] * 5])
    labels = torch.tensor([[LABEL_PAD, LABEL_NEG, LABEL_POS, LABEL_BOX_TL, LABEL_BOX_BR]], dtype=torch.float32)
    no_dense = torch.zeros(1, 1, 64, 64)
    sparse, dense, maps = pe(coords, labels, no_dense, torch.zeros(1))
    assert sparse.shape == (1, 5, 32) and dense.shape == (1, 32, 4, 4) and maps.shape == (1, 2, 64, 64)
    # same place, different role: every label gives a different token
    for i in range(5):
        for j in range(i + 1, 5):
            assert not torch.allclose(sparse[0, i], sparse[0, j])
    # padding ignores its coordinates and is exactly the "not a point" embedding
    moved, _, _ = pe(torch.tensor([[[1.0, 60.0]] * 5]), labels, no_dense, torch.zeros(1))
    torch.testing.assert_close(moved[0, 0], pe.label_embed.weight[0])
    assert not torch.allclose(moved[0, 2], sparse[0, 2])  # a real point depends on where it is


@pytest.mark.parametrize("fixture", ["tiny_litesam", "tiny_litemedsam"])
def test_dense_prompt_scribble_and_flag(fixture, request):
    pe = request.getfixturevalue(fixture).prompt_encoder
    coords, labels = torch.zeros(1, 1, 2), torch.full((1, 1), float(LABEL_PAD))
    scribble = torch.zeros(1, 1, 64, 64)
    scribble[0, 0, 10:14, 10:40] = 1.0
    scribble[0, 0, 50:52, 5:30] = -1.0
    _, off, _ = pe(coords, labels, scribble, torch.zeros(1))
    _, off2, _ = pe(coords, labels, torch.zeros(1, 1, 64, 64), torch.zeros(1))
    torch.testing.assert_close(off, off2)  # flag 0: the scribble is ignored
    if not pe.use_prompt_maps:  # SAM's rule: exactly the learned "no dense prompt" embedding
        torch.testing.assert_close(off, pe.no_dense_embed.expand(1, -1, *off.shape[-2:]))
    _, on, _ = pe(coords, labels, scribble, torch.ones(1))
    _, empty, _ = pe(coords, labels, torch.zeros(1, 1, 64, 64), torch.ones(1))
    assert not torch.allclose(on, empty)  # the strokes change the dense embedding


def test_prompt_maps_rasterise_box_and_clicks(tiny_litesam):
    pe = tiny_litesam.prompt_encoder
    coords = torch.tensor([[[10.0, 20.0], [30.0, 40.0], [15.0, 25.0], [50.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR, LABEL_POS, LABEL_NEG, LABEL_PAD]], dtype=torch.float32)
    maps = pe.prompt_maps(coords, labels)
    box, clicks = maps[0, 0], maps[0, 1]
    assert box[20:41, 10:31].eq(1).all() and box.sum() == 21 * 21  # rows y0..y1, columns x0..x1 inclusive
    assert clicks[25, 15] > 0.99 and clicks[5, 50] < -0.99 and abs(clicks[60, 0]) < 1e-3
    no_box = pe.prompt_maps(coords[:, 2:], labels[:, 2:])
    assert no_box[0, 0].sum() == 0  # clicks only: empty box map
