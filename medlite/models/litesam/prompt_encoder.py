"""SAM-style prompt encoder: sparse prompts (points, box corners) and a dense prompt (scribbles).

Every sparse prompt is a labelled point, as in SAM's ONNX interface, so one fixed-signature graph answers
any mix of prompts: label 1 = positive point, 0 = negative point, 2 / 3 = box top-left / bottom-right
corner, -1 = padding (ignored). Scribbles are a dense map in the model frame: +1 on foreground strokes,
-1 on background strokes, 0 elsewhere; ``has_dense`` = 0 replaces it by a learned "no dense prompt"
embedding, without a data-dependent branch.

With ``prompt_maps`` (LiteSAM; not in SAM / LiteMedSAM) the sparse prompts are also rasterised in-graph into
two model-frame maps, the box interior and a signed Gaussian map of the clicks (sigma = S/32), which join the
scribble in the dense branch and are handed to the decoder's finest upsampling stage: a direct spatial prior
that a model trained from scratch on a few hundred images learns to use far sooner than Fourier-coded
corner tokens.
"""

from __future__ import annotations

import math

import torch
from timm.layers import LayerNorm2d
from torch import nn

from medlite.data.prompts import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_PAD, LABEL_POS


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates (Tancik et al.; SAM's positional code)."""

    def __init__(self, num_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("gaussian", scale * torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords: (..., 2) in [0, 1] -> (..., 2 * num_feats)."""
        c = (2 * coords - 1) @ self.gaussian * (2 * math.pi)
        return torch.cat([c.sin(), c.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """(1, 2 * num_feats, h, w): the code of every embedding cell's centre."""
        ys = (torch.arange(h, dtype=torch.float32, device=self.gaussian.device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=self.gaussian.device) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(xy).permute(2, 0, 1).unsqueeze(0)


class PromptEncoder(nn.Module):
    """Points/boxes -> sparse tokens; scribble map -> dense embedding at the image-embedding resolution."""

    def __init__(self, embed_dim: int, img_size: int, embed_stride: int, prompt_maps: bool = False,
                 mask_in_chans: int = 0) -> None:
        super().__init__()
        if embed_stride < 2 or embed_stride & (embed_stride - 1):
            raise ValueError(f"embed_stride must be a power of two >= 2; got {embed_stride}")
        self.embed_dim, self.img_size, self.grid_size = embed_dim, img_size, img_size // embed_stride
        self.pe = PositionEmbeddingRandom(embed_dim // 2)
        self.label_embed = nn.Embedding(5, embed_dim)  # rows: pad ("not a point"), neg, pos, box TL, box BR
        self.no_dense_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, 1))
        # stride-2 2x2 convs down to the embedding grid (SAM's mask_downscaling, extended to any stride)
        self.use_prompt_maps = prompt_maps
        self.sigma = img_size / 32  # click blob width (px)
        layers, c, n = [], 3 if prompt_maps else 1, int(math.log2(embed_stride))
        for i in range(n):
            # SAM: mask_in_chans // 4 then mask_in_chans (4, 16 at stride 4); else widths from embed_dim
            nxt = mask_in_chans // 4 ** (n - 1 - i) if mask_in_chans else max(4, embed_dim // 2 ** (n - i + 1))
            layers += [nn.Conv2d(c, nxt, 2, stride=2), LayerNorm2d(nxt), nn.GELU()]
            c = nxt
        self.dense_down = nn.Sequential(*layers, nn.Conv2d(c, embed_dim, 1))

    def dense_pe(self) -> torch.Tensor:
        """(1, E, g, g): positional code of the image-embedding grid."""
        return self.pe.grid(self.grid_size, self.grid_size)

    def prompt_maps(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """Rasterise sparse prompts: (B, N, 2), (B, N) -> (B, 2, S, S) = [box interior {0, 1}, signed clicks].

        The box is the one whose corners carry labels 2 / 3 (all zeros without a box); each positive (negative)
        click adds (subtracts) exp(-d^2 / 2 sigma^2). Comparisons and sums only: export-safe.
        """
        s = self.img_size
        labels = point_labels.to(torch.float32)
        grid = torch.arange(s, dtype=torch.float32, device=point_coords.device)
        tl = (labels == LABEL_BOX_TL).to(torch.float32).unsqueeze(-1)  # (B, N, 1)
        br = (labels == LABEL_BOX_BR).to(torch.float32).unsqueeze(-1)
        has_box = tl.sum(1).clamp(max=1.0)  # (B, 1)
        p0, p1 = (point_coords * tl).sum(1), (point_coords * br).sum(1)  # (B, 2) corners, x y
        in_x = (grid[None, :] >= p0[:, :1]) & (grid[None, :] <= p1[:, :1])  # (B, S)
        in_y = (grid[None, :] >= p0[:, 1:]) & (grid[None, :] <= p1[:, 1:])
        box = in_y.to(torch.float32)[:, :, None] * in_x.to(torch.float32)[:, None, :] * has_box[:, :, None]
        sign = (labels == LABEL_POS).to(torch.float32) - (labels == LABEL_NEG).to(torch.float32)  # (B, N)
        dx = grid[None, None, :] - point_coords[..., :1]  # (B, N, S)
        dy = grid[None, None, :] - point_coords[..., 1:]
        gx, gy = torch.exp(-dx**2 / (2 * self.sigma**2)), torch.exp(-dy**2 / (2 * self.sigma**2))
        clicks = torch.einsum("bn,bny,bnx->byx", sign, gy, gx)
        return torch.stack([box, clicks], dim=1)

    def forward(self, point_coords: torch.Tensor, point_labels: torch.Tensor, dense: torch.Tensor,
                has_dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Encode prompts.

        Args:
            point_coords: (B, N, 2) float32, (x, y) in model-frame pixels (0..img_size).
            point_labels: (B, N) float32 or int, in {-1, 0, 1, 2, 3} (see module docstring).
            dense: (B, 1, S, S) float32 scribble map in {-1, 0, 1}, model frame.
            has_dense: (B,) float32, 1 where ``dense`` is a prompt, 0 where it is to be ignored.
        Returns:
            sparse (B, N, E) and dense (B, E, g, g) embeddings, and the (B, 2, S, S) prompt maps (None
            without ``prompt_maps``).
        """
        labels = point_labels.to(torch.float32)
        coords = (point_coords + 0.5) / self.img_size
        pad = (labels == LABEL_PAD).to(coords.dtype).unsqueeze(-1)
        sparse = self.pe.encode(coords) * (1 - pad)
        onehot = torch.stack([(labels == k).to(coords.dtype) for k in range(-1, 4)], dim=-1)  # (B, N, 5)
        sparse = sparse + onehot @ self.label_embed.weight
        h = has_dense.to(coords.dtype).reshape(-1, 1, 1, 1)
        if not self.use_prompt_maps:  # SAM: the dense branch sees the scribble only
            return sparse, self.dense_down(dense) * h + self.no_dense_embed * (1 - h), None
        maps = self.prompt_maps(point_coords, point_labels)
        dense_emb = self.dense_down(torch.cat([dense * h, maps], dim=1)) + self.no_dense_embed * (1 - h)
        return sparse, dense_emb, maps
