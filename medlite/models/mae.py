"""Masked-autoencoder pretraining (He et al., CVPR 2022) for MedLiT encoders.

The encoder is a :class:`~medlite.models.medlit.MedLiT`; it runs on the visible patches plus its cls
token only.  A light decoder of plain timm ViT blocks sees the encoded visible tokens and a learned mask
token at every masked position, and predicts the pixels of every patch; the loss is the MSE over the
masked patches, on per-patch normalised pixels when ``norm_pix_loss``.  In training the encoder's MoE
load-balancing loss is added to the returned loss (as the published MedLiT pretraining does).

Mixed channels.  MAE pretraining mixes natural (RGB) and medical (often grey) images, so the pretrained
encoder is 3-channel and grey images are repeated to 3 channels (:func:`to_3ch`; ``MAEPretrainer``
does it on the fly).  A classifier fine-tuned on 1-channel data loads the 3-channel patch embedding by
summing its input-channel weights (timm's ``adapt_input_conv``), which gives the same response to a grey
image as the 3-channel encoder gives to that image repeated: see :func:`load_encoder_into`.
"""

from __future__ import annotations

import logging

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import adapt_input_conv
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from medlite.models.medlit import MedLiT

log = logging.getLogger(__name__)


def to_3ch(x: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 3, H, W) by repetition; (B, 3, H, W) is returned as is."""
    if x.shape[1] == 3:
        return x
    if x.shape[1] != 1:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    return x.expand(-1, 3, -1, -1)


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p * p * C) patches in row-major order, pixels ordered (row, col, channel)."""
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(x: Tensor, p: int, chans: int) -> Tensor:
    """Inverse of :func:`patchify` for a square grid: (B, N, p * p * C) -> (B, C, H, W)."""
    B, N, _ = x.shape
    h = int(round(N**0.5))
    x = x.reshape(B, h, h, p, p, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, chans, h * p, h * p)


class MAEPretrainer(nn.Module):
    """MAE wrapper around a MedLiT encoder.

    Args:
        encoder: the MedLiT to pretrain (its head is unused).
        mask_ratio: fraction of patches hidden from the encoder.
        decoder_dim: width of the decoder tokens.
        decoder_depth: decoder blocks (timm ViT blocks).
        decoder_heads: decoder attention heads.
        norm_pix_loss: regress per-patch normalised pixels (zero mean, unit variance per patch).
    """

    def __init__(
        self,
        encoder: MedLiT,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.patch_size = encoder.cfg.patch_size
        self.in_chans = encoder.cfg.in_chans
        n = encoder.patch_embed.num_patches
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + n, decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * self.in_chans)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.decoder_pos_embed, std=0.02)

    def random_masking(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Keep a random subset of patches per sample.

        Args:
            x: (B, N, D) patch tokens.
            generator: random generator on x's device, for reproducible masks.

        Returns:
            visible (B, K, D) with K = round(N * (1 - mask_ratio)) (at least 1), mask (B, N) float32
            (1 = masked), ids_restore (B, N) int64 (position of each patch in the shuffled order).
        """
        B, N, D = x.shape
        keep = max(1, int(round(N * (1 - self.mask_ratio))))
        noise = torch.rand(B, N, generator=generator, device=x.device)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        visible = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
        mask = torch.ones(B, N, device=x.device)
        mask[:, :keep] = 0
        return visible, mask.gather(1, ids_restore), ids_restore

    def decode(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """(B, 1 + K, D) encoded tokens -> (B, N, p * p * C) predicted pixels of every patch."""
        x = self.decoder_embed(latent)
        B, N = ids_restore.shape
        fill = self.mask_token.expand(B, N + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One MAE step.

        Args:
            x: (B, C, H, W) float32 normalised images; C = 1 is repeated to 3 for a 3-channel encoder.
            generator: random generator on x's device for the masks.

        Returns:
            loss: scalar, masked-patch MSE (+ the encoder's MoE load-balancing loss in training);
            pred: (B, N, p * p * C) predicted pixels (normalised per patch if ``norm_pix_loss``);
            mask: (B, N) float32, 1 where the patch was masked.
        """
        if self.in_chans == 3:
            x = to_3ch(x)
        enc = self.encoder
        visible, mask, ids_restore = self.random_masking(enc.embed(x), generator)
        latent = enc.forward_tokens(enc.prepend_cls(visible))
        pred = self.decode(latent, ids_restore)
        target = patchify(x, self.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        loss = (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
        return loss + enc.aux_loss(), pred, mask

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder's weights without the classifier head, for :func:`load_encoder_into`."""
        return {k: v for k, v in self.encoder.state_dict().items() if not k.startswith("head.")}


def load_encoder_into(model: MedLiT, state_dict: dict[str, Tensor]):
    """Load pretrained encoder weights into a MedLiT classifier.

    The head is never loaded.  A patch embedding with a different number of input channels is adapted
    with timm's ``adapt_input_conv`` (3 -> 1 sums the channel weights); a position embedding for another
    grid is resampled (bicubic, cls position kept).  Other shape mismatches raise.

    Returns:
        ``torch.nn.modules.module._IncompatibleKeys`` (missing_keys, unexpected_keys), also logged.
    """
    sd = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    key = "patch_embed.proj.weight"
    want = model.patch_embed.proj.weight.shape[1]
    if key in sd and sd[key].shape[1] != want:
        sd[key] = adapt_input_conv(want, sd[key])
    if "pos_embed" in sd and sd["pos_embed"].shape != model.pos_embed.shape:
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], [model.grid_size] * 2, num_prefix_tokens=1)
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing:
        log.warning("encoder weights missing for %d keys: %s", len(missing), missing)
    if result.unexpected_keys:
        log.warning("unexpected keys ignored: %s", result.unexpected_keys)
    return result
