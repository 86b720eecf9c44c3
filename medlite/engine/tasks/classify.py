"""The training engine: one config, one loop that reads top to bottom.

``train(cfg)`` loads the data into memory, builds the model, trains with Adam/AdamW under a step or
warmup+cosine schedule, evaluates the validation split after every epoch, keeps the checkpoint with the
best validation AUC, and finally evaluates that checkpoint on the test split. Everything a person wants
to look at lands in the run folder:

    config.json           the TrainConfig used
    last.safetensors      weights + optimizer + RNG after the latest epoch (for --resume)
    best.safetensors      weights with the best validation AUC (self-describing, see checkpoint.py)
    metrics.csv           one row per epoch (loss, val AUC/ACC, lr, images/s, seconds)
    results.json          final val/test metrics of the best checkpoint with 95 % bootstrap CIs
    report.md             the same as a short human-readable report
    plots/*.png           training curves, ROC curves, confusion matrix
    splits.csv            the seeded split, when the data came without one
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medlite
from medlite.data.base import ClassificationData
from medlite.data.transforms import to_float
from medlite.engine import distributed as D
from medlite.engine.amp import autocast, resolve_amp
from medlite.engine.checkpoint import (
    load_optimizer_state,
    optimizer_state_tensors,
    read_checkpoint,
    save_checkpoint,
)
from medlite.engine.evaluate import evaluate_split, loss_fn, predict

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the MedMNIST v2 paper's baseline recipe."""

    model: str = "resnet18"  # registry name (medlite models)
    data: str = "breastmnist"  # MedMNIST subset name, or a path (.npz, .zip, .csv, class folder)
    size: int = 28  # input side length in pixels; data are resized to it
    epochs: int = 100  # training epochs
    batch_size: int = 128  # global batch size (split across DDP ranks)
    optimizer: str = "adam"  # "adam" or "adamw"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw, L2 for adam
    schedule: str = "step"  # "step" (x gamma at milestones) or "cosine" (linear warmup, cosine to 0)
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of `epochs` where lr *= gamma
    gamma: float = 0.1  # step schedule: lr multiplier at each milestone
    warmup_epochs: float = 0.0  # linear warmup length in epochs (both schedules)
    augment: str = "none"  # batched augmentation: "none", "flip", "light" (flip + small affine)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (single-label tasks)
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    seed: int = 0  # seeds model init, batch order and augmentation
    out: str = ""  # run folder; empty = runs/<model>-<data>-s<seed>
    init: str = ""  # checkpoint to initialise weights from (e.g. an MAE-pretrained encoder)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra options for create_model
    data_root: str = ""  # folder with datasets; empty = $MEDLITE_DATA or ~/.medlite/data
    download: bool = False  # download a missing MedMNIST subset from the official source
    eval_batch_size: int = 512  # batch size for validation / test inference
    n_boot: int = 1000  # bootstrap resamples for the final confidence intervals
    threads: int = 0  # torch intra-op threads; 0 = torch default
    device: str = "auto"  # "auto", "cpu", "cuda"
    compile: bool = False  # torch.compile the model (pays off on long runs)
    amp: str = "none"  # training precision: "none" (fp32, the recipes' default), "bf16" autocast, "auto"
    tensorboard: bool = False  # also log to TensorBoard (needs the `log` extra)
    progress: bool = True  # Rich progress bars
    plots: bool = True  # write PNG plots at the end
    max_steps_per_epoch: int = 0  # cap on steps per epoch (smoke tests); 0 = full epochs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, d)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        name = Path(self.data).stem if os.sep in self.data else self.data
        return Path("runs") / f"{self.model}-{name}-s{self.seed}"


def config_from_dict(cls, d: dict[str, Any]):
    """A config dataclass from a JSON dict (e.g. a checkpoint's): unknown keys are an error, lists that
    were tuples become tuples again."""
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    d = dict(d)
    if "milestones" in d:
        d["milestones"] = tuple(d["milestones"])
    return cls(**d)


# Named recipes: TrainConfig overrides. "medmnist" is the MedMNIST v2 paper's baseline recipe (the
# TrainConfig defaults). "vit" suits small vision transformers such as MedLiT, which under-train with the
# CNN recipe (few steps, no warmup): AdamW + weight decay, batch 64, warmup over 10 % of the epochs then
# cosine, light batched augmentation.
RECIPES: dict[str, dict[str, Any]] = {
    "medmnist": {},
    "vit": {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine", "batch_size": 64,
            "augment": "light", "warmup_fraction": 0.1},
}


