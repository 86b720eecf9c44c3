"""Train and evaluate LiteSAM on prompts sampled from ground-truth masks.

Recipe (one config, :class:`SamTrainConfig`): every step draws a batch of training cases, augments image
and mask together (albumentations, ``augment``), samples one prompt per case (box with jitter, points or
synthetic scribble; :func:`medlite.data.prompts.sample_prompt`) and minimises
``Dice + BCE`` on the mask logits plus ``iou_weight * MSE(sigmoid(iou_logit), IoU(pred, gt))``; optionally
``distill_weight * MSE`` between the student's image embedding (1x1-projected and resized) and a teacher
checkpoint's. AdamW, linear warm-up then cosine decay. After every epoch the model is scored on the
validation cases with box prompts (mean Dice in the model frame) and ``best.safetensors`` keeps the best;
``last.safetensors`` (with optimizer state) makes the run resumable at epoch boundaries.

Datasets: built-in names of the segmentation data layer (``busi``, ``ph2``), ``folder:<root>`` /
``<layout>:<root>`` for any layout, or ``npz:<dir>`` for challenge cases; their train / val splits are
concatenated, test splits are kept per dataset.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import medlite
from medlite.data.prompts import sample_prompt
from medlite.data.seg_augment import augment_pairs
from medlite.data.segmentation import SegmentationData, SegSplit
from medlite.engine.checkpoint import (
    load_model,
    load_optimizer_state,
    optimizer_state_tensors,
    read_checkpoint,
    save_checkpoint,
)
from medlite.engine.tasks.promptable.evaluate import val_dice
from medlite.models.litesam.predictor import normalise
from medlite.registry import create_model

log = logging.getLogger(__name__)


@dataclass
class SamTrainConfig:
    model: str = "litesam_swin_xs"  # registered LiteSAM variant
    model_kwargs: dict = field(default_factory=dict)  # LiteSAMConfig overrides (recorded in the checkpoint)
    datasets: tuple[str, ...] = ("busi", "ph2")  # built-in names, "<layout>:<root>" or "npz:<dir>"
    fold: int = 0  # fold of k-fold datasets (PH2)
    img_size: int = 256  # model input side (px)
    epochs: int = 16  # passes over the concatenated training cases
    batch_size: int = 8
    lr: float = 5e-4  # AdamW peak learning rate
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up before the cosine decay
    augment: str = "light"  # seg_augment level: none / light / strong
    prompt_probs: tuple[float, float, float] = (0.5, 0.3, 0.2)  # box / points / scribble
    box_jitter: float = 5.0  # max box-coordinate jitter in training (model-frame px)
    iou_weight: float = 1.0  # weight of the IoU-head MSE
    teacher: str | None = None  # checkpoint whose image embeddings the encoder is distilled towards
    distill_weight: float = 1.0
    time_budget_s: float | None = None  # if set: fit the schedule to this many seconds (steps estimated)
    threads: int = 1  # torch CPU threads
    seed: int = 0
    out_dir: str = "runs/sam"
    name: str | None = None  # run folder name (default: model name)
    extra: dict = field(default_factory=dict)  # free-form notes recorded in the checkpoint

    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.name or self.model)


# ------------------------------------------------------------------------------------------------ data
def load_dataset(spec: str, size: int, fold: int = 0, seed: int = 0) -> SegmentationData:
    """One dataset spec (see the module docstring) -> SegmentationData letterboxed with padding."""
    from medlite.data.segmentation import load_builtin, load_segmentation

    if ":" in spec:
        kind, root = spec.split(":", 1)
        if kind == "npz":
            from medlite.data.npz import load_npz

            return load_npz(root, size, seed=seed)
        return load_segmentation(root, kind, size, "pad", seed=seed)
    return load_builtin(spec, size=size, mode="pad", fold=fold, seed=seed)


def concat(splits: list[SegSplit]) -> SegSplit:
    return SegSplit(torch.cat([s.images for s in splits]), torch.cat([s.masks for s in splits]),
                    [n for s in splits for n in s.names], [g for s in splits for g in s.geometry],
                    [o for s in splits for o in s.originals])


def prompt_batch(masks: torch.Tensor, rng: np.random.Generator, cfg: SamTrainConfig) -> tuple[torch.Tensor, ...]:
    """(B, 1, S, S) masks -> coords (B, N, 2), labels (B, N), dense (B, 1, S, S), has_dense (B,)."""
    ps = [sample_prompt(m[0].numpy(), rng, probs=cfg.prompt_probs, box_jitter=cfg.box_jitter) for m in masks]
    return (torch.from_numpy(np.stack([p["coords"] for p in ps])),
            torch.from_numpy(np.stack([p["labels"] for p in ps])),
            torch.from_numpy(np.stack([p["dense"] for p in ps]))[:, None],
            torch.from_numpy(np.array([p["has_dense"] for p in ps], np.float32)))


def sam_loss(logits: torch.Tensor, iou_logits: torch.Tensor, target: torch.Tensor,
             iou_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Dice + BCE on logits (B, 1, S, S) vs target (B, 1, S, S) {0, 1}, plus MSE of the IoU head (B, 1)."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((2, 3)) + target.sum((2, 3)) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    with torch.no_grad():
        hard = (logits > 0).float()
        i = (hard * target).sum((2, 3))
        true_iou = i / ((hard + target).clamp(max=1).sum((2, 3))).clamp_min(1)
    mse = F.mse_loss(torch.sigmoid(iou_logits), true_iou)
    loss = dice.mean() + bce + iou_weight * mse
    return loss, {"dice_loss": float(dice.mean().detach()), "bce": float(bce.detach()), "iou_mse": float(mse.detach())}


def _lr(step: int, total: int, cfg: SamTrainConfig) -> float:
    warmup = min(cfg.warmup_steps, total // 5)  # short (time-budgeted) runs warm up for a fifth of the steps
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def model_meta(model, cfg: SamTrainConfig | None = None, metrics: dict | None = None) -> dict:
    c = model.cfg
    return {"model": {"name": model.medlite_name, "num_classes": 1, "in_chans": c.in_chans, "img_size": c.img_size,
                      "kwargs": {} if cfg is None else dict(cfg.model_kwargs), "config": c.to_dict()},
            "preprocessing": {"size": c.img_size, "channels": c.in_chans, "mode": "pad", "normalise": "min-max",
                              "mean": [0.0], "std": [1.0]},
            "task": "promptable-segmentation", "train": None if cfg is None else asdict(cfg),
            "metrics": metrics or {}, "medlite_version": medlite.__version__}


# --------------------------------------------------------------------------------------------- training
class _Distiller(torch.nn.Module):
    """Teacher embeddings as an MSE target for the student's (1x1 projection + bilinear resize)."""

    def __init__(self, teacher_path: str, student_dim: int) -> None:
        super().__init__()
        self.teacher, _ = load_model(teacher_path)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.proj = torch.nn.Conv2d(student_dim, self.teacher.cfg.embed_dim, 1)

    def forward(self, x: torch.Tensor, student_emb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher.forward_features(x).embedding
        s = F.interpolate(self.proj(student_emb), size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.mse_loss(s, target)


def train_sam(cfg: SamTrainConfig, data: dict[str, SegmentationData] | None = None, resume: bool = True) -> dict:
    """Train (or resume) one run; writes best/last checkpoints and results.json into ``cfg.run_dir()``.

    Args:
        data: preloaded datasets by spec (else loaded from ``cfg.datasets``).
    Returns:
        the results dict (also saved as results.json): training record and validation history.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    data = data or {d: load_dataset(d, cfg.img_size, cfg.fold, cfg.seed) for d in cfg.datasets}
    train_split = concat([data[d].train for d in cfg.datasets])
    val_split = concat([data[d].val for d in cfg.datasets])
    model = create_model(cfg.model, num_classes=1, img_size=cfg.img_size, **cfg.model_kwargs)
    distiller = _Distiller(cfg.teacher, model.cfg.embed_dim) if cfg.teacher else None
    params = list(model.parameters()) + (list(distiller.proj.parameters()) if distiller else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n, bs = len(train_split), cfg.batch_size
    steps_per_epoch = max(1, n // bs)
    total = cfg.epochs * steps_per_epoch
    history, start_epoch, best, step, elapsed = [], 0, -1.0, 0, 0.0
    last = run / "last.safetensors"
    if resume and last.is_file():
        weights, meta, state = read_checkpoint(last)
        model.load_state_dict(weights)
        load_optimizer_state(opt, state, meta["optimizer"])
        r = meta["resume"]
        start_epoch, best, step, history, total, elapsed = (r["epoch"], r["best"], r["step"], r["history"],
                                                             r["total_steps"], r["elapsed_s"])
        log.info("resuming %s at epoch %d", run, start_epoch)
    epochs = cfg.epochs
    if cfg.time_budget_s and start_epoch == 0:
        # time a few steps, then size the schedule so the run ends within the budget
        per_step = _time_steps(model, train_split, cfg)
        total = max(1, int(cfg.time_budget_s / per_step))
        epochs = math.ceil(total / steps_per_epoch)
        log.info("time budget %.0f s at %.2f s/step -> %d steps (%d epochs)", cfg.time_budget_s, per_step, total,
                 epochs)
    elif cfg.time_budget_s:
        epochs = math.ceil(total / steps_per_epoch)
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        order = rng.permutation(n)
        losses = []
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = torch.from_numpy(order[b * bs:(b + 1) * bs])
            images, masks = augment_pairs(train_split.images[idx], train_split.masks[idx], rng, cfg.augment)
            coords, labels, dense, has_dense = prompt_batch(masks, rng, cfg)
            x = normalise(images)
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg)
            feats = model.forward_features(x)
            logits, iou = model.forward_head(feats, coords, labels, dense, has_dense)
            loss, parts = sam_loss(logits, iou, masks.float(), cfg.iou_weight)
            if distiller is not None:
                d = distiller(x, feats.embedding)
                loss = loss + cfg.distill_weight * d
                parts["distill"] = float(d.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        vd = val_dice(model, val_split)
        elapsed += time.time() - t0
        history.append({"epoch": epoch + 1, "step": step, "loss": float(np.mean(losses)) if losses else None,
                        "val_dice": vd, "elapsed_s": elapsed})
        log.info("epoch %d/%d loss %.4f val dice %.4f (%.0f s)", epoch + 1, epochs, history[-1]["loss"] or 0, vd,
                 time.time() - t0)
        if vd > best:
            best = vd
            save_checkpoint(run / "best.safetensors", model,
                            model_meta(model, cfg, {"val_dice": vd, "epoch": epoch + 1}))
        tensors, info = optimizer_state_tensors(opt)
        meta = model_meta(model, cfg, {"val_dice": vd, "epoch": epoch + 1})
        meta["optimizer"] = info
        meta["resume"] = {"epoch": epoch + 1, "best": best, "step": step, "history": history, "total_steps": total,
                          "elapsed_s": elapsed}
        save_checkpoint(last, model, meta, tensors)
        if step >= total:
            break
    result = {"config": asdict(cfg), "steps": step, "epochs_run": len(history), "train_cases": n,
              "val_cases": len(val_split), "best_val_dice": best, "train_time_s": elapsed, "history": history}
    (run / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _time_steps(model, split: SegSplit, cfg: SamTrainConfig, n: int = 3) -> float:
    """Seconds per training step (median of ``n`` after one warm-up), weights restored afterwards."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)
    rng = np.random.default_rng(cfg.seed)
    times = []
    model.train()
    for i in range(n + 1):
        idx = torch.arange(min(cfg.batch_size, len(split)))
        t0 = time.perf_counter()
        coords, labels, dense, has_dense = prompt_batch(split.masks[idx], rng, cfg)
        logits, iou = model(normalise(split.images[idx]), coords, labels, dense, has_dense)
        sam_loss(logits, iou, split.masks[idx].float())[0].backward()
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - t0)
    model.load_state_dict(state)
    return float(np.median(times)) * 1.05  # augmentation and bookkeeping
