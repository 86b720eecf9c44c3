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

import functools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import medlite
from medlite.data.prompts import sample_prompt
from medlite.data.seg_augment import augment_batch, augment_pairs
from medlite.data.segmentation import SegmentationData, SegSplit
from medlite.engine import schedule
from medlite.engine.loop import Task, fit
from medlite.engine.tasks.promptable.evaluate import val_dice
from medlite.errors import ConfigError
from medlite.models.litesam.predictor import normalise
from medlite.record import RunRecord
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
    lr: float = 8e-4  # AdamW peak learning rate (results/litesam.md and litesam_distill.md use it)
    weight_decay: float = 0.01
    warmup_steps: int = 50  # linear warm-up before the cosine decay
    augment: str = "light"  # seg_augment level: none / photometric / light / strong
    augment_on: str = "cpu"  # "cpu": albumentations per image; "device": batched torch on the training device
    # (seg_augment.augment_batch: no CLAHE or elastic), for a GPU whose steps outrun the CPU's augmentation
    prompt_probs: tuple[float, float, float] = (0.5, 0.3, 0.2)  # box / points / scribble
    box_jitter: float = 5.0  # max box-coordinate jitter in training (model-frame px)
    iou_weight: float = 1.0  # weight of the IoU-head MSE
    teacher: str | None = None  # checkpoint, or a model with pretrained weights (litemedsam), to distil from
    distill_weight: float = 1.0  # weight of the embedding MSE when prompt training with a teacher
    teacher_cache: str = ""  # folder of cached teacher embeddings (`medlite sam cache-teacher`); stage distill
    # without one runs the teacher online on each augmented batch (any augment level; for a GPU)
    distill_grid: str = "teacher"  # where embeddings are compared: "teacher" (student upsampled to the
    # teacher's grid) or "student" (teacher average-pooled to the student's grid)
    stage: str = "prompt"  # "prompt": masks from sampled prompts; "distill": encoder only, MSE to the teacher
    pseudo_boxes: int = 0  # prompt stage: random boxes per training image answered by the teacher from its cached
    # embedding; its confident masks join the training cases (:mod:`.pseudo`); needs teacher + teacher_cache
    pseudo_min_iou: float = 0.75  # keep a teacher mask only if its predicted IoU reaches this
    pretrained: bool = False  # start from the weights the model card names (litesam_lite0_md8: ImageNet encoder;
    # a training option, not recorded in model_kwargs, so loading the checkpoint never needs them); not on resume
    init: str = ""  # checkpoint to start from (e.g. the distill stage's best.safetensors); not on resume
    init_head: str = ""  # "litemedsam": then copy the real LiteMedSAM's prompt encoder, mask decoder and neck-final
    # LayerNorm affine into the model (litesam_swin_xs_md), over ``init``'s; for the distill stage; not on resume
    time_budget_s: float | None = None  # if set: fit the schedule to this many seconds (steps estimated)
    grad_clip: float = 1.0  # max gradient norm (model + distillation adapter); 0 disables
    ema: float = 0.0  # > 0: validate and keep a moving average of the weights with this decay (e.g. 0.998)
    encoder_lr_mult: float = 1.0  # image encoder's LR = lr x this (e.g. 0.1: the prompt stage adapts the head
    # more than a distilled encoder); != 1 also exempts biases and norms from weight decay (decay groups)
    threads: int = 1  # torch CPU threads
    device: str = "auto"  # "auto" (a GPU if there is one), "cpu", "cuda", "cuda:1"
    progress: bool = True  # progress bars
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
             iou_weight: float = 1.0, iou_is_logit: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Dice + BCE on logits (B, 1, S, S) vs target (B, 1, S, S) {0, 1}, plus MSE of the IoU head (B, 1):
    on its sigmoid, or (``iou_is_logit=False``, SAM's head) on its output itself."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((2, 3)) + target.sum((2, 3)) + 1)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    with torch.no_grad():
        hard = (logits > 0).float()
        i = (hard * target).sum((2, 3))
        true_iou = i / ((hard + target).clamp(max=1).sum((2, 3))).clamp_min(1)
    mse = F.mse_loss(torch.sigmoid(iou_logits) if iou_is_logit else iou_logits, true_iou)
    loss = dice.mean() + bce + iou_weight * mse
    return loss, {"dice_loss": float(dice.mean().detach()), "bce": float(bce.detach()), "iou_mse": float(mse.detach())}


def model_meta(model, cfg: SamTrainConfig | None = None, metrics: dict | None = None,
               data: dict | None = None) -> dict:
    """The run record of a LiteSAM-family model (its config travels with it, so any width rebuilds)."""
    c = model.cfg
    return RunRecord(
        kind="promptable", medlite_version=medlite.__version__,
        model={"name": model.medlite_name, "num_classes": 1, "in_chans": c.in_chans, "img_size": c.img_size,
               "kwargs": {} if cfg is None else dict(cfg.model_kwargs), "config": c.to_dict()},
        preprocessing={"size": c.img_size, "channels": c.in_chans, "mode": "pad", "normalise": "min-max",
                       "mean": [0.0], "std": [1.0]},
        data=data or {}, train_config=None if cfg is None else asdict(cfg), metrics=metrics or {}).to_dict()


class _Distiller(torch.nn.Module):
    """A teacher's image embedding as an MSE target for the student's, through a 1x1 projection.

    Where the grids differ (LiteMedSAM 64x64, LiteSAM 16x16), ``grid`` says where they meet: "teacher" upsamples
    the projected student embedding bilinearly to the teacher's grid (detail inside a student cell cannot be
    matched and stays in the loss); "student" average-pools the teacher's embedding to the student's grid (the
    target the student can represent). Where the widths agree there is no projection: the student regresses
    the teacher's embedding itself, so the teacher's mask decoder can read it. The target comes from the batch
    (cached embeddings) or, without one, from running the teacher online."""

    def __init__(self, teacher_spec: str | None, student_dim: int, teacher_dim: int | None = None,
                 grid: str = "teacher") -> None:
        super().__init__()
        from medlite.engine.tasks.promptable.teacher import load_teacher

        if grid not in ("teacher", "student"):
            raise ConfigError(f"distill_grid must be 'teacher' or 'student'; got {grid!r}")
        teacher = load_teacher(teacher_spec)[0] if teacher_spec else None
        self._teacher = (teacher,)  # not a submodule: neither trained, saved, nor switched to train mode
        teacher_dim = teacher_dim or teacher.cfg.embed_dim
        self.proj = (torch.nn.Identity() if student_dim == teacher_dim
                     else torch.nn.Conv2d(student_dim, teacher_dim, 1))
        self.grid = grid

    def teacher_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's embedding of ``x`` in fp32 (no autocast), the teacher moved to ``x``'s device."""
        teacher = self._teacher[0]
        if next(teacher.parameters()).device != x.device:
            teacher.to(x.device)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            return teacher.forward_features(x.float()).embedding

    def forward(self, x: torch.Tensor, student_emb: torch.Tensor, target: torch.Tensor | None = None):
        if target is None:
            target = self.teacher_embedding(x)
        s, target = self.proj(student_emb), target.float()
        if s.shape[-2:] != target.shape[-2:]:
            if self.grid == "student":
                target = F.adaptive_avg_pool2d(target, s.shape[-2:])
            else:
                s = F.interpolate(s, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return F.mse_loss(s, target)


class PromptableTask(Task):
    """LiteSAM on prompts sampled from masks (box / points / scribble), optionally distilling a teacher's
    image embedding; selected on validation Dice with ground-truth box prompts."""

    kind = "promptable"
    metric = "val_dice"
    resume_options = ("epochs", "time_budget_s")  # a finished run can be extended

    def __init__(self, cfg: SamTrainConfig, data: dict[str, SegmentationData] | None = None) -> None:
        super().__init__(cfg)
        self.preloaded = data

    def setup(self, run_dir: Path) -> None:
        cfg = self.cfg
        if cfg.stage not in ("prompt", "distill"):
            raise ConfigError(f"stage must be 'prompt' or 'distill'; got {cfg.stage!r}")
        if cfg.augment_on not in ("cpu", "device"):
            raise ConfigError(f"augment_on must be 'cpu' or 'device'; got {cfg.augment_on!r}")
        data = self.preloaded or {d: load_dataset(d, cfg.img_size, cfg.fold, cfg.seed) for d in cfg.datasets}
        self.train_split = concat([data[d].train for d in cfg.datasets])
        self.val_split = concat([data[d].val for d in cfg.datasets])
        self.device = torch.device(self.dist.device)
        if "pretrained" in cfg.model_kwargs:
            raise ConfigError("set pretrained=True as the training option `pretrained`, not in model_kwargs")
        self.model = create_model(cfg.model, num_classes=1, img_size=cfg.img_size,
                                  pretrained=cfg.pretrained and not self.resuming, **cfg.model_kwargs)
        if cfg.init and not self.resuming:
            from medlite.engine.checkpoint import read_checkpoint

            self.model.load_state_dict(read_checkpoint(cfg.init)[0])
        if cfg.init_head and not self.resuming:
            if cfg.init_head != "litemedsam":
                raise ConfigError(f"init_head must be 'litemedsam' (the only pretrained head); got {cfg.init_head!r}")
            from medlite.models.litesam.model import load_litemedsam_head

            kept = load_litemedsam_head(self.model)
            log.info("LiteMedSAM's prompt encoder and mask decoder copied in (%d head tensors kept: %s)",
                     len(kept), ", ".join(sorted({k.rsplit(".", 2)[0] for k in kept})) or "none")
        self.model.to(self.device)
        self.targets = None  # cached teacher embeddings (distill stage): train from the cache, val always
        if cfg.stage == "distill":
            if not cfg.teacher:
                raise ConfigError("stage 'distill' needs --teacher (and --teacher-cache to read cached embeddings "
                                  "from `medlite sam cache-teacher`; without one the teacher runs online)")
            if cfg.teacher_cache:
                if cfg.augment not in ("none", "photometric"):
                    raise ConfigError("stage 'distill' regresses cached embeddings of un-augmented images: use "
                                      "augment 'none' or 'photometric' (intensity only, so the target still "
                                      f"fits), or no teacher cache (the teacher online); got {cfg.augment!r}")
                self.targets = {s: self._cached(data, s) for s in ("train", "val")}
                distiller = _Distiller(None, self.model.cfg.embed_dim, self.targets["train"].shape[1],
                                       grid=cfg.distill_grid)
            else:  # online: the teacher embeds every augmented batch; validation targets computed once here
                distiller = _Distiller(cfg.teacher, self.model.cfg.embed_dim, grid=cfg.distill_grid)
                val = self.val_split.images
                self.targets = {"train": None, "val": torch.cat([distiller.teacher_embedding(
                    normalise(val[i:i + 16]).to(self.device)).cpu() for i in range(0, len(val), 16)])}
            self.metric, self.minimize = "val_distill_mse", True
        else:
            distiller = (_Distiller(cfg.teacher, self.model.cfg.embed_dim, grid=cfg.distill_grid)
                         if cfg.teacher and cfg.distill_weight else None)
        self.pseudo_cases = 0
        if cfg.pseudo_boxes:
            if cfg.stage != "prompt" or not (cfg.teacher and cfg.teacher_cache):
                raise ConfigError("pseudo_boxes labels random boxes with the teacher's masks in the prompt stage: "
                                  "it needs --teacher and --teacher-cache (the cached embeddings of the training "
                                  "images)")
            pseudo = self._pseudo(data)
            self.pseudo_cases = sum(len(p) for p in pseudo)
            log.info("%d teacher-labelled cases join %d ground-truth training cases", self.pseudo_cases,
                     len(self.train_split))
            self.train_split = concat([self.train_split, *pseudo])
        self.trainable = _PromptableStep(self.model, distiller, cfg.iou_weight, cfg.distill_weight,
                                         distill_only=cfg.stage == "distill").to(self.device)
        self.steps_per_epoch = max(1, len(self.train_split) // cfg.batch_size)

    def _pseudo(self, data: dict[str, SegmentationData]) -> list[SegSplit]:
        """Teacher-labelled cases of every training split (labelled once, then read from the cache)."""
        from medlite.engine.tasks.promptable.pseudo import PseudoSettings, load_or_label, pseudo_split
        from medlite.engine.tasks.promptable.teacher import dataset_folder, load_embeddings, load_teacher

        cfg = self.cfg
        settings = PseudoSettings(boxes=cfg.pseudo_boxes, min_iou=cfg.pseudo_min_iou, seed=cfg.seed)
        # loaded at most once, and only if some split is not labelled yet
        get_teacher = functools.cache(lambda: load_teacher(cfg.teacher)[0])
        out = []
        for d in cfg.datasets:
            train, folder = data[d].train, self._teacher_root / dataset_folder(d)
            labels = load_or_label(get_teacher, train, lambda t=train, f=folder: load_embeddings(f, t.names), folder,
                                   settings)
            out.append(pseudo_split(train, labels))
        return out

    def _cached(self, data: dict[str, SegmentationData], split: str) -> torch.Tensor:
        """Cached teacher embeddings of every case of ``split``, in the order of the concatenated split."""
        from medlite.engine.tasks.promptable.teacher import dataset_folder, load_embeddings

        return torch.cat([load_embeddings(self._teacher_root / dataset_folder(d), getattr(data[d], split).names)
                          for d in self.cfg.datasets])

    @functools.cached_property
    def _teacher_root(self) -> Path:
        """This run's folder of cached teacher outputs (the teacher's name hashes a checkpoint file: once)."""
        from medlite.engine.tasks.promptable.teacher import teacher_name

        return Path(self.cfg.teacher_cache) / f"{teacher_name(self.cfg.teacher)}-{self.cfg.img_size}"

    def total_steps(self, resumed: int | None) -> int:
        cfg = self.cfg
        if not cfg.time_budget_s:
            return cfg.epochs * self.steps_per_epoch
        if resumed is not None:
            return resumed
        per_step = _time_steps(self.trainable, self.batches(0))  # size the schedule to the budget
        total = max(1, int(cfg.time_budget_s / per_step))
        log.info("time budget %.0f s at %.2f s/step -> %d steps", cfg.time_budget_s, per_step, total)
        return total

    def optimizer(self) -> torch.optim.Optimizer:
        mults = {"model.image_encoder.": self.cfg.encoder_lr_mult} if self.cfg.encoder_lr_mult != 1.0 else None
        return schedule.build_optimizer(self.trainable, "adamw", self.cfg.lr, self.cfg.weight_decay,
                                        decay_groups=mults is not None, fused=False, lr_mults=mults)

    def lr(self, step: int, total_steps: int) -> float:
        warmup = min(self.cfg.warmup_steps, total_steps // 5)  # short (time-budgeted) runs: a fifth of the steps
        return self.cfg.lr * schedule.lr_factor(step, total_steps, warmup, "cosine")

    def batches(self, epoch: int):
        cfg, dist, split, dev = self.cfg, self.dist, self.train_split, self.device
        rng = np.random.default_rng([cfg.seed, epoch])  # order, augmentation and prompts
        order = rng.permutation(len(split))
        mine = slice(dist.rank, None, dist.world_size)  # this rank's share of each global batch
        for b in range(self.steps_per_epoch):
            idx = torch.from_numpy(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
            if cfg.augment_on == "device":
                images, masks = augment_batch(split.images[idx].to(dev), split.masks[idx].to(dev), rng, cfg.augment)
            else:
                images, masks = augment_pairs(split.images[idx], split.masks[idx], rng, cfg.augment)
            x = normalise(images[mine]).to(dev, non_blocking=True)
            if self.targets is not None:  # encoder distillation: image -> teacher embedding (cached, or online)
                cached = self.targets["train"]
                yield x, None if cached is None else cached[idx][mine].to(dev), None, len(idx)
                continue
            masks = masks.cpu()  # prompts are sampled on the CPU (a no-op for CPU tensors)
            prompts = prompt_batch(masks, rng, cfg)
            yield x, masks[mine].to(dev), tuple(p[mine].to(dev) for p in prompts), len(idx)

    def validate(self) -> dict[str, float]:
        if self.targets is None:
            return {"val_dice": val_dice(self.model, self.val_split)}
        self.trainable.eval()
        total, images, targets = 0.0, self.val_split.images, self.targets["val"]
        with torch.no_grad():
            for i in range(0, len(images), 8):
                batch = (normalise(images[i:i + 8]).to(self.device), targets[i:i + 8].to(self.device), None, 1)
                total += float(self.trainable(batch)[0]) * len(batch[1])
        return {"val_distill_mse": total / max(len(images), 1)}

    def record(self) -> dict[str, Any]:
        return model_meta(self.model, self.cfg, data={"datasets": list(self.cfg.datasets), "fold": self.cfg.fold,
                                                      "sizes": {"train": len(self.train_split),
                                                                "val": len(self.val_split)}})

    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        result = {"config": asdict(self.cfg), "steps": self.steps_done, "epochs_run": len(history),
                  "train_cases": len(self.train_split), "val_cases": len(self.val_split),
                  "pseudo_cases": self.pseudo_cases,
                  f"best_{self.metric}": (min if self.minimize else max)((h[self.metric] for h in history),
                                                                           default=float("nan")),
                  "train_time_s": sum(h["epoch_seconds"] for h in history), "history": history}
        (run_dir / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


class _PromptableStep(torch.nn.Module):
    def __init__(self, model, distiller: _Distiller | None, iou_weight: float, distill_weight: float,
                 distill_only: bool = False) -> None:
        super().__init__()
        self.model, self.distiller = model, distiller
        self.iou_weight, self.distill_weight, self.distill_only = iou_weight, distill_weight, distill_only

    def forward(self, batch):
        if self.distill_only:  # x, cached teacher embeddings (B, E_t, h, w), -, n
            x, target, _, n = batch
            loss = self.distiller(x, self.model.forward_features(x).embedding, target)
            return loss, {"distill_mse": loss.detach()}, n
        x, masks, (coords, labels, dense, has_dense), n = batch
        feats = self.model.forward_features(x)
        logits, iou = self.model.forward_head(feats, coords, labels, dense, has_dense)
        # mask 0 answers a single prompt; SAM-style heads' other three (multimask) outputs are left as they are
        loss, _ = sam_loss(logits[:, :1], iou[:, :1], masks.float(), self.iou_weight, self.model.cfg.iou_logits)
        terms = {}
        if self.distiller is not None:
            d = self.distiller(x, feats.embedding)
            loss = loss + self.distill_weight * d
            terms["distill"] = d.detach()
        return loss, {"loss": loss.detach(), **terms}, n


def train_sam(cfg: SamTrainConfig, data: dict[str, SegmentationData] | None = None, resume: bool = True) -> dict:
    """Train (or resume) one run; writes best/last checkpoints and results.json into ``cfg.run_dir()``.

    Args:
        data: preloaded datasets by spec (else loaded from ``cfg.datasets``).
        resume: continue from the run folder's last.safetensors when there is one.
    Returns:
        the results dict (also saved as results.json): training record and validation history.
    """
    resume = resume and (cfg.run_dir() / "last.safetensors").is_file()
    return fit(PromptableTask(cfg, data), resume=resume)


def _time_steps(trainable: torch.nn.Module, batches, n: int = 3) -> float:
    """Seconds per training step of ``trainable`` on the task's own ``batches`` (augmentation, prompts and the
    copy to the device included; median of up to ``n`` after one warm-up); weights restored."""
    state = {k: v.clone() for k, v in trainable.state_dict().items()}
    opt = torch.optim.AdamW(trainable.parameters(), lr=0.0)
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    trainable.train()
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        trainable(batch)[0].backward()
        opt.step()
        opt.zero_grad()
        sync()
        if i:
            times.append(time.perf_counter() - t0)
        if i == n:
            break
        t0 = time.perf_counter()
    trainable.load_state_dict(state)
    return float(np.median(times or [time.perf_counter() - t0])) * 1.05  # bookkeeping
