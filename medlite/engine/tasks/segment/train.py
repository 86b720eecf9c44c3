"""Training loop for 2D binary segmentation (MedLiteNet, its ablations, the U-Net baseline).

Reads top to bottom: load the dataset into memory, build the model (optionally from pretrained weights), then
per epoch augment batches with albumentations, step AdamW on 0.5 BCE + 0.5 Dice under a warmup + cosine
schedule (a pretrained encoder optionally at a fixed fraction of the rate), score validation Dice
in the model frame, keep the best-validation checkpoint and a resumable ``last.safetensors``. At the end the
best checkpoint is scored on test at the original image sizes (Dice, IoU, HD95, NSD), and the run folder gets
``results.json``, ``per_case.csv``, ``report.md``, ``curves.png`` and ``cases.png`` (best and worst cases).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medlite
from medlite.data.segmentation import (
    LAYOUTS,
    SegmentationData,
    SegSplit,
    load_builtin,
    load_segmentation,
    load_train_test,
)
from medlite.data.transforms import norm_stats
from medlite.engine import schedule
from medlite.engine.amp import autocast, resolve_amp
from medlite.engine.checkpoint import read_checkpoint, save_checkpoint
from medlite.engine.loop import Task, config_from_dict, fit
from medlite.engine.tasks.segment.evaluate import (
    choose_postprocess,
    evaluate_original,
    frame_dice,
    predict_probs,
    seg_loss,
)
from medlite.errors import ConfigError
from medlite.record import RunRecord

log = logging.getLogger(__name__)


@dataclass
class SegTrainConfig:
    """One segmentation training run. Defaults are MedLiteNet's recipe (epochs shortened for a CPU)."""

    model: str = "medlitenet"  # registry name (a segmentation model)
    data: str = "busi"  # built-in name ("busi", "ph2") or a dataset folder
    layout: str = "folder"  # folder layout when `data` is a path: folder, busi, ph2, isic, kvasir
    mask_suffix: str | None = None  # folder layout: mask name = image stem + suffix (None: auto)
    size: int = 256  # model input side in pixels
    mode: str = "resize"  # "resize" (stretch) or "pad" (longest side + zero padding)
    fold: int = 0  # k-fold index (PH2 and folders without split lists)
    folds: int = 5  # number of folds for folder data; 0 = random 80/20 split
    split: int = 1  # BUSI: which shipped split list pair (1, 2, 3)
    train_list: str = ""  # folder data: file of training case names (with test_list)
    test_list: str = ""  # folder data: file of test case names
    test_data: str = ""  # a second folder (same layout) that is the whole test split; `data` is then all train
    val_fraction: float = 0.1  # share of the training cases held out for checkpoint selection
    epochs: int = 40  # training epochs
    batch_size: int = 8  # images per step
    optimizer: str = "adamw"  # "adamw" or "adam"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    schedule: str = "cosine"  # "cosine" (after linear warmup) or "step"
    warmup_epochs: float = 1.0  # linear warmup length in epochs
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule only
    gamma: float = 0.1  # step schedule only
    augment: str = "strong"  # albumentations level: none, light, strong
    bce_weight: float = 0.5  # loss = w * BCE + (1 - w) * Dice
    tolerance: float = 2.0  # NSD tolerance in pixels (original resolution)
    postprocess: str = "auto"  # mask clean-up: "none", "largest" (largest component, holes filled), "auto"
    # (whichever scores the better validation Dice; recorded in the checkpoint and used by `seg predict`)
    seed: int = 0  # model init, split, batch order, augmentation
    out: str = ""  # run folder; empty = runs/seg/<model>-<data>-f<fold>-s<seed>
    data_root: str = ""  # folder holding the built-in datasets; empty = $MEDLITE_DATA
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra create_model options
    pretrained: bool = False  # start from the weights the model card names (create_model(..., pretrained=True))
    encoder_init: str = ""  # checkpoint whose EfficientNet-Lite0 encoder replaces the model's (lite0 models; e.g.
    # a litesam_lite0_md8 run distilled from LiteMedSAM); set, it supersedes `pretrained`; not on resume
    encoder_lr_mult: float = 1.0  # learning rate of the parameters under `encoder.` = lr x this (fine-tuning a
    # pretrained encoder: 0.1); 1.0 = one rate for all
    ema: float = 0.0  # > 0: validate and keep a moving average of the weights with this decay (e.g. 0.998)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU
    amp: str = "auto"  # training precision: "bf16" autocast, "none" (fp32), "auto" (bf16 where the CPU is native)
    threads: int = 0  # torch intra-op threads; 0 = torch default
    progress: bool = True  # Rich progress bars
    plots: bool = True  # PNG curves and best/worst case grid at the end
    max_steps_per_epoch: int = 0  # cap on steps per epoch (smoke tests); 0 = full epochs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegTrainConfig:
        return config_from_dict(cls, d)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / "seg" / f"{self.model}-{Path(self.data).name}-f{self.fold}-s{self.seed}"


