"""``medlite sam``: train, evaluate, run and export LiteSAM promptable segmenters."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

sam_app = typer.Typer(help="LiteSAM: box-, point- and scribble-prompted segmentation on a CPU.",
                      no_args_is_help=True)
console = Console()


def _checked(fn, *args, **kwargs):
    from medlite.data.base import DataError
    from medlite.engine.checkpoint import CheckpointError

    try:
        return fn(*args, **kwargs)
    except (DataError, CheckpointError, FileNotFoundError, KeyError, ValueError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)


def _floats(text: str, n: int, what: str) -> list[float]:
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError as e:
        raise typer.BadParameter(f"{what} must be {n} comma-separated numbers; got '{text}'") from e
    if len(v) != n:
        raise typer.BadParameter(f"{what} must be {n} comma-separated numbers; got '{text}'")
    return v


@sam_app.command()
def train(
    model: Annotated[str, typer.Option(help="LiteSAM variant (litesam_swin_t, litesam_swin_xs, litemedsam...).")]
    = "litesam_swin_xs",
    data: Annotated[list[str], typer.Option(help="Dataset: busi, ph2, <layout>:<root> or npz:<dir>; repeat to "
                                                 "combine.")] = ["busi", "ph2"],  # noqa: B006
    fold: Annotated[int, typer.Option(help="Fold of k-fold datasets (PH2).")] = 0,
    epochs: int = 16,
    batch_size: int = 8,
    lr: float = 5e-4,
    augment: Annotated[str, typer.Option(help="none / light / strong.")] = "light",
    teacher: Annotated[str, typer.Option(help="Checkpoint to distil image embeddings from (MSE).")] = "",
    distill_weight: float = 1.0,
    time_budget: Annotated[float, typer.Option(help="Fit the schedule into this many seconds (0: off).")] = 0.0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    out_dir: str = "runs/sam",
    name: Annotated[str, typer.Option(help="Run folder name (default: the model name).")] = "",
    seed: int = 0,
) -> None:
    """Train LiteSAM on prompts sampled from ground-truth masks (resumes an interrupted run)."""
    from medlite.engine.tasks.promptable.train import SamTrainConfig, train_sam

    _logging()
    cfg = SamTrainConfig(model=model, datasets=tuple(data), fold=fold, epochs=epochs, batch_size=batch_size, lr=lr,
                         augment=augment, teacher=teacher or None, distill_weight=distill_weight,
                         time_budget_s=time_budget or None, threads=threads, out_dir=out_dir, name=name or None,
                         seed=seed)
    res = _checked(train_sam, cfg)
    console.print(f"trained {model}: {res['steps']} steps, best val Dice {res['best_val_dice']:.4f} -> "
                  f"{cfg.run_dir()}")


@sam_app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    data: Annotated[str, typer.Option(help="Dataset: busi, ph2, <layout>:<root>, or npz:<dir> of challenge "
                                           "cases.")] = "busi",
    split: Annotated[str, typer.Option(help="train / val / test.")] = "test",
    prompt: Annotated[str, typer.Option(help="Comma-separated: box, point.")] = "box,point",
    fold: int = 0,
    threads: int = 1,
    out: Annotated[str, typer.Option(help="Write per-case results JSON here.")] = "",
) -> None:
    """Challenge DSC / NSD (NSD at 2 px where DSC > 0.2) at the original size, and CPU time per image."""
    import torch

    from medlite.engine.checkpoint import load_model
    from medlite.engine.tasks.promptable import evaluate_sam, load_dataset

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, meta = _checked(load_model, run)
    load_s = time.perf_counter() - t0
    ds = _checked(load_dataset, data, model.cfg.img_size, fold)
    res = _checked(evaluate_sam, model, getattr(ds, split), tuple(p.strip() for p in prompt.split(",")))
    for k, v in res.items():
        if isinstance(v, dict):
            console.print(f"{k:6s} DSC {v['dsc']['mean']:.4f} ± {v['dsc']['std']:.4f}  NSD {v['nsd']['mean']:.4f} "
                          f"± {v['nsd']['std']:.4f}  (n={v['dsc']['n']}, decoder {v['decoder_ms']:.1f} ms)")
    console.print(f"model load {load_s:.2f} s, encoder {res['encoder_ms']:.1f} ms per image")
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
def predict(
    model: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    image: Annotated[str, typer.Argument(help="Image (PNG/JPEG/BMP/TIFF/DICOM/NIfTI) or a challenge .npz case.")],
    box: Annotated[str, typer.Option(help="x0,y0,x1,y1 in image pixels.")] = "",
    point: Annotated[list[str], typer.Option(help="x,y,label (label 1 inside, 0 outside); repeatable.")] = [],  # noqa: B006
    scribble: Annotated[str, typer.Option(help="Scribble image: white = foreground strokes, mid-grey (128) = "
                                               "background strokes.")] = "",
    out: Annotated[str, typer.Option(help="Output folder.")] = "sam_out",
    threads: int = 1,
) -> None:
    """Segment one image for one prompt (or every box of a challenge .npz case); writes the mask at the
    original size, an overlay and a JSON with the predicted IoU and the CPU time (model load included)."""
    import torch

    from medlite.data.segmentation import read_rgb
    from medlite.engine.checkpoint import load_model
    from medlite.models.litesam import LiteSAMPredictor

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    net, _ = _checked(load_model, model)
    p = LiteSAMPredictor(net)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    src = Path(image)
    if src.suffix == ".npz":
        from medlite.data.npz import masks_to_labels, read_npz, write_npz

        case = _checked(read_npz, src)
        p.set_image(case["imgs"])
        masks, ious = p.predict_boxes(case["boxes"])
        write_npz(out_dir / src.name, segs=masks_to_labels(masks) if len(masks) else
                  np.zeros(case["imgs"].shape[:2], np.uint16), boxes=case["boxes"])
        info = {"case": src.name, "boxes": len(masks), "iou_pred": ious.tolist(), "seconds": time.perf_counter() - t0}
    else:
        img = _checked(read_rgb, src)
        pts = [_floats(s, 3, "--point") for s in point]
        scr = None
        if scribble:
            s = np.asarray(_checked(read_rgb, scribble))[:, :, 0]
            scr = np.where(s > 191, 1.0, np.where(s > 63, -1.0, 0.0)).astype(np.float32)
        if not box and not pts and scr is None:
            raise typer.BadParameter("give a prompt: --box, --point or --scribble")
        p.set_image(img)
        mask, iou = _checked(p.predict, box=_floats(box, 4, "--box") if box else None,
                             points=[q[:2] for q in pts] or None, point_labels=[q[2] for q in pts] or None,
                             scribble=scr)
        _save_mask(out_dir / f"{src.stem}_mask.png", mask)
        _overlay(out_dir / f"{src.stem}_overlay.png", img, mask)
        info = {"image": str(src), "iou_pred": iou, "area_px": int(mask.sum()), "seconds": time.perf_counter() - t0}
    (out_dir / f"{src.stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    console.print(f"wrote {out_dir} ({info['seconds']:.2f} s including model load)")


@sam_app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    out: Annotated[str, typer.Option(help="Folder for encoder.onnx and decoder.onnx.")] = "",
    opset: int = 17,
) -> None:
    """Export the image encoder and the prompt decoder as two ONNX graphs, parity-checked against PyTorch."""
    from medlite.engine.checkpoint import load_model, resolve_checkpoint
    from medlite.export.sam_onnx import export_litesam

    net, meta = _checked(load_model, run)
    dest = out or str(resolve_checkpoint(run).parent / "onnx")
    res = export_litesam(net, meta, dest, opset=opset)
    console.print(f"encoder {res['encoder']} (max |ORT - torch| {res['encoder_max_abs_diff']:.1e}), decoder "
                  f"{res['decoder']} ({res['decoder_max_abs_diff']:.1e})")
