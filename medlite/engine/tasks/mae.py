"""Masked-autoencoder pretraining of MedLiT encoders on one or several datasets.

Only the **train** splits are used, so a model fine-tuned afterwards is never evaluated on images it
saw during pretraining. Several datasets pretrain together: grey images are repeated to 3 channels and
the encoder always has a 3-channel patch embedding; fine-tuning on grey data later sums the three input
channel weights into one (exactly equivalent for a grey image repeated 3 times).

The run folder holds ``encoder.safetensors`` (kind ``mae-encoder``: give it to ``medlite train
--init``), ``last.safetensors`` (for ``--resume``), ``metrics.csv`` and ``plots/mae_loss.png``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import medlite
from medlite.data.base import ArraySplit
from medlite.data.transforms import to_float
from medlite.engine import schedule
from medlite.engine.loop import Task, fit
from medlite.errors import ConfigError
from medlite.record import RunRecord

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


class MAETask(Task):
    """Masked-autoencoder pretraining: reconstruct hidden patches; no validation (every epoch is kept)."""

    kind = "mae-encoder"
    best_file = "encoder.safetensors"

    def setup(self, run_dir: Path) -> None:
        from medlite.models.mae import MAEPretrainer

        cfg = self.cfg
        self.data = pooled_train_images(cfg)
        encoder = medlite.create_model(cfg.model, num_classes=2, in_chans=3, img_size=cfg.size)
        if not hasattr(encoder, "patch_embed"):
            raise ConfigError(f"MAE pretraining needs a MedLiT encoder; '{cfg.model}' is not one")
        self.model = MAEPretrainer(encoder, mask_ratio=cfg.mask_ratio, decoder_dim=cfg.decoder_dim,
                                   decoder_depth=cfg.decoder_depth)
        self.trainable = _MAEStep(self.model)
        steps = math.ceil(len(self.data) / cfg.batch_size)
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps

    def optimizer(self) -> torch.optim.Optimizer:
        return schedule.build_optimizer(self.model, "adamw", self.cfg.lr, self.cfg.weight_decay,
                                        decay_groups=False, betas=(0.9, 0.95))

    def lr(self, step: int, total_steps: int) -> float:
        warm = int(self.cfg.warmup_epochs * self.steps_per_epoch)
        return self.cfg.lr * schedule.lr_factor(step, total_steps, warm, "cosine")

    def batches(self, epoch: int):
        from medlite.data.transforms import augment_batch

        cfg, dist = self.cfg, self.dist
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # order, augmentation and masks
        perm = torch.randperm(len(self.data), generator=g)
        for step in range(self.steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = augment_batch(to_float(self.data.images[idx], [0.5] * 3, [0.5] * 3), g, cfg.augment)
            yield x[dist.rank :: dist.world_size], g, len(idx)

    def record(self) -> dict[str, Any]:
        cfg = self.cfg
        return RunRecord(kind=self.kind, medlite_version=medlite.__version__,
                         model={"name": cfg.model, "num_classes": 2, "in_chans": 3, "img_size": cfg.size, "kwargs": {}},
                         preprocessing={"size": cfg.size, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3},
                         data={"name": cfg.data, "n_images": len(self.data)}, train_config=asdict(cfg)).to_dict()

    def best_state(self) -> dict[str, torch.Tensor]:
        return self.model.encoder_state_dict()

    def best_meta(self, record: dict, epoch: int, val: dict[str, float]) -> dict[str, Any]:
        return {**record, "epoch": epoch}

    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        _plot_loss(run_dir, history)
        return {"run_dir": str(run_dir), "encoder": str(run_dir / self.best_file), "epochs": len(history),
                "final_loss": history[-1]["mae_loss"] if history else None,
                "images_per_s": sum(h["images_per_s"] for h in history) / max(len(history), 1)}


class _MAEStep(torch.nn.Module):
    def __init__(self, mae: torch.nn.Module) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, batch):
        x, g, n = batch
        loss, _, _ = self.mae(x, generator=g)
        return loss, {"mae_loss": loss.detach()}, n


def pretrain(cfg: PretrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run MAE pretraining; returns a summary (final loss, images/s, encoder path)."""
    return fit(MAETask(cfg), resume=resume)


def _plot_loss(run: Path, history: list[dict]) -> None:
    if not history:
        return
    from medlite.report.plots import plot_values_per_epoch

    (run / "plots").mkdir(exist_ok=True)
    plot_values_per_epoch({"MAE loss (masked patches)": [h["mae_loss"] for h in history]},
                          run / "plots" / "mae_loss.png", ylabel="loss", title="MAE pretraining")
