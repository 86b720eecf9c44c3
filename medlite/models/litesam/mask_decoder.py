"""SAM-style mask decoder: a two-way transformer between prompt tokens and the image embedding, an
upsampling path that (optionally) fuses finer encoder features (skip connections, as in Swin-LiteMedSAM),
a hypernetwork that turns the mask token into per-pixel weights, and an IoU-prediction head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn


class Attention(nn.Module):
    """Multi-head attention whose internal width is ``dim / downsample`` (SAM's cheap cross-attention)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: (B, Nq, dim), k and v: (B, Nk, dim) -> (B, Nq, dim)."""
        b = q.shape[0]
        q, k, v = (t.reshape(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2)
                   for t in (self.q(q), self.k(k), self.v(v)))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, -1, o.shape[1] * o.shape[3]))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.cross_t2i = Attention(dim, heads, downsample=2)
        self.cross_i2t = Attention(dim, heads, downsample=2)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.skip_first_pe = skip_first_pe

    def forward(self, tokens, image, token_pe, image_pe):
        """tokens (B, T, E), image (B, HW, E) and their positional codes -> updated (tokens, image)."""
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norms[0](tokens)
        tokens = self.norms[1](tokens + self.cross_t2i(tokens + token_pe, image + image_pe, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        image = self.norms[3](image + self.cross_i2t(image + image_pe, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth))
        self.final = Attention(dim, heads, downsample=2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        """image, image_pe: (B, E, h, w); tokens: (B, T, E) -> tokens (B, T, E), image (B, hw, E)."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for blk in self.blocks:
            tokens, image = blk(tokens, image, token_pe, image_pe)
        tokens = self.norm(tokens + self.final(tokens + token_pe, image + image_pe, image))
        return tokens, image


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MaskDecoder(nn.Module):
    """Prompt tokens + image features -> mask logits at stride ``embed_stride / 4`` and predicted IoU.

    With ``skip_dims`` (coarse to fine, e.g. (E/4, E/8)) each of the two 2x upsamplings adds the matching
    encoder skip feature and mixes it with a 3x3 conv; without, it is SAM's plain upscaling.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, num_mask_tokens: int = 1,
                 skip_dims: tuple[int, ...] = (), prompt_map_pool: int = 0, iou_hidden: int = 0) -> None:
        super().__init__()
        self.num_mask_tokens = num_mask_tokens
        self.iou_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_tokens = nn.Parameter(torch.zeros(1, num_mask_tokens, dim))
        nn.init.normal_(self.iou_token, std=0.02)
        nn.init.normal_(self.mask_tokens, std=0.02)
        self.transformer = TwoWayTransformer(dim, depth, heads, mlp_dim)
        c1, c2 = dim // 4, dim // 8
        self.up1 = nn.Sequential(nn.ConvTranspose2d(dim, c1, 2, stride=2), LayerNorm2d(c1), nn.GELU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(c1, c2, 2, stride=2), nn.GELU())
        if skip_dims and tuple(skip_dims) != (c1, c2):
            raise ValueError(f"skip_dims must be {(c1, c2)} for dim {dim}; got {skip_dims}")
        self.use_skips = bool(skip_dims)
        if self.use_skips:
            self.fuse1 = nn.Sequential(nn.Conv2d(c1, c1, 3, padding=1), LayerNorm2d(c1), nn.GELU())
            self.fuse2 = nn.Sequential(nn.Conv2d(c2, c2, 3, padding=1), nn.GELU())
        # prompt maps (box interior, clicks) enter the finest stage, average-pooled to its resolution
        self.prompt_map_pool = prompt_map_pool
        self.prompt_fine = nn.Conv2d(2, c2, 1) if prompt_map_pool else None
        self.hyper = nn.ModuleList(_mlp([dim, dim, dim, c2]) for _ in range(num_mask_tokens))
        iou_hidden = iou_hidden or dim // 2  # SAM / LiteMedSAM: 256 (= dim)
        self.iou_head = _mlp([dim, iou_hidden, iou_hidden, num_mask_tokens])

    def forward(self, embedding: torch.Tensor, skips: tuple[torch.Tensor, ...], image_pe: torch.Tensor,
                sparse: torch.Tensor, dense: torch.Tensor,
                prompt_maps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Args:
            embedding: (1 or B, E, h, w) image embedding (one image broadcast over B prompts, or B images).
            skips: (1 or B, E/4, 2h, 2w) and (1 or B, E/8, 4h, 4w), or () without skip connections.
            image_pe: (1, E, h, w) positional code of the embedding grid.
            sparse: (B, N, E) prompt tokens; dense: (B, E, h, w) dense prompt embedding.
            prompt_maps: (B, 2, S, S) rasterised prompts (decoders built with ``prompt_map_pool``).
        Returns:
            mask logits (B, M, 4h, 4w) and IoU logits (B, M), M = num_mask_tokens.
        """
        b = sparse.shape[0]
        tokens = torch.cat([self.iou_token.expand(b, -1, -1), self.mask_tokens.expand(b, -1, -1), sparse], 1)
        src = embedding + dense
        h, w = src.shape[-2:]
        hs, src = self.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
        src = src.transpose(1, 2).reshape(b, -1, h, w)
        x = self.up1(src)
        if self.use_skips:
            x = self.fuse1(x + skips[0])
        x = self.up2(x)
        if self.prompt_fine is not None:
            p = prompt_maps if self.prompt_map_pool == 1 else F.avg_pool2d(prompt_maps, self.prompt_map_pool)
            x = x + self.prompt_fine(p)
        if self.use_skips:
            x = self.fuse2(x + skips[1])
        mask_out = hs[:, 1:1 + self.num_mask_tokens]
        hyper = torch.stack([self.hyper[i](mask_out[:, i]) for i in range(self.num_mask_tokens)], dim=1)
        masks = (hyper @ x.flatten(2)).reshape(b, self.num_mask_tokens, x.shape[-2], x.shape[-1])
        return masks, self.iou_head(hs[:, 0])
