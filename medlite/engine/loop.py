"""THE training loop of medlite. Every kind of training (classification, segmentation, promptable
segmentation, MAE pretraining, distillation) is a :class:`Task` that supplies only what differs: its data,
model, batches, the batch -> loss step, the validation metric and the final report. Everything else
happens here, once:

    seed, threads, DDP (``torchrun``: gloo on CPU, NCCL on GPU), run folder and config.json
    resume from last.safetensors (weights, optimizer, RNG, history: at most one epoch lost to ``kill -9``)
    per step: learning rate (medlite.engine.schedule, times a parameter group's ``lr_mult`` where it has
              one), AMP (the task's forward), finite-loss check, backward, gradient clipping, optimizer step,
              weight averaging (``cfg.ema`` > 0: timm's ModelEmaV3 with warm-up)
    per epoch: validation (of the averaged weights when ``cfg.ema`` > 0), best checkpoint, last checkpoint,
               metrics.csv, TensorBoard, progress bars
    at the end: the task's report on its best checkpoint (rank 0)

A task's ``trainable`` module maps one batch to ``(loss, terms, n)``: the loss to minimise, the scalars to
log (averaged over the epoch, weighted by ``n`` samples) and the global batch size. Under DDP the loop wraps
that module, so each rank computes the loss of its slice of every global batch and the gradients are
averaged: N processes see the batches one process would.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlite.engine import distributed as D
from medlite.engine.amp import resolve_amp
from medlite.engine.checkpoint import (
    load_optimizer_state,
    optimizer_state_tensors,
    read_checkpoint,
    save_checkpoint,
)
from medlite.errors import ConfigError
from medlite.files import check_free_space, check_writable, remove_stale_temporaries

log = logging.getLogger(__name__)

# Options a resumed run takes from the new command line; everything else is the run's recipe, fixed by
# the config saved in last.safetensors.
MACHINE_OPTIONS = ("progress", "threads", "device", "plots", "tensorboard", "n_boot", "data_root")


class Task:
    """Hooks of one kind of training. ``setup`` builds data and model; the loop calls the rest.

    Attributes a task sets in ``setup``:
        model: the module whose weights the checkpoints hold.
        trainable: module whose ``forward(batch) -> (loss, terms, n)`` is one training step's loss; its
            parameters are optimised (the model, plus any heads used only in training).
        steps_per_epoch: optimizer steps per epoch.
    Attributes the loop sets before ``setup``: ``dist`` (DistInfo), ``amp`` ("bf16" or "none"), ``resuming``.
    """

    kind: str = ""  # run-record kind of the checkpoints: classifier, segmentation, promptable, mae-encoder
    metric: str | None = None  # validation key that selects the best epoch (higher is better); None: latest
    minimize: bool = False  # the metric is a loss: lower is better
    best_file: str = "best.safetensors"  # where the selected weights go in the run folder
    resume_options: tuple[str, ...] = ()  # further options a resumed run takes from the new config
    model: nn.Module
    trainable: nn.Module
    steps_per_epoch: int
    dist: D.DistInfo
    amp: str = "none"
    resuming: bool = False
    steps_done: int = 0  # optimizer steps taken by the run (set before finalize)

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    # ---------------------------------------------------------------------------------------- set-up
    def setup(self, run_dir: Path) -> None:
        raise NotImplementedError

    def total_steps(self, resumed: int | None) -> int:
        """Optimizer steps of the whole run (``resumed``: the value saved by the interrupted run)."""
        return self.steps_per_epoch * self.cfg.epochs

    def optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def lr(self, step: int, total_steps: int) -> float:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- per epoch
    def batches(self, epoch: int):
        """Yields the epoch's batches (global batches; the trainable slices them per rank)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics logged per epoch (``metric`` among them when the task selects on it)."""
        return {}

    def record(self) -> dict[str, Any]:
        """The run record (checkpoint metadata) of this run, without per-epoch entries."""
        raise NotImplementedError

    def best_state(self) -> dict[str, torch.Tensor] | nn.Module:
        """What ``best_file`` holds: the model (default) or another state dict (e.g. an MAE's encoder)."""
        return self.model

    def best_meta(self, record: dict, epoch: int, val: dict[str, float]) -> dict[str, Any]:
        return {**record, "epoch": epoch, "metrics": {"val": {k.removeprefix("val_"): v for k, v in val.items()
                                                              if k != "val_loss"}}}

    def on_resume(self, record: dict, state: dict[str, torch.Tensor]) -> None:
        """Restore task state kept beside the loop's (default: nothing)."""

    # ---------------------------------------------------------------------------------------- the end
    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        raise NotImplementedError


