"""Batched inference for segmentation models, and evaluation at the original image size."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlite.data.segmentation import SegSplit, restore
from medlite.data.transforms import to_float


def seg_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 0.5) -> torch.Tensor:
    """bce_weight * BCE + (1 - bce_weight) * soft Dice (per image, then averaged), MedLiteNet's loss.

    Args:
        logits: (B, 1, H, W) float32.
        target: (B, 1, H, W) in {0, 1}.
    """
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = 1.0 - (2.0 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)
    return bce_weight * bce + (1.0 - bce_weight) * dice.mean()


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, mean, std, batch_size: int = 16,
                  channels_last: bool = True) -> torch.Tensor:
    """Foreground probabilities of a whole stack.

    Args:
        images: (N, 3, S, S) uint8, in the model frame.
    Returns:
        (N, S, S) float32 in [0, 1].
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = to_float(images[i:i + batch_size].to(device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(torch.sigmoid(model(x)[:, 0].float()).cpu())
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:])


def frame_dice(probs: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Per-case Dice in the model frame (fast; for validation): probs (N, S, S), masks (N, 1, S, S)."""
    p = (probs > 0.5).flatten(1)
    t = masks[:, 0].bool().flatten(1)
    inter = (p & t).sum(1).double()
    denom = (p.sum(1) + t.sum(1)).double()
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom)).numpy()


def evaluate_original(probs: torch.Tensor, split: SegSplit, tolerance: float = 2.0,
                      postprocess: str = "none") -> tuple[dict, list[dict]]:
    """Map each prediction back to its original size, post-process it, and score it there (Dice, IoU,
    HD95, NSD).

    Returns:
        (summary {metric: {mean, std, median, n}}, per-case rows)
    """
    from medlite.data.seg_postprocess import postprocess_mask
    from medlite.metrics.segmentation import SegmentationMetrics

    m = SegmentationMetrics(tolerance=tolerance)
    for prob, geom, gt, name in zip(probs, split.geometry, split.originals, split.names, strict=True):
        m.update(postprocess_mask(restore(prob, geom) > 0.5, postprocess), gt, name)
    return m.compute(), m.cases


def choose_postprocess(probs: torch.Tensor, masks: torch.Tensor) -> tuple[str, dict[str, float]]:
    """The post-processing with the best mean Dice on a (validation) split, in the model frame.

    Args:
        probs: (N, S, S) float32 foreground probabilities; masks: (N, 1, S, S) uint8 ground truth.
    Returns:
        (mode, {mode: mean Dice}); "none" wins ties, so post-processing is used only where it helps.
    """
    from medlite.data.seg_postprocess import POSTPROCESS, postprocess_mask

    scores = {}
    for mode in POSTPROCESS:
        pred = torch.from_numpy(np.stack([postprocess_mask(p.numpy() > 0.5, mode) for p in probs])) \
            if len(probs) else probs > 0.5
        scores[mode] = float(frame_dice(pred.float(), masks).mean()) if len(probs) else 0.0
    best = max(POSTPROCESS, key=lambda k: (scores[k], k == "none"))
    return best, scores
