"""The report of one compression run: the student against its teacher (or its source model).

Figures: parameters, MACs, CPU latency (ONNX Runtime, batch 1, 1 and 2 threads, teacher and student timed
interleaved), test AUC / ACC, AUC retention (% of the reference's test AUC), attention agreement (mean IoU
of the top-10 % rollout regions on the test split, :mod:`medlite.compress.agreement`) and a PNG of a few
side-by-side attention maps.  Written as ``compression.md`` / ``compression.json`` in the run folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def measure(path: str | os.PathLike, data, latency_ms: dict[int, float] | None = None,
            data_root: str | None = None) -> dict[str, Any]:
    """Parameters, MACs and test AUC / ACC of a checkpoint on ``data`` (a ClassificationData), at the
    checkpoint's own input size (a 64 px teacher of a 28 px student sees the test split loaded at 64 px)."""
    from medlite.data import load_classification
    from medlite.engine.checkpoint import load_model
    from medlite.engine.evaluate import predict
    from medlite.metrics.classification import medmnist_acc, medmnist_auc
    from medlite.models.flops import count_macs, count_params

    model, meta = load_model(path)
    pre = meta["preprocessing"]
    s = int(pre["size"])
    if tuple(data.test.images.shape[-2:]) != (s, s):
        data = load_classification(data.source or data.name, size=s, root=data_root)
    probs, labels, _ = predict(model, data.test, pre["mean"], pre["std"], data.task)
    return {"path": str(path), "model": meta["model"]["name"], "params": count_params(model),
            "macs": count_macs(model, (1, int(pre["channels"]), s, s)),
            "auc": float(medmnist_auc(labels, probs, data.task)),
            "acc": float(medmnist_acc(labels, probs, data.task)), "latency_ms": latency_ms or {}}


def compression_report(student: str | os.PathLike, reference: str | os.PathLike, out_dir: str | os.PathLike,
                       data_root: str | None = None, latency: bool = True, repeats: int = 30,
                       n_maps: int = 4) -> dict[str, Any]:
    """Measure ``student`` against ``reference`` (the teacher, or the model before pruning) on the test
    split of the student's data; write ``compression.md``, ``compression.json`` and
    ``compression_attention.png`` into ``out_dir`` and return the figures."""
    from medlite.compress.agreement import attention_agreement, plot_attention_pairs
    from medlite.data import load_classification
    from medlite.engine.checkpoint import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    s_model, s_meta = load_model(student)
    r_model, r_meta = load_model(reference)
    spec = s_meta["data"].get("source") or s_meta["data"]["name"]  # a path dataset is found by its file
    data = load_classification(spec, size=int(s_meta["preprocessing"]["size"]), root=data_root)
    lat: dict[str, dict[int, float]] = {"student": {}, "reference": {}}
    if latency:
        from medlite.bench.latency import bench

        rows = bench([reference, student], threads=(1, 2), runtimes=("onnx",), compute_floor=False,
                     repeats=repeats)
        for r in rows:
            key = "reference" if r["model"].endswith(f"({Path(reference).name})") else "student"
            lat[key][r["threads"]] = r["latency_ms_median"]
    res = {"student": measure(student, data, lat["student"], data_root),
           "reference": measure(reference, data, lat["reference"], data_root),
           "data": data.name, "n_test": len(data.test)}
    res["auc_retention_pct"] = 100 * res["student"]["auc"] / res["reference"]["auc"]
    res["size_ratio"] = res["reference"]["params"] / res["student"]["params"]
    agree = attention_agreement(r_model, r_meta, s_model, s_meta, data.test.images, keep=n_maps)
    res["attention_iou_top10"] = agree["iou"]
    if agree["iou"] is not None:
        plot_attention_pairs(data.test.images[:n_maps].numpy(), {"reference": agree["teacher_maps"],
                                                                 "student": agree["student_maps"]},
                             out_dir / "compression_attention.png")
    res["compress"] = s_meta.get("compress", [])
    (out_dir / "compression.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    (out_dir / "compression.md").write_text(to_markdown(res))
    return res


def to_markdown(res: dict[str, Any]) -> str:
    def cell(v, spec):
        return "–" if v is None else format(v, spec)

    lines = [f"# Compression report ({res['data']}, test n={res['n_test']})", "",
             "| model | params | MACs (M) | ONNX ms, 1 thread | 2 threads | test AUC | test ACC |",
             "|---|---|---|---|---|---|---|"]
    for key in ("reference", "student"):
        r = res[key]
        lat = {int(k): v for k, v in r["latency_ms"].items()}
        lines.append(f"| {key}: {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.1f} | {cell(lat.get(1), '.2f')} | "
                     f"{cell(lat.get(2), '.2f')} | {r['auc']:.4f} | {r['acc']:.4f} |")
    iou = res["attention_iou_top10"]
    lines += ["", f"- {res['size_ratio']:.1f}x fewer parameters; AUC retention {res['auc_retention_pct']:.1f} %",
              "- attention agreement (mean IoU of the top-10 % rollout regions): "
              + ("n/a (a model without attention maps)" if iou is None else f"{iou:.3f}; maps: "
                 "`compression_attention.png`"),
              "- steps: " + " -> ".join(r.get("step", "?") for r in res["compress"]), ""]
    return "\n".join(lines)
