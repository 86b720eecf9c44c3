"""Grouped-query self-attention (GQA) with per-head gating.

``num_heads`` query heads share ``num_kv_groups`` key/value heads: query head ``h`` reads key/value group
``h // (num_heads // num_kv_groups)`` (consecutive query heads form one group, as in the MedLiT code).
With ``num_kv_groups == num_heads`` this is standard multi-head attention; with ``num_kv_groups == 1`` it
is multi-query attention.

Pruned layers (``medlite.compress.prune``) keep the head width of the unpruned layer (``head_dim``) and may
leave groups of unequal size; ``kv_map`` then names the key/value group of every remaining query head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GQAttention(nn.Module):
    """Grouped-query self-attention.

    Args:
        dim: token width D; ``dim % num_heads == 0``.
        num_heads: query heads H.
        num_kv_groups: key/value heads G; ``num_heads % num_kv_groups == 0``.
        qkv_bias: bias on the query/key/value projections.
        attn_drop: dropout on the attention probabilities (training only).
        proj_drop: dropout on the output projection.
        proj_bias: bias on the output projection.
        head_dim: width of each head; None = ``dim // num_heads``. Set by head pruning, which removes
            heads but keeps their width, so the inner width ``num_heads * head_dim`` may differ from ``dim``.
        kv_map: (num_heads,) key/value group of each query head, every group in ``range(num_kv_groups)``
            used; None = consecutive equal groups (``h // (num_heads // num_kv_groups)``).

    Attributes:
        head_mask: (H,) float32 non-persistent buffer of ones, multiplied into each head's output before
            the output projection. Head pruning sets entries to 0 (or to a soft gate) without touching the
            weights; it is not saved in the state dict, so pruned and unpruned checkpoints stay compatible.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_groups: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        proj_bias: bool = True,
        head_dim: int | None = None,
        kv_map: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if head_dim is None and dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        if kv_map is None:
            if num_heads % num_kv_groups:
                raise ValueError(f"num_heads={num_heads} is not divisible by num_kv_groups={num_kv_groups}")
            kv_map = [h // (num_heads // num_kv_groups) for h in range(num_heads)]
        kv_map = [int(g) for g in kv_map]
        if len(kv_map) != num_heads or sorted(set(kv_map)) != list(range(num_kv_groups)):
            raise ValueError(f"kv_map {kv_map} must give each of the {num_heads} query heads a group and use "
                             f"every one of the {num_kv_groups} groups")
        self.num_heads = num_heads
        self.num_kv_groups = num_kv_groups
        self.head_dim = head_dim or dim // num_heads
        self.scale = self.head_dim**-0.5
        inner, kv_dim = num_heads * self.head_dim, num_kv_groups * self.head_dim
        self.q = nn.Linear(dim, inner, bias=qkv_bias)
        self.k = nn.Linear(dim, kv_dim, bias=qkv_bias)
        self.v = nn.Linear(dim, kv_dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("head_mask", torch.ones(num_heads), persistent=False)
        # Equal consecutive groups repeat k/v with repeat_interleave; other maps gather with a constant
        # index (an ONNX Gather), both fixed at construction, never decided by the data.
        rep = num_heads // num_kv_groups
        self.kv_map = tuple(kv_map)
        self._rep = rep if list(kv_map) == [h // rep for h in range(num_heads)] else 0
        self.register_buffer("kv_index", torch.tensor(kv_map, dtype=torch.long), persistent=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N, D) -> q, k, v each (B, H, N, head_dim); k and v repeated over the heads of a group."""
        B, N, _ = x.shape
        q = self.q(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, self.num_kv_groups, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, self.num_kv_groups, self.head_dim).transpose(1, 2)
        if self._rep > 1:  # constants of the module, not of the data
            k = k.repeat_interleave(self._rep, dim=1)
            v = v.repeat_interleave(self._rep, dim=1)
        elif not self._rep:
            k = k.index_select(1, self.kv_index)
            v = v.index_select(1, self.kv_index)
        return q, k, v

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Self-attention over all tokens.

        Args:
            x: (B, N, D) float tokens.
            return_attn: also return the attention probabilities (computed explicitly, not by SDPA).

        Returns:
            (B, N, D) tokens, and with ``return_attn`` also (B, H, N, N) attention probabilities
            (rows sum to 1, before attention dropout and before ``head_mask``).
        """
        B, N, _ = x.shape
        q, k, v = self._qkv(x)
        attn = None
        if return_attn:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            out = self.attn_drop(attn) @ v
        else:
            drop = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        out = out * self.head_mask.view(1, -1, 1, 1).to(out.dtype)
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attn else out
