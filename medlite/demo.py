"""The main job end to end: train MedLiT-nano on a MedMNIST subset, evaluate it with the official metrics,
export it to ONNX (fp32 and int8), time it on this CPU, apply the model zoo's shipped weights for the same
subset to a few test images next to the model just trained, and write one report.

``medlite demo`` (and ``make demo``) runs this and prints :func:`report_markdown`; nothing here prints. It
resumes an interrupted run in the same folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def run_demo(out: str | Path = "demo_run", model: str = "medlit_nano_28", data: str = "pneumoniamnist",
             epochs: int = 8, download: bool = False, progress: bool = True, recipe: str = "vit") -> dict[str, Any]:
    """Returns the report as a dict; also writes ``<out>/demo_report.md`` and ``demo_report.json``."""
    from medlite.data import load_classification
    from medlite.data.transforms import to_float
    from medlite.engine.checkpoint import load_model
    from medlite.engine.tasks.classify import TrainConfig, train, with_recipe
    from medlite.export.onnx import export_onnx
    from medlite.export.quantize import compare_on, quantize_dynamic_int8

    out = Path(out)
    run = out / "train"
    # MedLiT trains best with the small-ViT recipe (see benchmarks/results/medmnist_medlit.md).
    cfg = with_recipe(TrainConfig(model=model, data=data, size=28, epochs=epochs, download=download,
                                  out=str(run), progress=progress), recipe)
    results = train(cfg, resume=(run / "last.safetensors").is_file() and not (run / "results.json").is_file())
    if not results:
        results = json.loads((run / "results.json").read_text())

    net, meta = load_model(run)
    onnx_path = out / f"{model}.onnx"
    exp = export_onnx(net, meta, onnx_path)
    int8_path = quantize_dynamic_int8(onnx_path, out / f"{model}.int8.onnx")
    ds = load_classification(data, size=28)
    pre = meta["preprocessing"]
    test_x = to_float(ds.test.images, pre["mean"], pre["std"]).numpy().astype(np.float32)
    q = compare_on(onnx_path, int8_path, test_x, ds.test.labels.numpy(), ds.task)
    latency = _latency(run)
    shipped = zoo_predictions(f"{model}_{Path(data).stem}", ds, net, meta, out / "images")
    report = {"model": model, "data": data, "epochs": epochs, "recipe": recipe, "results": results, "export": exp,
              "int8": q, "latency": latency, "files": {"onnx": str(onnx_path), "int8": str(int8_path)},
              "zoo": shipped}
    (out / "demo_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "demo_report.md").write_text(report_markdown(report))
    return report


def zoo_predictions(name: str, ds, net, meta: dict, folder: Path, n: int = 6) -> dict[str, Any] | None:
    """The zoo's shipped weights ``name`` (if the zoo has them) on the first ``n`` test images, written as PNG
    files and classified from those files like a user would (`medlite predict NAME file.png`), beside the
    model just trained. None when the zoo has no weights of that name."""
    import time

    from PIL import Image

    from medlite import zoo
    from medlite.export.classifier import TorchClassifier, classify_files

    if not zoo.has(name):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    files, truth = [], []
    for i in range(min(n, len(ds.test))):
        img = ds.test.images[i].numpy()
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        f = folder / f"test_{i:03d}.png"
        Image.fromarray(arr).save(f)
        files.append(str(f))
        truth.append(ds.label_names[int(ds.test.labels[i].reshape(-1)[0])])
    t0 = time.perf_counter()
    shipped = TorchClassifier(*zoo.load(name), threads=None)
    theirs, _ = classify_files(shipped, files)
    load_and_predict_s = time.perf_counter() - t0
    ours, _ = classify_files(TorchClassifier(net, meta, threads=None), files)
    entry = zoo.get(name)
    return {"name": name, "headline": entry.headline(), "seconds": load_and_predict_s,
            "rows": [{"file": Path(f).name, "truth": t, "zoo": a.get("label"), "yours": b.get("label"),
                      "zoo_p": max(a.get("probs", {"": 0.0}).values())}
                     for f, t, a, b in zip(files, truth, theirs, ours, strict=True)]}


def _latency(run: Path) -> list[dict[str, Any]]:
    """Batch-1 latency and throughput of the trained model: torch eager vs ONNX Runtime fp32 vs int8,
    1 and 2 threads, timed interleaved by the latency harness."""
    from medlite.bench.latency import bench

    return bench([run], threads=(1, 2), runtimes=("torch", "onnx", "onnx-int8"), repeats=100)


def report_markdown(r: dict) -> str:
    """The report :func:`run_demo` returns, as the Markdown it writes to ``demo_report.md``."""
    from medlite.bench.latency import to_markdown

    res, t, v = r["results"], r["results"]["test"], r["results"]["val"]
    lines = [f"# medlite demo: {r['model']} on {r['data']}", "",
             f"Trained {r['epochs']} epochs ({r['recipe']} recipe); best validation AUC at epoch "
             f"{res['best_epoch']}; {res['params']:,} parameters; "
             f"{res['train_images_per_s']:.0f} training images/s on this CPU.", "",
             "| split | AUC (95 % CI) | ACC (95 % CI) |", "|---|---|---|"]
    for name, m in (("val", v), ("test", t)):
        lines.append(f"| {name} | {m['auc']:.3f} ({m['auc_ci'][0]:.3f}–{m['auc_ci'][1]:.3f}) | "
                     f"{m['acc']:.3f} ({m['acc_ci'][0]:.3f}–{m['acc_ci'][1]:.3f}) |")
    q = r["int8"]
    lines += ["", f"ONNX export: max |PyTorch − ONNX Runtime| = {r['export']['max_abs_diff']:.2e}; "
              f"{r['export']['size_bytes'] / 1e6:.2f} MB.",
              f"int8 (dynamic): test AUC {_get(q, 'int8', 'auc')} vs fp32 {_get(q, 'fp32', 'auc')}.", "",
              "CPU latency (batch 1, median of 100 interleaved runs) and throughput:", ""]
    lines += [to_markdown(r["latency"])]
    z = r.get("zoo")
    if z:
        lines += ["", f"Shipped weights `{z['name']}` from the model zoo ({z['headline']} on its card), loaded and "
                  f"applied in {z['seconds']:.1f} s, next to the model you just trained "
                  f"(`medlite predict {z['name']} IMAGE` does the same):", "",
                  "| image | true label | zoo weights (p) | your model |", "|---|---|---|---|"]
        lines += [f"| {row['file']} | {row['truth']} | {row['zoo']} ({row['zoo_p']:.2f}) | {row['yours']} |"
                  for row in z["rows"]]
    lines += ["", f"Plots: `{res['run_dir']}/plots/`.", ""]
    return "\n".join(lines)


def _get(d: dict, *keys) -> str:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return "n/a"
        d = d[k]
    return f"{d:.3f}" if isinstance(d, float) else str(d)
