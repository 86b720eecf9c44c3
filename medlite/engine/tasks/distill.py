"""Distillation as a task of the training loop: a trained teacher -> a (smaller) student.

The losses (logit KD, attention and CAM alignment) live in :mod:`medlite.compress.distill`; this module supplies
what the loop needs: the student (a new registered model or a checkpoint, e.g. a pruned one), the teacher's
targets, the batch -> loss step, validation AUC for selection and the final test report.

Teacher cache.  Without augmentation the teacher sees each training image identically every epoch, so its
logits, resampled attention rows and class activation maps are computed once (float16 rows) and reused;
with augmentation it runs online.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medlite.compress.distill import (
    LogitEnsemble,
    LossWeights,
    attention_rows,
    cam_rows,
    class_activation_map,
    distill_loss,
    forward_with_attention,
    has_attention,
    has_cam,
    layer_map,
    token_layout,
)
from medlite.engine import schedule
from medlite.engine.loop import Task, fit
from medlite.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """One distillation (or, without a teacher, fine-tuning) run."""

    student: str = "medlit_nano_28"  # registry name (new model) or checkpoint / run folder (e.g. pruned)
    teacher: str = ""  # checkpoint / run folder of the trained teacher, or several joined by commas (their
    # logits averaged: see load_teacher); "" = fine-tune on labels only
    data: str = ""  # MedMNIST subset or path; "" = the teacher's (else the student checkpoint's) data
    out: str = ""  # run folder; "" = runs/distill-<student>-<data>
    epochs: int = 10  # training epochs
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # peak AdamW learning rate (linear warmup, cosine to 0)
    weight_decay: float = 0.05  # AdamW decoupled weight decay (not on norms, biases, tokens)
    warmup_fraction: float = 0.1  # warmup length as a fraction of all steps
    task_weight: float = 1.0  # see LossWeights
    kd_weight: float = 1.0  # see LossWeights
    attn_weight: float = 1.0  # see LossWeights
    hard_weight: float = 0.0  # see LossWeights (DeiT hard-label distillation)
    temperature: float = 4.0  # see LossWeights
    cam_weight: float = 0.0  # see LossWeights (a CNN teacher's class activation map -> the student's cls row)
    layer_map: tuple[int, ...] | None = None  # teacher block per student block; None = evenly spread
    augment: str = "none"  # batched augmentation ("none", "flip", "light"); not "none" disables the cache
    mixup: float = 0.0  # > 0: mix each image with another of the batch, weight ~ Beta(mixup, mixup), before
    # teacher and student see it ("function matching", Beyer et al. 2022); label-free: needs task_weight 0
    cache_teacher: bool = True  # compute teacher outputs once when augment == "none" and mixup == 0
    seed: int = 0  # model init, batch order, augmentation
    ema: float = 0.0  # > 0: validate and keep a moving average of the weights with this decay (e.g. 0.998)
    data_root: str = ""  # data folder; "" = $MEDLITE_DATA or ~/.medlite/data
    size: int = 0  # student input size; 0 = the student checkpoint's, else the teacher's (else 28)
    threads: int = 0  # torch intra-op threads; 0 = torch default
    eval_batch_size: int = 512  # batch size of validation / test inference
    n_boot: int = 1000  # bootstrap resamples for the test confidence intervals
    max_steps_per_epoch: int = 0  # cap (smoke tests); 0 = full epochs
    progress: bool = True  # progress bars
    student_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model options for a new student
    init: str = ""  # checkpoint to start a new student from (e.g. an MAE-pretrained encoder); "" = random

    def weights(self) -> LossWeights:
        return LossWeights(self.task_weight, self.kd_weight if self.teacher else 0.0,
                           self.attn_weight if self.teacher else 0.0, self.temperature,
                           self.hard_weight if self.teacher else 0.0, self.cam_weight if self.teacher else 0.0)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"distill-{Path(self.student).name}-{Path(self.data or 'data').stem}"


def teacher_paths(spec: str) -> list[str]:
    """The checkpoints / run folders of a teacher spec: one path, or several separated by commas."""
    paths = [p.strip() for p in spec.split(",")]
    if not all(paths):
        raise ConfigError(f"teacher {spec!r}: an empty path between commas")
    return paths


def load_teacher(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """The teacher of ``spec``: one trained classifier, or several (comma-separated) as a
    :class:`~medlite.compress.distill.LogitEnsemble` averaging their logits.

    The members of an ensemble must agree on what they were trained for and what they read (data, task, label
    names, input size, channels, normalisation); the returned meta is the first member's with an
    ``ensemble`` list of every member's path.
    """
    from medlite.engine.checkpoint import load_model

    paths = teacher_paths(spec)
    loaded = [load_model(p) for p in paths]
    if len(loaded) == 1:
        return loaded[0]

    def reads(meta: dict[str, Any]) -> dict[str, Any]:
        data, pre = meta.get("data", {}), meta.get("preprocessing", {})
        return {"data": data.get("name"), "task": data.get("task"), "label_names": data.get("label_names"),
                "size": pre.get("size"), "channels": pre.get("channels"), "mean": pre.get("mean"),
                "std": pre.get("std")}

    first = reads(loaded[0][1])
    for path, (_, meta) in zip(paths[1:], loaded[1:], strict=True):
        other = reads(meta)
        diff = [k for k in first if first[k] != other[k]]
        if diff:
            raise ConfigError(f"teacher ensemble: {path} differs from {paths[0]} in "
                              + ", ".join(f"{k} ({other[k]!r} vs {first[k]!r})" for k in diff))
    meta = {**json.loads(json.dumps(loaded[0][1])), "ensemble": paths}
    return LogitEnsemble([m for m, _ in loaded]).eval(), meta


def _norm(meta: dict[str, Any]) -> tuple[list[float], list[float]]:
    return meta["preprocessing"]["mean"], meta["preprocessing"]["std"]


def _student(cfg: DistillConfig, data, size: int) -> tuple[nn.Module, dict[str, Any]]:
    """The student model and its meta (a copy of the checkpoint's, or a new one)."""
    import medlite
    from medlite.engine.checkpoint import load_model

    if Path(cfg.student).exists():
        model, meta = load_model(cfg.student)
        meta = json.loads(json.dumps(meta))
        for k in ("optimizer", "history", "best_val_auc", "best_epoch", "metrics", "epoch", "resume"):
            meta.pop(k, None)
        return model.train(), meta
    from medlite.data.transforms import norm_stats
    from medlite.engine.tasks.classify import classifier_record

    mean, std = norm_stats(medlite.model_card(cfg.student), data.channels)
    model = medlite.create_model(cfg.student, num_classes=data.num_classes, in_chans=data.channels,
                                 img_size=size, **cfg.student_kwargs)
    meta = {**classifier_record(cfg.student, data, size, mean, std, cfg.student_kwargs), "compress": []}
    return model, meta


class TeacherTargets:
    """Teacher logits, attention rows and class activation maps on the student's grid, online or cached per
    training image.

    The teacher sees the student's images resized to its own input size (bilinear, antialiased when
    shrinking), so a CNN fine-tuned on upsampled 28 px images teaches a 28 px student.
    """

    def __init__(self, teacher: nn.Module, tmeta: dict[str, Any], student: nn.Module, cfg: DistillConfig,
                 need_attn: bool, need_cam: bool = False) -> None:
        self.teacher = teacher.eval()
        self.mean, self.std = _norm(tmeta)
        self.size = int(tmeta["preprocessing"]["size"])
        self.need_attn = need_attn and has_attention(teacher) and has_attention(student)
        if need_attn and not self.need_attn:
            log.warning("attention alignment off: the teacher or the student exposes no attention maps")
        self.need_cam = need_cam and has_cam(teacher) and has_attention(student)
        if need_cam and not self.need_cam:
            log.warning("CAM alignment off: it needs a CNN teacher ending in average pooling and one linear "
                        "layer, and a student with attention maps")
        if self.need_cam:
            prefix, self.s_grid = token_layout(student)
            if prefix < 1:
                raise ConfigError("CAM alignment reads the student's cls attention row: this student has no cls "
                                  "token (set cam_weight 0)")
        self.cache: tuple[Tensor, Tensor | None, Tensor | None] | None = None
        if self.need_attn:
            self.t_prefix, self.t_grid = token_layout(teacher)
            _, self.s_grid = token_layout(student)
            n_s, n_t = len(student.blocks), len(teacher.blocks)
            self.map = list(cfg.layer_map) if cfg.layer_map else layer_map(n_s, n_t)
            if len(self.map) != n_s or max(self.map) >= n_t:
                raise ConfigError(f"layer_map {self.map} must give one of {n_t} teacher blocks per student block")

    @torch.no_grad()
    def compute(self, x01: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(B, C, S, S) uint8 images, or float in [0, 1] -> teacher logits (B, C), attention rows
        (B, L_s, R, K) or None, class activation maps on the student's grid (B, 1, K) or None."""
        from medlite.data.transforms import to_float

        x = to_float(x01, self.mean, self.std)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            shrink = x.shape[-1] > self.size
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                align_corners=False, antialias=shrink)
        if self.need_cam:
            logits, cam = class_activation_map(self.teacher, x)
            return logits.float(), None, cam_rows(cam, self.s_grid)
        logits, maps = forward_with_attention(self.teacher, x, self.need_attn)
        if maps is None:
            return logits.float(), None, None
        rows = [attention_rows(maps[j], self.t_prefix, self.t_grid, self.s_grid) for j in self.map]
        return logits.float(), torch.stack(rows, 1), None

    def build_cache(self, images: Tensor, batch_size: int) -> None:
        """Teacher outputs for all (un-augmented) training images (rows and maps stored as float16)."""
        logits, rows, cams = [], [], []
        for i in range(0, len(images), batch_size):
            lg, r, c = self.compute(images[i : i + batch_size])
            logits.append(lg)
            if r is not None:
                rows.append(r.half())
            if c is not None:
                cams.append(c.half())
        self.cache = (torch.cat(logits), torch.cat(rows) if rows else None, torch.cat(cams) if cams else None)

    def get(self, idx: Tensor, x01: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if self.cache is not None:
            lg, rows, cams = self.cache
            return (lg[idx], rows[idx].float() if rows is not None else None,
                    cams[idx].float() if cams is not None else None)
        return self.compute(x01)


class DistillTask(Task):
    """Distil a teacher into a student (or fine-tune the student on labels alone); select on val AUC."""

    kind = "classifier"
    metric = "val_auc"

    def setup(self, run_dir: Path) -> None:
        from medlite.data import load_classification
        from medlite.engine.checkpoint import load_model

        cfg = self.cfg
        teacher, tmeta = load_teacher(cfg.teacher) if cfg.teacher else (None, None)
        smeta = load_model(cfg.student)[1] if Path(cfg.student).exists() else {}
        ref_meta = tmeta or smeta
        data_name = cfg.data or ref_meta.get("data", {}).get("name", "")
        if not data_name:
            raise ConfigError("no data: pass --data (the student is new and there is no teacher to take it from)")
        size = int((smeta or ref_meta)["preprocessing"]["size"]) if ref_meta else 28
        if cfg.size:
            if smeta and cfg.size != size:
                raise ConfigError(f"size {cfg.size}: the student checkpoint {cfg.student} takes {size} px")
            size = cfg.size
        self.data = data = load_classification(data_name, size=size, root=cfg.data_root or None, seed=cfg.seed)
        self.model, self.meta = _student(cfg, data, size)
        if cfg.init:
            if Path(cfg.student).exists():
                raise ConfigError(f"init {cfg.init}: the student {cfg.student} is a checkpoint already; init "
                                  "starts a new (registered) student from other weights")
            if not self.resuming:
                from medlite.engine.tasks.classify import _init_from

                _init_from(self.model, cfg.init)
        self.mean, self.std = _norm(self.meta)
        self.weights = cfg.weights()
        if cfg.mixup < 0:
            raise ConfigError(f"mixup {cfg.mixup}: must be >= 0 (0 = off)")
        if cfg.mixup and (teacher is None or self.weights.task):
            raise ConfigError("mixup mixes two images into one whose label is neither's: it needs a teacher and "
                              "task_weight 0 (the student matches the teacher's outputs on the mixed image)")
        self.targets = None
        if teacher is not None:
            self.targets = TeacherTargets(teacher, tmeta, self.model, cfg, need_attn=self.weights.attn > 0,
                                          need_cam=self.weights.cam > 0)
            if not self.targets.need_attn:
                self.weights = replace(self.weights, attn=0.0)
            if not self.targets.need_cam:
                self.weights = replace(self.weights, cam=0.0)
            if cfg.cache_teacher and cfg.augment == "none" and not cfg.mixup:
                t0 = time.perf_counter()
                self.targets.build_cache(data.train.images, cfg.eval_batch_size)
                log.info("teacher outputs cached for %d images in %.0f s", len(data.train),
                         time.perf_counter() - t0)
        self.trainable = _DistillStep(self.model, self.targets, self.weights, data.task, self.mean, self.std)
        steps = max(1, len(data.train) // cfg.batch_size)
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps

    def optimizer(self) -> torch.optim.Optimizer:
        return schedule.build_optimizer(self.model, "adamw", self.cfg.lr, self.cfg.weight_decay, fused=False)

    def lr(self, step: int, total_steps: int) -> float:
        warm = int(self.cfg.warmup_fraction * total_steps)
        return self.cfg.lr * schedule.lr_factor(step, total_steps, warm, "cosine")

    def batches(self, epoch: int):
        from medlite.data.transforms import augment_batch, to_float

        cfg, dist, train = self.cfg, self.dist, self.data.train
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(train), generator=g)
        for step in range(self.steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size][dist.rank :: dist.world_size]
            x01 = augment_batch(to_float(train.images[idx], [0.0], [1.0]), g, cfg.augment)
            if cfg.mixup:
                x01 = mix_batch(x01, g, cfg.mixup)
            yield idx, x01, train.labels[idx], len(idx) * dist.world_size

    def validate(self) -> dict[str, float]:
        from medlite.engine.evaluate import predict
        from medlite.engine.tasks.classify import _safe_auc

        probs, labels, val_loss = predict(self.model, self.data.val, self.mean, self.std, self.data.task,
                                          self.cfg.eval_batch_size)
        return {"val_loss": val_loss, "val_auc": _safe_auc(labels, probs, self.data.task)}

    def record(self) -> dict[str, Any]:
        return self.meta  # the student's record; finalize appends this run to its "compress" list

    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        from medlite.engine.checkpoint import read_checkpoint, save_checkpoint
        from medlite.engine.evaluate import evaluate_split

        cfg, data, model, targets = self.cfg, self.data, self.model, self.targets
        model.load_state_dict(read_checkpoint(run_dir / self.best_file)[0])
        model.eval()
        meta = json.loads(json.dumps(self.record()))
        record = {"step": "distill" if targets is not None else "fine-tune", "teacher": cfg.teacher or None,
                  "config": asdict(cfg), "weights": asdict(self.weights),
                  "layer_map": targets.map if targets is not None and targets.need_attn else None,
                  "best_epoch": best_epoch + 1}
        meta["compress"] = [*meta.get("compress", []), record]
        results: dict[str, Any] = {"run_dir": str(run_dir), "student": meta["model"]["name"], "data": data.name,
                                   "task": data.task, "params": sum(p.numel() for p in model.parameters()),
                                   "best_epoch": record["best_epoch"], "history": history}
        for name in ("val", "test"):
            rep, _, _ = evaluate_split(model, data.splits()[name], self.mean, self.std, data.task, cfg.n_boot,
                                       cfg.seed, label_names=data.label_names)
            results[name] = rep
        meta["metrics"] = {k: {m: results[k][m] for m in ("auc", "acc")} for k in ("val", "test")}
        save_checkpoint(run_dir / self.best_file, model, meta)
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
        return results


def mix_batch(x: Tensor, generator: torch.Generator, alpha: float) -> Tensor:
    """Mixup of a batch with itself in a random order, one weight ~ Beta(alpha, alpha) per image, reproducible
    from ``generator``. No labels are mixed: the teacher's outputs on the mixed image are the target."""
    if len(x) < 2:
        return x
    perm = torch.randperm(len(x), generator=generator)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):  # Beta sampling takes no generator: seed a private stream
        torch.manual_seed(seed)
        lam = torch.distributions.Beta(float(alpha), float(alpha)).sample((len(x),))
    lam = lam.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return lam * x + (1 - lam) * x[perm]


class _DistillStep(nn.Module):
    """One batch -> the distillation loss of :func:`medlite.compress.distill.distill_loss`."""

    def __init__(self, model: nn.Module, targets: TeacherTargets | None, w: LossWeights, task: str,
                 mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model, self.w, self.task, self.mean, self.std = model, w, task, mean, std
        self._targets = (targets,)  # not a submodule: the teacher is neither trained nor saved

    def forward(self, batch):
        from medlite.data.transforms import to_float

        idx, x01, y, n = batch
        targets, w, model = self._targets[0], self.w, self.model
        s_logits, s_maps = forward_with_attention(model, to_float(x01, self.mean, self.std),
                                                  w.attn > 0 or w.cam > 0)
        t_logits = t_rows = s_rows = t_cam = s_cls = None
        if targets is not None:
            t_logits, rows, t_cam = targets.get(idx, x01)
            if s_maps is not None:
                prefix, grid = token_layout(model)
                if rows is not None:
                    t_rows = list(rows.unbind(1))
                    s_rows = [attention_rows(m, prefix, grid, grid) for m in s_maps]
                if t_cam is not None:
                    s_cls = attention_rows(s_maps[-1], prefix, grid, grid)[:, :1]
        aux = model.aux_loss() if hasattr(model, "aux_loss") else None
        loss, terms = distill_loss(s_logits, y, self.task, w, t_logits, s_rows, t_rows, aux, s_cls, t_cam)
        return loss, {f"loss_{k}": v for k, v in terms.items()}, n


def distill(cfg: DistillConfig, resume: bool = False) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.student`` (or fine-tune it without a teacher); select the epoch
    with the best validation AUC; evaluate it on test.

    Writes ``best.safetensors`` (self-describing; ``meta["compress"]`` lists every compression step so
    far), ``metrics.csv`` and ``results.json`` (val / test metrics, parameters, loss terms per epoch) to
    the run folder, and returns the results.
    """
    return fit(DistillTask(cfg), resume=resume)
