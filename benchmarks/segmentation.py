"""MedLiteNet vs MedLiteNet without BAA vs MONAI U-Net, from scratch, and MedLiteNet vs U-Net on the same
ImageNet EfficientNet-Lite0 encoder, on BUSI and PH2 at 256x256.

- BUSI: the split lists shipped with the data (``busi_train1.txt`` -> train, 10 % of it carved off for
  checkpoint selection; ``busi_val1.txt`` -> test, 195 images).
- PH2 (the 100-image dev half): 5-fold cross-validation, each fold's test = 20 images, validation carved
  from its 80 training images. Test metrics are pooled over the 5 folds (every image scored once).

Every model is trained by the same recipe (``SegTrainConfig`` defaults, epochs below); the two models on a
pretrained encoder (``medlitenet_lite0``, ``unet_lite0``) change only what fine-tuning needs (``FINETUNE``).
The best-validation checkpoint is scored on test at the original image size, and latency is measured on
untrained copies of the same architectures (latency does not depend on weight values) with ONNX Runtime, 1 and
2 threads, all candidates interleaved.

    python benchmarks/segmentation.py --threads 2            # trains what is missing, resumes cut runs
    python benchmarks/segmentation.py --models medlitenet_lite0 unet_lite0 --datasets busi ph2
    python benchmarks/segmentation.py --report-only          # rewrite results/segmentation.md from the runs
    python benchmarks/segmentation.py --smoke --models medlitenet_lite0 unet_lite0   # minutes: checks the jobs
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, header

from medlite.engine.tasks.segment.train import SegTrainConfig, rescore_segmentation, train_segmentation

RUNS = ROOT / "runs" / "seg"
MODELS = ("medlitenet", "medlitenet_nobaa", "unet", "medlitenet_lite0", "unet_lite0", "medlitenet_lite0_s4")
LABELS = {  # model -> (row name, how it starts)
    "medlitenet": ("MedLiteNet (MobileNetV2)", "scratch"),
    "medlitenet_nobaa": ("MedLiteNet without BAA", "scratch"),
    "unet": ("U-Net (MONAI residual)", "scratch"),
    "medlitenet_lite0": ("MedLiteNet (EfficientNet-Lite0)", "ImageNet encoder"),
    "unet_lite0": ("U-Net (EfficientNet-Lite0)", "ImageNet encoder"),
    "medlitenet_lite0_s4": ("MedLiteNet (EfficientNet-Lite0), decoder to stride 4", "ImageNet encoder"),
}
# Fine-tuning recipe of the models on a pretrained encoder: the only fields that differ from the scratch recipe,
# fixed before any run (nothing here was tuned on test; a change would be chosen on validation Dice).
# - pretrained: the encoder starts from the ImageNet EfficientNet-Lite0 weights (the decoder is random).
# - encoder_lr_mult 0.1: the encoder trains at 1e-4 peak while the random decoder keeps the scratch recipe's
#   1e-3; at the full rate the decoder's early, uninformed gradients would overwrite the ImageNet features
#   (the usual fine-tuning ratio; the decoder rate stays equal to the scratch models' for a fair comparison).
# - warmup_epochs 2: the decoder gets twice the warmup to become sensible before the encoder moves at its
#   peak rate (BUSI ~66 steps per epoch, PH2 9: 2 epochs are ~8 % / ~7 % of the runs).
FINETUNE = {"pretrained": True, "encoder_lr_mult": 0.1, "warmup_epochs": 2.0}
RECIPES = {"medlitenet_lite0": FINETUNE, "unet_lite0": FINETUNE, "medlitenet_lite0_s4": FINETUNE}
TARGET_DICE = {"ph2": 0.92, "busi": 0.78}
TARGET_MS_2T = 20.0


def _cfg(model: str, data: str, fold: int, args) -> SegTrainConfig:
    epochs = args.epochs_busi if data == "busi" else args.epochs_ph2
    smoke = {"max_steps_per_epoch": 2, "plots": False} if args.smoke else {}
    return SegTrainConfig(model=model, data=data, fold=fold, epochs=epochs, threads=args.threads,
                          out=str(args.runs / f"{model}-{data}-f{fold}"), progress=args.progress,
                          **{**RECIPES.get(model, {}), **({"ema": args.ema} if args.ema else {}), **overrides(args),
                             **smoke})


@functools.cache
def encoder_init_label(path: str) -> str:
    """What an ``encoder_init`` checkpoint of ``seg_encoder_distill.py`` had learnt, from its run's config: the
    distilled encoder, or that encoder after a LiteSAM's box-prompt training on a set's masks."""
    sets, run = [], Path(path).parent
    while (run / "config.json").is_file():  # follow the chain of prompt-stage runs back to the distilled encoder
        c = json.loads((run / "config.json").read_text())
        if c.get("stage") != "prompt":
            break
        sets += [Path(d).name for d in c.get("datasets", []) if Path(d).name not in sets]
        if not c.get("init"):
            break
        run = Path(c["init"]).parent
    label = "ImageNet, then distilled from LiteMedSAM"
    if sets:
        label += (f", then prompt-trained as a LiteSAM on the {', '.join(sets)} train masks "
                  f"(`{Path(path).parent.name}`)")
    return label


def overrides(args) -> dict:
    """``--set KEY=VALUE`` recipe changes (values as JSON, as the CLI's --model-opt), checked against
    SegTrainConfig's fields."""
    from dataclasses import fields

    from medlite.cli.common import parse_kv

    out = parse_kv(args.set)
    unknown = set(out) - {f.name for f in fields(SegTrainConfig)}
    if unknown:
        raise SystemExit(f"--set {sorted(unknown)}: not SegTrainConfig fields")
    return out


def jobs(args) -> list[SegTrainConfig]:
    """MedLiteNet and the U-Nets first (the targets compare them), then the ablation."""
    first = [m for m in args.models if m != "medlitenet_nobaa"]
    rest = [m for m in args.models if m == "medlitenet_nobaa"]
    out = []
    for group in (first, rest):
        if "busi" in args.datasets:
            out += [_cfg(m, "busi", 0, args) for m in group]
        if "ph2" in args.datasets:
            out += [_cfg(m, "ph2", f, args) for m in group for f in args.folds]
    return out


def run(cfg: SegTrainConfig) -> None:
    run_dir = cfg.run_dir()
    if (run_dir / "results.json").is_file():
        rescore_if_old(run_dir)
        return
    t0 = time.time()
    res = train_segmentation(cfg, resume=(run_dir / "last.safetensors").is_file())
    print(f"[{time.time() - t0:.0f}s] {cfg.model} {cfg.data} fold {cfg.fold}: test Dice "
          f"{res['test']['dice']['mean']:.3f}", flush=True)


def rescore_if_old(run_dir) -> None:
    """Runs finished before validation-chosen post-processing existed are scored again (evaluation only)."""
    if (run_dir / "results.json").is_file() and "postprocess" not in json.loads((run_dir / "results.json").read_text()):
        res = rescore_segmentation(run_dir)
        print(f"rescored {run_dir.name}: post-processing {res['postprocess']}, test Dice "
              f"{res['test']['dice']['mean']:.3f}", flush=True)


def _cases(model: str, data: str, folds, runs=RUNS) -> tuple[list[dict], list[dict]]:
    """Per-case rows pooled over the finished folds, and the results.json of each finished run."""
    import csv

    rows, results = [], []
    for f in folds:
        d = runs / f"{model}-{data}-f{f}"
        if (d / "results.json").is_file():
            results.append(json.loads((d / "results.json").read_text()))
            with open(d / "per_case.csv") as fh:
                rows += [{k: (float(v) if k != "case" else v) for k, v in r.items()} for r in csv.DictReader(fh)]
    return rows, results


def _ms(v: list[float], nd: int = 3) -> str:
    return f"{np.mean(v):.{nd}f} ± {np.std(v):.{nd}f}" if v else "–"


def cost(model: str, size: int = 256) -> tuple[int, int]:
    """(parameters, MACs at size x size) of the architecture (for rows whose runs are missing)."""
    import medlite
    from medlite.models.flops import count_macs

    m = medlite.create_model(model, num_classes=1, in_chans=3, img_size=size)
    return sum(p.numel() for p in m.parameters()), count_macs(m, (1, 3, size, size))


def report_models(args) -> list[str]:
    """Every benchmark model (a row, "not run" when its runs are missing), then any other model asked for."""
    return list(MODELS) + [m for m in args.models if m not in MODELS]


def latency(models, threads=(1, 2)) -> dict[tuple[str, int], float]:
    from medlite.bench.latency import bench

    rows = bench(list(models), size=256, in_chans=3, num_classes=1, runtimes=("onnx",), threads=threads,
                 batch_for_throughput=4, warmup=5, repeats=30, compute_floor=False)
    (RESULTS / "segmentation_latency.json").write_text(json.dumps(rows, indent=2) + "\n")
    return {(r["model"], r["threads"]): r["latency_ms_median"] for r in rows}


def report(args, lat: dict | None) -> str:
    models = report_models(args)
    ft = ", ".join(f"{k}={v}" for k, v in FINETUNE.items())
    lines = header("Segmentation: MedLiteNet vs ablation vs U-Net, scratch and ImageNet encoder (BUSI, PH2; 256x256)")
    lines += ["Recipe (every model, both datasets): `SegTrainConfig` defaults: AdamW lr 1e-3, weight decay 1e-4, "
              "1 warmup epoch then cosine, batch 8, loss 0.5 BCE + 0.5 Dice, albumentations 'strong' "
              "(flips, affine, elastic, CLAHE, noise, blur), input 256x256 (plain resize), channels-last, "
              "bf16 autocast on this CPU (AVX512-BF16; weights, optimiser and loss in fp32, evaluation in fp32), "
              f"{args.epochs_busi} epochs on BUSI and {args.epochs_ph2} per PH2 fold (the paper trains 300 epochs "
              "on a GPU; this is what 2 CPU cores allow in one session). The scratch models start from random "
              "weights. The ImageNet rows (`medlitenet_lite0`, `unet_lite0`, `medlitenet_lite0_s4`: one "
              "EfficientNet-Lite0 encoder, timm `tf_efficientnet_lite0`, inputs normalised with mean 0.5 / "
              "std 0.5 as its weights expect) "
              f"change only the fine-tuning fields `{ft}`: the encoder starts from the ImageNet weights and "
              "trains at 0.1x the decoder's rate (the decoder keeps lr 1e-3), after a 2-epoch warmup "
              "(fixed before any run; see `FINETUNE` in the script). `medlitenet_lite0_s4` is `medlitenet_lite0` "
              "with its decoder stopped at stride 4 (the stride-2 stage costs about a third of its CPU time), "
              "defined for the 20 ms latency target before it was trained, same recipe. "
              + (f"Every run here also averages its weights (`--ema {args.ema}`: an exponential moving average "
                 "with warm-up, timm's ModelEmaV3; validation, the checkpoint and the test scores use the "
                 "average). " if args.ema else "") +
              (f"Every run here also changes `{', '.join(args.set)}` (`--set`, fixed before the run; a recipe "
               "variant to be chosen on validation Dice). " if args.set else "") +
              "Best validation Dice selects the checkpoint, and validation Dice also chooses the mask "
              "post-processing per run (none, or largest connected component with holes filled; see the per-run "
              "details; runs finished before this choice existed were scored again by `rescore_segmentation`); "
              "test metrics are computed at the original image size. "
              "HD95 in pixels of the original image; NSD at 2 px. Empty masks: none in BUSI or PH2.", ""]
    summary: dict[tuple[str, str], dict] = {}
    lines += ["BUSI: 195 test images (shipped split 1). PH2: the 100-image dev half, 5-fold CV, metrics pooled over "
              "the test folds (each image scored once). Mean ± std over images.", "",
              "| data | model | init | params (M) | MACs (G) | Dice | IoU | HD95 (px) | NSD@2px | runs done | "
              "ONNX 1 thread (ms) | ONNX 2 threads (ms) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    costs: dict[str, tuple[int, int]] = {}
    for data, folds in (("busi", [0]), ("ph2", list(args.folds))):
        for m in models:
            rows, res = _cases(m, data, folds, args.runs)
            name, init = LABELS.get(m, (m, ""))
            if "encoder_init" in overrides(args) and m in RECIPES:  # seg_encoder_distill.py's encoder
                init = encoder_init_label(overrides(args)["encoder_init"])
            if not res:
                p, macs = costs.setdefault(m, cost(m))
                lines.append(f"| {data.upper()} | {name}: `{m}` | {init} | {p / 1e6:.2f} | {macs / 1e9:.2f} | "
                             f"not run | | | | 0/{len(folds)} | | |")
                continue
            d = [r["dice"] for r in rows]
            summary[(m, data)] = {"dice": float(np.mean(d)), "params": res[0]["params"], "n": len(rows)}
            l1 = lat.get((m, 1)) if lat else None
            l2 = lat.get((m, 2)) if lat else None
            lines.append(
                f"| {data.upper()} | {name}: `{m}` | {init} | {res[0]['params'] / 1e6:.2f} | "
                f"{res[0]['macs'] / 1e9:.2f} | {_ms(d)} | "
                f"{_ms([r['iou'] for r in rows])} | {_ms([r['hd95'] for r in rows], 1)} | "
                f"{_ms([r['nsd'] for r in rows])} | {len(res)}/{len(folds)} | "
                f"{'–' if l1 is None else f'{l1:.1f}'} | {'–' if l2 is None else f'{l2:.1f}'} |")
    lines += ["", "## Per-run details", ""]
    for data, folds in (("busi", [0]), ("ph2", list(args.folds))):
        for m in models:
            _, res = _cases(m, data, folds, args.runs)
            per = ", ".join(f"{'fold ' + str(r['fold']) + ' ' if data == 'ph2' else ''}Dice "
                            f"{r['test']['dice']['mean']:.3f} (best val {r['best_val_dice']:.3f} at epoch "
                            f"{r['best_epoch']}/{r['epochs']}; post-processing {r.get('postprocess', 'none')}"
                            + (", val Dice none/largest " + "/".join(f"{v:.3f}" for v in
                                                                   r["val_dice_by_postprocess"].values())
                               if "val_dice_by_postprocess" in r else "") + ")" for r in res)
            lines.append(f"- {data.upper()} {m}: {per or 'not finished'}")
    lines.append("")
    lines += targets(summary, lat, args)
    lines += ["", "## What was tried", ""] + tried(args)
    lines += ["", "Pictures: `segmentation_busi_cases.png` and `segmentation_ph2_cases.png` show MedLiteNet's four "
              "best and four worst test cases (green ground truth, red prediction); each run folder under "
              "`benchmarks/runs/seg/` also has curves.png and report.md.", ""]
    return "\n".join(lines)


def tried(args) -> list[str]:
    """What the runs say about the schedule: how much validation Dice still moved over the last epochs."""
    out = ["- Each dataset ran as its own single-thread process (`--datasets busi` and `--datasets ph2`), "
           "side by side with other benchmark jobs on the 2 cores, so the images/s in each run's results.json "
           "are lower bounds. bf16 autocast roughly doubled MedLiteNet's training images/s over fp32 on this "
           "CPU (6.3 -> 13.6 images/s on one thread in a batch-8 microbenchmark, channels-last).",
           "- An earlier run of this script with 8 BUSI epochs and 10 per PH2 fold in fp32 (2026-11-22, "
           "MedLiteNet only, results not committed) reached test Dice 0.508 (BUSI) and 0.818 (PH2); the longer "
           "schedule here is what bf16 made affordable."]
    for data, folds in (("busi", [0]), ("ph2", list(args.folds))):
        for m in report_models(args):
            _, res = _cases(m, data, folds, args.runs)
            if not res:
                continue
            gains = [r["history"][-1]["val_dice"] - r["history"][-6]["val_dice"] for r in res
                     if len(r["history"]) >= 6]
            best_at_end = sum(r["best_epoch"] >= r["epochs"] - 2 for r in res)
            if gains:
                out.append(f"- {data.upper()} {m}: validation Dice changed by {np.mean(gains):+.3f} over the last "
                           f"5 epochs (mean over {len(gains)} run(s)); best epoch within the last 3 in "
                           f"{best_at_end} of {len(res)} run(s).")
    out.append("- Nothing was tuned on test: one recipe for every scratch model and one fine-tuning recipe "
               "(fixed in advance) for the two ImageNet-encoder models, checkpoints selected on validation Dice. "
               "The ImageNet weights come from an installed package (`medlite[pretrained]`), nothing is "
               "downloaded. The paper trains 300 epochs on a GPU; `--epochs-busi` / `--epochs-ph2` retrain under "
               "a longer schedule (the cosine schedule depends on the epoch count, so finished runs are not "
               "extended).")
    return out


def reference_dice(data: str, model: str, args) -> tuple[float, str] | None:
    """(mean Dice, source) of a row this run has no run folders for, read from the committed
    ``results/segmentation.md`` (the scratch models' file) when this report is another file."""
    ref = RESULTS / "segmentation.md"
    if Path(args.out).resolve() == ref.resolve() or not ref.is_file():
        return None
    text = ref.read_text()
    date = next((ln.split(": ", 1)[1] for ln in text.splitlines() if ln.startswith("- date:")), "?")
    for ln in text.splitlines():
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if len(cells) < 6 or cells[0] != data.upper():
            continue
        name = cells[1].rsplit("`", 2)[-2] if cells[1].endswith("`") else cells[1]  # `model` or a bare name
        if name == model:
            dice = next((c for c in cells if "±" in c), None)
            if dice:
                return float(dice.split("±")[0]), f"results/segmentation.md, {date}"
    return None


PRETRAINED_MEDLITENETS = ("medlitenet_lite0", "medlitenet_lite0_s4")  # each is held to the targets


def lite0_targets(summary, lat, args) -> list[str]:
    """The pretrained-encoder targets, for each pretrained MedLiteNet: Dice goals, ahead of both U-Nets, fewer
    MACs than the pretrained U-Net, < 20 ms on 2 threads."""
    out = []
    for m in PRETRAINED_MEDLITENETS:
        if m == "medlitenet_lite0" or any((m, d) in summary for d in TARGET_DICE):
            out += _lite0_targets(m, summary, lat, args)
    return out


def _lite0_targets(m: str, summary, lat, args) -> list[str]:
    out = []
    for data, goal in TARGET_DICE.items():
        a = summary.get((m, data))
        if a is None:
            out.append(f"- {data.upper()}: pretrained MedLiteNet (`{m}`) not run.")
            continue
        gap = a["dice"] - goal
        line = (f"- {data.upper()}: pretrained MedLiteNet `{m}` Dice {a['dice']:.3f} vs target {goal:.2f}: "
                f"{'met' if gap >= 0 else f'missed by {-gap:.3f}'}")
        for unet in ("unet", "unet_lite0"):
            u = summary.get((unet, data))
            ref = (u["dice"], "this run") if u else reference_dice(data, unet, args)
            if ref is None:
                line += f"; `{unet}` not run yet (no comparison)"
            else:
                ahead = a["dice"] - ref[0]
                line += (f"; vs `{unet}` {ref[0]:.3f} ({ref[1]}): {'ahead' if ahead > 0 else 'behind'} by "
                         f"{abs(ahead):.3f}")
        ref = summary.get(("medlitenet", data))
        ref = (ref["dice"], "this run") if ref else reference_dice(data, "medlitenet", args)
        if ref:
            line += f"; scratch MedLiteNet {ref[0]:.3f} ({ref[1]})"
        out.append(line + ".")
    ma, mu = cost(m)[1], cost("unet_lite0")[1]
    out.append(f"- MACs at 256x256: pretrained MedLiteNet `{m}` {ma / 1e9:.2f} G vs pretrained U-Net "
               f"{mu / 1e9:.2f} G ({'fewer: met' if ma < mu else 'not fewer: missed'}; {mu / ma:.1f}x).")
    if lat and (m, 2) in lat:
        ms = lat[(m, 2)]
        line = (f"- Latency: pretrained MedLiteNet `{m}` {ms:.1f} ms per 256x256 image on 2 threads (ONNX "
                f"Runtime) vs target {TARGET_MS_2T:.0f} ms: {'met' if ms < TARGET_MS_2T else 'missed'}")
        if m != "medlitenet_lite0" and ("medlitenet_lite0", 2) in lat:  # the ratio holds on a busy machine
            line += f" ({ms / lat[('medlitenet_lite0', 2)]:.2f}x `medlitenet_lite0`'s time, same run)"
        out.append(line + ".")
    else:
        out.append("- Latency: not measured in this run (`--no-latency`).")
    return out


def targets(summary, lat, args) -> list[str]:
    out = ["## Targets", ""]
    if args.set:
        out.append(f"- This run is a recipe variant (`--set {' '.join(args.set)}`): its lines below count towards a "
                   "target only if validation Dice chooses it over the other variants run for the same model and "
                   "data (a test figure does not choose).")
    if any(m in (*PRETRAINED_MEDLITENETS, "unet_lite0") for m in args.models):
        out += lite0_targets(summary, lat, args)
    for data, goal in TARGET_DICE.items():
        s, u = summary.get(("medlitenet", data)), summary.get(("unet", data))
        if s is None:
            if "medlitenet" in args.models:
                out.append(f"- {data.upper()}: MedLiteNet not run.")
            continue
        gap = s["dice"] - goal
        line = (f"- {data.upper()}: MedLiteNet Dice {s['dice']:.3f} vs target {goal:.2f}: "
                f"{'met' if gap >= 0 else f'missed by {-gap:.3f}'}")
        if u is not None:
            ahead = s["dice"] - u["dice"]
            line += (f"; vs U-Net {u['dice']:.3f} ({'ahead' if ahead > 0 else 'behind'} by {abs(ahead):.3f}) "
                     f"with {s['params'] / u['params']:.0%} of its parameters")
        out.append(line + ".")
    if lat and ("medlitenet", 2) in lat:
        ms = lat[("medlitenet", 2)]
        line = (f"- Latency: MedLiteNet {ms:.1f} ms per 256x256 image on 2 threads (ONNX Runtime) vs target "
                f"{TARGET_MS_2T:.0f} ms: {'met' if ms < TARGET_MS_2T else 'missed'}")
        if ("unet", 2) in lat:
            line += (f"; the U-Net takes {lat[('unet', 2)]:.1f} ms ({lat[('unet', 2)] / ms:.1f}x MedLiteNet's, "
                     "same run)")
        out.append(line + ".")
    for data in ("busi", "ph2"):
        for m in PRETRAINED_MEDLITENETS:
            a, u = summary.get((m, data)), summary.get(("unet_lite0", data))
            if a and u:
                ahead = a["dice"] - u["dice"]
                enc = (f"EfficientNet-Lite0 encoder ({encoder_init_label(overrides(args)['encoder_init'])})"
                       if "encoder_init" in overrides(args) else "ImageNet EfficientNet-Lite0 encoder")
                out.append(f"- Same {enc} on {data.upper()}: MedLiteNet `{m}` "
                           f"{a['dice']:.3f} vs U-Net {u['dice']:.3f} ({'ahead' if ahead > 0 else 'behind'} by "
                           f"{abs(ahead):.3f}) with {a['params'] / u['params']:.0%} of its parameters.")
        for scratch, pre in (("medlitenet", "medlitenet_lite0"), ("unet", "unet_lite0")):
            x, y = summary.get((scratch, data)), summary.get((pre, data))
            if x and y:
                out.append(f"- {LABELS[pre][0].split(' (')[0]} on {data.upper()}: ImageNet encoder {y['dice']:.3f} vs "
                           f"scratch {x['dice']:.3f} (Δ {y['dice'] - x['dice']:+.3f}; different encoders).")
    for data in ("busi", "ph2"):
        a, b = summary.get(("medlitenet", data)), summary.get(("medlitenet_nobaa", data))
        if a and b:
            out.append(f"- BAA ablation on {data.upper()}: with {a['dice']:.3f}, without {b['dice']:.3f} "
                       f"(Δ {a['dice'] - b['dice']:+.3f}).")
    return out


def _names(values: list[str]) -> list[str]:
    """``a b`` and ``a,b`` alike."""
    return [v for item in values for v in item.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs-busi", type=int, default=25)
    ap.add_argument("--epochs-ph2", type=int, default=30)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="which models to train (the report shows all)")
    ap.add_argument("--folds", nargs="+", default=["0,1,2,3,4"])
    ap.add_argument("--datasets", nargs="+", default=["busi", "ph2"],
                    help="which datasets to train (the report shows both)")
    ap.add_argument("--runs", type=Path, default=None, help=f"run folders (default {RUNS}; --smoke: a temp folder)")
    ap.add_argument("--smoke", action="store_true",
                    help="check the jobs in minutes: 1 epoch of 2 steps, PH2 fold 0, no latency; runs and report "
                         "go to --runs (a temp folder by default), results/ is not touched")
    ap.add_argument("--report-only", action="store_true", help="skip training; rewrite the results file")
    ap.add_argument("--out", type=Path, default=RESULTS / "segmentation.md", help="the results file to write")
    ap.add_argument("--no-latency", action="store_true", help="do not time the models")
    ap.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                    help="recipe changes for every run, as SegTrainConfig fields (e.g. encoder_lr_mult=0.3)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="every run averages its weights with this decay (SegTrainConfig.ema; 0 = off)")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args()
    args.models = _names(args.models)
    args.datasets = _names(args.datasets)
    args.folds = [int(f) for f in _names(args.folds)]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        ap.error(f"--models {', '.join(unknown)}: not benchmark models ({', '.join(MODELS)})")
    if args.smoke:
        args.epochs_busi = args.epochs_ph2 = 1
        args.folds, args.no_latency = [0], True
        args.runs = args.runs or Path(tempfile.mkdtemp(prefix="medlite-seg-smoke-"))
    args.runs = args.runs or RUNS
    for cfg in jobs(args):
        if args.report_only:
            rescore_if_old(cfg.run_dir())
        else:
            run(cfg)
    lat = None if args.no_latency else latency(report_models(args))
    text = report(args, lat)
    if args.smoke:
        (args.runs / "segmentation.md").write_text(text)
        print(text)
        print(f"smoke run: runs and report under {args.runs}")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for data, fold in (("busi", 0), ("ph2", 0)):
        png = args.runs / f"medlitenet-{data}-f{fold}" / "cases.png"
        if png.is_file():
            shutil.copyfile(png, RESULTS / f"segmentation_{data}_cases.png")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
