"""CPU latency of medlite's classifiers and the mobile baselines, across runtimes and thread counts.

Models (untrained weights: latency does not depend on the values) at 28 px and 224 px; runtimes torch
eager, ONNX Runtime fp32, ONNX Runtime int8 (dynamic) and ExecuTorch (XNNPACK, when installed); 1 and 2
threads. All candidates of one size and thread count are timed interleaved in one process by
``medlite.bench.latency.bench``, so ratios hold on a noisy machine.

    python benchmarks/latency.py                      # both sizes, writes results/latency.md
    python benchmarks/latency.py --sizes 28 --runtimes torch,onnx
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, header

from medlite.bench.latency import bench, to_markdown

MODELS = {
    28: ["medlit_nano_28", "medlit_seed_28", "resnet18", "mobilenetv3_small_100", "efficientnet_b0",
         "vit_tiny_patch16_224"],
    # at 224 px the MedLiT variants are the published patch-16 configurations
    224: ["medlit_nano", "medlit_seed", "resnet18", "mobilenetv3_small_100", "efficientnet_b0",
          "vit_tiny_patch16_224"],
}


def _median(rows, model, runtime, threads):
    for r in rows:
        if r["model"] == model and r["runtime"] == runtime and r["threads"] == threads:
            return r["latency_ms_median"]
    return None


def targets(all_rows: dict[int, list[dict]]) -> list[str]:
    lines = ["## Targets", ""]
    r28 = all_rows.get(28, [])
    nano = _median(r28, "medlit_nano_28", "onnx", 1)
    if nano is not None:
        floor = next(r["floor_ms"] for r in r28 if r["model"] == "medlit_nano_28" and r["runtime"] == "onnx"
                     and r["threads"] == 1)
        lines.append(f"- medlit_nano_28, ONNX Runtime, 1 thread: median {nano:.3f} ms (target < 1 ms: "
                     f"{'met' if nano < 1 else 'missed'}); compute floor {floor:.3f} ms "
                     f"({floor / nano:.0%} of the fp32 peak reached).")
    r224 = all_rows.get(224, [])
    for rt in ("onnx", "torch"):
        a, b = _median(r224, "medlit_nano", rt, 1), _median(r224, "mobilenetv3_small_100", rt, 1)
        if a is not None and b is not None:
            lines.append(f"- 224 px, {rt}, 1 thread: medlit_nano {a:.2f} ms vs mobilenetv3_small_100 {b:.2f} ms "
                         f"(ratio {b / a:.2f}x; target: nano faster: {'met' if a < b else 'missed'}).")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="28,224")
    ap.add_argument("--runtimes", default="torch,onnx,onnx-int8,executorch")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--out", default=str(RESULTS / "latency.md"))
    a = ap.parse_args()
    all_rows = {}
    for size in (int(s) for s in a.sizes.split(",")):
        all_rows[size] = bench(MODELS[size], size=size, threads=[int(t) for t in a.threads.split(",")],
                               runtimes=a.runtimes.split(","), repeats=a.repeats, in_chans=3, num_classes=2)
    lines = header("CPU latency: MedLiT vs mobile baselines across runtimes")
    lines += ["Untrained models, 3-channel input, 2 classes, batch 1 latency (median and p90 of "
              f"{a.repeats} interleaved runs after warm-up).", ""]
    lines += targets(all_rows)
    for size, rows in all_rows.items():
        lines += ["", f"## {size} px", "", to_markdown(rows)]
    Path(a.out).write_text("\n".join(lines) + "\n")
    Path(a.out).with_suffix(".json").write_text(json.dumps(all_rows, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
