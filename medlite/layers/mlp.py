"""SwiGLU feed-forward layer (Shazeer, "GLU Variants Improve Transformer", 2020)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SwiGLU(nn.Module):
    """``out = W2(silu(W x) * V x)``.

    Args:
        dim: input and output width D.
        hidden: hidden width of the gated unit.
        bias: bias on all three projections.
    """

    def __init__(self, dim: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        self.w = nn.Linear(dim, hidden, bias=bias)  # gate projection
        self.v = nn.Linear(dim, hidden, bias=bias)  # value projection
        self.w2 = nn.Linear(hidden, dim, bias=bias)  # output projection

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.w2(F.silu(self.w(x)) * self.v(x))
