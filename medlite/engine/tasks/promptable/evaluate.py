"""Evaluation of promptable segmentation: the challenge's DSC / NSD at the original image size from
deterministic box and point prompts, and the model-frame Dice used to select checkpoints."""

from __future__ import annotations

import time

import numpy as np
import torch

from medlite.data.prompts import box_from_mask, box_prompt, interior_point, pad_points, to_model_frame
from medlite.data.segmentation import SegSplit, restore
from medlite.metrics.segmentation import ChallengeMetrics
from medlite.models.litesam.predictor import normalise


@torch.no_grad()
def val_dice(model, split: SegSplit, batch: int = 16) -> float:
    """Mean Dice in the model frame with exact ground-truth box prompts (checkpoint selection only)."""
    model.eval()
    dev = next(model.parameters()).device
    scores = []
    for i in range(0, len(split), batch):
        m = split.masks[i:i + batch]
        boxes = np.stack([box_from_mask(x[0].numpy()) for x in m])
        coords = torch.from_numpy(boxes.reshape(-1, 2, 2)).to(dev)
        labels = torch.tensor([[2.0, 3.0]], device=dev).expand(len(m), 2)
        logits, _ = model(normalise(split.images[i:i + batch]).to(dev), coords, labels,
                          torch.zeros(len(m), 1, *m.shape[2:], device=dev), torch.zeros(len(m), device=dev))
        p, t = (logits[:, :1] > 0).float().cpu(), m.float()  # mask 0 answers a single prompt (SAM-style heads: 4)
        scores += ((2 * (p * t).sum((1, 2, 3)) + 1e-6) / (p.sum((1, 2, 3)) + t.sum((1, 2, 3)) + 1e-6)).tolist()
    return float(np.mean(scores))


def eval_prompt(original: np.ndarray, geometry, kind: str, box: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic evaluation prompt of one case, in the model frame: coords (K, 2), labels (K,).

    "box": ``box`` (xyxy at the original size, supplied by the user) or else the ground-truth bounding
    box; "point": one positive point at the mask's most interior pixel (distance-transform maximum).
    """
    if kind == "box":
        return box_prompt(to_model_frame(box_from_mask(original) if box is None else box, geometry))
    if kind == "point":
        return to_model_frame(interior_point(original)[None], geometry), np.ones(1, np.float32)
    raise ValueError(f"evaluation prompt must be 'box' or 'point'; got {kind!r}")


@torch.no_grad()
def evaluate_sam(model, split: SegSplit, prompts: tuple[str, ...] = ("box", "point"),
                 tolerance: float = 2.0, boxes: list[np.ndarray] | None = None) -> dict[str, dict]:
    """Challenge DSC / NSD at the original size for each prompt kind; the encoder runs once per image.

    ``boxes``: one supplied xyxy box per case (original pixels, see :func:`medlite.data.boxes.boxes_for`)
    used as the box prompt instead of the ground-truth mask's bounding box.

    Returns:
        {kind: {"dsc": {"mean", "std", "n"}, "nsd": {...}, "cases": [...], "decoder_ms": mean}} plus
        {"encoder_ms": mean encoder time per image}.
    """
    model.eval()
    meters = {k: ChallengeMetrics(tolerance) for k in prompts}
    dec_t = {k: [] for k in prompts}
    enc_t = []
    for i in range(len(split)):
        t0 = time.perf_counter()
        feats = model.forward_features(normalise(split.images[i:i + 1]))
        enc_t.append(time.perf_counter() - t0)
        g, gt = split.geometry[i], split.originals[i]
        for kind in prompts:
            c, lab = eval_prompt(gt, g, kind, None if boxes is None else boxes[i])
            c, lab = pad_points(c, lab, max(2, len(lab)))
            t0 = time.perf_counter()
            logits, _ = model.forward_head(feats, torch.from_numpy(c)[None], torch.from_numpy(lab)[None],
                                           torch.zeros(1, 1, g.size, g.size), torch.zeros(1))
            dec_t[kind].append(time.perf_counter() - t0)
            pred = restore(torch.sigmoid(logits[0, 0]), g) > 0.5
            meters[kind].update(pred, gt, split.names[i])
    out: dict = {"encoder_ms": 1000 * float(np.mean(enc_t))}
    for k in prompts:
        out[k] = {**meters[k].compute(), "cases": meters[k].cases, "decoder_ms": 1000 * float(np.mean(dec_t[k]))}
    return out
