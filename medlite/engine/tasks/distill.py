"""Distillation as a task of the training loop: a trained teacher -> a (smaller) student.

The losses (logit KD, attention alignment) live in :mod:`medlite.compress.distill`; this module supplies
what the loop needs: the student (a new registered model or a checkpoint, e.g. a pruned one), the teacher's
targets, the batch -> loss step, validation AUC for selection and the final test report.

Teacher cache.  Without augmentation the teacher sees each training image identically every epoch, so its
logits and resampled attention rows are computed once (float16 rows) and reused; with augmentation it
runs online.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medlite.compress.distill import (
    LossWeights,
    attention_rows,
    distill_loss,
    forward_with_attention,
    has_attention,
    layer_map,
    token_layout,
)

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """One distillation (or, without a teacher, fine-tuning) run."""

    student: str = "medlit_nano_28"  # registry name (new model) or checkpoint / run folder (e.g. pruned)
    teacher: str = ""  # checkpoint / run folder of the trained teacher; "" = fine-tune on labels only
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
    temperature: float = 4.0  # see LossWeights
    layer_map: tuple[int, ...] | None = None  # teacher block per student block; None = evenly spread
    augment: str = "none"  # batched augmentation ("none", "flip", "light"); not "none" disables the cache
    cache_teacher: bool = True  # compute teacher outputs once when augment == "none"
    seed: int = 0  # model init, batch order, augmentation
    data_root: str = ""  # data folder; "" = $MEDLITE_DATA or ~/.medlite/data
    threads: int = 0  # torch intra-op threads; 0 = torch default
    eval_batch_size: int = 512  # batch size of validation / test inference
    n_boot: int = 1000  # bootstrap resamples for the test confidence intervals
    max_steps_per_epoch: int = 0  # cap (smoke tests); 0 = full epochs
    student_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model options for a new student

    def weights(self) -> LossWeights:
        return LossWeights(self.task_weight, self.kd_weight if self.teacher else 0.0,
                           self.attn_weight if self.teacher else 0.0, self.temperature)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"distill-{Path(self.student).name}-{Path(self.data or 'data').stem}"


def _norm(meta: dict[str, Any]) -> tuple[list[float], list[float]]:
    return meta["preprocessing"]["mean"], meta["preprocessing"]["std"]


def _student(cfg: DistillConfig, data, size: int) -> tuple[nn.Module, dict[str, Any]]:
    """The student model and its meta (a copy of the checkpoint's, or a new one)."""
    import medlite
    from medlite.engine.checkpoint import load_model

    if Path(cfg.student).exists():
        model, meta = load_model(cfg.student)
        meta = json.loads(json.dumps(meta))
        for k in ("optimizer", "history", "best_val_auc", "best_epoch", "metrics", "epoch"):
            meta.pop(k, None)
        return model.train(), meta
    card = medlite.model_card(cfg.student)
    mean, std = list(card.mean), list(card.std)
    if len(mean) == 1:
        mean, std = mean * data.channels, std * data.channels
    model = medlite.create_model(cfg.student, num_classes=data.num_classes, in_chans=data.channels,
                                 img_size=size, **cfg.student_kwargs)
    meta = {"medlite_version": medlite.__version__, "kind": "classifier",
            "model": {"name": cfg.student, "num_classes": data.num_classes, "in_chans": data.channels,
                      "img_size": size, "kwargs": dict(cfg.student_kwargs)},
            "preprocessing": {"size": size, "channels": data.channels, "mean": mean[: data.channels],
                              "std": std[: data.channels], "resize": "bilinear, antialias",
                              "scale": "uint8 / 255"},
            "data": {"name": data.name, "task": data.task, "label_names": list(data.label_names),
                     "source": data.source, "sizes": {k: len(v) for k, v in data.splits().items()}},
            "compress": []}
    return model, meta


class TeacherTargets:
    """Teacher logits and attention rows on the student's grid, online or cached per training image."""

    def __init__(self, teacher: nn.Module, tmeta: dict[str, Any], student: nn.Module, cfg: DistillConfig,
                 need_attn: bool) -> None:
        self.teacher = teacher.eval()
        self.mean, self.std = _norm(tmeta)
        self.need_attn = need_attn and has_attention(teacher) and has_attention(student)
        if need_attn and not self.need_attn:
            log.warning("attention alignment off: the teacher or the student exposes no attention maps")
        self.cache: tuple[Tensor, Tensor | None] | None = None
        if self.need_attn:
            self.t_prefix, self.t_grid = token_layout(teacher)
            _, self.s_grid = token_layout(student)
            n_s, n_t = len(student.blocks), len(teacher.blocks)
            self.map = list(cfg.layer_map) if cfg.layer_map else layer_map(n_s, n_t)
            if len(self.map) != n_s or max(self.map) >= n_t:
                raise ValueError(f"layer_map {self.map} must give one of {n_t} teacher blocks per student block")

    @torch.no_grad()
    def compute(self, x01: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, C, S, S) uint8 images, or float in [0, 1] -> teacher logits (B, C), rows (B, L_s, R, K) or None."""
        from medlite.data.transforms import to_float

        x = to_float(x01, self.mean, self.std)
        logits, maps = forward_with_attention(self.teacher, x, self.need_attn)
        if maps is None:
            return logits.float(), None
        rows = [attention_rows(maps[j], self.t_prefix, self.t_grid, self.s_grid) for j in self.map]
        return logits.float(), torch.stack(rows, 1)

    def build_cache(self, images: Tensor, batch_size: int) -> None:
        """Teacher outputs for all (un-augmented) training images (rows stored as float16)."""
        logits, rows = [], []
        for i in range(0, len(images), batch_size):
            lg, r = self.compute(images[i : i + batch_size])
            logits.append(lg)
            if r is not None:
                rows.append(r.half())
        self.cache = (torch.cat(logits), torch.cat(rows) if rows else None)

    def get(self, idx: Tensor, x01: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.cache is not None:
            lg, rows = self.cache
            return lg[idx], (rows[idx].float() if rows is not None else None)
        return self.compute(x01)


def _optimizer(model: nn.Module, cfg: DistillConfig) -> torch.optim.Optimizer:
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and n not in skip]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim <= 1 or n in skip)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def _lr(step: int, total: int, cfg: DistillConfig) -> float:
    warm = int(cfg.warmup_fraction * total)
    if warm and step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Distil ``cfg.teacher`` into ``cfg.student`` (or fine-tune it without a teacher); select the epoch
    with the best validation AUC; evaluate it on test.

    Writes ``best.safetensors`` (self-describing; ``meta["compress"]`` lists every compression step so
    far), ``metrics.csv`` and ``results.json`` (val / test metrics, parameters, loss terms per epoch) to
    the run folder, and returns the results.
    """
    from medlite.data import load_classification
    from medlite.data.transforms import augment_batch, to_float
    from medlite.engine.checkpoint import load_model, save_checkpoint
    from medlite.engine.evaluate import evaluate_split, predict
    from medlite.engine.tasks.classify import _safe_auc

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher, tmeta = load_model(cfg.teacher) if cfg.teacher else (None, None)
    ref_meta = tmeta or (load_model(cfg.student)[1] if Path(cfg.student).exists() else {})
    data_name = cfg.data or ref_meta.get("data", {}).get("name", "")
    if not data_name:
        raise ValueError("no data: pass --data (the student is new and there is no teacher to take it from)")
    size = int(ref_meta["preprocessing"]["size"]) if ref_meta else 28
    data = load_classification(data_name, size=size, root=cfg.data_root or None, seed=cfg.seed)
    model, meta = _student(cfg, data, size)
    s_mean, s_std = _norm(meta)
    w = cfg.weights()
    targets = None
    if teacher is not None:
        targets = TeacherTargets(teacher, tmeta, model, cfg, need_attn=w.attn > 0)
        if not targets.need_attn:
            w = LossWeights(w.task, w.kd, 0.0, w.temperature)
        if cfg.cache_teacher and cfg.augment == "none":
            t0 = time.perf_counter()
            targets.build_cache(data.train.images, cfg.eval_batch_size)
            log.info("teacher outputs cached for %d images in %.0f s", len(data.train),
                     time.perf_counter() - t0)
    opt = _optimizer(model, cfg)
    steps = max(1, len(data.train) // cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    total = steps * cfg.epochs
    best_auc, best_state, history = -1.0, None, []
    for epoch in range(cfg.epochs):
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(len(data.train), generator=g)
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        for step in range(steps):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x01 = augment_batch(to_float(data.train.images[idx], [0.0], [1.0]), g, cfg.augment)
            y = data.train.labels[idx]
            for group in opt.param_groups:
                group["lr"] = _lr(epoch * steps + step, total, cfg)
            s_logits, s_maps = forward_with_attention(model, to_float(x01, s_mean, s_std), w.attn > 0)
            t_logits = t_rows = s_rows = None
            if targets is not None:
                t_logits, rows = targets.get(idx, x01)
                if rows is not None and s_maps is not None:
                    t_rows = list(rows.unbind(1))
                    prefix, grid = token_layout(model)
                    s_rows = [attention_rows(m, prefix, grid, grid) for m in s_maps]
            aux = model.aux_loss() if hasattr(model, "aux_loss") else None
            loss, terms = distill_loss(s_logits, y, data.task, w, t_logits, s_rows, t_rows, aux)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"distillation loss is {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / steps
        seconds = time.perf_counter() - t0
        probs, labels, val_loss = predict(model, data.val, s_mean, s_std, data.task, cfg.eval_batch_size)
        val_auc = _safe_auc(labels, probs, data.task)
        history.append({"epoch": epoch + 1, **{f"loss_{k}": v for k, v in sums.items()},
                        "val_loss": val_loss, "val_auc": val_auc, "epoch_seconds": seconds})
        log.info("epoch %d/%d: %s val AUC %.4f (%.0f s)", epoch + 1, cfg.epochs,
                 " ".join(f"{k} {v:.4f}" for k, v in sums.items()), val_auc, seconds)
        if val_auc > best_auc:
            best_auc, best_state = val_auc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    record = {"step": "distill" if teacher is not None else "fine-tune", "teacher": cfg.teacher or None,
              "config": asdict(cfg), "weights": asdict(w),
              "layer_map": targets.map if targets is not None and targets.need_attn else None,
              "best_epoch": max(range(len(history)), key=lambda i: history[i]["val_auc"]) + 1}
    meta["compress"] = [*meta.get("compress", []), record]
    results: dict[str, Any] = {"run_dir": str(run_dir), "student": meta["model"]["name"], "data": data.name,
                               "task": data.task, "params": sum(p.numel() for p in model.parameters()),
                               "best_epoch": record["best_epoch"], "history": history}
    for name in ("val", "test"):
        rep, _, _ = evaluate_split(model, data.splits()[name], s_mean, s_std, data.task, cfg.n_boot, cfg.seed,
                                   label_names=data.label_names)
        results[name] = rep
    meta["metrics"] = {k: {m: results[k][m] for m in ("auc", "acc")} for k in ("val", "test")}
    save_checkpoint(run_dir / "best.safetensors", model, meta)
    _write_csv(run_dir / "metrics.csv", history)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    return results


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
