"""The medlite command line: one Typer app, ``medlite <command> --help`` for each command."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

app = typer.Typer(
    help="medlite: lightweight medical-image AI that trains on a laptop CPU and runs on a phone.\n\n"
    "Typical use: `medlite datasets` to see the data, `medlite train resnet18 --data breastmnist` to train, "
    "`medlite evaluate runs/<run>` to evaluate, `medlite export runs/<run>` to deploy.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)
console = Console()


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)], force=True)


def _parse_kv(items: list[str] | None) -> dict:
    """``["embed_dim=96", "drop=0.1"]`` -> ``{"embed_dim": 96, "drop": 0.1}`` (values parsed as JSON)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"'{item}' is not KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@app.command()
def datasets(
    root: Annotated[str, typer.Option(help="Data folder (default: $MEDLITE_DATA, else ~/.medlite/data).")] = "",
) -> None:
    """List the 12 MedMNIST 2D subsets: task, classes, channels, official split sizes, and whether each is
    available locally."""
    from medlite.data.base import data_root
    from medlite.data.medmnist import MEDMNIST, find_subset_file

    base = data_root(root or None)
    table = Table(title=f"MedMNIST 2D subsets (local folder: {base})")
    table.add_column("name", no_wrap=True)
    for col in ("task", "classes", "channels", "train / val / test", "local file"):
        table.add_column(col)
    for name, info in MEDMNIST.items():
        found = find_subset_file(name, 28, base)
        sizes = " / ".join(str(info.n_samples[s]) for s in ("train", "val", "test"))
        table.add_row(name, info.task, str(len(info.label_names)), str(info.channels), sizes,
                      str(found) if found else "[dim]missing (medlite train ... --download)[/dim]")
    console.print(table)
    console.print("Your own data: `--data FOLDER` (one subfolder per class, optionally inside "
                  "train/ val/ test/) or `--data FILE.csv` (columns path,label[,split]).")