def config_from_dict(cls, d: dict[str, Any]):
    """A config dataclass from a JSON dict (a checkpoint's): unknown keys are an error, and fields typed as
    tuples get tuples back (JSON stores lists)."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    d = dict(d)
    for k, v in d.items():
        if isinstance(v, list) and "tuple" in str(known[k].type):
            d[k] = tuple(v)
    return cls(**d)


def resumed_config(cfg, saved: dict[str, Any], extra: tuple[str, ...] = ()):
    """The saved run's config, with the machine options (and ``extra``) taken from ``cfg``."""
    keep = {k: getattr(cfg, k) for k in (*MACHINE_OPTIONS, *extra) if hasattr(cfg, k)}
    return config_from_dict(type(cfg), {**saved, **keep})


def _config_error(check, *args) -> None:
    """Run a file-system check; its OSError becomes a ConfigError (a named error for the user)."""
    try:
        check(*args)
    except OSError as e:
        raise ConfigError(e.strerror or str(e)) from e


def fit(task: Task, resume: bool = False) -> dict[str, Any]:
    """Train ``task`` to the end (or continue it with ``resume``); returns the task's final report."""
    dist = D.setup(getattr(task.cfg, "device", "auto"))
    if task.cfg.threads:
        torch.set_num_threads(task.cfg.threads)
    run_dir = task.cfg.run_dir()
    if dist.is_main:
        _config_error(check_writable, run_dir)
        for stale in remove_stale_temporaries(run_dir):  # left by a kill during a checkpoint write
            log.info("removed %s (an interrupted checkpoint write)", stale)
    D.barrier(dist)

    saved = _read_last(run_dir) if resume else None
    if saved is not None:
        task.cfg = resumed_config(task.cfg, saved[1]["resume"]["config"], task.resume_options)
    cfg = task.cfg
    torch.manual_seed(cfg.seed)
    task.dist, task.amp = dist, resolve_amp(getattr(cfg, "amp", "none"), dist.device)
    task.resuming = saved is not None
    task.setup(run_dir)
    record = task.record()
    if dist.is_main:  # last + best + a temporary while writing, with the optimizer's state
        model = task.best_state()
        tensors = model.parameters() if isinstance(model, nn.Module) else model.values()
        _config_error(check_free_space, run_dir, 4 * sum(t.numel() * t.element_size() for t in tensors) + (16 << 20))
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    opt = task.optimizer()
    params = [p for g in opt.param_groups for p in g["params"]]
    net: nn.Module = task.trainable
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    if getattr(cfg, "compile", False):
        net = torch.compile(net)

    start, done, best, best_epoch, history, elapsed, resumed_total = 0, 0, -math.inf, -1, [], 0.0, None
    ema = _ema(task.model, getattr(cfg, "ema", 0.0))
    if saved is not None:
        weights, meta, state = saved
        task.model.load_state_dict(weights)
        extra = {k.removeprefix("trainable."): v for k, v in state.items() if k.startswith("trainable.")}
        if extra:
            task.trainable.load_state_dict({**task.trainable.state_dict(), **extra})
        load_optimizer_state(opt, state, meta["optimizer"])
        torch.set_rng_state(state["rng.torch"])
        r = meta["resume"]
        start, done, best, best_epoch, history = r["epoch"] + 1, r["steps"], r["best"], r["best_epoch"], r["history"]
        elapsed, resumed_total = r["elapsed_s"], r["total_steps"]
        task.on_resume(meta, state)
        if ema is not None:
            _load_ema(ema, state, run_dir)
        if dist.is_main:
            log.info("resuming %s at epoch %d", run_dir, start + 1)
            _write_csv(run_dir / "metrics.csv", history)  # metrics.csv lags last.safetensors after a kill
    total = task.total_steps(resumed_total)
    epochs = math.ceil(total / task.steps_per_epoch)

    writer = _tensorboard(run_dir) if getattr(cfg, "tensorboard", False) and dist.is_main else None
    progress = _progress(getattr(cfg, "progress", True) and dist.is_main)
    with progress:
        bar = progress.add_task(f"{task.kind} epochs", total=epochs, completed=start, info="")
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            net.train()
            sums: dict[str, float] = {}
            seen = 0
            first = epoch * task.steps_per_epoch  # global index of this epoch's first step
            ebar = progress.add_task(f"epoch {epoch + 1}", total=min(task.steps_per_epoch, total - first), info="")
            for i, batch in enumerate(task.batches(epoch)):
                step = first + i
                if step >= total:
                    break
                lr = task.lr(step, total)
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_mult", 1.0)  # per-group multiplier: schedule.param_groups
                loss, terms, n = net(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{task.kind} loss is {loss.item()} at epoch {epoch + 1} step "
                                             f"{i + 1}; lower --lr or check the data for NaN")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if getattr(cfg, "grad_clip", 0.0):
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                done += 1
                if ema is not None:
                    ema.update(task.model, step=done)
                seen += n
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * n
                progress.update(ebar, advance=1, info=f"loss {loss.item():.4f}  "
                                f"{seen / (time.perf_counter() - t0):.1f} img/s")
            progress.remove_task(ebar)
            seconds = time.perf_counter() - t0
            elapsed += seconds
            train_terms = {k: float(D.all_reduce_mean(torch.tensor(v / max(seen, 1)), dist)) for k, v in sums.items()}
            with _averaged(task.model, ema):
                val = task.validate()
            row = {"epoch": epoch + 1, **train_terms, **val, "lr": opt.param_groups[0]["lr"],
                   "images_per_s": seen / seconds, "epoch_seconds": seconds}
            history.append(row)
            score = (-val[task.metric] if task.minimize else val[task.metric]) if task.metric else float(epoch)
            improved = score > best
            if improved:
                best, best_epoch = score, epoch
            if dist.is_main:
                if improved:
                    with _averaged(task.model, ema):
                        save_checkpoint(run_dir / task.best_file, task.best_state(), task.best_meta(record, epoch, val))
                tensors, opt_info = optimizer_state_tensors(opt)
                tensors["rng.torch"] = torch.get_rng_state()  # dropout / noise draws continue exactly
                resume_info = {"config": asdict(cfg), "epoch": epoch, "steps": done, "best": best,
                               "best_epoch": best_epoch, "history": history, "total_steps": total,
                               "elapsed_s": elapsed}
                tensors.update(_extra_state(task))
                if ema is not None:  # the average goes on from where it was
                    tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
                save_checkpoint(run_dir / "last.safetensors", task.model,
                                {**record, "epoch": epoch, "optimizer": opt_info, "resume": resume_info},
                                state=tensors)
                _append_csv(run_dir / "metrics.csv", row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
            info = " ".join(f"{k} {v:.3f}" for k, v in val.items() if k != "val_loss")
            if task.metric:
                info += f" (best {abs(best):.3f} @ {best_epoch + 1})"
            progress.update(bar, advance=1, info=info)
            if isinstance(progress, _NoProgress) and dist.is_main:  # --no-progress (a log file): a line per epoch
                loss = row.get("train_loss")
                log.info("%s epoch %d/%d: %s%s (%.1f s)", task.kind, epoch + 1, epochs,
                         f"train_loss {loss:.4f} " if isinstance(loss, float) else "", info,
                         row.get("epoch_seconds", 0.0))
            log.debug("epoch %d/%d %s", epoch + 1, epochs, row)
            D.barrier(dist)
            if (epoch + 1) * task.steps_per_epoch >= total:
                break
    if writer is not None:
        writer.close()
    task.steps_done = done
    results = task.finalize(run_dir, history, best_epoch) if dist.is_main else {}
    D.barrier(dist)
    D.cleanup()
    return results


def _ema(model: nn.Module, decay: float):
    """Exponential moving average of ``model``'s weights and buffers (timm's ModelEmaV3), or None when
    ``decay`` is 0. The decay warms up as 1 - (1 + step)^-3/4 (timm's setting for shorter runs) and is capped
    at ``decay``, so the first steps do not keep the initial weights and a run of a few thousand steps
    averages over its last ~1 / (1 - decay) steps."""
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"ema must be 0 (off) or a decay in (0, 1), e.g. 0.998; got {decay}")
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=0.75)


