"""Where a classifier looks: attention rollout (Abnar & Zuidema, ACL 2020) for models with a cls token at
index 0 (MedLiT, ViT), and Grad-CAM (Selvaraju et al., ICCV 2017, through MONAI's ``monai.visualize.GradCAM``)
for convolutional classifiers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def attention_rollout(attn_maps: list[Tensor], discard_ratio: float = 0.0) -> Tensor:
    """Roll attention out through the layers and read the cls row.

    Per layer: mean over heads; optionally zero the lowest ``discard_ratio`` fraction of the entries of
    each sample (never the cls -> cls entry); add the identity for the residual path, ``(A + I) / 2``,
    renormalise rows; multiply the layers, last on the left.

    Args:
        attn_maps: per layer, (B, H, N, N) attention probabilities, token 0 = cls.
        discard_ratio: in [0, 1).

    Returns:
        (B, N - 1) float32: how much the cls token draws on each patch token (not normalised).
    """
    if not attn_maps:
        raise ValueError("attention_rollout needs at least one attention map")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    B, _, N, _ = attn_maps[0].shape
    eye = torch.eye(N, device=attn_maps[0].device)
    result = eye.expand(B, N, N)
    for attn in attn_maps:
        a = attn.float().mean(dim=1)
        n_drop = int(N * N * discard_ratio)
        if n_drop:
            flat = a.reshape(B, -1)
            low = flat.topk(n_drop, dim=-1, largest=False).indices
            keep = torch.ones_like(flat).scatter(1, low, 0.0)
            keep[:, 0] = 1.0  # cls -> cls stays
            a = (flat * keep).view(B, N, N)
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[:, 0, 1:]


@torch.no_grad()
def rollout_heatmap(model: nn.Module, x: Tensor, discard_ratio: float = 0.0) -> Tensor:
    """Attention-rollout heat map of a model exposing ``attention_maps(x)`` (e.g. MedLiT).

    The model runs in eval mode (its mode is restored afterwards).

    Args:
        model: a ViT-style model; ``attention_maps(x)`` returns (B, H, 1 + g*g, 1 + g*g) per layer.
        x: (B, C, H, W) float32 input images, normalised as for the model.
        discard_ratio: see :func:`attention_rollout`.

    Returns:
        (B, g, g) float32 in [0, 1] per sample (min-max normalised; a constant map gives zeros),
        g = patch grid side.
    """
    was_training = model.training
    model.eval()
    try:
        roll = attention_rollout(model.attention_maps(x), discard_ratio)
    finally:
        model.train(was_training)
    g = math.isqrt(roll.shape[1])
    if g * g != roll.shape[1]:
        raise ValueError(f"{roll.shape[1]} patch tokens do not form a square grid")
    lo = roll.amin(dim=1, keepdim=True)
    hi = roll.amax(dim=1, keepdim=True)
    heat = (roll - lo) / (hi - lo).clamp_min(1e-12)
    return heat.view(-1, g, g)


class RolloutGraph(nn.Module):
    """A ViT-style classifier that also returns its attention-rollout heat map, for export as one graph:
    image (B, C, S, S) -> logits (B, K), heatmap (B, g, g) in [0, 1] (as :func:`rollout_heatmap`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "attention_maps"):
            raise ValueError(f"{type(model).__name__} has no attention maps (a heat map graph needs MedLiT / ViT)")
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats, attn = self.model.forward_features(x, return_attn=True)
        roll = attention_rollout(attn)
        g = math.isqrt(roll.shape[1])
        lo, hi = roll.amin(dim=1, keepdim=True), roll.amax(dim=1, keepdim=True)
        return self.model.forward_head(feats), ((roll - lo) / (hi - lo).clamp_min(1e-12)).view(-1, g, g)


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Conv2d`` in ``model`` (Grad-CAM's usual target layer); ValueError if none."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return names[-1]


def gradcam_heatmap(model: nn.Module, x: Tensor, class_idx: int | None = None, layer: str | None = None
                    ) -> Tensor:
    """Grad-CAM of a CNN classifier (MONAI's implementation; needs ``medlite[seg]``).

    Args:
        x: (B, C, H, W) model input.
        class_idx: the class to explain (None: the predicted one).
        layer: target layer name (None: the last Conv2d).
    Returns:
        (B, H, W) float32 in [0, 1] at the input size.
    """
    from monai.visualize import GradCAM

    model.eval()
    def unit(m: Tensor) -> Tensor:  # per map, min -> 0 and max -> 1 (MONAI's default normaliser flips them)
        lo = m.amin(dim=tuple(range(1, m.ndim)), keepdim=True)
        hi = m.amax(dim=tuple(range(1, m.ndim)), keepdim=True)
        return (m - lo) / (hi - lo).clamp_min(1e-12)

    cam = GradCAM(nn_module=model, target_layers=layer or last_conv_layer(model), postprocessing=unit)
    with torch.enable_grad():
        heat = cam(x.clone().requires_grad_(True), class_idx=class_idx)
    return heat[:, 0].detach().float()


class _MaskScore(nn.Module):
    """A segmentation model seen as a one-output scorer: the mean logit over its predicted foreground (the
    whole image where it predicts none), the quantity Grad-CAM explains for a mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)[:, :1]
        fg = (logits > 0).float().detach()
        fg = torch.where(fg.sum(dim=(2, 3), keepdim=True) > 0, fg, torch.ones_like(fg))
        return ((logits * fg).sum(dim=(2, 3)) / fg.sum(dim=(2, 3)))  # (B, 1)


def seg_gradcam_heatmap(model: nn.Module, x: Tensor, layer: str | None = None) -> Tensor:
    """Grad-CAM of a binary segmentation model's predicted mask (MONAI): which regions drive the foreground
    logits. x: (B, C, H, W) -> (B, H, W) float32 in [0, 1]."""
    wrapped = _MaskScore(model)
    return gradcam_heatmap(wrapped, x, class_idx=0, layer=f"model.{layer or last_conv_layer(model)}")
