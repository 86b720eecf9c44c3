"""One short configuration of each trainer, for checking that a refactor changes no numbers.

Runs classification (MedLiT-nano on BreastMNIST), MAE pretraining, distillation (MedLiT-nano -> MedLiT-nano
with attention alignment), segmentation (MedLiteNet on BUSI at 64 px) and promptable segmentation (a tiny
LiteSAM on PH2 at 64 px), each with a fixed seed, one thread and fp32, and writes every number they report
(per-epoch losses and validation metrics, final test metrics, a checksum of the best weights) to a JSON file.
Run it on two versions of medlite and compare the files with ``--compare A.json B.json``.

    python benchmarks/trainer_parity.py --out before.json       # on the old code
    python benchmarks/trainer_parity.py --out after.json        # on the new code
    python benchmarks/trainer_parity.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

TINY_SAM = {"dims": (8, 16, 16, 32), "depths": (1, 1, 1, 1), "heads": (1, 1, 1, 1), "embed_dim": 32,
            "decoder_heads": 2, "decoder_mlp_dim": 32}


def entry(*candidates: str):
    """The first importable ``module:attr`` of ``candidates`` (the layout before and after the refactor)."""
    for c in candidates:
        mod, attr = c.split(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates} exists")


def checksum(path: Path) -> float:
    """Sum of |w| over the weights of a checkpoint (a cheap fingerprint of the trained model)."""
    read = entry("medlite.engine.checkpoint:read_checkpoint")
    weights, _, _ = read(path)
    return float(sum(v.double().abs().sum() for v in weights.values() if v.is_floating_point()))


def _strip(history: list[dict]) -> list[dict]:
    """History rows without the wall-clock columns."""
    drop = {"images_per_s", "epoch_seconds", "elapsed_s", "seconds"}
    return [{k: v for k, v in row.items() if k not in drop} for row in history]


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def run_all(root: Path) -> dict:
    torch.set_num_threads(1)
    out: dict = {}
    TrainConfig = entry("medlite.engine.tasks.classify:TrainConfig", "medlite.engine.train:TrainConfig")
    train = entry("medlite.engine.tasks.classify:train", "medlite.engine.train:train")
    cls_dir = root / "classify"
    res = train(TrainConfig(model="medlit_nano_28", data="breastmnist", epochs=3, batch_size=64, optimizer="adamw",
                            weight_decay=0.05, schedule="cosine", warmup_epochs=1, augment="light", out=str(cls_dir),
                            threads=1, progress=False, plots=False, n_boot=50))
    out["classify"] = {"history": _strip(_csv(cls_dir / "metrics.csv")), "val_auc": res["val"]["auc"],
                       "test_auc": res["test"]["auc"], "test_acc": res["test"]["acc"],
                       "checksum": checksum(cls_dir / "best.safetensors")}

    PretrainConfig = entry("medlite.engine.tasks.mae:PretrainConfig", "medlite.engine.pretrain:PretrainConfig")
    pretrain = entry("medlite.engine.tasks.mae:pretrain", "medlite.engine.pretrain:pretrain")
    mae_dir = root / "mae"
    res = pretrain(PretrainConfig(model="medlit_nano_28", data="breastmnist", epochs=2, batch_size=64,
                                  max_steps_per_epoch=4, out=str(mae_dir), threads=1, progress=False))
    mae_csv = mae_dir / "metrics.csv" if (mae_dir / "metrics.csv").is_file() else mae_dir / "pretrain.csv"
    out["mae"] = {"history": _strip(_csv(mae_csv)), "final_loss": res["final_loss"],
                  "checksum": checksum(mae_dir / "encoder.safetensors")}

    DistillConfig = entry("medlite.engine.tasks.distill:DistillConfig", "medlite.compress.distill:DistillConfig")
    distill = entry("medlite.engine.tasks.distill:distill", "medlite.compress.distill:distill")
    d_dir = root / "distill"
    res = distill(DistillConfig(student="medlit_nano_28", teacher=str(cls_dir), epochs=2, batch_size=64,
                                max_steps_per_epoch=4, out=str(d_dir), threads=1, n_boot=50))
    out["distill"] = {"history": _strip(res["history"]), "test_auc": res["test"]["auc"],
                      "checksum": checksum(d_dir / "best.safetensors")}

    SegTrainConfig = entry("medlite.engine.tasks.segment:SegTrainConfig",
                           "medlite.engine.seg_train:SegTrainConfig")
    train_seg = entry("medlite.engine.tasks.segment:train_segmentation",
                      "medlite.engine.seg_train:train_segmentation")
    s_dir = root / "seg"
    res = train_seg(SegTrainConfig(model="medlitenet", data="busi", size=64, epochs=2, batch_size=8,
                                   max_steps_per_epoch=6, amp="none", out=str(s_dir), threads=1, progress=False,
                                   plots=False))
    out["segment"] = {"history": _strip(res["history"]), "test_dice": res["test"]["dice"]["mean"],
                      "test_hd95": res["test"]["hd95"]["mean"], "checksum": checksum(s_dir / "best.safetensors")}

    SamTrainConfig = entry("medlite.engine.tasks.promptable:SamTrainConfig",
                           "medlite.engine.sam_train:SamTrainConfig")
    train_sam = entry("medlite.engine.tasks.promptable:train_sam", "medlite.engine.sam_train:train_sam")
    res = train_sam(SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY_SAM, datasets=("ph2",), img_size=64,
                                   epochs=2, batch_size=8, warmup_steps=3, out_dir=str(root / "sam"), threads=1))
    out["promptable"] = {"history": _strip(res["history"]), "best_val_dice": res["best_val_dice"],
                         "steps": res["steps"], "checksum": checksum(root / "sam" / "litesam_swin_xs" /
                                                                     "best.safetensors")}
    return out


def _flatten(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def compare(a: dict, b: dict, tol: float = 1e-6) -> tuple[list[str], list[str]]:
    """(numbers in both files that differ by more than ``tol``, entries present in one file only)."""
    fa, fb = dict(_flatten(a)), dict(_flatten(b))
    only = [f"{k}: only in {'A' if k in fa else 'B'}" for k in sorted(set(fa) ^ set(fb))]
    bad = []
    for k in sorted(set(fa) & set(fb)):
        x, y = fa[k], fb[k]
        if isinstance(x, float) or isinstance(y, float):
            if not (math.isclose(x, y, rel_tol=tol, abs_tol=tol) or (math.isnan(x) and math.isnan(y))):
                bad.append(f"{k}: {x!r} != {y!r}")
        elif x != y:
            bad.append(f"{k}: {x!r} != {y!r}")
    return bad, only


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="write the numbers to this JSON file")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two output files")
    args = p.parse_args()
    if args.compare:
        a, b = (json.loads(Path(f).read_text()) for f in args.compare)
        bad, only = compare(a["results"], b["results"])
        n = sum(1 for _ in _flatten(a["results"])) - sum(1 for o in only if o.endswith("only in A"))
        print(f"{n - len(bad)} of the {n} numbers in both files agree to 1e-6")
        print("\n".join(bad))
        if only:
            print("logged by one version only (new or dropped columns, not compared):")
            print("\n".join(only))
        sys.exit(1 if bad else 0)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(Path(tmp))
    import platform
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    record = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{cpu}, 1 torch thread, torch {torch.__version__}", "commit": commit,
              "seconds": round(time.time() - t0), "results": results}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out} in {record['seconds']} s")


if __name__ == "__main__":
    main()