def with_recipe(cfg: TrainConfig, name: str) -> TrainConfig:
    """``cfg`` with the named recipe applied (``warmup_fraction`` becomes warmup epochs)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}' (choose from {', '.join(RECIPES)})")
    out = TrainConfig.from_dict(asdict(cfg))
    for k, v in RECIPES[name].items():
        if k == "warmup_fraction":
            out.warmup_epochs = v * cfg.epochs
        else:
            setattr(out, k, v)
    return out


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based)."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(total_steps - warm, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        n = sum(epoch >= int(round(m * cfg.epochs)) for m in cfg.milestones)
        return cfg.gamma**n
    raise ValueError(f"unknown schedule '{cfg.schedule}' (use 'step' or 'cosine')")


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True}  # one kernel per step instead of ~10 per tensor; supported on CPU and CUDA
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}' (use 'adam' or 'adamw')")


def load_data(cfg: TrainConfig, run_dir: Path | None = None) -> ClassificationData:
    from medlite.data import load_classification

    split_out = run_dir / "splits.csv" if run_dir is not None else None
    return load_classification(
        cfg.data, size=cfg.size, root=cfg.data_root or None, download=cfg.download, seed=cfg.seed,
        split_file_out=split_out,
    )


def build_meta(cfg: TrainConfig, data: ClassificationData, mean, std, model_kwargs) -> dict[str, Any]:
    return {
        "medlite_version": medlite.__version__,
        "kind": "classifier",
        "model": {"name": cfg.model, "num_classes": data.num_classes, "in_chans": data.channels,
                  "img_size": cfg.size, "kwargs": model_kwargs},
        "preprocessing": {"size": cfg.size, "channels": data.channels, "mean": list(mean), "std": list(std),
                          "resize": "bilinear, antialias", "scale": "uint8 / 255"},
        "data": {"name": data.name, "task": data.task, "label_names": list(data.label_names),
                 "source": data.source, "sizes": {k: len(v) for k, v in data.splits().items()}},
        "train_config": asdict(cfg),
    }


def _norm_stats(card, channels: int) -> tuple[list[float], list[float]]:
    mean, std = list(card.mean), list(card.std)
    if len(mean) == 1:
        mean, std = mean * channels, std * channels
    return mean[:channels], std[:channels]


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, select the best validation-AUC checkpoint, evaluate it on test. Returns results.json."""
    dist = D.setup(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = cfg.run_dir()
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    D.barrier(dist)

    resume_state = _resume_state(run_dir) if resume else None
    if resume_state is not None:
        saved = TrainConfig.from_dict(resume_state[1]["train_config"])
        # The run's recipe is fixed; only cosmetic / machine options may change on resume.
        cfg = TrainConfig.from_dict({**asdict(saved), **{k: getattr(cfg, k) for k in
                                     ("progress", "threads", "device", "plots", "tensorboard", "n_boot")}})
    torch.manual_seed(cfg.seed)

    data = load_data(cfg, run_dir if dist.is_main else None)
    card = medlite.model_card(cfg.model)
    mean, std = _norm_stats(card, data.channels)
    model = medlite.create_model(cfg.model, num_classes=data.num_classes, in_chans=data.channels,
                                 img_size=cfg.size, **cfg.model_kwargs)
    if cfg.init and resume_state is None:
        _init_from(model, cfg.init)
    model.to(dist.device)
    meta = build_meta(cfg, data, mean, std, cfg.model_kwargs)
    if dist.is_main:
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    opt = _optimizer(model, cfg)
    train_model: nn.Module = model
    if dist.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, find_unused_parameters=hasattr(model, "aux_loss"))
    if cfg.compile:
        train_model = torch.compile(train_model)

    n_train = len(data.train)
    steps_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    if cfg.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    total_steps = steps_per_epoch * cfg.epochs

    start_epoch, best_auc, best_epoch, history = 0, -1.0, -1, []
    if resume_state is not None:
        weights, rmeta, state = resume_state
        model.load_state_dict(weights)
        load_optimizer_state(opt, state, rmeta["optimizer"])
        if "rng.torch" in state:
            torch.set_rng_state(state["rng.torch"])
        start_epoch = rmeta["epoch"] + 1
        best_auc, best_epoch, history = rmeta["best_val_auc"], rmeta["best_epoch"], rmeta["history"]
        if dist.is_main:
            log.info("resuming %s at epoch %d (best val AUC %.4f at epoch %d)",
                     run_dir, start_epoch + 1, best_auc, best_epoch + 1)
            # metrics.csv is written after last.safetensors: rebuild it from the checkpoint's history.
            (run_dir / "metrics.csv").unlink(missing_ok=True)
            for row in history:
                _append_csv(run_dir / "metrics.csv", row)

    writer = _tensorboard(run_dir) if cfg.tensorboard and dist.is_main else None
    progress = _progress(cfg.progress and dist.is_main)
    with progress:
        epoch_task = progress.add_task("epochs", total=cfg.epochs, completed=start_epoch, info="")
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            stats = _train_epoch(train_model, model, opt, data, cfg, dist, epoch, steps_per_epoch,
                                 total_steps, mean, std, progress)
            seconds = time.perf_counter() - t0
            probs, labels, val_loss = predict(model, data.val, mean, std, data.task,
                                              cfg.eval_batch_size, dist.device)
            from medlite.metrics.classification import medmnist_acc

            val_auc, val_acc = _safe_auc(labels, probs, data.task), medmnist_acc(labels, probs, data.task)
            row = {"epoch": epoch + 1, "train_loss": stats["loss"], "aux_loss": stats["aux"],
                   "val_loss": val_loss, "val_auc": val_auc, "val_acc": val_acc,
                   "lr": stats["lr"], "images_per_s": stats["images"] / seconds, "epoch_seconds": seconds}
            history.append(row)
            improved = val_auc > best_auc
            if improved:
                best_auc, best_epoch = val_auc, epoch
            if dist.is_main:
                if improved:
                    save_checkpoint(run_dir / "best.safetensors", model,
                                    {**meta, "epoch": epoch, "metrics": {"val": {"auc": val_auc, "acc": val_acc}}})
                tensors, opt_info = optimizer_state_tensors(opt)
                tensors["rng.torch"] = torch.get_rng_state()  # dropout / noise draws continue exactly
                save_checkpoint(run_dir / "last.safetensors", model,
                                {**meta, "epoch": epoch, "best_val_auc": best_auc, "best_epoch": best_epoch,
                                 "optimizer": opt_info, "history": history}, state=tensors)
                _append_csv(run_dir / "metrics.csv", row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
            progress.update(epoch_task, advance=1,
                            info=f"val AUC {val_auc:.3f} (best {best_auc:.3f} @ {best_epoch + 1})")
            D.barrier(dist)
    if writer is not None:
        writer.close()

    results = finalize(run_dir, data, model, meta, cfg, dist, best_epoch, history) if dist.is_main else {}
    D.barrier(dist)
    D.cleanup()
    return results


def _train_epoch(train_model, model, opt, data, cfg, dist, epoch, steps, total_steps, mean, std, progress):
    from medlite.data.transforms import augment_batch

    train_model.train()
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # batch order + augmentation
    perm = torch.randperm(len(data.train), generator=g)
    total_loss = total_aux = 0.0
    seen = 0
    amp = resolve_amp(cfg.amp, dist.device)
    task = progress.add_task(f"epoch {epoch + 1}", total=steps, info="")
    t0 = time.perf_counter()
    for step in range(steps):
        idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        if len(idx) < 2 * dist.world_size:  # a 1-sample batch breaks BatchNorm; skip the remainder
            break
        idx = idx[dist.rank :: dist.world_size]  # this rank's slice of the global batch
        x = to_float(data.train.images[idx], mean, std)
        x = augment_batch(x, g, cfg.augment).to(dist.device, non_blocking=True)
        y = data.train.labels[idx].to(dist.device)
        gstep = epoch * steps + step
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(gstep, total_steps, steps, cfg)
        with autocast(amp, dist.device):
            logits = train_model(x)
        loss = loss_fn(logits.float(), y, data.task, cfg.label_smoothing)
        aux = model.aux_loss() if hasattr(model, "aux_loss") else None
        aux = aux.float() if aux is not None else None
        total = loss + aux if aux is not None else loss
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss is {total.item()} at epoch {epoch + 1} step {step + 1}; "
                                     "lower --lr or check the data for NaN")
        opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        n = len(idx) * dist.world_size
        total_loss += loss.item() * n
        total_aux += (aux.item() if aux is not None else 0.0) * n
        seen += n
        progress.update(task, advance=1,
                        info=f"loss {total_loss / seen:.4f}  {seen / (time.perf_counter() - t0):.0f} img/s")
    progress.remove_task(task)
    loss_t = D.all_reduce_mean(torch.tensor(total_loss / max(seen, 1)), dist)
    return {"loss": float(loss_t), "aux": total_aux / max(seen, 1), "images": seen,
            "lr": opt.param_groups[0]["lr"]}