def load_seg_data(cfg: SegTrainConfig) -> SegmentationData:
    """The dataset a config names: built-in (busi, ph2) or a folder in one of the layouts."""
    if cfg.data in ("busi", "ph2") and not Path(cfg.data).is_dir():
        return load_builtin(cfg.data, cfg.size, cfg.mode, cfg.data_root or None, fold=cfg.fold, split=cfg.split,
                            seed=cfg.seed, val_fraction=cfg.val_fraction)
    if cfg.layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {LAYOUTS}; got {cfg.layout!r}")
    if cfg.train_list and not cfg.test_list:  # silently falling back to k-fold would be a wrong answer
        raise ConfigError("train_list needs test_list (the cases to test on); or give only test_list, and "
                          "train on the rest")
    if cfg.test_data:
        if cfg.test_list or cfg.train_list:
            raise ConfigError("give test_data (a folder) or test_list / train_list (names), not both")
        return load_train_test(cfg.data, cfg.test_data, cfg.layout, cfg.size, cfg.mode, cfg.mask_suffix,
                               cfg.seed, cfg.val_fraction)
    split: dict[str, Any] = {"seed": cfg.seed, "val_fraction": cfg.val_fraction}
    if cfg.test_list:
        split.update(train_list=cfg.train_list or None, test_list=cfg.test_list)
    elif cfg.folds:
        split.update(folds=cfg.folds, fold=cfg.fold)
    return load_segmentation(cfg.data, cfg.layout, cfg.size, cfg.mode, cfg.mask_suffix, **split)


def build_seg_meta(cfg: SegTrainConfig, data: SegmentationData, mean, std) -> dict[str, Any]:
    """The run record. ``model.kwargs`` rebuild the architecture only (``pretrained`` is a training option,
    kept in ``train_config``), so loading the checkpoint never needs the pretrained weights' package."""
    return RunRecord(
        kind="segmentation",
        model={"name": cfg.model, "num_classes": 1, "in_chans": 3, "img_size": cfg.size, "kwargs": cfg.model_kwargs},
        preprocessing={"size": cfg.size, "mode": cfg.mode, "channels": 3, "mean": list(mean), "std": list(std),
                       "scale": "uint8 / 255", "threshold": 0.5},
        data={"name": data.name, "split": data.split, "sizes": {k: len(v) for k, v in data.splits().items()}},
        train_config=asdict(cfg), medlite_version=medlite.__version__,
    ).to_dict()


