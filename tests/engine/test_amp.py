"""CPU mixed precision: choice of precision, and bf16 autocast keeping fp32 weights and gradients."""

from __future__ import annotations

import pytest
import torch

import medlite
from medlite.engine.amp import autocast, native_bf16, resolve_amp
from medlite.engine.tasks.segment.evaluate import seg_loss


def test_resolve_amp():
    assert resolve_amp("none") == "none"
    assert resolve_amp("bf16") == "bf16"
    assert resolve_amp("auto") == ("bf16" if native_bf16() else "none")
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp16")


def test_bf16_autocast_step_keeps_fp32_state():
    torch.manual_seed(0)
    model = medlite.create_model("medlitenet", num_classes=1, in_chans=3, img_size=64)
    x = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    model.eval()  # deterministic (no dropout, running BatchNorm stats) for the bf16 vs fp32 comparison
    with torch.no_grad(), autocast("bf16"):
        low = model(x)
    with torch.no_grad(), autocast("none"):
        ref = model(x)
    assert low.dtype == torch.bfloat16 and ref.dtype == torch.float32  # the convolutions really ran in bf16
    assert torch.allclose(low.float(), ref, atol=0.05 * ref.abs().max().item())
    model.train()
    with autocast("bf16"):
        logits = model(x)
    loss = seg_loss(logits.float(), target)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
