"""MedLiteNet, its ablations and the U-Net baselines (scratch and on the EfficientNet-Lite0 encoder): shapes,
gradients, parameter budget, ONNX parity. The ImageNet weights of the Lite0 encoder: test_medlitenet_lite0.py."""

from __future__ import annotations

import pytest
import torch

import medlite
from medlite.models.medlitenet import BoundaryAwareAttention, MedLiteNet

SEG_MODELS = ["medlitenet", "medlitenet_nobaa", "medlitenet_r18", "unet", "medlitenet_lite0", "unet_lite0",
              "medlitenet_lite0_s4"]


@pytest.mark.parametrize("name", SEG_MODELS)
def test_forward_backward(name):
    torch.manual_seed(0)
    m = medlite.create_model(name, num_classes=1, in_chans=3, img_size=64).train()
    x = torch.randn(2, 3, 64, 96)  # non-square works too
    y = m(x)
    assert y.shape == (2, 1, 64, 96) and torch.isfinite(y).all()
    y.float().pow(2).mean().backward()
    # every parameter is in the graph (timm's ResNet zero-inits each block's last BN scale, so some
    # encoder gradients are exactly 0 at init; they are still computed)
    no_grad = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]
    assert sum(p.grad.abs().sum() for p in m.parameters()) > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert medlite.model_card(name).task == "segmentation"


def test_parameter_budget():
    n = sum(p.numel() for p in medlite.create_model("medlitenet", num_classes=1).parameters())
    assert abs(n - 3.2e6) / 3.2e6 < 0.10, n
    unet = sum(p.numel() for p in medlite.create_model("unet", num_classes=1).parameters())
    assert n < unet


@pytest.mark.parametrize("name", ["medlitenet_lite0", "unet_lite0", "medlitenet_lite0_s4"])
def test_lite0_variants_at_256_and_grey(name):
    m = medlite.create_model(name, num_classes=1, in_chans=3).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 256, 256)).shape == (1, 1, 256, 256)
    grey = medlite.create_model(name, num_classes=1, in_chans=1, img_size=64).eval()
    with torch.no_grad():
        assert grey(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    card = medlite.model_card(name)
    assert card.pretrained == "efficientnet_lite0" and card.mean == (0.5,) and card.std == (0.5,)
    encoder = [n for n, _ in m.named_parameters() if n.startswith("encoder.")]
    assert encoder, "the fine-tuning recipe (encoder_lr_mult) finds the encoder by its `encoder.` prefix"


def test_lite0_variants_share_the_encoder_and_state_their_cost():
    from medlite.models.flops import count_macs

    stated = {"medlitenet_lite0": (4.33, 0.70), "unet_lite0": (5.20, 2.88)}  # (M params, G MACs at 256 px)
    encoders = set()
    for name, (params_m, macs_g) in stated.items():
        m = medlite.create_model(name, num_classes=1)
        n = sum(p.numel() for p in m.parameters())
        macs = count_macs(m, (1, 3, 256, 256))
        assert round(n / 1e6, 2) == params_m and round(macs / 1e9, 2) == macs_g, (name, n, macs)
        assert f"{params_m:.2f} M params, {macs_g:.2f} G MACs at 256 px" in medlite.model_card(name).description
        encoders.add(tuple((k.removeprefix("encoder.").removeprefix("model."), tuple(v.shape))
                           for k, v in m.state_dict().items() if k.startswith("encoder.")))
    assert len(encoders) == 1  # the same tensors under the same names: one weight table serves both


def test_s4_variant_stops_the_decoder_at_stride_4():
    full, s4 = (medlite.create_model(n, num_classes=1) for n in ("medlitenet_lite0", "medlitenet_lite0_s4"))
    assert len(full.decoder) == 4 and len(s4.decoder) == 3
    assert sum(isinstance(m, BoundaryAwareAttention) for m in s4.modules()) == 2  # at strides 8 and 4
    assert [type(st.baa).__name__ for st in s4.decoder] == ["Identity", "BoundaryAwareAttention",
                                                            "BoundaryAwareAttention"]
    from medlite.models.flops import count_macs

    assert round(count_macs(s4, (1, 3, 256, 256)) / 1e9, 2) == 0.63  # as its card says
    assert "0.63 G MACs" in medlite.model_card("medlitenet_lite0_s4").description
    for bad in ((), (8, 8, 8, 8, 8)):
        with pytest.raises(ValueError, match="decoder_dims"):
            medlite.create_model("medlitenet", num_classes=1, decoder_dims=bad)


def test_ablation_switches():
    a = medlite.create_model("medlitenet", num_classes=1)
    b = medlite.create_model("medlitenet_nobaa", num_classes=1)
    assert isinstance(a, MedLiteNet) and a.cfg.boundary_attention and not b.cfg.boundary_attention
    assert sum(isinstance(m, BoundaryAwareAttention) for m in a.modules()) == 2
    assert not any(isinstance(m, BoundaryAwareAttention) for m in b.modules())
    assert medlite.create_model("medlitenet_r18", num_classes=1).cfg.encoder == "resnet18"
    with pytest.raises(ValueError, match="multiple of 32"):
        medlite.create_model("medlitenet", num_classes=1, img_size=100)


def test_boundary_attention_amplifies_contours():
    baa = BoundaryAwareAttention(4)
    with torch.no_grad():
        baa.coarse.weight.fill_(0)
        baa.coarse.bias.fill_(0)
        baa.coarse.weight[0, 0] = 20.0  # coarse map = channel 0
    x = torch.zeros(1, 4, 16, 16)
    x[:, 0, 4:12, 4:12] = 1.0
    b = baa.boundary(x)[0, 0]
    assert b[4, 8] > 0.1 and b[8, 8] < 1e-2 and b[0, 0] < 1e-2  # edge vs inside vs far outside
    assert (baa(x) >= x).all()  # x * (1 + a) with a in (0, 1) never suppresses


@pytest.mark.parametrize("name", ["medlitenet", "unet", "medlitenet_lite0", "unet_lite0"])
def test_onnx_parity(tmp_path, name):
    pytest.importorskip("onnxruntime")
    from medlite.export.onnx import export_onnx

    m = medlite.create_model(name, num_classes=1, in_chans=3, img_size=64).eval()
    meta = {"kind": "segmentation", "model": {"name": name, "num_classes": 1, "in_chans": 3, "img_size": 64},
            "preprocessing": {"size": 64, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}}
    info = export_onnx(m, meta, tmp_path / f"{name}.onnx", atol=1e-4)
    assert info["max_abs_diff"] < 1e-4
