"""``medlite export``, ``medlite predict`` and ``medlite bench``: deploy a trained classifier and time it.

The work is done by :mod:`medlite.export.classifier`, :mod:`medlite.export.onnx` / ``.quantize`` /
``.executorch`` and :mod:`medlite.bench.latency`; this module parses options and prints. Exit codes: 0
success, 1 some inputs failed (``predict``), 2 nothing could be done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from medlite.cli.common import (
    CliError,
    JsonOut,
    Threads,
    Verbose,
    app,
    checked,
    console,
    err_console,
    load_kind,
    model_or_checkpoint,
    parse_ints,
    print_error,
    print_json,
    print_table,
    resolve_weights,
    use_threads,
)


# --------------------------------------------------------------------------------------------- export
@app.command()
@checked
def export(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights name to export.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx (fp32, checked against PyTorch), onnx-int8 "
                                     "(dynamic int8, needs no data), onnx-int8-static (QDQ int8 calibrated on "
                                     "training images), or executorch (.pte with XNNPACK for phones; needs "
                                     "`pip install medlite[mobile]`).")] = "onnx",
    out: Annotated[str, typer.Option(help="Output file (default: RUN/export/MODEL.onnx, .int8.onnx, "
                                          ".int8-static.onnx or .pte).")] = "",
    calib_samples: Annotated[int, typer.Option(help="Training images used to calibrate static int8.")] = 256,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    data: Annotated[str, typer.Option(help="Dataset for int8 calibration and the fp32 vs int8 comparison "
                                           "(default: the one the model was trained on).")] = "",
    data_root: Annotated[str, typer.Option(help="Data folder (default $MEDLITE_DATA).")] = "",
    compare: Annotated[bool, typer.Option(help="For int8 formats: compare test AUC / ACC with fp32 when the "
                                               "data is available.")] = True,
    threads: Threads = 0,
    verbose: Verbose = False,
) -> None:
    """Export a trained classifier to run without PyTorch: ONNX (fp32 or int8) or ExecuTorch. The file
    carries its preprocessing, task and label names, so `medlite predict FILE IMAGE...` needs nothing else.

    int8 formats also write the fp32 graph beside the output (STEM.fp32.onnx) and, when the training data
    can be loaded, compare AUC / ACC of fp32 and int8 on its test split."""
    use_threads(threads)
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.export.classifier import FORMATS, SUFFIXES, export_path, fp32_path

    if fmt not in FORMATS:
        raise CliError(f"unknown format '{fmt}'; choose from {', '.join(FORMATS)}")
    model, meta = load_kind(run, "classifier", "medlite export")
    zoo_name = resolve_weights(run) != run  # zoo weights live in the package: export into ./export/
    path = Path(out) if out else (Path("export") / f"{run}{SUFFIXES[fmt]}" if zoo_name
                                  else export_path(resolve_checkpoint(run), meta["model"]["name"], fmt))
    if fmt == "executorch":
        from medlite.export.executorch import export_executorch

        res = export_executorch(model, meta, path)
        console.print(f"wrote [bold]{res['path']}[/bold] ({res['size_bytes'] / 1e6:.2f} MB, "
                      f"max |ExecuTorch - PyTorch| = {res['max_abs_diff']:.1e}) and its metadata {res['sidecar']}")
        return
    from medlite.export import quantize
    from medlite.export.onnx import export_onnx

    ds = None  # loaded before the export: fail early when static int8 has no calibration data
    if fmt == "onnx-int8-static" or (compare and fmt != "onnx"):
        ds = _reference_data(meta, data, data_root, required=fmt == "onnx-int8-static")
    fp32 = path if fmt == "onnx" else fp32_path(path)
    res = export_onnx(model, meta, fp32, opset=opset)
    console.print(f"wrote [bold]{fp32}[/bold] ({res['size_bytes'] / 1e6:.2f} MB, opset {opset}, "
                  f"max |ONNX Runtime - PyTorch| = {res['max_abs_diff']:.1e})")
    if fmt == "onnx":
        return
    if fmt == "onnx-int8":
        quantize.quantize_dynamic_int8(fp32, path)
    else:
        from medlite.export.classifier import sample_inputs

        quantize.quantize_static_int8(fp32, path, sample_inputs(ds.train.images, calib_samples, meta["preprocessing"]))
    kind = "dynamic" if fmt == "onnx-int8" else f"static, {calib_samples} calibration images"
    console.print(f"wrote [bold]{path}[/bold] ({path.stat().st_size / 1e6:.2f} MB, int8 {kind})")
    if ds is not None:
        _print_int8_comparison(fp32, path, ds, meta)


def _reference_data(meta: dict, data: str, data_root: str, required: bool):
    """:func:`medlite.export.classifier.reference_data`; without it only the comparison is skipped."""
    from medlite.data.base import DataError
    from medlite.export.classifier import reference_data

    try:
        return reference_data(meta, data or None, data_root or None)
    except DataError as e:
        if required:
            raise DataError(f"static int8 needs calibration images from the training data: {e}") from e
        console.print(f"[yellow]note:[/yellow] no fp32 / int8 comparison ({e})")
        return None


def _print_int8_comparison(fp32: Path, int8: Path, ds, meta: dict) -> None:
    from medlite.export.classifier import sample_inputs
    from medlite.export.quantize import compare_on

    x = sample_inputs(ds.test.images, len(ds.test), meta["preprocessing"])
    q = compare_on(fp32, int8, x, ds.test.labels.numpy(), ds.task)
    rows = [[k, f"{q[k]['auc']:.4f}", f"{q[k]['acc']:.4f}"] for k in ("fp32", "int8")]
    print_table(f"fp32 vs int8 on {ds.name} test (n={q['n']})", ["model", "AUC", "ACC"],
                [*rows, ["change", f"{q['delta_auc']:+.4f}", f"{q['delta_acc']:+.4f}"]])
    console.print(f"same decision on {q['agreement']:.1%} of the test images")


# -------------------------------------------------------------------------------------------- predict
@app.command()
@checked
def predict(
    model: Annotated[str, typer.Argument(help="Exported .onnx file (runs on ONNX Runtime, no PyTorch needed), "
                                              "a run folder / .safetensors checkpoint, or zoo weights "
                                              "(`medlite models`).")],
    images: Annotated[list[str], typer.Argument(help="Image files: PNG, JPEG, BMP, TIFF, DICOM or NIfTI "
                                                     "(`scan.nii.gz::40` picks axial slice 40).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (file, label and probs, or error, per "
                                                          "image) instead of a table.")] = False,
    explain: Annotated[bool, typer.Option(help="Also save attention-rollout overlays into --out (checkpoints "
                                               "of MedLiT models only).")] = False,
    out: Annotated[str, typer.Option(help="Folder for the --explain overlays.")] = "explain",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = the runtime's default).")] = 0,
    verbose: Verbose = False,
) -> None:
    """Classify images and print each one's class probabilities. Unreadable or unsupported files are
    reported one per line and skipped; the exit code is 1 if any file failed. Files are read, classified
    and printed 64 at a time, so memory stays flat over thousands of files."""
    from medlite.export.classifier import iter_classify_files

    clf = _load_classifier(model, threads or None)
    failed = False
    if json_out:
        print("[", flush=True)  # plain print: stdout is pure JSON (written as results come), notes go to stderr
    for b, (results, loaded) in enumerate(iter_classify_files(clf, images, batch_size=64)):
        failed |= any("error" in r for r in results)
        if json_out:
            body = ",\n".join(json.dumps(r, indent=2) for r in results)
            print(("" if b == 0 else ",\n") + body, end="", flush=True)
        else:
            _print_predictions(results, clf, model, part=b if len(images) > 64 else None)
        if explain:
            _explain(clf, loaded, out, err_console if json_out else console)
    if json_out:
        print("\n]")
    if failed:
        raise typer.Exit(1)


def _load_classifier(path: str, threads: int | None):
    """An exported ``.onnx`` file on ONNX Runtime, or a checkpoint file / run folder in PyTorch."""
    from medlite.errors import ModelFileError

    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        from medlite.export.runtime import OnnxClassifier

        return OnnxClassifier(path, threads=threads)
    if suffix == ".pte":
        raise ModelFileError(f"{path}: .pte programs run in ExecuTorch apps; predict with the .onnx export or "
                             "the checkpoint")
    from medlite.export.classifier import TorchClassifier

    return TorchClassifier(*load_kind(path, "classifier", "medlite predict"), threads=threads)


def _print_predictions(results: list[dict], clf, model_path: str, part: int | None = None) -> None:
    names = clf.label_names
    wide = len(names) <= 8
    rows = []
    for r in results:
        if "error" in r:
            continue
        label = (", ".join(r["label"]) or "(none)") if isinstance(r["label"], list) else r["label"]
        if wide:
            cells = [f"{r['probs'][n]:.3f}" for n in names]
        else:
            top = sorted(r["probs"].items(), key=lambda kv: -kv[1])[:3]
            cells = [", ".join(f"{k} {v:.3f}" for k, v in top)]
        rows.append([escape(r["file"]), escape(label), *cells])
    if rows:
        columns = ["image", "prediction", *(names if wide else ["top 3"])]
        title = f"{clf.meta['model']['name']} ({Path(model_path).name}), task {clf.task}"
        print_table(title if part is None else f"{title}, files {64 * part + 1}-{64 * part + len(results)}",
                    [escape(c) for c in columns], rows, {i: "right" for i in range(2, len(columns))})
    for r in results:
        if "error" in r:
            print_error(r["error"])


def _explain(clf, loaded: list, out_dir: str, notes: Console) -> None:
    model = getattr(clf, "model", None)
    if model is None or not hasattr(model, "attention_maps"):
        notes.print("[yellow]note:[/yellow] --explain needs a checkpoint of a model with attention maps "
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
        notes.print(f"overlay written to [bold]{dest}[/bold]")


# ---------------------------------------------------------------------------------------------- bench
@app.command()
@checked
def bench(
    models: Annotated[list[str], typer.Argument(help="Model names (see `medlite models`; built untrained) "
                                                     "or checkpoints / run folders.")],
    size: Annotated[int, typer.Option(help="Input size in pixels for model names.")] = 28,
    threads: Annotated[str, typer.Option(help="Comma-separated CPU thread counts to time.")] = "1,2",
    runtime: Annotated[str, typer.Option(help="Comma-separated runtimes: torch, onnx, onnx-int8, "
                                              "onnx-int8-static, executorch.",
                                         show_default="torch, onnx, onnx-int8, executorch")]
    = "torch,onnx,onnx-int8,executorch",
    batch_size: Annotated[int, typer.Option("--batch-size", "--batch",
                                            help="Batch size of the throughput measurement.")] = 64,
    warmup: Annotated[int, typer.Option(help="Untimed calls per candidate.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed batch-1 calls per candidate (interleaved).")] = 50,
    in_chans: Annotated[int, typer.Option(help="Input channels for model names.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Classes for model names.")] = 2,
    out: Annotated[str, typer.Option(help="Also write the table as Markdown to this file.")] = "",
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """Time models on this CPU: batch-1 latency (median, p90), throughput, parameters, MACs, peak memory and
    file size per runtime and thread count, candidates interleaved so that ratios hold on a busy machine."""
    from medlite.bench.latency import RUNTIMES, format_rows, legend, to_markdown
    from medlite.bench.latency import bench as run_bench

    thread_counts = parse_ints(threads, "--threads")
    if not thread_counts:
        raise typer.BadParameter("--threads: give at least one thread count")
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise CliError(f"unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}")
    models = [model_or_checkpoint(spec) for spec in models]
    rows = run_bench(models, size=size, threads=thread_counts, runtimes=runtimes, batch_for_throughput=batch_size,
                     warmup=warmup, repeats=repeats, in_chans=in_chans, num_classes=num_classes)
    header, cells = format_rows(rows)
    print_table(f"CPU inference ({os.cpu_count()} logical CPUs)", header, [[escape(c) for c in r] for r in cells],
                {i: "right" for i in range(2, len(header))})
    console.print(legend(rows))
    if json_out:
        print_json(rows)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(to_markdown(rows))
        console.print(f"wrote [bold]{out}[/bold]")