@app.command()
def models(
    family: Annotated[str, typer.Option(help="Only this family (baseline, medlit, ...).")] = "",
    size: Annotated[int, typer.Option(help="Input size used to count parameters.")] = 0,
) -> None:
    """List registered models with their parameter counts and descriptions."""
    import medlite

    table = Table(title="medlite models")
    table.add_column("name", no_wrap=True)
    for col in ("family", "params (2 classes, 3 ch)", "default size", "description"):
        table.add_column(col)
    for name in medlite.list_models(family or None):
        card = medlite.model_card(name)
        m = medlite.create_model(name, num_classes=2, in_chans=3, img_size=size or card.default_size)
        n = sum(p.numel() for p in m.parameters())
        table.add_row(name, card.family, f"{n / 1e6:.2f} M", str(card.default_size), card.description)
    console.print(table)


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name (see `medlite models`), e.g. resnet18, medlit_nano_28.")],
    data: Annotated[str, typer.Option(help="MedMNIST subset name (e.g. breastmnist), or a path: .npz, "
                                           ".csv (path,label[,split]) or a folder with one subfolder per class.")],
    size: Annotated[int, typer.Option(help="Input size in pixels; images are resized to size x size.")] = 28,
    epochs: Annotated[int, typer.Option(help="Training epochs (MedMNIST paper: 100).")] = 100,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    optimizer: Annotated[str, typer.Option(help="adam or adamw.")] = "adam",
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    schedule: Annotated[str, typer.Option(help="step (x0.1 at 50 % and 75 % of epochs, the MedMNIST "
                                               "recipe) or cosine (warmup + cosine).")] = "step",
    warmup_epochs: Annotated[float, typer.Option(help="Linear warmup in epochs.")] = 0.0,
    augment: Annotated[str, typer.Option(help="none, flip, or light (flip + small affine); batched.")] = "none",
    seed: Annotated[int, typer.Option(help="Random seed (init, batch order, augmentation, data split).")] = 0,
    out: Annotated[str, typer.Option(help="Run folder (default runs/MODEL-DATA-sSEED).")] = "",
    init: Annotated[str, typer.Option(help="Initialise from this checkpoint (e.g. `medlite pretrain` "
                                           "output).")] = "",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out after an interruption.")] = False,
    download: Annotated[bool, typer.Option(help="Download a missing MedMNIST subset (with MD5 check).")] = False,
    data_root: Annotated[str, typer.Option(help="Data folder (default $MEDLITE_DATA).")] = "",
    model_opt: Annotated[list[str] | None, typer.Option(help="Model option KEY=VALUE (repeatable).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    amp: Annotated[str, typer.Option(help="Training precision: none (fp32), bf16 (autocast; about 1.7x for "
                                          "medlit_seed on CPUs with AVX512-BF16/AMX) or auto.")] = "none",
    tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Train a classifier, keep the best-validation-AUC checkpoint, evaluate it on test.

    Runs on one process; for several, launch with `torchrun --nproc_per_node N -m medlite train ...`.
    """
    from medlite.engine.tasks.classify import TrainConfig
    from medlite.engine.tasks.classify import train as run_train

    _setup_logging(verbose)
    cfg = TrainConfig(model=model, data=data, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, schedule=schedule,
                      warmup_epochs=warmup_epochs, augment=augment, seed=seed, out=out, init=init,
                      download=download, data_root=data_root, model_kwargs=_parse_kv(model_opt),
                      threads=threads, compile=compile, amp=amp, tensorboard=tensorboard, progress=progress)
    results = _run_checked(run_train, cfg, resume=resume)
    if results:
        console.print(Markdown(Path(results["run_dir"], "report.md").read_text()))


def _run_checked(fn, *args, **kwargs):
    """Run ``fn``, turning user-facing errors (bad data, bad checkpoints) into one clear line."""
    from medlite.data.base import DataError
    from medlite.engine.checkpoint import CheckpointError

    try:
        return fn(*args, **kwargs)
    except (DataError, CheckpointError, FileNotFoundError, KeyError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint.")],
    data: Annotated[str, typer.Option(help="Dataset to evaluate on (default: the one it was trained on).")] = "",
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for 95 % CIs.")] = 1000,
    out: Annotated[str, typer.Option(help="Folder for evaluation.json and ROC / confusion PNGs.")] = "",
    data_root: Annotated[str, typer.Option(help="Data folder (default $MEDLITE_DATA).")] = "",
) -> None:
    """Evaluate a trained classifier with the official MedMNIST AUC/ACC and bootstrap 95 % CIs."""
    _run_checked(_evaluate, run, data, split, n_boot, out, data_root)


def _evaluate(run, data, split, n_boot, out, data_root):
    from medlite.data import load_classification
    from medlite.engine.checkpoint import load_model
    from medlite.engine.evaluate import evaluate_split

    model, meta = load_model(run)
    pre, dmeta = meta["preprocessing"], meta["data"]
    from medlite.data.medmnist import MEDMNIST

    spec = data or (dmeta["name"] if dmeta["name"] in MEDMNIST else dmeta["source"])
    ds = load_classification(spec, size=pre["size"], root=data_root or None)
    if ds.channels != pre["channels"]:
        raise typer.BadParameter(f"{data}: {ds.channels}-channel images, the model expects {pre['channels']}")
    if ds.num_classes != meta["model"]["num_classes"]:
        raise typer.BadParameter(f"{data}: {ds.num_classes} classes, the model has {meta['model']['num_classes']}")
    rep, probs, labels = evaluate_split(model, ds.splits()[split], pre["mean"], pre["std"], ds.task, n_boot,
                                        label_names=ds.label_names)
    table = Table(title=f"{meta['model']['name']} on {ds.name} ({split}, n={rep['n']})")
    for col in ("metric", "value", "95 % CI"):
        table.add_column(col)
    for k in ("auc", "acc"):
        table.add_row(k.upper(), f"{rep[k]:.4f}", f"{rep[k + '_ci'][0]:.4f} – {rep[k + '_ci'][1]:.4f}")
    console.print(table)
    if out:
        from medlite.report.plots import plot_confusion, plot_roc

        od = Path(out)
        od.mkdir(parents=True, exist_ok=True)
        (od / "evaluation.json").write_text(json.dumps(rep, indent=2, default=float) + "\n")
        plot_roc(labels, probs, ds.task, ds.label_names, od / "roc.png")
        if ds.task != "multi-label":
            plot_confusion(labels, probs, ds.task, ds.label_names, od / "confusion.png")
        console.print(f"wrote {od}/evaluation.json, roc.png, confusion.png")


@app.command()
def pretrain(
    model: Annotated[str, typer.Argument(help="MedLiT model to pretrain, e.g. medlit_nano_28.")],
    data: Annotated[str, typer.Option(help="Comma-separated subsets or paths; their TRAIN splits are pooled "
                                           "(grey images repeated to 3 channels).")] = "breastmnist",
    size: Annotated[int, typer.Option(help="Input size in pixels.")] = 28,
    epochs: Annotated[int, typer.Option(help="Epochs over the pooled train images.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warmup + cosine).")] = 1.5e-3,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of patches hidden from the encoder.")] = 0.75,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[str, typer.Option(help="Run folder (default runs/mae-MODEL-sSEED).")] = "",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    data_root: Annotated[str, typer.Option(help="Data folder (default $MEDLITE_DATA).")] = "",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Masked-autoencoder pretraining of a MedLiT encoder (mask 75 %, light decoder, normalised-pixel
    loss). Fine-tune the result with `medlite train MODEL --init RUN/encoder.safetensors`."""
    from medlite.engine.tasks.mae import PretrainConfig
    from medlite.engine.tasks.mae import pretrain as run_pretrain

    _setup_logging(False)
    cfg = PretrainConfig(model=model, data=data, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
                         mask_ratio=mask_ratio, seed=seed, out=out, data_root=data_root, threads=threads,
                         progress=progress)
    res = _run_checked(run_pretrain, cfg, resume=resume)
    console.print(f"encoder written to [bold]{res['encoder']}[/bold] (final MAE loss {res['final_loss']:.4f}); "
                  f"fine-tune with `medlite train {model} --data SUBSET --init {res['encoder']}`")


@app.command()
def explain(
    run: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint of a MedLiT (ViT) model.")],
    image: Annotated[str, typer.Argument(help="Image file: PNG, JPEG, BMP, TIFF, DICOM or NIfTI (`file::slice`).")],
    out: Annotated[str, typer.Option(help="Output PNG (default IMAGE_explain.png in the run folder).")] = "",
    discard_ratio: Annotated[float, typer.Option(help="Rollout: drop this fraction of the weakest "
                                                      "attention links per layer.")] = 0.0,
) -> None:
    """Save the image with an attention-rollout heat map overlaid, and the predicted class probabilities."""
    _run_checked(_explain, run, image, out, discard_ratio)


def _explain(run, image, out, discard_ratio):
    import torch

    from medlite.data.io import ImageReadError, read_image, to_model_input
    from medlite.engine.checkpoint import load_model, resolve_checkpoint
    from medlite.engine.evaluate import probabilities
    from medlite.explain import rollout_heatmap
    from medlite.report.plots import plot_attention_overlay

    model, meta = load_model(run)
    if not hasattr(model, "attention_maps"):
        console.print(f"[red]error:[/red] {meta['model']['name']} has no attention maps; `explain` needs a "
                      "MedLiT (or other ViT-style) model")
        raise typer.Exit(2)
    pre = meta["preprocessing"]
    try:
        img = read_image(image)
    except ImageReadError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    x = torch.from_numpy(to_model_input(img, pre["size"], pre["channels"], pre["mean"], pre["std"]))
    with torch.no_grad():
        probs = probabilities(model(x), meta["data"]["task"])[0].numpy()
    heat = rollout_heatmap(model, x, discard_ratio)[0].numpy()
    names = meta["data"]["label_names"]
    path = Path(out) if out else resolve_checkpoint(run).parent / f"{Path(image.split('::')[0]).stem}_explain.png"
    plot_attention_overlay(img, heat, probs, names, path, title=f"{meta['model']['name']} — {Path(image).name}")
    table = Table(title=f"{Path(image).name}")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for i in probs.argsort()[::-1]:
        table.add_row(names[i], f"{probs[i]:.3f}")
    console.print(table)
    console.print(f"overlay written to [bold]{path}[/bold]")


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Folder for the run, exported models and the report.")] = "demo_run",
    model: Annotated[str, typer.Option(help="Model to train.")] = "medlit_nano_28",
    data: Annotated[str, typer.Option(help="MedMNIST subset (or path).")] = "pneumoniamnist",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    recipe: Annotated[str, typer.Option(help="Training recipe: vit (AdamW, warmup + cosine, light "
                                              "augmentation) or medmnist (the paper's CNN recipe).")] = "vit",
    download: Annotated[bool, typer.Option(help="Download the subset if it is not under $MEDLITE_DATA.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """The main job end to end: train, evaluate with the official metrics, export to ONNX + int8, time it on
    this CPU, print the report."""
    from medlite.demo import run_demo

    _setup_logging(False)
    _run_checked(run_demo, out, model, data, epochs, download, progress, recipe)
    console.print(Markdown(Path(out, "demo_report.md").read_text()))


# ------------------------------------------------- deployment: medlite.cli.deploy, medlite.bench.latency
@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run folder or .safetensors checkpoint to export.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx (fp32, checked against PyTorch), onnx-int8 "
                                     "(dynamic int8, needs no data), onnx-int8-static (QDQ int8 calibrated on "
                                     "training images), or executorch (.pte with XNNPACK for phones; needs "
                                     "`pip install medlite[mobile]`).")] = "onnx",
    out: Annotated[str, typer.Option(help="Output file (default <run>/export/<model>.onnx, .int8.onnx, "
                                          ".int8-static.onnx or .pte).")] = "",
    calib_samples: Annotated[int, typer.Option(help="Training images used to calibrate static int8.")] = 256,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 18,
    data: Annotated[str, typer.Option(help="Dataset for int8 calibration and the fp32 vs int8 comparison "
                                           "(default: the one the model was trained on).")] = "",
    data_root: Annotated[str, typer.Option(help="Data folder (default $MEDLITE_DATA).")] = "",
    compare: Annotated[bool, typer.Option(help="For int8 formats: compare test AUC / ACC with fp32 when the "
                                               "data is available.")] = True,
) -> None:
    """Export a trained classifier to run without PyTorch: ONNX (fp32 or int8) or ExecuTorch. The file
    carries its preprocessing, task and label names, so `medlite predict FILE IMAGE...` needs nothing else."""
    from medlite.cli.deploy import export_cmd

    code = export_cmd(run, fmt, out or None, calib_samples, opset, data or None, data_root or None, compare,
                      console=console)
    if code:
        raise typer.Exit(code)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Exported .onnx file (runs on ONNX Runtime, no PyTorch needed) "
                                              "or a run folder / .safetensors checkpoint.")],
    images: Annotated[list[str], typer.Argument(help="Image files: PNG, JPEG, BMP, TIFF, DICOM or NIfTI "
                                                     "(`scan.nii.gz::40` picks axial slice 40).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (file, label and probs, or error, per "
                                                          "image) instead of a table.")] = False,
    explain: Annotated[bool, typer.Option(help="Also save attention-rollout overlays into --out (checkpoints "
                                               "of MedLiT models only).")] = False,
    out: Annotated[str, typer.Option(help="Folder for the --explain overlays.")] = "explain",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = the runtime's default).")] = 0,
) -> None:
    """Classify images and print each one's class probabilities. Unreadable or unsupported files are
    reported one per line and skipped; the exit code is 1 if any file failed."""
    from medlite.cli.deploy import predict_cmd

    code = predict_cmd(model, images, json_out, explain, out, threads or None, console=console)
    if code:
        raise typer.Exit(code)


@app.command()
def bench(
    models: Annotated[list[str], typer.Argument(help="Model names (see `medlite models`; built untrained) "
                                                     "or checkpoints / run folders.")],
    size: Annotated[int, typer.Option(help="Input size in pixels for model names.")] = 28,
    threads: Annotated[str, typer.Option(help="Comma-separated CPU thread counts to time.")] = "1,2",
    runtime: Annotated[str, typer.Option(help="Comma-separated runtimes: torch, onnx, onnx-int8, "
                                              "onnx-int8-static, executorch.")] = "torch,onnx,onnx-int8,executorch",
    batch: Annotated[int, typer.Option(help="Batch size of the throughput measurement.")] = 64,
    warmup: Annotated[int, typer.Option(help="Untimed calls per candidate.")] = 10,
    repeats: Annotated[int, typer.Option(help="Timed batch-1 calls per candidate (interleaved).")] = 50,
    in_chans: Annotated[int, typer.Option(help="Input channels for model names.")] = 1,
    num_classes: Annotated[int, typer.Option(help="Classes for model names.")] = 2,
    out: Annotated[str, typer.Option(help="Also write the table as Markdown to this file.")] = "",
) -> None:
    """Time models on this CPU: batch-1 latency (median, p90), throughput, parameters, MACs, peak memory and
    file size per runtime and thread count, candidates interleaved so that ratios hold on a busy machine."""
    from medlite.cli.deploy import bench_cmd

    try:
        thread_counts = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"--threads '{threads}' is not a comma-separated list of integers") from e
    runtimes = [r.strip() for r in runtime.split(",") if r.strip()]
    code = bench_cmd(models, size, thread_counts, runtimes, batch, warmup, repeats, out or None, in_chans,
                     num_classes, console=console)
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------------ sub-commands in their own modules
from medlite.cli.seg import seg_app  # noqa: E402  (after `app`: the groups attach to it)

app.add_typer(seg_app, name="seg")

from medlite.cli.sam import sam_app  # noqa: E402

app.add_typer(sam_app, name="sam")

from medlite.cli.compress import register as _register_compress  # noqa: E402  (distill, prune)

_register_compress(app, console)
