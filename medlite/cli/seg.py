"""``medlite seg ...``: train, evaluate, predict with and export 2D lesion segmentation models.

Option defaults restate ``SegTrainConfig`` without importing it (``medlite --help`` needs no torch);
tests/cli/test_defaults.py keeps them equal.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medlite.cli.common import (
    Ema,
    EncoderLrMult,
    JsonOut,
    Threads,
    Verbose,
    app,
    checked,
    console,
    known_model,
    load_kind,
    parse_kv,
    print_error,
    print_json,
    print_table,
    resolve_weights,
    use_threads,
)
from medlite.errors import MedliteError

seg_app = typer.Typer(help="Lesion segmentation: MedLiteNet, its ablations and a U-Net baseline.",
                      no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")
app.add_typer(seg_app, name="seg")


@seg_app.command("train")
@checked
def train(
    model: Annotated[str, typer.Argument(help="medlitenet, medlitenet_nobaa, medlitenet_r18, unet, or on an "
                                              "EfficientNet-Lite0 encoder medlitenet_lite0, unet_lite0.")],
    data: Annotated[str, typer.Option(help="'busi' or 'ph2' (under $MEDLITE_DATA) or a dataset folder.")] = "busi",
    layout: Annotated[str, typer.Option(help="Folder layout: folder, busi, ph2, isic, kvasir.")] = "folder",
    mask_suffix: Annotated[str, typer.Option(help="Folder layout: mask name = image stem + this "
                                                  "(default: detect '', _mask, _lesion, _segmentation).")] = "",
    size: Annotated[int, typer.Option(help="Input side in pixels (multiple of 32).")] = 256,
    mode: Annotated[str, typer.Option(help="'resize' (stretch) or 'pad' (longest side + padding).")] = "resize",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warmup + cosine).")] = 1e-3,
    pretrained: Annotated[bool, typer.Option(help="Start from the model's pretrained weights (medlitenet_lite0, "
                                                  "unet_lite0: ImageNet encoder; needs medlite[pretrained]).")] = False,
    encoder_init: Annotated[str, typer.Option(help="Checkpoint whose EfficientNet-Lite0 encoder starts the "
                                                   "model's (lite0 models; e.g. a litesam_lite0_md8 run "
                                                   "distilled from LiteMedSAM); replaces --pretrained.")] = "",
    encoder_lr_mult: EncoderLrMult = 1.0,
    augment: Annotated[str, typer.Option(help="Augmentation level: none, photometric, light, strong.")] = "strong",
    fold: Annotated[int, typer.Option(help="Cross-validation fold (PH2 / folders without lists).")] = 0,
    folds: Annotated[int, typer.Option(help="Number of folds for folders; 0 = random 80/20.")] = 5,
    train_list: Annotated[str, typer.Option(help="File of training case names (folder data).")] = "",
    test_list: Annotated[str, typer.Option(help="File of test case names (folder data).")] = "",
    test_data: Annotated[str, typer.Option(help="Another folder (same --layout) to test on: --data is then "
                                                "all training (validation carved from it).")] = "",
    seed: Annotated[int, typer.Option(help="Seed for init, split, order and augmentation.")] = 0,
    ema: Ema = 0.0,
    out: Annotated[str, typer.Option(help="Run folder (default: under runs/seg, named after the model, data, "
                                          "fold and seed).")] = "",
    threads: Threads = 0,
    amp: Annotated[str, typer.Option(help="Training precision: auto (bf16 where the CPU has native bf16), "
                                          "bf16 or none (fp32).")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last.safetensors.")] = False,
    data_root: Annotated[str, typer.Option(help="Folder of built-in datasets (default $MEDLITE_DATA).")] = "",
    model_opt: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE",
                                                        help="Model option (repeatable), as everywhere.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE",
                                                   help="Another SegTrainConfig field (repeatable).")] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars (off: one log line per epoch).")] = True,
    verbose: Verbose = False,
) -> None:
    """Train a segmentation model; the best validation-Dice checkpoint is then scored on the test split at
    the original image size. The run folder gets results.json, per_case.csv, report.md, curves.png and a
    grid of the best and worst test cases (cases.png).

    Runs on one process; for several, launch with
    `torchrun --nproc_per_node N -m medlite seg train ...`."""
    from medlite.engine.tasks.segment import SegTrainConfig, train_segmentation

    known_model(model, task="segmentation")
    _check_layout(layout, mode)
    extra = parse_kv(set_)
    unknown = sorted(set(extra) - {f.name for f in dataclasses.fields(SegTrainConfig)})
    if unknown:
        raise typer.BadParameter(f"--set {', '.join(unknown)}: not SegTrainConfig fields")
    if model_opt:
        if "model_kwargs" in extra:
            raise typer.BadParameter("give model options as --model-opt or as --set model_kwargs=..., not both")
        extra["model_kwargs"] = parse_kv(model_opt)
    cfg = SegTrainConfig.from_dict({
        "model": model, "data": data, "layout": layout, "mask_suffix": mask_suffix or None, "size": size,
        "mode": mode, "epochs": epochs, "batch_size": batch_size, "lr": lr, "pretrained": pretrained,
        "encoder_lr_mult": encoder_lr_mult, "encoder_init": encoder_init, "augment": augment, "fold": fold,
        "folds": folds, "train_list": train_list, "test_list": test_list, "test_data": test_data, "seed": seed,
        "ema": ema, "out": out,
        "threads": threads, "amp": amp, "data_root": data_root, "progress": progress, **extra})
    res = train_segmentation(cfg, resume=resume)
    if not res:  # a torchrun rank other than 0: rank 0 reports
        return
    _print_summary(res["test"], f"{model} on {res['data']} (test)")


def _check_layout(layout: str, mode: str = "resize") -> None:
    from medlite.data.segmentation import LAYOUTS, MODES

    if layout not in LAYOUTS:
        raise typer.BadParameter(f"--layout '{layout}': choose from {', '.join(LAYOUTS)}")
    if mode not in MODES:
        raise typer.BadParameter(f"--mode '{mode}': choose from {', '.join(MODES)}")


def _print_summary(summary: dict, title: str) -> None:
    print_table(title, ["metric", "mean", "std", "median", "cases"],
                [[k, f"{v['mean']:.4f}", f"{v['std']:.4f}", f"{v['median']:.4f}", str(v["n"])]
                 for k, v in summary.items()])


@seg_app.command("evaluate")
@checked
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights name "
                                            "(`medlite models`).")],
    data: Annotated[str, typer.Option(help="Another dataset folder to score every case of (default: the run's "
                                           "own test split).")] = "",
    layout: Annotated[str, typer.Option(help="Layout of --data.")] = "folder",
    tolerance: Annotated[float, typer.Option(help="NSD tolerance in pixels.")] = 2.0,
    out: Annotated[str, typer.Option(help="Folder for per_case.csv and cases.png (default: RUN/eval).")] = "",
    data_root: Annotated[str, typer.Option(help="Folder of built-in datasets (default $MEDLITE_DATA).")] = "",
    threads: Threads = 0,
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """Score a trained model (Dice, IoU, HD95, NSD at the original image size), per case and mean ± std."""
    use_threads(threads)
    import csv

    import torch

    from medlite.data.segmentation import build_split, find_pairs
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.engine.tasks.segment.evaluate import evaluate_original, predict_probs
    from medlite.engine.tasks.segment.train import SegTrainConfig, case_grid, load_seg_data

    _check_layout(layout)
    model, meta = load_kind(run, "segmentation", "medlite seg evaluate")
    model = model.to(memory_format=torch.channels_last)
    pre = meta["preprocessing"]
    cfg = SegTrainConfig.from_dict(meta["train_config"])
    if data_root:
        cfg.data_root = data_root
    if data:
        split = build_split(find_pairs(data, layout), pre["size"], pre.get("mode", "resize"))
    else:
        split = load_seg_data(cfg).test
    probs = predict_probs(model, split.images, pre["mean"], pre["std"])
    post = pre.get("postprocess", "none")  # the run's validation-chosen mask clean-up
    summary, cases = evaluate_original(probs, split, tolerance, post)
    out_dir = Path(out) if out else resolve_checkpoint(run).parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "per_case.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cases[0]))
        w.writeheader()
        w.writerows(cases)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    case_grid(out_dir / "cases.png", split, probs, cases, title=f"{meta['model']['name']} ({len(cases)} cases)",
              postprocess=post)
    _print_summary(summary, f"{run}")
    console.print(f"per-case metrics and cases.png in {out_dir}")
    if json_out:
        print_json(summary)


@seg_app.command("predict")
@checked
def predict(
    model: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint, exported .onnx file or "
                                              "zoo weights name.")],
    images: Annotated[list[str], typer.Argument(help="Image files (PNG, JPEG, BMP, TIFF, DICOM, NIfTI).")],
    out: Annotated[str, typer.Option(help="Output folder for NAME_mask.png and NAME_overlay.png.")] = "masks",
    explain: Annotated[bool, typer.Option(help="Also NAME_explain.png: Grad-CAM of the predicted mask (PyTorch "
                                               "checkpoints).")] = False,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = default).")] = 0,
    verbose: Verbose = False,
) -> None:
    """Segment images; write each mask (0/255 PNG) and an overlay with the lesion contour, both at the image's
    original size. Unreadable files are reported and skipped; the exit code is 1 if any file failed."""
    from medlite.engine.tasks.segment.predict import SegPredictor

    predictor = SegPredictor.load(resolve_weights(model), threads or None)
    failed = 0
    rows = []
    for path in images:
        try:
            r = predictor.predict_file(path, out, explain=explain)
        except MedliteError as e:  # an unreadable image: name it, do the others
            print_error(e)
            failed += 1
            continue
        rows.append([escape(path), f"{r['width']} x {r['height']}", str(r["pixels"]), f"{100 * r['fraction']:.1f}",
                     escape(str(r["mask"]))])
    print_table(escape(f"{len(images)} image(s) -> {out}"), ["image", "size (w x h)", "lesion pixels", "lesion %",
                                                             "mask"], rows)
    if failed:
        raise typer.Exit(1)


@seg_app.command("export")
@checked
def export(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights name "
                                            "(`medlite models`).")],
    out: Annotated[str, typer.Option(help="Output .onnx (default: RUN/export/MODEL.onnx).")] = "",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    threads: Threads = 0,
    verbose: Verbose = False,
) -> None:
    """Export a segmentation model to ONNX (fp32), checked against PyTorch; the file carries its
    preprocessing, so `medlite seg predict FILE.onnx IMAGE...` needs nothing else."""
    use_threads(threads)
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.export.onnx import export_onnx

    model, meta = load_kind(run, "segmentation", "medlite seg export")
    path = Path(out) if out else (Path("export") / f"{run}.onnx" if resolve_weights(run) != run
                                  else resolve_checkpoint(run).parent / "export" / f"{meta['model']['name']}.onnx")
    info = export_onnx(model, meta, path, opset=opset)
    console.print(f"wrote {info['path']} ({info['size_bytes'] / 1e6:.2f} MB, max |ORT - torch| "
                  f"{info['max_abs_diff']:.2e})")