def _safe_auc(labels, probs, task) -> float:
    import warnings

    from medlite.metrics.classification import medmnist_auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc = medmnist_auc(labels, probs, task)
    return 0.0 if math.isnan(auc) else float(auc)


def finalize(run_dir, data, model, meta, cfg, dist, best_epoch, history) -> dict[str, Any]:
    """Evaluate the best checkpoint on val and test, write results.json, report.md and plots."""
    weights, _, _ = read_checkpoint(run_dir / "best.safetensors")
    model.load_state_dict(weights)
    mean, std = meta["preprocessing"]["mean"], meta["preprocessing"]["std"]
    results: dict[str, Any] = {"run_dir": str(run_dir), "model": cfg.model, "data": data.name,
                               "task": data.task, "best_epoch": best_epoch + 1,
                               "epochs": len(history), "params": sum(p.numel() for p in model.parameters())}
    preds = {}
    for name in ("val", "test"):
        rep, probs, labels = evaluate_split(model, data.splits()[name], mean, std, data.task, cfg.n_boot,
                                            cfg.seed, dist.device, data.label_names)
        results[name] = rep
        preds[name] = (labels, probs)
    ips = [h["images_per_s"] for h in history]
    results["train_images_per_s"] = sum(ips) / len(ips) if ips else None
    results["epoch_seconds"] = sum(h["epoch_seconds"] for h in history) / len(history) if history else None
    results["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__, "device": dist.device}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    # Store the final metrics inside the best checkpoint too, so the file alone tells how good it is.
    save_checkpoint(run_dir / "best.safetensors", model,
                    {**meta, "epoch": best_epoch, "metrics": {k: _scalar_metrics(results[k]) for k in
                                                              ("val", "test")}})
    if cfg.plots:
        _plots(run_dir, history, preds["test"], data, model, meta)
    (run_dir / "report.md").write_text(report_markdown(results, data.label_names))
    return results


def _scalar_metrics(rep: dict) -> dict:
    return {k: rep[k] for k in ("auc", "acc", "auc_ci", "acc_ci", "loss", "n") if k in rep}


def report_markdown(results: dict, label_names: list[str]) -> str:
    t, v = results["test"], results["val"]
    lines = [f"# {results['model']} on {results['data']}", "",
             f"Best validation AUC at epoch {results['best_epoch']} of {results['epochs']}; "
             f"{results['params']:,} parameters.", "",
             "| split | AUC (95 % CI) | ACC (95 % CI) | n |", "|---|---|---|---|"]
    for name, r in (("val", v), ("test", t)):
        lines.append(f"| {name} | {r['auc']:.3f} ({r['auc_ci'][0]:.3f}–{r['auc_ci'][1]:.3f}) | "
                     f"{r['acc']:.3f} ({r['acc_ci'][0]:.3f}–{r['acc_ci'][1]:.3f}) | {r['n']} |")
    if results.get("train_images_per_s"):
        lines += ["", f"Training throughput {results['train_images_per_s']:.0f} images/s, "
                  f"{results['epoch_seconds']:.1f} s per epoch on {results['machine']['cpus']} CPU(s)."]
    lines += ["", "Plots: `plots/curves.png`, `plots/roc.png`, `plots/confusion.png` "
              "(and `plots/expert_load.png` for MoE models).", ""]
    return "\n".join(lines)


def _plots(run_dir: Path, history, test_pred, data, model, meta) -> None:
    from medlite.report.plots import plot_confusion, plot_roc, plot_training_curves

    pdir = run_dir / "plots"
    pdir.mkdir(exist_ok=True)
    labels, probs = test_pred
    plot_training_curves(history, pdir / "curves.png")
    plot_roc(labels, probs, data.task, data.label_names, pdir / "roc.png")
    if data.task != "multi-label":
        plot_confusion(labels, probs, data.task, data.label_names, pdir / "confusion.png")
    if hasattr(model, "router_stats"):
        from medlite.report.plots import plot_expert_load

        with torch.no_grad():  # routing of the first 512 validation images by the best checkpoint
            model.eval()
            mean, std = meta["preprocessing"]["mean"], meta["preprocessing"]["std"]
            model(to_float(data.val.images[:512], mean, std).to(next(model.parameters()).device))
        loads = [v.tolist() for v in model.router_stats()]
        plot_expert_load(loads, pdir / "expert_load.png", top_k=getattr(model.cfg, "top_k", 2))


def _init_from(model: nn.Module, path: str) -> None:
    """Initialise from a checkpoint: an MAE encoder (MedLiT) or any checkpoint with matching names."""
    weights, meta, _ = read_checkpoint(path)
    try:
        from medlite.models.mae import load_encoder_into
    except ImportError:
        load_encoder_into = None
    if load_encoder_into is not None and meta.get("kind") == "mae-encoder":
        load_encoder_into(model, weights)
        return
    own = model.state_dict()
    keep = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    log.info("initialised %d/%d tensors from %s", len(keep), len(own), path)


def _resume_state(run_dir: Path):
    last = run_dir / "last.safetensors"
    if not last.is_file():
        log.warning("--resume: %s has no last.safetensors; starting a new run", run_dir)
        return None
    return read_checkpoint(last)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("TensorBoard logging needs the log extra: pip install 'medlite[log]'") from e
    return SummaryWriter(str(run_dir / "tb"))


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
