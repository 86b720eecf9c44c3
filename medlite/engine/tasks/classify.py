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
    scores/*.csv          per-case val / test scores in the official MedMNIST evaluator's file layout
    duplicates.csv        duplicate pairs within / across the splits, when the leakage check found any
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import medlite
from medlite.data.base import ClassificationData
from medlite.data.transforms import norm_stats, to_float
from medlite.engine import schedule
from medlite.engine.amp import autocast
from medlite.engine.checkpoint import read_checkpoint, save_checkpoint
from medlite.engine.evaluate import evaluate_split, loss_fn, predict, write_medmnist_scores
from medlite.engine.loop import Task, config_from_dict, fit
from medlite.errors import ConfigError
from medlite.record import RunRecord

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
    ema: float = 0.0  # > 0: validate and keep a moving average of the weights with this decay (e.g. 0.998)
    seed: int = 0  # seeds model init, batch order and augmentation
    out: str = ""  # run folder; empty = runs/<model>-<data>-s<seed>
    init: str = ""  # checkpoint to initialise weights from (e.g. an MAE-pretrained encoder)
    pretrained: bool = False  # start from the weights the model card names (create_model(..., pretrained=True))
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
    leakage_check: bool = True  # look for duplicates across the splits; report test metrics without them too
    max_steps_per_epoch: int = 0  # cap on steps per epoch (smoke tests); 0 = full epochs

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return config_from_dict(cls, d)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        name = Path(self.data).stem if os.sep in self.data else self.data
        return Path("runs") / f"{self.model}-{name}-s{self.seed}"


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
        raise ConfigError(f"unknown recipe '{name}' (choose from {', '.join(RECIPES)})")
    out = TrainConfig.from_dict(asdict(cfg))
    for k, v in RECIPES[name].items():
        if k == "warmup_fraction":
            out.warmup_epochs = v * cfg.epochs
        else:
            setattr(out, k, v)
    return out


lr_factor = schedule.epoch_lr_factor  # multiplier at a step for a TrainConfig (warmup and milestones in epochs)


def load_data(cfg: TrainConfig, run_dir: Path | None = None) -> ClassificationData:
    from medlite.data import load_classification

    split_out = run_dir / "splits.csv" if run_dir is not None else None
    return load_classification(
        cfg.data, size=cfg.size, root=cfg.data_root or None, download=cfg.download, seed=cfg.seed,
        split_file_out=split_out,
    )


def classifier_record(model: str, data: ClassificationData, size: int, mean, std, model_kwargs: dict,
                      train_config: dict | None = None) -> dict[str, Any]:
    """The run record of a classifier trained on ``data`` (also used for distilled students)."""
    return RunRecord(
        kind="classifier",
        model={"name": model, "num_classes": data.num_classes, "in_chans": data.channels, "img_size": size,
               "kwargs": dict(model_kwargs)},
        preprocessing={"size": size, "channels": data.channels, "mean": list(mean), "std": list(std),
                       "resize": "bilinear, antialias", "scale": "uint8 / 255"},
        data={"name": data.name, "task": data.task, "label_names": list(data.label_names), "source": data.source,
              "sizes": {k: len(v) for k, v in data.splits().items()}},
        train_config=train_config, medlite_version=medlite.__version__,
    ).to_dict()


def build_meta(cfg: TrainConfig, data: ClassificationData, mean, std, model_kwargs) -> dict[str, Any]:
    return classifier_record(cfg.model, data, cfg.size, mean, std, model_kwargs, asdict(cfg))


class ClassifyTask(Task):
    """Image classification (MedMNIST tasks: binary, multi-class, ordinal, multi-label)."""

    kind = "classifier"
    metric = "val_auc"

    def setup(self, run_dir: Path) -> None:
        cfg, dist = self.cfg, self.dist
        self.data = load_data(cfg, run_dir if dist.is_main else None)
        # the report feeds finalize, which runs on the main rank only
        self.leakage = check_leakage(self.data, run_dir) if cfg.leakage_check and dist.is_main else None
        card = medlite.model_card(cfg.model)
        self.mean, self.std = norm_stats(card, self.data.channels)
        if "pretrained" in cfg.model_kwargs:
            raise ConfigError("set pretrained=True as the training option `pretrained`, not in model_kwargs")
        if cfg.pretrained and cfg.init:
            raise ConfigError("give either `pretrained` or `init` (a checkpoint to start from), not both")
        # a resumed run takes every weight from last.safetensors: the pretrained package is not needed again
        model = medlite.create_model(cfg.model, num_classes=self.data.num_classes, in_chans=self.data.channels,
                                     img_size=cfg.size, pretrained=cfg.pretrained and not self.resuming,
                                     **cfg.model_kwargs)
        if cfg.init and not self.resuming:
            _init_from(model, cfg.init)
        self.model = model.to(dist.device)
        self.trainable = _ClassifyStep(self.model, self.data.task, cfg.label_smoothing, self.amp, dist.device)
        steps = max(1, math.ceil(len(self.data.train) / cfg.batch_size))
        self.steps_per_epoch = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps

    def optimizer(self) -> torch.optim.Optimizer:
        return schedule.build_optimizer(self.model, self.cfg.optimizer, self.cfg.lr, self.cfg.weight_decay)

    def lr(self, step: int, total_steps: int) -> float:
        return self.cfg.lr * lr_factor(step, total_steps, self.steps_per_epoch, self.cfg)

    def batches(self, epoch: int):
        from medlite.data.transforms import augment_batch

        cfg, dist, train = self.cfg, self.dist, self.data.train
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # batch order + augmentation
        perm = torch.randperm(len(train), generator=g)
        for step in range(self.steps_per_epoch):
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(idx) < 2 * dist.world_size:  # a 1-sample batch breaks BatchNorm; skip the remainder
                return
            idx = idx[dist.rank :: dist.world_size]  # this rank's slice of the global batch
            x = augment_batch(to_float(train.images[idx], self.mean, self.std), g, cfg.augment)
            yield x.to(dist.device, non_blocking=True), train.labels[idx].to(dist.device), dist.world_size

    def validate(self) -> dict[str, float]:
        from medlite.metrics.classification import medmnist_acc

        probs, labels, val_loss = predict(self.model, self.data.val, self.mean, self.std, self.data.task,
                                          self.cfg.eval_batch_size, self.dist.device)
        return {"val_loss": val_loss, "val_auc": _safe_auc(labels, probs, self.data.task),
                "val_acc": medmnist_acc(labels, probs, self.data.task)}

    def record(self) -> dict[str, Any]:
        return build_meta(self.cfg, self.data, self.mean, self.std, self.cfg.model_kwargs)

    def finalize(self, run_dir: Path, history: list[dict], best_epoch: int) -> dict[str, Any]:
        return finalize(run_dir, self.data, self.model, self.record(), self.cfg, self.dist, best_epoch, history,
                        self.leakage)


class _ClassifyStep(nn.Module):
    """One batch -> task loss (+ the MoE load-balancing loss of MedLiT models)."""

    def __init__(self, model: nn.Module, task: str, label_smoothing: float, amp: str, device: str) -> None:
        super().__init__()
        self.model, self.task, self.label_smoothing, self.amp, self.device = model, task, label_smoothing, amp, device

    def forward(self, batch):
        x, y, world = batch
        with autocast(self.amp, self.device):
            logits = self.model(x)
        loss = loss_fn(logits.float(), y, self.task, self.label_smoothing)
        aux = self.model.aux_loss().float() if hasattr(self.model, "aux_loss") else None
        total = loss + aux if aux is not None else loss
        terms = {"train_loss": loss.detach(), "aux_loss": aux.detach() if aux is not None else 0.0}
        return total, terms, len(y) * world


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, select the best validation-AUC checkpoint, evaluate it on test. Returns results.json.

    Launch under ``torchrun --nproc_per_node N`` for DDP; see :mod:`medlite.engine.loop`.
    """
    return fit(ClassifyTask(cfg), resume=resume)


def _safe_auc(labels, probs, task) -> float:
    import warnings

    from medlite.metrics.classification import medmnist_auc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc = medmnist_auc(labels, probs, task)
    return 0.0 if math.isnan(auc) else float(auc)


def check_leakage(data: ClassificationData, run_dir: Path) -> dict:
    """Duplicates across and within the splits (:mod:`medlite.data.leakage`): a warning with the counts,
    the pairs in ``run_dir/duplicates.csv``; returns the report (``twinned`` lists the val / test images
    with a twin in train)."""
    from medlite.data.leakage import find_duplicates, leakage_report, summary_line, write_pairs

    pairs = find_duplicates(data)
    rep = leakage_report(data, pairs=pairs)
    if rep["twinned"]["test"] or rep["twinned"]["val"] or rep["pairs"]:
        log.warning("%s: %s; test metrics are reported on the whole split and without the twinned images%s",
                    data.name, summary_line(rep), f" (pairs in {run_dir / 'duplicates.csv'})" if pairs else "")
    if pairs:
        write_pairs(pairs, run_dir / "duplicates.csv")
    return rep


def finalize(run_dir, data, model, meta, cfg, dist, best_epoch, history, leakage: dict | None = None
             ) -> dict[str, Any]:
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
        if dist.is_main:  # per-case scores the official MedMNIST evaluator reads
            write_medmnist_scores(run_dir / "scores", data.name, name, probs, rep["auc"], rep["acc"])
    if leakage is not None:
        results["leakage"] = {k: leakage[k] for k in ("threshold", "max_mad", "pairs", "by_splits", "by_class",
                                                      "label_conflicts", "twinned_counts", "clean")}
        twins = leakage["twinned"]["test"]
        if twins and len(twins) < len(data.test):
            from medlite.data.leakage import clean_split

            results["test_clean"], _, _ = evaluate_split(model, clean_split(data.test, twins), mean, std, data.task,
                                                         cfg.n_boot, cfg.seed, dist.device, data.label_names)
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


def shift_warning(val: dict, test: dict, gap: float = 0.1) -> str:
    """A warning when validation and test AUC differ by more than ``gap`` and their 95 % CIs do not overlap:
    the checkpoint was chosen on data unlike the test split (a distribution shift, or a bad split)."""
    d = val["auc"] - test["auc"]
    if abs(d) <= gap or not (val["auc_ci"][0] > test["auc_ci"][1] or test["auc_ci"][0] > val["auc_ci"][1]):
        return ""
    return (f"**Warning: validation AUC {val['auc']:.3f} vs test AUC {test['auc']:.3f} ({-d:+.3f}, 95 % CIs apart).** "
            "The model was selected on data unlike the test split: a likely distribution shift between them "
            "(other scanners, sites or populations), or a split that is not random. Check how the splits were "
            "made (`medlite data check`) before trusting either number.")


def _scalar_metrics(rep: dict) -> dict:
    return {k: rep[k] for k in ("auc", "acc", "auc_ci", "acc_ci", "loss", "n") if k in rep}


def report_markdown(results: dict, label_names: list[str]) -> str:
    t, v = results["test"], results["val"]
    lines = [f"# {results['model']} on {results['data']}", "",
             f"Best validation AUC at epoch {results['best_epoch']} of {results['epochs']}; "
             f"{results['params']:,} parameters.", "",
             "| split | AUC (95 % CI) | ACC (95 % CI) | n |", "|---|---|---|---|"]
    rows = [("val", v), ("test", t)]
    if results.get("test_clean"):
        rows.append(("test without train twins", results["test_clean"]))
    for name, r in rows:
        lines.append(f"| {name} | {r['auc']:.3f} ({r['auc_ci'][0]:.3f}–{r['auc_ci'][1]:.3f}) | "
                     f"{r['acc']:.3f} ({r['acc_ci'][0]:.3f}–{r['acc_ci'][1]:.3f}) | {r['n']} |")
    if shift := shift_warning(v, t):
        lines += ["", shift]
    if results.get("leakage") is not None:
        from medlite.data.leakage import summary_line

        lk = results["leakage"]
        lines += ["", f"Duplicate check (exact pixels, or pHash within {lk['threshold']} bits and mean pixel "
                  f"difference <= {lk['max_mad']:g}): {summary_line(lk)}."
                  + (" Pairs: `duplicates.csv`." if lk["pairs"] else "")]
    if results.get("train_images_per_s"):
        lines += ["", f"Training throughput {results['train_images_per_s']:.0f} images/s, "
                  f"{results['epoch_seconds']:.1f} s per epoch, {results['machine']['torch_threads']} thread(s) on "
                  f"{results['machine']['cpus']} CPU(s)."]
    lines += ["", "Plots: `plots/curves.png`, `plots/roc.png`, `plots/confusion.png` "
              "(and `plots/expert_load.png` for MoE models).", ""]
    return "\n".join(lines)


def _plots(run_dir: Path, history, test_pred, data, model, meta) -> None:
    from medlite.report.plots import plot_confusion, plot_roc, plot_training_curves

    pdir = run_dir / "plots"
    pdir.mkdir(exist_ok=True)
    labels, probs = test_pred
    name = f"{meta['model']['name']} on {data.name}"
    plot_training_curves(history, pdir / "curves.png", title=f"{name}: training")
    plot_roc(labels, probs, data.task, data.label_names, pdir / "roc.png", title=f"{name}, test split")
    if data.task != "multi-label":
        plot_confusion(labels, probs, data.task, data.label_names, pdir / "confusion.png", title=f"{name}, test split")
    if hasattr(model, "router_stats"):
        from medlite.report.plots import plot_expert_load

        with torch.no_grad():  # routing of the first 512 validation images by the best checkpoint
            model.eval()
            mean, std = meta["preprocessing"]["mean"], meta["preprocessing"]["std"]
            model(to_float(data.val.images[:512], mean, std).to(next(model.parameters()).device))
        loads = [v.tolist() for v in model.router_stats()]
        plot_expert_load(loads, pdir / "expert_load.png", top_k=getattr(model.cfg, "top_k", 2))


def _init_from(model: nn.Module, path: str) -> None:
    """Initialise from a checkpoint: an MAE encoder (MedLiT) or any checkpoint with matching names, e.g.
    model-zoo weights by name (``medlit_nano_28_dermamnist``: fine-tuning; a head of another size is skipped)."""
    if not Path(path).exists():
        from medlite import zoo

        if zoo.has(path):
            path = str(zoo.weights_file(path))
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


