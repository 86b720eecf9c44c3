"""Teacher-labelled training cases: random boxes on training images, the teacher's mask as the target.

Ground truth marks one structure per image (a lesion, a head, the lungs); a promptable model must answer a box
around anything. SAM's data engine filled that gap with its own confident masks; here the teacher (the real
LiteMedSAM) does it on a small scale: for every training image, ``n`` random boxes inside the image are
answered by the teacher's mask decoder from its cached image embedding (:mod:`.teacher`: no encoder run),
and the confident, stable answers become extra training cases whose "ground truth" is the teacher's mask.
Prompts are then sampled from that mask like from any other (box with jitter, points, scribble), so
augmentation applies unchanged. Only training splits are labelled; validation and test stay ground truth.

Kept: predicted IoU >= ``min_iou``, stability (IoU of the masks at logit -1 and +1, as SAM) >= ``min_stability``,
area within [``min_area``, ``max_area``] of the image region. Results are cached per dataset in one
safetensors file beside the embeddings (written atomically; the settings are part of its name).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from medlite.data.frames import Geometry, box_prompt
from medlite.data.segmentation import SegSplit
from medlite.errors import ConfigError
from medlite.files import atomic_write


@dataclass(frozen=True)
class PseudoSettings:
    boxes: int = 4  # random boxes per training image
    min_side: float = 0.1  # box side range, as a fraction of the image region's side
    max_side: float = 0.6
    min_iou: float = 0.75  # teacher's predicted IoU
    min_stability: float = 0.7  # IoU of the teacher's masks thresholded at logit -1 and +1
    min_area: float = 0.005  # mask area range, as a fraction of the image region
    max_area: float = 0.6
    seed: int = 0

    def tag(self) -> str:
        """A short, unique file-name tag of these settings."""
        return f"pseudo-{self.boxes}-{hashlib.sha1(json.dumps(asdict(self)).encode()).hexdigest()[:8]}"


def random_boxes(g: Geometry, n: int, rng: np.random.Generator, min_side: float = 0.1,
                 max_side: float = 0.6) -> np.ndarray:
    """(n, 4) float32 xyxy model-frame boxes inside the image region of a letterboxed case (never the padding)."""
    h, w = g.new_h, g.new_w
    bw = rng.uniform(min_side, max_side, n) * w
    bh = rng.uniform(min_side, max_side, n) * h
    x0 = g.left + rng.uniform(0, 1, n) * (w - bw)
    y0 = g.top + rng.uniform(0, 1, n) * (h - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)


@torch.no_grad()
def answer_boxes(teacher: torch.nn.Module, embedding: torch.Tensor,
                 boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's single-mask answer to each box from one cached embedding (E, h, w).

    Returns:
        mask logits (n, S, S) float32 in the model frame, predicted IoU (n,) in [0, 1].
    """
    from medlite.models.litesam.image_encoder import ImageFeatures

    n, size = len(boxes), teacher.cfg.img_size
    prompts = [box_prompt(b) for b in boxes]
    coords = torch.from_numpy(np.stack([c for c, _ in prompts]))
    labels = torch.from_numpy(np.stack([lb for _, lb in prompts]))
    feats = ImageFeatures(embedding[None].float(), ())
    logits, iou = teacher.forward_head(feats, coords, labels, torch.zeros(n, 1, size, size), torch.zeros(n))
    return logits[:, 0], teacher.iou_score(iou)[:, 0]


def _region(g: Geometry) -> torch.Tensor:
    """(S, S) bool: where the image lies in its letterboxed frame."""
    region = torch.zeros(g.size, g.size, dtype=torch.bool)
    region[g.top:g.top + g.new_h, g.left:g.left + g.new_w] = True
    return region


def _keep(logits: torch.Tensor, iou: torch.Tensor, region: torch.Tensor, s: PseudoSettings) -> torch.Tensor:
    """Boolean (n,) of the answers worth training on."""
    hi, lo = (logits > 1.0) & region, (logits > -1.0) & region
    stability = hi.sum((1, 2)) / lo.sum((1, 2)).clamp_min(1)
    area = ((logits > 0) & region).sum((1, 2)) / float(region.sum())
    return (iou >= s.min_iou) & (stability >= s.min_stability) & (area >= s.min_area) & (area <= s.max_area)


def label_split(teacher: torch.nn.Module, split: SegSplit, embeddings: torch.Tensor, s: PseudoSettings,
                progress=None) -> dict[str, torch.Tensor]:
    """Random boxes on every case of ``split`` answered by the teacher; the kept ones as tensors:
    ``case`` (M,) int64 index into the split, ``box`` (M, 4), ``iou`` (M,), ``mask`` (M, S*S/8) packed bits."""
    rng = np.random.default_rng([s.seed, len(split)])
    cases, boxes, ious, masks = [], [], [], []
    for i in range(len(split)):
        g = split.geometry[i]
        b = random_boxes(g, s.boxes, rng, s.min_side, s.max_side)
        logits, iou = answer_boxes(teacher, embeddings[i], b)
        region = _region(g)
        keep = _keep(logits, iou, region, s)
        for k in torch.nonzero(keep)[:, 0].tolist():
            m = ((logits[k] > 0) & region).numpy()
            cases.append(i)
            boxes.append(b[k])
            ious.append(float(iou[k]))
            masks.append(np.packbits(m.reshape(-1)))
        if progress is not None:
            progress(i + 1, len(split))
    size = split.images.shape[-1]
    return {"case": torch.tensor(cases, dtype=torch.int64),
            "box": torch.from_numpy(np.stack(boxes)) if boxes else torch.zeros(0, 4),
            "iou": torch.tensor(ious, dtype=torch.float32),
            "mask": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, size * size // 8, dtype=torch.uint8)}


def load_or_label(teacher_fn, split: SegSplit, embeddings_fn, folder: str | os.PathLike, s: PseudoSettings,
                  progress=None) -> dict[str, torch.Tensor]:
    """The cached labels of ``split`` under ``folder`` (the dataset's embedding folder), made once.

    Args:
        teacher_fn, embeddings_fn: callables giving the teacher and the split's (N, E, h, w) embeddings, only
            called when the labels are not cached yet.
    """
    from safetensors.torch import load_file, save_file

    path = Path(folder) / f"{s.tag()}.safetensors"
    if path.is_file():
        labels = load_file(str(path))
        if len(labels["case"]) and int(labels["case"].max()) >= len(split):
            raise ConfigError(f"{path}: labels for {int(labels['case'].max()) + 1}+ cases, the split has {len(split)}; "
                             "delete the file to label again")
        return labels
    labels = label_split(teacher_fn(), split, embeddings_fn(), s, progress)
    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in labels.items()}, tmp,
                                             metadata={"settings": json.dumps(asdict(s))}))
    return labels


def pseudo_split(split: SegSplit, labels: dict[str, torch.Tensor]) -> SegSplit:
    """Training cases from teacher labels: the same images, the teacher's masks as targets (``originals`` hold
    the model-frame masks: these cases are never scored at the original size)."""
    size = split.images.shape[-1]
    idx = labels["case"]
    bits = labels["mask"].numpy()
    masks = np.unpackbits(bits, axis=1, count=size * size).reshape(-1, 1, size, size) if len(idx) else \
        np.zeros((0, 1, size, size), np.uint8)
    masks = torch.from_numpy(np.ascontiguousarray(masks))
    return SegSplit(split.images[idx], masks, [f"{split.names[i]}~teacher{k}" for k, i in enumerate(idx.tolist())],
                    [split.geometry[i] for i in idx.tolist()], [m[0].numpy() for m in masks])