def _load_ema(ema, state: dict[str, torch.Tensor], run_dir: Path) -> None:
    own = {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}
    if not own:
        from medlite.engine.checkpoint import CheckpointError

        raise CheckpointError(f"{run_dir / 'last.safetensors'}: the run averages weights (ema) but the checkpoint "
                              "holds no average; start a new run")
    ema.module.load_state_dict(own)


@contextlib.contextmanager
def _averaged(model: nn.Module, ema):
    """Inside the block ``model`` holds the averaged weights (validation, best checkpoint); after it, its own
    again. Without averaging, nothing changes."""
    if ema is None:
        yield
        return
    own = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.module.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(own)


def _extra_state(task: Task) -> dict[str, torch.Tensor]:
    """Tensors of the trainable module outside the model (e.g. a distillation adapter), as resumable state."""
    own = {id(t) for t in task.model.state_dict(keep_vars=True).values()}
    return {f"trainable.{k}": v for k, v in task.trainable.state_dict(keep_vars=True).items() if id(v) not in own}


def _read_last(run_dir: Path):
    last = run_dir / "last.safetensors"
    if not last.is_file():
        log.warning("--resume: %s has no last.safetensors; starting a new run", run_dir)
        return None
    weights, meta, state = read_checkpoint(last)
    if "config" not in meta.get("resume", {}):
        from medlite.engine.checkpoint import CheckpointError

        raise CheckpointError(f"{last}: written by an older medlite without resumable state; start a new run "
                              "(its best.safetensors still loads)")
    return weights, meta, state


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.unlink(missing_ok=True)
    for row in rows:
        _append_csv(path, row)


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