class SegmentTask(Task):
    """2D binary segmentation: 0.5 BCE + 0.5 Dice, selected on validation Dice in the model frame."""

    kind = "segmentation"
    metric = "val_dice"

    def setup(self, run_dir: Path) -> None:
        cfg = self.cfg
        self.data = load_seg_data(cfg)
        card = medlite.model_card(cfg.model)
        if card.task != "segmentation":
            seg = [n for n in medlite.list_models() if medlite.model_card(n).task == "segmentation"]
            raise ConfigError(f"'{cfg.model}' is a {card.task} model; choose a segmentation model "
                             f"({', '.join(seg)})")
        if "pretrained" in cfg.model_kwargs:
            raise ConfigError("set pretrained=True as the training option `pretrained`, not in model_kwargs")
        self.mean, self.std = norm_stats(card, 3)
        # a resumed run takes every weight from last.safetensors: the pretrained package is not needed again
        pretrained = cfg.pretrained and not self.resuming and not cfg.encoder_init
        model = medlite.create_model(cfg.model, num_classes=1, in_chans=3, img_size=cfg.size, pretrained=pretrained,
                                     **cfg.model_kwargs)
        if cfg.encoder_init and not self.resuming:
            from medlite.models.medlitenet import load_lite0_encoder

            source = load_lite0_encoder(model, cfg.encoder_init)
            log.info("encoder from %s (a %s checkpoint)", cfg.encoder_init, source)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.trainable = _SegmentStep(model, cfg.bce_weight, self.amp)
        steps = max(1, len(self.data.train) // cfg.batch_size)  # drop the ragged last batch (BatchNorm)
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW (or Adam) with weight-decay groups; with ``encoder_lr_mult`` != 1 each group is split into
        encoder (``encoder.*``, at that multiple of the schedule) and the rest (at the schedule)."""
        cfg = self.cfg
        mults = {"encoder.": cfg.encoder_lr_mult} if cfg.encoder_lr_mult != 1.0 else None
        return schedule.build_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.weight_decay, lr_mults=mults)

    def lr(self, step: int, total_steps: int) -> float:
        return self.cfg.lr * schedule.epoch_lr_factor(step, total_steps, self.steps_per_epoch, self.cfg)

    def batches(self, epoch: int):
        from medlite.data.seg_augment import augment_pairs
        from medlite.data.transforms import to_float

        cfg, dist, train = self.cfg, self.dist, self.data.train
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch])  # augmentation: replayed exactly on resume
        perm = torch.randperm(len(train), generator=g)
        for step in range(self.steps_per_epoch):
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            images, masks = augment_pairs(train.images[idx], train.masks[idx], rng, cfg.augment)
            mine = slice(dist.rank, None, dist.world_size)  # this rank's share of the global batch
            x = to_float(images[mine], self.mean, self.std)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, masks[mine], len(idx)

    def validate(self) -> dict[str, float]:
        probs = predict_probs(self.model, self.data.val.images, self.mean, self.std,
                              channels_last=self.cfg.channels_last)
        return {"val_dice": float(frame_dice(probs, self.data.val.masks).mean())}

    def record(self) -> dict[str, Any]:
        return build_seg_meta(self.cfg, self.data, self.mean, self.std)

    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        return finalize_segmentation(run_dir, self.data, self.record(), self.cfg, history, best_epoch)


class _SegmentStep(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, bce_weight: float, amp: str) -> None:
        super().__init__()
        self.model, self.bce_weight, self.amp = model, bce_weight, amp

    def forward(self, batch):
        x, masks, n = batch
        with autocast(self.amp):
            logits = self.model(x)
        loss = seg_loss(logits.float(), masks, self.bce_weight)
        return loss, {"train_loss": loss.detach()}, n


def train_segmentation(cfg: SegTrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, keep the best validation-Dice checkpoint, evaluate it on test. Returns results.json.

    Launch under ``torchrun --nproc_per_node N`` for DDP; see :mod:`medlite.engine.loop`.
    """
    return fit(SegmentTask(cfg), resume=resume)


def finalize_segmentation(run_dir: Path, data: SegmentationData, meta: dict, cfg: SegTrainConfig,
                          history: list[dict], best_epoch: int) -> dict[str, Any]:
    """Score the best checkpoint on test at original sizes; write results.json, per_case.csv, report, plots."""
    from medlite.engine.checkpoint import load_model
    from medlite.models.flops import count_macs

    model, best_meta = load_model(run_dir / "best.safetensors")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = meta["preprocessing"]["mean"], meta["preprocessing"]["std"]
    val_probs = predict_probs(model, data.val.images, mean, std, channels_last=cfg.channels_last)
    post, val_by_post = choose_postprocess(val_probs, data.val.masks)
    if cfg.postprocess != "auto":
        post = cfg.postprocess
    best_meta["preprocessing"] = {**best_meta["preprocessing"], "postprocess": post}
    save_checkpoint(run_dir / "best.safetensors", model, best_meta)  # the choice travels with the weights
    probs = predict_probs(model, data.test.images, mean, std, channels_last=cfg.channels_last)
    summary, cases = evaluate_original(probs, data.test, cfg.tolerance, post)
    results = {
        "model": cfg.model, "data": data.name, "split": data.split, "fold": cfg.fold,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, (1, 3, cfg.size, cfg.size)),
        "best_epoch": best_epoch + 1, "epochs": cfg.epochs, "best_val_dice": best_meta["metrics"]["val"]["dice"],
        "postprocess": post, "val_dice_by_postprocess": val_by_post,
        "test": summary, "tolerance_px": cfg.tolerance, "amp": resolve_amp(cfg.amp),
        "history": history, "train_config": asdict(cfg),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    with open(run_dir / "per_case.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cases[0]))
        w.writeheader()
        w.writerows(cases)
    (run_dir / "report.md").write_text(seg_report_markdown(results))
    if cfg.plots and history:
        from medlite.report.seg_plots import plot_seg_curves

        plot_seg_curves(history, run_dir / "curves.png")
        case_grid(run_dir / "cases.png", data.test, probs, cases, title=f"{cfg.model} on {data.name} (test)",
                  postprocess=post)
    log.info("test Dice %.4f ± %.4f -> %s", summary["dice"]["mean"], summary["dice"]["std"], run_dir)
    return results


def rescore_segmentation(run_dir: str | Path, data_root: str = "") -> dict[str, Any]:
    """Score a finished run's best checkpoint again with the current evaluation code (post-processing
    chosen on validation, test at original size); rewrites results.json and the run's report files."""
    run_dir = Path(run_dir)
    _, last, _ = read_checkpoint(run_dir / "last.safetensors")
    history = last["resume"]["history"] if "resume" in last else last["history"]  # before the one loop: top level
    cfg = SegTrainConfig.from_dict({**last["train_config"], "data_root": data_root or last["train_config"].get(
        "data_root", "")})
    data = load_seg_data(cfg)
    _, best_meta, _ = read_checkpoint(run_dir / "best.safetensors")
    return finalize_segmentation(run_dir, data, best_meta, cfg, history,
                                 int(best_meta["epoch"]))


def case_grid(path: Path, split: SegSplit, probs: torch.Tensor, cases: list[dict], title: str,
              n: int = 4, postprocess: str = "none") -> Path:
    """PNG of the ``n`` best and ``n`` worst test cases by Dice, at original size."""
    from medlite.data.seg_postprocess import postprocess_mask
    from medlite.data.segmentation import read_rgb, restore
    from medlite.report.seg_plots import plot_case_grid

    order = np.argsort([c["dice"] for c in cases])
    picks = [("best", i) for i in order[::-1][:n]] + [("worst", i) for i in order[:n]]
    panels = []
    for group, i in picks:
        pred = postprocess_mask(restore(probs[i], split.geometry[i]) > 0.5, postprocess)
        panels.append({"image": read_rgb(split.pairs[i].image), "pred": pred, "gt": split.originals[i],
                       "name": split.names[i], "dice": cases[i]["dice"], "group": group})
    return plot_case_grid(panels, path, title)


def seg_report_markdown(results: dict) -> str:
    t = results["test"]

    def ms(k: str) -> str:
        return f"{t[k]['mean']:.3f} ± {t[k]['std']:.3f}" if k != "hd95" else f"{t[k]['mean']:.2f} ± {t[k]['std']:.2f}"

    lines = [f"# {results['model']} on {results['data']}", "",
             f"- parameters: {results['params'] / 1e6:.2f} M, MACs at {results['train_config']['size']} px: "
             f"{results['macs'] / 1e9:.2f} G",
             f"- best validation Dice (model frame) {results['best_val_dice']:.4f} at epoch "
             f"{results['best_epoch']} of {results['epochs']}",
             f"- test cases: {t['dice']['n']} (metrics at the original image size; NSD tolerance "
             f"{results['tolerance_px']} px)", "",
             "| Dice | IoU | HD95 (px) | NSD |", "|---|---|---|---|",
             f"| {ms('dice')} | {ms('iou')} | {ms('hd95')} | {ms('nsd')} |", "",
             "![curves](curves.png)", "", "![best and worst cases](cases.png)", ""]
    return "\n".join(lines)
