"""Image encoders of LiteSAM: a tiny hierarchical Swin (LiteSAM), a stride-4 TinyViT (LiteMedSAM-style) and
an EfficientNet-Lite0 CNN that can start from ImageNet weights.

Both map a letterboxed image to :class:`ImageFeatures`: the prompt-independent part of the model, computed
once per image and cached by the predictor (and exported as the encoder ONNX graph).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn


class ImageFeatures(NamedTuple):
    """What the mask decoder needs from one image.

    embedding: (B, E, S/stride, S/stride) float32, the image embedding the prompts attend to.
    skips: tuple of (B, C_i, H_i, W_i) float32, finer features fused while upsampling, coarse to fine
        (empty for decoders without skip connections).
    """

    embedding: torch.Tensor
    skips: tuple[torch.Tensor, ...]


class SwinImageEncoder(nn.Module):
    """Tiny Swin: 4x4 patch embedding, four timm ``SwinTransformerStage`` (strides 4/8/16/32) and a neck.

    The neck fuses stage 3 (stride 16) with upsampled stage 4 (stride 32) into the ``embed_dim``-channel
    embedding at stride 16; stage 2 (stride 8) and stage 1 (stride 4) are projected to the decoder's
    upsampling widths (embed_dim/4, embed_dim/8) and returned as skips (``skips=False``: no skips, and no
    layers that only they would use). ``embed_stride=8`` (without skips): the neck also takes stage 2 and gives
    the embedding at stride 8 (32x32 cells at 256 px).
    """

    def __init__(self, img_size: int, in_chans: int, dims, depths, heads, window: int, embed_dim: int,
                 drop_path: float = 0.0, skips: bool = True, embed_stride: int = 16) -> None:
        super().__init__()
        from timm.models.swin_transformer import SwinTransformerStage

        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 for the Swin encoder; got {img_size}")
        self.patch_embed = nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4)
        self.patch_norm = nn.LayerNorm(dims[0])
        dpr = torch.linspace(0, drop_path, sum(depths)).tolist()
        stages, res, start = [], img_size // 4, 0
        for i, (d, h) in enumerate(zip(depths, heads, strict=True)):
            stages.append(SwinTransformerStage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i], input_resolution=(res, res), depth=d,
                downsample=i > 0, num_heads=h, head_dim=dims[i] // h, window_size=window,
                drop_path=dpr[start:start + d]))
            start += d
            if i > 0:
                res //= 2
        self.stages = nn.ModuleList(stages)
        if embed_stride not in (8, 16) or (embed_stride == 8 and skips):
            raise ValueError(f"the Swin encoder's embedding is at stride 16, or 8 without skips; got {embed_stride}")
        self.embed_stride = embed_stride
        first = 2 if embed_stride == 16 else 1  # the first stage the neck reads
        self.norms = nn.ModuleList(nn.LayerNorm(d) if skips or i >= first else nn.Identity()
                                   for i, d in enumerate(dims))
        if embed_stride == 8:
            self.lateral2 = nn.Conv2d(dims[1], embed_dim, 1, bias=False)
        self.lateral3 = nn.Conv2d(dims[2], embed_dim, 1, bias=False)
        self.lateral4 = nn.Conv2d(dims[3], embed_dim, 1, bias=False)
        self.neck = nn.Sequential(LayerNorm2d(embed_dim), nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False),
                                  LayerNorm2d(embed_dim))
        self.skips = skips
        if skips:
            self.skip8 = nn.Conv2d(dims[1], embed_dim // 4, 1)
            self.skip4 = nn.Conv2d(dims[0], embed_dim // 8, 1)

    def forward(self, x: torch.Tensor) -> ImageFeatures:
        """x: (B, C, S, S) float32 in [0, 1] -> ImageFeatures (embedding at S/16, skips at S/8 and S/4)."""
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # NHWC, as timm's stages expect
        feats = []
        for stage, norm in zip(self.stages, self.norms, strict=True):
            x = stage(x)
            feats.append(norm(x).permute(0, 3, 1, 2))
        f4, f8, f16, f32 = feats
        emb = self.lateral3(f16) + F.interpolate(self.lateral4(f32), scale_factor=2.0, mode="nearest")
        if self.embed_stride == 8:
            emb = self.lateral2(f8) + F.interpolate(emb, scale_factor=2.0, mode="nearest")
        return ImageFeatures(self.neck(emb), (self.skip8(f8), self.skip4(f4)) if self.skips else ())


class TinyViTImageEncoder(nn.Module):
    """LiteMedSAM's encoder exactly as published (the MedSAM authors' ``tiny_vit_sam``): TinyViT-5M blocks
    (timm ``TinyVit``) behind a 1x1, stride-1 patch embedding, patch merging at stride 2, 2 and 1, so the four
    stages run at strides 1, 2, 4 and 4 (256, 128, 64 and 64 tokens per side at 256 px); then SAM's neck
    (1x1 conv, LayerNorm, 3x3 conv, LayerNorm) to an ``embed_dim``-channel stride-4 embedding. No skips."""

    def __init__(self, img_size: int, in_chans: int, dims, depths, heads, windows, embed_dim: int,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        from timm.models.tiny_vit import ConvNorm, TinyVit

        vit = TinyVit(in_chans=in_chans, num_classes=0, embed_dims=tuple(dims), depths=tuple(depths),
                      num_heads=tuple(heads), window_sizes=tuple(windows), drop_path_rate=drop_path)
        pe = vit.patch_embed  # LiteMedSAM: point-wise patch embedding at full resolution
        pe.conv1, pe.conv2 = ConvNorm(in_chans, dims[0] // 2, 1, 1, 0), ConvNorm(dims[0] // 2, dims[0], 1, 1, 0)
        vit.stages[-1].downsample.conv2.conv.stride = (1, 1)  # the last merge keeps the stride-4 grid
        self.patch_embed, self.stages = pe, vit.stages
        self.neck = nn.Sequential(nn.Conv2d(dims[-1], embed_dim, 1, bias=False), LayerNorm2d(embed_dim),
                                  nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False), LayerNorm2d(embed_dim))

    def forward(self, x: torch.Tensor) -> ImageFeatures:
        """x: (B, C, S, S) float32 in [0, 1] -> ImageFeatures (embedding at S/4, no skips)."""
        return ImageFeatures(self.neck(self.stages(self.patch_embed(x))), ())


class EfficientNetLiteImageEncoder(nn.Module):
    """timm's ``tf_efficientnet_lite0`` (``features_only``, the encoder of ``medlitenet_lite0``, so weights
    move between the two key for key under ``backbone.``) and an FPN-style neck: the stride-32 and stride-16
    features (320, 112 channels) and, at ``embed_stride`` 8, the stride-8 ones (40) are projected to
    ``embed_dim``, summed coarse to fine, then LayerNorm, 3x3 conv, LayerNorm (the Swin neck's layout). No
    skips. The input is the predictor's [0, 1] image, mapped to [-1, 1] (mean 0.5, std 0.5) as the ImageNet
    weights expect; :meth:`load_imagenet` puts them in (``medlite[pretrained]``)."""

    TIMM_NAME = "tf_efficientnet_lite0"
    DIMS = (40, 112, 320)  # channels at strides 8, 16, 32

    def __init__(self, img_size: int, in_chans: int, embed_dim: int, embed_stride: int = 8) -> None:
        super().__init__()
        import timm

        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 for the EfficientNet-Lite0 encoder; got {img_size}")
        if embed_stride not in (8, 16):
            raise ValueError(f"the EfficientNet-Lite0 encoder's embedding is at stride 8 or 16; got {embed_stride}")
        self.in_chans, self.embed_stride = in_chans, embed_stride
        self.backbone = timm.create_model(self.TIMM_NAME, pretrained=False, features_only=True, in_chans=in_chans,
                                          out_indices=(0, 1, 2, 3, 4))  # as medlitenet_lite0, key for key
        d8, d16, d32 = self.DIMS
        if embed_stride == 8:
            self.lateral2 = nn.Conv2d(d8, embed_dim, 1, bias=False)
        self.lateral3 = nn.Conv2d(d16, embed_dim, 1, bias=False)
        self.lateral4 = nn.Conv2d(d32, embed_dim, 1, bias=False)
        self.neck = nn.Sequential(LayerNorm2d(embed_dim), nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False),
                                  LayerNorm2d(embed_dim))

    def load_imagenet(self) -> None:
        """Start the backbone from the ImageNet EfficientNet-Lite0 weights (every tensor must load)."""
        from medlite.models.efficientnet_lite import check_in_chans, load_imagenet_features

        check_in_chans(self.TIMM_NAME, self.in_chans)
        load_imagenet_features(self.backbone, self.in_chans)

    def forward(self, x: torch.Tensor) -> ImageFeatures:
        """x: (B, C, S, S) float32 in [0, 1] -> ImageFeatures (embedding at S/embed_stride, no skips)."""
        _, _, f8, f16, f32 = self.backbone(x * 2.0 - 1.0)
        emb = self.lateral3(f16) + F.interpolate(self.lateral4(f32), scale_factor=2.0, mode="nearest")
        if self.embed_stride == 8:
            emb = self.lateral2(f8) + F.interpolate(emb, scale_factor=2.0, mode="nearest")
        return ImageFeatures(self.neck(emb), ())
