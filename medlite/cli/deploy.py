"""What ``medlite export``, ``medlite predict`` and ``medlite bench`` do, as plain functions.

Each prints with rich and returns a process exit code (0 success, 1 some inputs failed, 2 nothing could be
done), so ``medlite.cli`` only parses options. Errors users can cause (bad paths, corrupt images, missing
data) are printed as one red line naming the file, never as a traceback.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from medlite.data.io import ImageReadError, read_image
from medlite.export.meta import ExportError, ModelFileError
from medlite.export.runtime import Classifier, OnnxClassifier, describe

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-int8", "onnx-int8-static", "executorch")
_NARROW_COLUMNS = ("model", "runtime", "threads", "batch-1 median (ms)", "p90 (ms)", "throughput (img/s)",
                   "peak RSS (MB)", "file (MB)")
_SUFFIX = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "onnx-int8-static": ".int8-static.onnx",
           "executorch": ".pte"}


class TorchClassifier(Classifier):
    """A checkpoint (file or run folder) in PyTorch, with the same API as :class:`OnnxClassifier`."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import torch

        from medlite.engine.checkpoint import load_model

        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.meta = load_model(path)

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        import torch

        from medlite.export.runtime import probabilities

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return probabilities(logits.float().numpy(), self.task)


def load_classifier(path: str | os.PathLike, threads: int | None = None) -> Classifier:
    """An exported ``.onnx`` file (ONNX Runtime) or a checkpoint file / run folder (PyTorch)."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return OnnxClassifier(p, threads=threads)
    if p.suffix.lower() == ".pte":
        raise ModelFileError(f"{p}: .pte programs run in ExecuTorch apps; predict with the .onnx export or "
                             "the checkpoint")
    return TorchClassifier(p, threads=threads)


def _user_errors() -> tuple[type[Exception], ...]:
    from medlite.data.base import DataError
    from medlite.engine.checkpoint import CheckpointError

    return (ExportError, ModelFileError, ImageReadError, DataError, CheckpointError, FileNotFoundError)


# --------------------------------------------------------------------------------------------- export
def export_cmd(
    run: str | os.PathLike,
    format: str = "onnx",
    out: str | os.PathLike | None = None,
    calib_samples: int = 256,
    opset: int = 18,
    data: str | None = None,
    data_root: str | None = None,
    compare: bool = True,
    console: Console | None = None,
) -> int:
    """Export a checkpoint / run folder to ``format`` (one of :data:`FORMATS`).

    Default output: ``<run folder>/export/<model><suffix>``. int8 formats also write the fp32 file beside
    the output (``<stem>.fp32.onnx``) and, when the training data can be loaded (``data`` or the dataset
    recorded in the checkpoint), compare AUC / ACC of fp32 and int8 on its test split. Static int8 is
    calibrated on ``calib_samples`` random training images and needs that data.
    """
    console = console or Console()
    if format not in FORMATS:
        console.print(f"[red]error:[/red] unknown format '{format}'; choose from {', '.join(FORMATS)}")
        return 2
    try:
        return _export(run, format, out, calib_samples, opset, data, data_root, compare, console)
    except (*_user_errors(), ImportError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2


def _export(run, format, out, calib_samples, opset, data, data_root, compare, console) -> int:
    from medlite.engine.checkpoint import load_model, resolve_checkpoint

    model, meta = load_model(run)
    name = meta["model"]["name"]
    ckpt = resolve_checkpoint(run)
    out = Path(out) if out else ckpt.parent / "export" / f"{name}{_SUFFIX[format]}"
    if format == "executorch":
        from medlite.export.executorch import export_executorch

        res = export_executorch(model, meta, out)
        console.print(f"wrote [bold]{res['path']}[/bold] ({res['size_bytes'] / 1e6:.2f} MB, "
                      f"max |ExecuTorch - PyTorch| = {res['max_abs_diff']:.1e}) and its metadata "
                      f"{res['sidecar']}")
        return 0
    from medlite.export import quantize
    from medlite.export.onnx import export_onnx

    ds = None
    need_data = format == "onnx-int8-static"
    if need_data or (compare and format != "onnx"):  # before the export: fail early without data
        ds = _load_data(meta, data, data_root, required=need_data, console=console)
    fp32 = out if format == "onnx" else out.with_name(out.name.split(".")[0] + ".fp32.onnx")
    res = export_onnx(model, meta, fp32, opset=opset)
    console.print(f"wrote [bold]{fp32}[/bold] ({res['size_bytes'] / 1e6:.2f} MB, opset {opset}, "
                  f"max |ONNX Runtime - PyTorch| = {res['max_abs_diff']:.1e})")
    if format == "onnx":
        return 0
    if format == "onnx-int8":
        quantize.quantize_dynamic_int8(fp32, out)
    else:
        calib = _sample(ds.train.images, calib_samples, meta)
        quantize.quantize_static_int8(fp32, out, calib)
    console.print(f"wrote [bold]{out}[/bold] ({out.stat().st_size / 1e6:.2f} MB, int8 "
                  f"{'dynamic' if format == 'onnx-int8' else f'static, {calib_samples} calibration images'})")
    if ds is not None:
        x = _sample(ds.test.images, len(ds.test), meta)
        q = quantize.compare_on(fp32, out, x, ds.test.labels.numpy(), ds.task)
        table = Table(title=f"fp32 vs int8 on {ds.name} test (n={q['n']})")
        for col in ("", "AUC", "ACC"):
            table.add_column(col)
        for k in ("fp32", "int8"):
            table.add_row(k, f"{q[k]['auc']:.4f}", f"{q[k]['acc']:.4f}")
        table.add_row("change", f"{q['delta_auc']:+.4f}", f"{q['delta_acc']:+.4f}")
        console.print(table)
        console.print(f"same decision on {q['agreement']:.1%} of the test images")
    return 0


def _load_data(meta: dict, data: str | None, data_root: str | None, required: bool, console: Console):
    """The dataset to calibrate / compare on: ``data``, else the one the checkpoint was trained on."""
    from medlite.data import load_classification
    from medlite.data.base import DataError
    from medlite.data.medmnist import MEDMNIST

    d = meta.get("data", {})
    spec = data or (d.get("name") if d.get("name") in MEDMNIST else d.get("source"))
    try:
        if not spec:
            raise DataError("the checkpoint records no dataset; pass --data")
        ds = load_classification(spec, size=int(meta["preprocessing"]["size"]), root=data_root or None)
        if ds.channels != int(meta["preprocessing"]["channels"]):
            raise DataError(f"{spec}: {ds.channels}-channel images; the model expects "
                            f"{meta['preprocessing']['channels']}")
        return ds
    except DataError as e:
        if required:
            raise DataError(f"static int8 needs calibration images from the training data: {e}") from e
        console.print(f"[yellow]note:[/yellow] no fp32 / int8 comparison ({e})")
        return None


def _sample(images, n: int, meta: dict) -> np.ndarray:
    """Up to ``n`` images (seeded random choice), normalised as the model expects: (n, C, S, S) float32."""
    from medlite.data.transforms import to_float

    pre = meta["preprocessing"]
    idx = np.sort(np.random.default_rng(0).permutation(len(images))[:n])
    return to_float(images[idx], pre["mean"], pre["std"]).numpy().astype(np.float32)


# -------------------------------------------------------------------------------------------- predict
def predict_cmd(
    model_path: str | os.PathLike,
    images: Sequence[str],
    json_out: bool = False,
    explain: bool = False,
    out_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    console: Console | None = None,
) -> int:
    """Classify image files; a table (or JSON with ``json_out``) of class probabilities per image.

    Unreadable images are reported one per line and skipped; the exit code is 1 if any failed.
    ``explain`` writes an attention-rollout overlay per image into ``out_dir`` (checkpoints of models with
    attention maps, e.g. MedLiT, only).
    """
    console = console or Console()
    notes = Console(stderr=True) if json_out else console  # keep stdout pure JSON
    try:
        clf = load_classifier(model_path, threads=threads)
    except (*_user_errors(), ImportError) as e:
        notes.print(f"[red]error:[/red] {e}")
        return 2
    results: list[dict[str, Any]] = []
    inputs, loaded = [], []
    for path in images:
        try:
            img = read_image(path)
            inputs.append(clf.preprocess(img))
            loaded.append((path, img))
        except ImageReadError as e:
            results.append({"file": str(path), "error": str(e)})
    if inputs:
        probs = clf.predict_array(np.concatenate(inputs))
        for (path, _), res in zip(loaded, describe(probs, clf.task, clf.label_names), strict=True):
            results.append({"file": str(path), **res})
    order = {str(p): i for i, p in enumerate(images)}
    results.sort(key=lambda r: order.get(r["file"], 0))
    if json_out:
        print(json.dumps(results, indent=2))
    else:
        _print_predictions(results, clf, model_path, console)
    if explain:
        _explain(clf, loaded, out_dir, notes)
    return 1 if any("error" in r for r in results) else 0


def _print_predictions(results: list[dict], clf: Classifier, model_path, console: Console) -> None:
    names = clf.label_names
    wide = len(names) <= 8
    table = Table(title=f"{clf.meta['model']['name']} ({Path(model_path).name}), task {clf.task}")
    table.add_column("image", overflow="fold")
    table.add_column("prediction")
    for n in names if wide else ["top 3"]:
        table.add_column(n, justify="right")
    for r in results:
        if "error" in r:
            continue
        label = (", ".join(r["label"]) or "(none)") if isinstance(r["label"], list) else r["label"]
        if wide:
            cells = [f"{r['probs'][n]:.3f}" for n in names]
        else:
            top = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:3]
            cells = [", ".join(f"{k} {v:.3f}" for k, v in top)]
        table.add_row(r["file"], label, *cells)
    if table.row_count:
        console.print(table)
    for r in results:
        if "error" in r:
            console.print(f"[red]error:[/red] {r['error']}", soft_wrap=True)  # whole paths, copy-pastable


def _explain(clf: Classifier, loaded: list, out_dir, console: Console) -> None:
    model = getattr(clf, "model", None)
    if model is None or not hasattr(model, "attention_maps"):
        console.print("[yellow]note:[/yellow] --explain needs a checkpoint of a model with attention maps "
                      "(MedLiT); the ONNX graph and CNNs have none. No overlays written.")
        return
    import torch

    from medlite.explain import rollout_heatmap
    from medlite.report.plots import plot_attention_overlay

    out = Path(out_dir or "explain")
    out.mkdir(parents=True, exist_ok=True)
    for path, img in loaded:
        x = torch.from_numpy(clf.preprocess(img))
        heat = rollout_heatmap(model, x)[0].numpy()
        probs = clf.predict_array(x.numpy())[0]
        dest = out / f"{Path(str(path).split('::')[0]).name.split('.')[0]}_explain.png"
        plot_attention_overlay(img, heat, probs, clf.label_names, dest, title=Path(str(path)).name)
        console.print(f"overlay written to [bold]{dest}[/bold]")


# ---------------------------------------------------------------------------------------------- bench
def bench_cmd(
    models: Sequence[str],
    size: int = 28,
    threads: Sequence[int] = (1, 2),
    runtimes: Sequence[str] = ("torch", "onnx", "onnx-int8", "executorch"),
    batch: int = 64,
    warmup: int = 10,
    repeats: int = 50,
    out: str | os.PathLike | None = None,
    in_chans: int = 1,
    num_classes: int = 2,
    console: Console | None = None,
) -> int:
    """Run :func:`medlite.bench.latency.bench`, print the table and write it as Markdown to ``out``."""
    from medlite.bench.latency import RUNTIMES, bench, format_rows, legend, to_markdown

    console = console or Console()
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        console.print(f"[red]error:[/red] unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
        return 2
    try:
        rows = bench(models, size=size, threads=threads, runtimes=runtimes, batch_for_throughput=batch,
                     warmup=warmup, repeats=repeats, in_chans=in_chans, num_classes=num_classes)
    except (*_user_errors(), KeyError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    header, cells = format_rows(rows)
    keep = list(range(len(header)))
    if console.width < 160:  # a narrow terminal: the columns that fit; the full table goes to --out
        keep = [i for i, h in enumerate(header) if h in _NARROW_COLUMNS]
    table = Table(title=f"CPU inference ({os.cpu_count()} logical CPUs)")
    for i in keep:
        table.add_column(header[i], justify="left" if i < 2 else "right", overflow="fold")
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    console.print(legend(rows))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(to_markdown(rows))
        console.print(f"wrote [bold]{out}[/bold]")
    return 0
