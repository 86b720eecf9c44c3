"""MAC and parameter counts against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import medlite
from medlite.models.flops import count_macs, count_params


def test_linear_and_conv_by_hand():
    assert count_macs(nn.Linear(10, 5), (3, 10)) == 3 * 10 * 5
    # 3x3 conv, 2 -> 4 channels, 8x8 output: 4 * 8 * 8 outputs x (2 * 3 * 3) MACs each
    assert count_macs(nn.Conv2d(2, 4, 3, padding=1), (1, 2, 8, 8)) == 4 * 8 * 8 * 2 * 3 * 3


class _Attention(nn.Module):
    """Self-attention on (B, N, D) with H heads of size D / H, through scaled_dot_product_attention."""

    def __init__(self, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = x.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q)


def test_attention_counts_both_matmuls():
    b, n, d, h = 2, 5, 8, 2
    # Q K^T: B H N N (D / H); attn V: the same again
    assert count_macs(_Attention(h), (b, n, d)) == 2 * b * h * n * n * (d // h)


def test_count_params_shared_once_and_trainable():
    lin = nn.Linear(4, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(model) == 4 * 3 + 3
    lin.bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 4 * 3


def test_macs_scale_with_batch_and_mode_is_restored():
    model = medlite.create_model("medlit_nano_28", num_classes=2, in_chans=1, img_size=28)
    one = count_macs(model, (1, 1, 28, 28))
    assert one > 0 and count_macs(model, (2, 1, 28, 28)) == 2 * one
    assert model.training
