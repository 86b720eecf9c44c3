"""Tiny LiteSAM variants (64 px) shared by the LiteSAM model, export and engine tests; each test takes seconds."""

from __future__ import annotations

import pytest
import torch

from medlite.registry import create_model

TINY = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), heads=(1, 1, 1, 1), embed_dim=32, decoder_heads=2,
            decoder_mlp_dim=32)


def tiny(name: str = "litesam_swin_xs", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=1, img_size=64, **{**TINY, **kw})


@pytest.fixture
def tiny_litesam():
    return tiny().eval()


@pytest.fixture
def tiny_litemedsam():
    return tiny("litemedsam_xs").eval()
