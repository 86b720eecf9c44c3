"""What a model costs: parameters and multiply-accumulates (MACs), counted with torch's FlopCounterMode.

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (which counts matmuls, convolutions and
attention; elementwise ops, norms and softmax are not counted) with ``scaled_dot_product_attention``
forced onto the math backend, so attention is counted as the two batched matmuls it is on a CPU.
MACs = FLOPs / 2. MoE layers are counted as they execute (MedLiT evaluates its experts densely, so all
experts' gate projections count).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass in eval mode (the model's mode is restored).

    Args:
        model: any module taking one float32 tensor.
        input_shape: (B, C, H, W) of that tensor; MACs scale with B.
    """
    p = next(iter(model.parameters()), None)
    x = torch.zeros(tuple(input_shape), device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


@torch.no_grad()
def count_macs_call(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Multiply-accumulates of ``model(*inputs)`` in eval mode (for modules taking several tensors)."""
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with sdpa_kernel(SDPBackend.MATH), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
