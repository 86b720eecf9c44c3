"""Baselines as thin adapters over timm.

Every factory maps ``(num_classes, in_chans, img_size)`` to a timm model; nothing is downloaded
(``pretrained=False``: the machines medlite targets have no internet, and MedMNIST baselines are trained
from scratch in the MedMNIST v2 paper).

28 px ResNets use the CIFAR-style stem of the MedMNIST v2 baselines: the 7x7/2 convolution becomes a
3x3/1 convolution and the max-pool is removed, so a 28x28 input reaches the last stage at 4x4 instead of 1x1.
"""

from __future__ import annotations

import timm
from torch import nn

from medlite.registry import ModelCard, register_model

_TIMM_NOTE = "timm architecture, randomly initialised (no download)"


# Options a checkpoint may record for the timm adapters (forwarded to timm.create_model; an allow-list, so
# that no recorded option can make timm read a file or reach a hub).
_DROP = ("drop_rate", "drop_path_rate")
_RESNET_OPTIONS = ("cifar_stem", *_DROP)
_VIT_OPTIONS = ("patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "qkv_bias", "class_token",
                "global_pool", "reg_tokens", "attn_drop_rate", *_DROP)


def _cifar_stem(model: nn.Module, in_chans: int) -> nn.Module:
    """Replace a timm ResNet stem by the 3x3 stride-1 stem without max-pool (MedMNIST 28 px baselines)."""
    out = model.conv1.out_channels
    model.conv1 = nn.Conv2d(in_chans, out, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _resnet(arch: str, num_classes: int, in_chans: int, img_size: int, cifar_stem: bool | None, **kw):
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)
    # Default: CIFAR stem for small inputs (<= 64 px), the ImageNet stem otherwise.
    if cifar_stem if cifar_stem is not None else img_size <= 64:
        _cifar_stem(model, in_chans)
    return model


@register_model(ModelCard("resnet18", "baseline", "classification",
                          "ResNet-18 (timm); CIFAR-style stem at <= 64 px, as the MedMNIST v2 baselines",
                          default_size=28, weights=_TIMM_NOTE, options=_RESNET_OPTIONS))
def resnet18(num_classes: int, in_chans: int, img_size: int, cifar_stem: bool | None = None, **kw):
    """ResNet-18. ``cifar_stem``: None = automatic (True for img_size <= 64)."""
    return _resnet("resnet18", num_classes, in_chans, img_size, cifar_stem, **kw)


@register_model(ModelCard("resnet50", "baseline", "classification",
                          "ResNet-50 (timm); CIFAR-style stem at <= 64 px, as the MedMNIST v2 baselines",
                          default_size=28, weights=_TIMM_NOTE, options=_RESNET_OPTIONS))
def resnet50(num_classes: int, in_chans: int, img_size: int, cifar_stem: bool | None = None, **kw):
    """ResNet-50. ``cifar_stem``: None = automatic (True for img_size <= 64)."""
    return _resnet("resnet50", num_classes, in_chans, img_size, cifar_stem, **kw)


@register_model(ModelCard("mobilenetv3_small_100", "baseline", "classification",
                          "MobileNetV3-Small 1.0x (timm)", default_size=224, weights=_TIMM_NOTE,
                          options=_DROP))
def mobilenetv3_small_100(num_classes: int, in_chans: int, img_size: int, **kw):
    return timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, **kw)


@register_model(ModelCard("efficientnet_b0", "baseline", "classification",
                          "EfficientNet-B0 (timm)", default_size=224, weights=_TIMM_NOTE, options=_DROP))
def efficientnet_b0(num_classes: int, in_chans: int, img_size: int, **kw):
    return timm.create_model("efficientnet_b0", pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, **kw)


@register_model(ModelCard("vit_tiny_patch16_224", "baseline", "classification",
                          "ViT-Tiny (timm) at any input size; patch 4 below 64 px so a 28 px image has 49 tokens",
                          default_size=224, weights=_TIMM_NOTE, options=_VIT_OPTIONS))
def vit_tiny_patch16_224(num_classes: int, in_chans: int, img_size: int, patch_size: int | None = None, **kw):
    """ViT-Tiny. ``patch_size``: None = 16 for img_size >= 64, else 4 (16 px patches leave a 28 px image
    with a 2x2 grid)."""
    patch = patch_size or (16 if img_size >= 64 else 4)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=num_classes,
                             in_chans=in_chans, img_size=img_size, patch_size=patch,
                             dynamic_img_pad=True, **kw)
