"""``medlite data check``: what a dataset holds before anyone trains on it (duplicates within and across the
splits, class balance, image sizes and modes, unreadable files), as a table and a JSON file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medlite.cli.common import (
    DATA_ROOT_HELP,
    JsonOut,
    Threads,
    Verbose,
    app,
    checked,
    console,
    print_json,
    print_table,
    use_threads,
)

data_app = typer.Typer(help="Look at a dataset before training on it.", no_args_is_help=True,
                       add_completion=False)
app.add_typer(data_app, name="data")


def scan_files(spec: str) -> dict | None:
    """Sizes, modes and unreadable files of a class folder or CSV (None for npz / MedMNIST data)."""
    from PIL import Image

    from medlite.data.folder import csv_records, folder_records

    path = Path(spec).expanduser()
    if path.is_dir():
        records = folder_records(path)
    elif path.suffix.lower() == ".csv":
        records = csv_records(path)
    else:
        return None
    sizes, modes, unreadable = Counter(), Counter(), []
    for file, _, _ in records:
        try:
            with Image.open(file) as im:
                im.load()
                sizes[f"{im.width}x{im.height}"] += 1
                modes[im.mode] += 1
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            unreadable.append({"file": str(file), "error": str(e)})
    return {"files": len(records), "sizes": dict(sizes.most_common()), "modes": dict(modes.most_common()),
            "unreadable": unreadable}


@data_app.command("check")
@checked
def check(
    data: Annotated[str, typer.Argument(help="MedMNIST subset name, or a path: .npz, .zip, .csv "
                                             "(path,label[,split]) or a folder of class subfolders.")],
    size: Annotated[int, typer.Option(help="Side the images are compared at (the training size).")] = 28,
    threshold: Annotated[int, typer.Option(help="pHash bits (of 64) within which two images are candidate "
                                                "near duplicates.")] = 10,
    max_mad: Annotated[float, typer.Option(help="Mean absolute pixel difference (0-255) that confirms a "
                                                "candidate.")] = 6.0,
    out: Annotated[str, typer.Option(help="Write the report as JSON here and the pairs as CSV beside it "
                                          "(default: print only).")] = "",
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    threads: Threads = 0,
    verbose: Verbose = False,
    json_out: JsonOut = False,
) -> None:
    """Duplicates within and across train / val / test (exact, and near: re-encoded, resized, slightly
    cropped), label conflicts between duplicates, class balance per split and, for folders and CSVs, image
    sizes, modes and unreadable files. Exit code 1 if a test or val image has a twin in train, a pair of
    duplicates disagrees on its label, or a file is unreadable."""
    use_threads(threads)
    from medlite.data import load_classification
    from medlite.data.leakage import find_duplicates, leakage_report, summary_line, write_pairs

    files = scan_files(data)
    report: dict = {"data": data, "size": size, "files": files}
    if files and files["unreadable"]:
        print_table(f"{len(files['unreadable'])} unreadable file(s)", ["file", "error"],
                    [[escape(u["file"]), escape(u["error"])] for u in files["unreadable"]])
        console.print("The duplicate check needs every file readable: fix or remove these first.")
        _write(out, report, [])
        if json_out:
            print_json(report)
        raise typer.Exit(1)
    ds = load_classification(data, size=size, root=data_root or None)
    pairs = find_duplicates(ds, threshold, max_mad)
    lk = leakage_report(ds, threshold, max_mad, pairs)
    splits = ds.splits()
    balance = {}
    for name, s in splits.items():
        y = s.labels.numpy()
        counts = y.sum(0).astype(int).tolist() if y.ndim == 2 else Counter(y.tolist())
        balance[name] = ({ds.label_names[i]: int(c) for i, c in enumerate(counts)} if y.ndim == 2 else
                         {ds.label_names[i]: int(counts.get(i, 0)) for i in range(ds.num_classes)})
    report |= {"name": ds.name, "task": ds.task, "splits": {k: len(v) for k, v in splits.items()},
               "class_balance": balance, "duplicates": {k: v for k, v in lk.items() if k != "twinned"},
               "twinned": lk["twinned"]}
    rows = []
    for name in ("train", "val", "test"):
        key = f"train-{name}" if name != "train" else "train-train"
        c = lk["by_splits"].get(key, {})
        within = lk["by_splits"].get(f"{name}-{name}", {})
        twin = str(lk["twinned_counts"][name]) if name != "train" else "–"
        rows.append([name, str(len(splits[name])), " / ".join(f"{k} {v}" for k, v in balance[name].items()),
                     twin, f"{c.get('exact', 0)} / {c.get('near', 0)}" if name != "train" else "–",
                     f"{within.get('exact', 0)} / {within.get('near', 0)}"])
    print_table(f"{ds.name}: {ds.task}, compared at {size}x{size}",
                ["split", "images", "classes", "with a twin in train", "pairs with train (exact / near)",
                 "pairs within (exact / near)"], [[escape(c) for c in r] for r in rows])
    if files:
        console.print(f"image sizes: {escape(_top(files['sizes']))}; modes: {escape(_top(files['modes']))}")
    console.print(f"duplicates: {escape(summary_line(lk))}")
    _write(out, report, pairs, write_pairs)
    if json_out:
        print_json(report)
    bad = lk["twinned_counts"]["test"] or lk["twinned_counts"]["val"] or lk["label_conflicts"]
    if bad:
        raise typer.Exit(1)


def _top(counts: dict, n: int = 5) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} ({v})" for k, v in items[:n])
    return text + (f", {len(items) - n} more" if len(items) > n else "")


def _write(out: str, report: dict, pairs: list, write_pairs=None) -> None:
    if not out:
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    written = [str(path)]
    if pairs and write_pairs is not None:
        written.append(str(write_pairs(pairs, path.with_suffix(".pairs.csv"))))
    console.print(f"wrote {escape(', '.join(written))}")
