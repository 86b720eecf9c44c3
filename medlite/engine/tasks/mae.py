"""Masked-autoencoder pretraining of MedLiT encoders on one or several datasets.

Only the **train** splits are used, so a model fine-tuned afterwards is never evaluated on images it
saw during pretraining. Several datasets pretrain together: grey images are repeated to 3 channels and
the encoder always has a 3-channel patch embedding; fine-tuning on grey data later sums the three input
channel weights into one (exactly equivalent for a grey image repeated 3 times).

The run folder holds ``encoder.safetensors`` (kind ``mae-encoder``: give it to ``medlite train
--init``), ``last.safetensors`` (for ``--resume``), ``pretrain.csv`` and ``plots/mae_loss.png``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import medlite
from medlite.data.base import ArraySplit
from medlite.data.transforms import to_float
from medlite.engine.checkpoint import (
    load_optimizer_state,
    optimizer_state_tensors,
    read_checkpoint,
    save_checkpoint,
)
from medlite.engine.tasks.classify import _append_csv, _progress

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """An MAE pretraining run."""

    model: str = "medlit_nano_28"  # MedLiT registry name (encoder to pretrain)
    data: str = "breastmnist,pneumoniamnist,dermamnist"  # comma-separated subsets or paths (train splits)
    size: int = 28  # input side length in pixels
    epochs: int = 50  # passes over the pooled train splits
    batch_size: int = 256  # images per step
    lr: float = 1.5e-3  # peak AdamW learning rate (MAE: 1.5e-4 x batch / 256, raised for tiny models)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup_epochs: float = 2.0  # linear warmup, then cosine to zero
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder
    decoder_dim: int = 128  # light decoder width
    decoder_depth: int = 2  # light decoder blocks
    augment: str = "flip"  # batched augmentation of the inputs
    seed: int = 0  # init, batch order, masks
    out: str = ""  # run folder; empty = runs/mae-<model>-s<seed>
    data_root: str = ""  # dataset folder; empty = $MEDLITE_DATA
    threads: int = 0  # torch threads; 0 = default
    progress: bool = True  # progress bars
    max_steps_per_epoch: int = 0  # cap for smoke tests; 0 = full epochs

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / f"mae-{self.model}-s{self.seed}"


def pooled_train_images(cfg: PretrainConfig) -> ArraySplit:
    """The train splits of every dataset in ``cfg.data``, as 3-channel uint8 (N, 3, size, size)."""
    from medlite.data import load_classification

    parts = []
    for spec in filter(None, (s.strip() for s in cfg.data.split(","))):
        d = load_classification(spec, size=cfg.size, root=cfg.data_root or None, seed=cfg.seed)
        x = d.train.images
        parts.append(x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x)
        log.info("pretraining data: %s train split, %d images", d.name, len(x))
    images = torch.cat(parts)
    return ArraySplit(images=images, labels=torch.zeros(len(images), dtype=torch.long))


def pretrain(cfg: PretrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run MAE pretraining; returns a summary (final loss, images/s, encoder path)."""
    from medlite.data.transforms import augment_batch
    from medlite.models.mae import MAEPretrainer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = cfg.run_dir()
    run.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = pooled_train_images(cfg)
    encoder = medlite.create_model(cfg.model, num_classes=2, in_chans=3, img_size=cfg.size)
    if not hasattr(encoder, "patch_embed"):
        raise ValueError(f"MAE pretraining needs a MedLiT encoder; '{cfg.model}' is not one")
    mae = MAEPretrainer(encoder, mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim,
                        decoder_depth=cfg.decoder_depth)
    opt = torch.optim.AdamW(mae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95),
                            fused=True)
    steps = math.ceil(len(data) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    total, warm = steps * cfg.epochs, int(cfg.warmup_epochs * steps)
    start, history = 0, []
    if resume and (run / "last.safetensors").is_file():
        weights, meta, state = read_checkpoint(run / "last.safetensors")
        mae.load_state_dict(weights)
        load_optimizer_state(opt, state, meta["optimizer"])
        torch.set_rng_state(state["rng.torch"])
        start, history = meta["epoch"] + 1, meta["history"]
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    meta_base = {"medlite_version": medlite.__version__, "kind": "mae-encoder",
                 "model": {"name": cfg.model, "num_classes": 2, "in_chans": 3, "img_size": cfg.size,
                           "kwargs": {}},
                 "preprocessing": {"size": cfg.size, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3},
                 "pretrain_config": asdict(cfg), "n_images": len(data)}

    with _progress(cfg.progress) as progress:
        bar = progress.add_task("MAE epochs", total=cfg.epochs, completed=start, info="")
        for epoch in range(start, cfg.epochs):
            mae.train()
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(len(data), generator=g)
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            for step in range(steps):
                idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                x = augment_batch(to_float(data.images[idx], [0.5] * 3, [0.5] * 3), g, cfg.augment)
                s = epoch * steps + step
                f = (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1)))
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * f
                loss, _, _ = mae(x, generator=g)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"MAE loss is {loss.item()} at epoch {epoch + 1}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
            secs = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "mae_loss": loss_sum / seen, "lr": opt.param_groups[0]["lr"],
                   "images_per_s": seen / secs, "epoch_seconds": secs}
            history.append(row)
            _append_csv(run / "pretrain.csv", row)
            save_checkpoint(run / "encoder.safetensors", mae.encoder_state_dict(),
                            {**meta_base, "epoch": epoch, "mae_loss": row["mae_loss"]})
            tensors, info = optimizer_state_tensors(opt)
            tensors["rng.torch"] = torch.get_rng_state()
            save_checkpoint(run / "last.safetensors", mae, {**meta_base, "epoch": epoch, "optimizer": info,
                                                             "history": history}, state=tensors)
            progress.update(bar, advance=1, info=f"loss {row['mae_loss']:.4f}  {row['images_per_s']:.0f} img/s")
    _plot_loss(run, history)
    return {"run_dir": str(run), "encoder": str(run / "encoder.safetensors"), "epochs": len(history),
            "final_loss": history[-1]["mae_loss"] if history else None,
            "images_per_s": sum(h["images_per_s"] for h in history) / max(len(history), 1)}


def _plot_loss(run: Path, history: list[dict]) -> None:
    if not history:
        return
    from medlite.report.plots import plot_values_per_epoch

    (run / "plots").mkdir(exist_ok=True)
    plot_values_per_epoch({"MAE loss (masked patches)": [h["mae_loss"] for h in history]},
                          run / "plots" / "mae_loss.png", ylabel="loss", title="MAE pretraining")
