"""LiteSAM vs a LiteMedSAM-style baseline: box- and point-prompted DSC / NSD on BUSI and PH2, CPU latency.

Stages (each skipped when its output exists, so a rerun resumes; checkpoints are medlite's atomic
safetensors files under --runs):

1. train ``litesam_swin_xs`` on BUSI train (split list 1) + PH2 fold-0 train, --epochs epochs, from scratch;
2. train ``litemedsam_xs`` by the same recipe within the same wall-clock budget as stage 1;
3. evaluate both (best validation checkpoint) on the BUSI test list and PH2 fold-0 test, box and point prompts;
4. CPU wall time per image including model load (PyTorch, the predictor, image read from disk);
5. export encoder + decoder of the trained models and of the published-size variants to ONNX (parity
   checked), count parameters / MACs per part and time both graphs on 1 and 2 ONNX Runtime threads,
   all candidates interleaved;
6. box-only references (the filled box, the inscribed ellipse; no model) on the same test cases;
7. with ``--long-epochs N``: LiteSAM alone on an N-epoch schedule, as an extra row;
8. pretrained knowledge, scored on the same test cases without training here: the real LiteMedSAM zero-shot
   (``medlite[sam]``) and the zoo's LiteSAMs distilled from it (prompt-trained on BUSI + PH2 fold-0 train,
   ``litesam_distill.py``); their cross-domain rows (trained on one set, tested on the other) are quoted from
   ``results/litesam_distill.json`` (same protocol and images); the distilled architectures are timed with
   the others in stage 5.

    python benchmarks/litesam.py --epochs 12 --lr 8e-4 --long-epochs 24   # the committed results/litesam.md
    python benchmarks/litesam.py --epochs 1 --smoke  # minutes, for checking the script (runs/litesam_smoke/)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, ROOT, header

from medlite.data.prompts import box_from_mask
from medlite.data.segmentation import SegSplit, load_builtin, read_pair
from medlite.engine.checkpoint import load_model
from medlite.engine.tasks.promptable import SamTrainConfig, evaluate_sam, train_sam
from medlite.engine.tasks.promptable.train import model_meta
from medlite.export.sam_onnx import DecoderGraph, EncoderGraph, example_inputs, export_litesam, feature_names, session
from medlite.models.flops import count_macs_call, count_params
from medlite.models.litesam import LiteSAMPredictor
from medlite.registry import create_model

LITESAM, BASELINE = "litesam_swin_xs", "litemedsam_xs"
PUBLISHED = ("litesam_swin_t", "litemedsam")
DATASETS = ("busi", "ph2")
# stage 8: zoo entry -> row label (litemedsam: the real weights, zero-shot; the others distilled from it)
PRETRAINED = {"litemedsam": "LiteMedSAM (real, pretrained; zero-shot)",
              "litesam_swin_xs_distilled": "LiteSAM xs-md distilled (zoo `litesam_swin_xs_distilled`)",
              "litesam_swin_xs_md8_distilled": "LiteSAM xs-md8 distilled (zoo `litesam_swin_xs_md8_distilled`)"}
DISTILLED = ("litesam_swin_xs_md", "litesam_swin_xs_md8")  # their architectures, timed in stage 5
SHIPPED = "litesam_swin_xs_md8_distilled"  # the distilled row the targets are checked on


def _json(path: Path, fn, fresh=lambda cached: True):
    """The cached result at ``path``, or ``fn()`` written there if missing or not ``fresh(cached)``."""
    if path.is_file() and fresh(cached := json.loads(path.read_text())):
        return cached
    out = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


def _has_both_nsd(res: dict) -> bool:
    """Cached scores from before the challenge NSD (no ``boundary_nsd``) are computed again."""
    return all("boundary_nsd" in v for per_set in res.values() for v in per_set.values() if isinstance(v, dict)
               and "dsc" in v)


def _subset(s: SegSplit, n: int) -> SegSplit:
    return SegSplit(s.images[:n], s.masks[:n], s.names[:n], s.geometry[:n], s.originals[:n], s.pairs[:n])


def load_data(smoke: bool) -> dict:
    data = {"busi": load_builtin("busi", size=256, mode="pad"),
            "ph2": load_builtin("ph2", size=256, mode="pad", fold=0)}
    if smoke:
        for d in data.values():
            d.train, d.val, d.test = _subset(d.train, 16), _subset(d.val, 4), _subset(d.test, 4)
    return data


def evaluate(run: Path | torch.nn.Module, data: dict) -> dict:
    """Box and point scores on both test sets of a run folder's best checkpoint, or of a model."""
    model = run if isinstance(run, torch.nn.Module) else load_model(run / "best.safetensors")[0]
    out = {}
    for d in DATASETS:
        res = evaluate_sam(model, data[d].test, prompts=("box", "point"))
        out[d] = res
    return out


def box_references(data: dict) -> dict:
    """Prompt-only predictors at the original size: the ground-truth box filled, and the ellipse inscribed in
    it. They show how much of a box-prompted DSC the box alone already gives."""
    from medlite.metrics.segmentation import ChallengeMetrics

    out = {}
    for d in DATASETS:
        meters = {"box fill": ChallengeMetrics(), "box ellipse": ChallengeMetrics()}
        for gt, name in zip(data[d].test.originals, data[d].test.names, strict=True):
            x0, y0, x1, y1 = box_from_mask(gt)
            fill = np.zeros(gt.shape, bool)
            fill[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
            yy, xx = np.mgrid[:gt.shape[0], :gt.shape[1]]
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
            ellipse = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            meters["box fill"].update(fill, gt, name)
            meters["box ellipse"].update(ellipse, gt, name)
        out[d] = {k: m.compute() for k, m in meters.items()}
    return out


def wall_time(run: Path, split: SegSplit, n: int) -> dict:
    """Per image: load the checkpoint, read the image file, encode, decode the GT box, map back (challenge
    style: model loading counted in every case)."""
    loads, totals = [], []
    for pair, gt in list(zip(split.pairs, split.originals, strict=True))[:n]:
        t0 = time.perf_counter()
        model, _ = load_model(run / "best.safetensors")
        t1 = time.perf_counter()
        image, _ = read_pair(pair)
        p = LiteSAMPredictor(model)
        p.set_image(image)
        p.segment(box=box_from_mask(gt))
        totals.append(time.perf_counter() - t0)
        loads.append(t1 - t0)
    return {"n": len(totals), "load_s": statistics.median(loads), "total_s_mean": statistics.mean(totals),
            "total_s_median": statistics.median(totals)}


def efficiency(models: dict[str, torch.nn.Module], onnx_dir: Path, threads: list[int], repeats: int) -> dict:
    out: dict = {}
    for name, m in models.items():
        m.eval()
        image, prompts = example_inputs(m, prompts=1, points=2)
        with torch.no_grad():
            feats = EncoderGraph(m)(image)
        exp = export_litesam(m, model_meta(m), onnx_dir / name)
        out[name] = {
            "params": {"encoder": count_params(m.image_encoder),
                       "decoder": count_params(m.prompt_encoder) + count_params(m.mask_decoder)},
            "macs": {"encoder": count_macs_call(EncoderGraph(m), (image,)),
                     "decoder": count_macs_call(DecoderGraph(m), (*feats, *prompts))},
            "parity": {"encoder": exp["encoder_max_abs_diff"], "decoder": exp["decoder_max_abs_diff"]},
            "latency_ms": {},
        }
        feeds = dict(zip(feature_names(m), [f.numpy() for f in feats], strict=True))
        feeds.update(point_coords=prompts[0].numpy(), point_labels=prompts[1].numpy(),
                     dense_prompt=prompts[2].numpy(), has_dense=np.zeros(1, np.float32))
        out[name]["_inputs"] = ({"image": image.numpy()}, feeds)
    for t in threads:
        cands = []
        for name in models:
            for part in ("encoder", "decoder"):
                sess = session(onnx_dir / name / f"{part}.onnx", threads=t)
                cands.append((name, part, sess, out[name]["_inputs"][0 if part == "encoder" else 1]))
        times: dict = {(n, p): [] for n, p, _, _ in cands}
        for _, _, sess, feed in cands:
            for _ in range(3):
                sess.run(None, feed)
        for r in range(repeats):
            for name, part, sess, feed in cands:
                if part == "encoder" and r >= max(10, repeats // 3):
                    continue  # encoders are slow and steady; fewer repeats keep the budget
                t0 = time.perf_counter()
                sess.run(None, feed)
                times[(name, part)].append(1000 * (time.perf_counter() - t0))
        for (name, part), v in times.items():
            out[name]["latency_ms"].setdefault(part, {})[str(t)] = {
                "median": statistics.median(v), "p90": float(np.percentile(v, 90)), "n": len(v)}
    for v in out.values():
        v.pop("_inputs")
    return out


def _ms(v: dict) -> str:
    return f"{v['mean']:.3f} ± {v['std']:.3f}"


def write(args, train: dict, ev: dict, wall: dict, eff: dict, data: dict, refs: dict) -> list[str]:
    lines = header("LiteSAM vs LiteMedSAM-style baseline: promptable segmentation on a CPU")
    tl, tb = train[LITESAM], train[BASELINE]
    c = tl["config"]
    slow = (tb["train_time_s"] / max(1, tb["steps"])) / (tl["train_time_s"] / max(1, tl["steps"]))
    n_train = {d: len(data[d].train) for d in DATASETS}
    n_test = {d: len(data[d].test) for d in DATASETS}
    lines += [
        "Both models are trained **from scratch** (the equal-budget comparison; the real LiteMedSAM and the "
        "LiteSAMs distilled from it are in the last section) on BUSI "
        f"(split list 1: {n_train['busi']} train cases) + PH2 (fold 0: {n_train['ph2']} train cases), "
        f"validation carved from train for checkpoint selection, and evaluated on the BUSI test list "
        f"({n_test['busi']} images) and the PH2 fold-0 test fold ({n_test['ph2']} images) at the original image "
        "size. Box prompt = ground-truth bounding box (as in the challenge); point prompt = one positive point at "
        "the mask's most interior pixel (distance-transform maximum). DSC per target; NSD at 2 px: **chall.** = the "
        "official CVPR 2024 scoring (DeepMind surface-distance, a 2-D case as a one-slice volume so every foreground "
        "pixel is surface; 0 where DSC <= 0.2), comparable with published challenge NSDs; **bound.** = the 2-D "
        "contour NSD (MONAI), not gated; mean ± std over images.", "",
        "## Recipe (identical for both models)", "",
        f"- AdamW lr {c['lr']}, weight decay {c['weight_decay']}, {c['warmup_steps']} warm-up steps then cosine, "
        f"batch {c['batch_size']}, 256 px letterbox (longest side + pad), min-max normalisation, "
        f"augmentation '{c['augment']}', prompts per step box/points/scribble with p = {c['prompt_probs']}, box "
        f"jitter ±{c['box_jitter']} px; loss Dice + BCE + {c['iou_weight']} x MSE(IoU head); no distillation "
        "(the LiteSAMs distilled from the real LiteMedSAM are measured by `litesam_distill.py` and "
        "`seg_encoder_distill.py`: results/litesam_distill.md, results/seg_encoder_distill.md); torch 1 thread.",
        f"- {LITESAM}: {c['epochs']} epochs = {tl['steps']} steps in {tl['train_time_s'] / 60:.1f} min; best "
        f"val Dice {tl['best_val_dice']:.3f}.",
        f"- {BASELINE}: same recipe within the same wall-clock budget: {tb['steps']} steps "
        f"({tb['steps'] / max(1, tl['steps']):.0%} of LiteSAM's) in {tb['train_time_s'] / 60:.1f} min; best val "
        f"Dice {tb['best_val_dice']:.3f}. Its stride-4 TinyViT makes a training step {slow:.1f}x as slow, so the "
        "same number of epochs did not fit the CPU budget (see Notes).",
        *[f"- Extra run {m}: the LiteSAM recipe with {train[m]['config']['epochs']} epochs = {train[m]['steps']} steps "
          f"in {train[m]['train_time_s'] / 60:.1f} min; best val Dice {train[m]['best_val_dice']:.3f} (not part of "
          "the equal-budget comparison)." for m in train if m not in (LITESAM, BASELINE)],
        "- The published-size variants (litesam_swin_t, litemedsam) are not trained here; they appear in the "
        "efficiency table (latency does not depend on the weights), and LiteMedSAM with its published weights "
        "is scored in the last section, beside the LiteSAMs distilled from it.", "",
        "## Accuracy (held-out test sets)", "",
        "| model | BUSI box DSC | BUSI box NSD chall. | BUSI box NSD bound. | BUSI point DSC | BUSI point NSD chall. "
        "| PH2 box DSC | PH2 box NSD chall. | PH2 box NSD bound. | PH2 point DSC | PH2 point NSD chall. |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    extra = [m for m in ev if m not in (LITESAM, BASELINE)]
    for m in (LITESAM, BASELINE, *extra):
        row = [m if m in (LITESAM, BASELINE) else f"{m} (longer schedule, no baseline counterpart)"]
        for d in DATASETS:
            e = ev[m][d]
            row += [_ms(e["box"]["dsc"]), _ms(e["box"]["nsd"]), _ms(e["box"]["boundary_nsd"]),
                    _ms(e["point"]["dsc"]), _ms(e["point"]["nsd"])]
        lines.append("| " + " | ".join(row) + " |")
    for ref in ("box fill", "box ellipse"):
        row = [f"reference: {ref} (no model)"]
        for d in DATASETS:
            row += [_ms(refs[d][ref][m]) for m in ("dsc", "nsd", "boundary_nsd")] + ["–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "The reference rows segment the ground-truth box itself (filled, or the inscribed ellipse): the part "
              "of a box-prompted DSC that the prompt alone gives.", "",
              "## Efficiency (ONNX Runtime, batch 1, one prompt of 2 points; median ms of interleaved runs)", "",
              "| model | part | params (M) | GMACs | 1 thread ms | 2 threads ms | ONNX max abs diff |",
              "|---|---|---|---|---|---|---|"]
    for m, e in eff.items():
        for part in ("encoder", "decoder"):
            lat = e["latency_ms"][part]
            lines.append(f"| {m} | {part} | {e['params'][part] / 1e6:.2f} | {e['macs'][part] / 1e9:.3f} | "
                         f"{lat['1']['median']:.2f} | {lat['2']['median']:.2f} | {e['parity'][part]:.1e} |")
    lines += ["", "## CPU wall time per image, model load included (PyTorch, 1 thread, box prompt)", "",
              "| model | images | checkpoint load (s, median) | per image incl. load (s, mean) | median |",
              "|---|---|---|---|---|"]
    for m, w in wall.items():
        lines.append(f"| {m} | {w['n']} | {w['load_s']:.3f} | {w['total_s_mean']:.3f} | {w['total_s_median']:.3f} |")
    lines += ["", "PyTorch timings inside evaluation (mean per image, BUSI test): "
              + "; ".join(f"{m} encoder {ev[m]['busi']['encoder_ms']:.1f} ms, box decoder "
                          f"{ev[m]['busi']['box']['decoder_ms']:.1f} ms" for m in (LITESAM, BASELINE)) + "."]
    lines += ["", *targets(ev, eff, refs), "", *notes(args, train, eff, ev)]
    return lines


def notes(args, train: dict, eff: dict, ev: dict) -> list[str]:
    tl, tb = train[LITESAM], train[BASELINE]
    per_step_b = tb["train_time_s"] / max(1, tb["steps"])
    runs = Path(args.runs)
    ends = [p.stat().st_mtime for p in [runs / "efficiency.json", *runs.glob("eval_*.json")] if p.is_file()]
    when = ""
    if (runs / LITESAM / "results.json").is_file() and ends:
        from datetime import UTC, datetime

        t0 = (runs / LITESAM / "results.json").stat().st_mtime - tl["train_time_s"]
        start = datetime.fromtimestamp(t0, UTC).strftime("%H:%M")
        end = datetime.fromtimestamp(max(ends), UTC).strftime("%H:%M UTC")
        when = f" The stages ran from about {start} to {end}; the date above is when this file was written."
    pub = eff.get("litemedsam", {}).get("macs", {}).get("encoder")
    longer = " A distilled encoder is the next lever (results/litesam_distill.md)."
    extra = [m for m in ev if m not in (LITESAM, BASELINE)]
    if extra:
        m = extra[0]
        b = {d: ev[m][d]["box"]["dsc"]["mean"] - ev[LITESAM][d]["box"]["dsc"]["mean"] for d in DATASETS}
        pt = {d: ev[m][d]["point"]["dsc"]["mean"] - ev[LITESAM][d]["point"]["dsc"]["mean"] for d in DATASETS}
        longer = (f" Doubling the schedule ({m}) changed box DSC by {b['busi']:+.3f} (BUSI) / {b['ph2']:+.3f} (PH2) "
                  f"and point DSC by {pt['busi']:+.3f} / {pt['ph2']:+.3f}: more of the same training helps the "
                  "point prompts, not the box margin on BUSI. A distilled encoder is the next lever "
                  "(results/litesam_distill.md).")
    prev = Path(args.previous) / LITESAM / "results.json"
    tried = ""
    if prev.is_file():
        p = json.loads(prev.read_text())
        best = max(p["history"], key=lambda h: h["val_dice"])
        tried = (f" Tried first: the same recipe without `prompt_maps` (SAM's prompt encoder only): best "
                 f"validation Dice {best['val_dice']:.3f} (epoch {best['epoch']} of {p['epochs_run']}, "
                 f"{p['steps']} steps), after which the prompt maps were added; that run was stopped before its "
                 "test evaluation, so no test figures of it exist.")
    return [
        "## Notes", "",
        "- **Documented deviations from Swin-LiteMedSAM.** The encoder stages are the published ones "
        "(litesam_swin_t), but the image embedding is at stride 16 (16x16 cells at 256 px) instead of 64x64, "
        "and the stride-8 / stride-4 stages enter the decoder through the skip connections; this keeps the "
        "per-prompt decoder small. One addition: the box and clicks are also rasterised in-graph (box interior, "
        "signed Gaussian clicks) into the dense prompt branch and the finest decoder stage (`prompt_maps`); "
        "the baseline keeps SAM's prompt encoder. One mask token (no multi-mask output). The variant trained here is "
        "litesam_swin_xs (dims 32/64/96/192, depths 2/2/2/2, decoder width 128) so that both models' training "
        "fits the one-core budget; litesam_swin_t is timed, not trained.",
        "- **Baseline budget.** litemedsam_xs is LiteMedSAM's layout (TinyViT with every stage on the stride-4 "
        "grid, SAM decoder on a 64x64 embedding) at the xs widths. It got the same recipe and the same "
        f"wall-clock budget, which bought {tb['steps']} steps against LiteSAM's {tl['steps']}; training it for "
        f"the same {tl['steps']} steps would have taken about {per_step_b * tl['steps'] / 60:.0f} min of this "
        "CPU. Its DSC is therefore that of an equal-CPU-time comparison, not an equal-epochs one."
        + (f" The published-size litemedsam encoder counts {pub / 1e9:.1f} GMACs here (MACs of matmuls and "
           "convolutions only; the reference quotes ~37 GMAC)." if pub else ""),
        "- **Timing.** This machine (2 cores) was shared with other agents' training jobs while the benchmark "
        "ran, so absolute milliseconds are inflated and 2-thread runs can be slower than 1-thread runs; the "
        "encoder ratios come from interleaved runs of all candidates and are the robust figure. The decoder "
        "graph includes the final bilinear upsampling of the mask logits to 256x256." + when,
        "- **Boundary NSD.** The 2-D contour NSD is measured at 2 px of the *original* image, but the masks come "
        "from stride-4 logits of the 256 px frame (64x64 for LiteSAM, bilinearly upsampled). PH2 images are about "
        "3x and BUSI images 1-4x the model frame, so the 2 px band is well under one model-frame pixel there and "
        "the boundary NSD stays low even where DSC is high. The challenge NSD counts every foreground pixel as "
        "surface (a one-slice volume), so it is high wherever the masks overlap; only it compares with the "
        "published figures.",
        "- **What the DSC targets do and do not show.** Lesions in BUSI and PH2 are compact blobs, so the box "
        "alone already gives most of the DSC (reference rows). Meeting 0.85 / 0.90 with a box prompt is therefore "
        "a weak test of the model; the margin over the inscribed ellipse and the point-prompt columns (where no "
        "box prior exists) are the informative figures." + longer,
        "- **If a DSC target is missed:** one recipe, no hyper-parameter search, nothing selected on test. "
        "Both models start from random weights and see ~480 training images for minutes of one CPU core; the "
        "published Swin-LiteMedSAM / LiteMedSAM start from encoders distilled from MedSAM, which was trained on "
        "over a million image-mask pairs. Longer training (`--epochs`) and `--teacher` distillation are the "
        "levers the code provides." + tried,
    ]


def pretrained_section(pre: dict, eff: dict, refs: dict) -> list[str]:
    """Stage 8: the real LiteMedSAM and the distilled LiteSAMs on the same test cases, the cross-domain rows
    quoted from ``results/litesam_distill.json``, and the issue's targets for the shipped distilled model."""
    lines = ["", "## Pretrained knowledge: the real LiteMedSAM and LiteSAMs distilled from it", "",
             "Scored here on the same test cases and protocol as the rows above, nothing trained by this script: "
             "LiteMedSAM with its published weights (zero-shot: it never saw BUSI or PH2), and the model zoo's "
             "LiteSAMs, whose encoders were distilled from LiteMedSAM and then prompt-trained on BUSI + PH2 fold-0 "
             "train (`litesam_distill.py`; the zoo cards name their data). In-domain:", "",
             "| model | BUSI box DSC | BUSI box NSD chall. | BUSI point DSC | PH2 f0 box DSC | PH2 f0 box NSD chall. "
             "| PH2 f0 point DSC |", "|---|---|---|---|---|---|---|"]
    for k, label in PRETRAINED.items():
        lines.append(f"| {label} | " + " | ".join(
            f"{_ms(pre[k][d]['box']['dsc'])} | {_ms(pre[k][d]['box']['nsd'])} | {_ms(pre[k][d]['point']['dsc'])}"
            for d in DATASETS) + " |")
    for ref in ("box ellipse", "box fill"):
        lines.append(f"| reference: {ref} (no model) | " + " | ".join(
            f"{_ms(refs[d][ref]['dsc'])} | {_ms(refs[d][ref]['nsd'])} | –" for d in DATASETS) + " |")
    q = json.loads((RESULTS / "litesam_distill.json").read_text())
    e, qr = q["eval"], q["references"]
    lines += ["", "Cross-domain, quoted from `results/litesam_distill.json` (same protocol; xs-md8 is the zoo model's "
              "recipe with its 2x-longer distillation, prompt-trained on one set only; PH2 'all' = the 100 "
              "dev images, none seen by the BUSI-only model):", "",
              "| model | trained on | tested on | box DSC | box NSD chall. | ellipse DSC | LiteMedSAM zero-shot |",
              "|---|---|---|---|---|---|---|"]
    for key, on, test, label in (("md8x2:busi_only", "BUSI", "ph2_all", "PH2 all"),
                                 ("md8x2:ph2_only", "PH2 f0", "busi", "BUSI test"),
                                 ("md8x2:zeroshot", "no masks (encoder distilled only)", "busi", "BUSI test"),
                                 ("md8x2:zeroshot", "no masks (encoder distilled only)", "ph2_all", "PH2 all")):
        r = e[key][test]["box"]
        lines.append(f"| LiteSAM xs-md8 distilled | {on} | {label} | {_ms(r['dsc'])} | {_ms(r['nsd'])} | "
                     f"{qr[test]['box ellipse']['dsc']['mean']:.3f} | "
                     f"{e['litemedsam'][test]['box']['dsc']['mean']:.3f} |")
    m, t = pre[SHIPPED], pre["litemedsam"]
    lines += ["", f"Targets for the shipped distilled model (`{SHIPPED}`, in-domain, this run):", ""]
    for d in DATASETS:
        v, ell, lm = m[d]["box"]["dsc"]["mean"], refs[d]["box ellipse"]["dsc"]["mean"], t[d]["box"]["dsc"]["mean"]
        lines += [f"- {d.upper()}: box DSC {v:.3f} vs the inscribed ellipse + 0.03 = {ell + 0.03:.3f} "
                  f"({'met' if v >= ell + 0.03 else f'missed by {ell + 0.03 - v:.3f}'}); vs 0.97x LiteMedSAM "
                  f"= {0.97 * lm:.3f} ({'met' if v >= 0.97 * lm else 'missed'}); vs LiteMedSAM zero-shot "
                  f"{lm:.3f}: {v - lm:+.3f} ({'beats it' if v > lm else 'does not beat it'})."]
    a, b = (eff[k]["latency_ms"]["encoder"]["1"]["median"] for k in ("litesam_swin_xs_md8", "litemedsam"))
    dec = eff["litesam_swin_xs_md8"]["latency_ms"]["decoder"]["1"]["median"]
    lines += [f"- Encoder {b / a:.1f}x faster than LiteMedSAM's (1 thread, same run; target >= 5x: "
              f"{'met' if b / a >= 5 else 'missed'}); a prompt from the cached embedding {dec:.1f} ms (target "
              f"< 10 ms: {'met' if dec < 10 else 'missed'}; the xs-md zoo model: "
              f"{eff['litesam_swin_xs_md']['latency_ms']['decoder']['1']['median']:.1f} ms).",
              "- The Lite0-encoder LiteSAM and the cross-domain recipes: `results/seg_encoder_distill.md`; every "
              "distilled variant and its targets: `results/litesam_distill.md`."]
    return lines


def targets(ev: dict, eff: dict, refs: dict) -> list[str]:
    out = ["## Targets", ""]
    for d, goal in (("ph2", 0.90), ("busi", 0.85)):
        v = ev[LITESAM][d]["box"]["dsc"]["mean"]
        e = refs[d]["box ellipse"]["dsc"]["mean"]
        out.append(f"- Box-prompted DSC on {d.upper()} >= {goal:.2f}: {v:.3f} "
                   f"({'met' if v >= goal else f'missed by {goal - v:.3f}'}). For scale: the ellipse inscribed in "
                   f"the box, with no model, scores {e:.3f}, so the trained model adds {v - e:+.3f} DSC over the "
                   "box prior" + (" (it does not beat it)." if v < e else "."))
    for a, b in ((LITESAM, BASELINE), PUBLISHED):
        for t in ("1", "2"):
            ea, eb = eff[a]["latency_ms"]["encoder"][t]["median"], eff[b]["latency_ms"]["encoder"][t]["median"]
            out.append(f"- Encoder >= 3x faster than the LiteMedSAM-style baseline ({a} vs {b}, {t} thread(s)): "
                       f"{eb / ea:.1f}x ({'met' if eb / ea >= 3 else 'missed'}).")
    dl = [ev[m][d]["box"]["dsc"]["mean"] for m in (LITESAM, BASELINE) for d in DATASETS]
    out.append(f"- At equal or better DSC: LiteSAM box DSC BUSI {dl[0]:.3f} / PH2 {dl[1]:.3f} vs baseline "
               f"{dl[2]:.3f} / {dl[3]:.3f} ({'met' if dl[0] >= dl[2] and dl[1] >= dl[3] else 'missed'}; the "
               "baseline got the same wall-clock budget, hence fewer steps: see Notes).")
    for m in (LITESAM, "litesam_swin_t"):
        v = eff[m]["latency_ms"]["decoder"]["1"]["median"]
        out.append(f"- Prompt answered from the cached embedding in < 10 ms ({m} decoder, 1 thread): {v:.2f} ms "
                   f"({'met' if v < 10 else 'missed'}).")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--repeats", type=int, default=60, help="timed runs per decoder graph (encoders: a third)")
    ap.add_argument("--wall-images", type=int, default=10, help="images per dataset for the wall-time check")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "litesam"))
    ap.add_argument("--out", default=str(RESULTS / "litesam.md"))
    ap.add_argument("--long-epochs", type=int, default=0,
                    help="also train LiteSAM alone for this many epochs (an extra row; 0 = off)")
    ap.add_argument("--smoke", action="store_true", help="tiny subsets, for checking the script")
    ap.add_argument("--previous", default=str(ROOT / "runs" / "litesam_v1_no_prompt_maps"),
                    help="run folder of an earlier attempt to cite in the notes (if present)")
    a = ap.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    runs = Path(a.runs)
    if a.smoke:  # never mix smoke runs with the real ones, nor overwrite the committed results
        runs = runs.with_name(runs.name + "_smoke")
        a.out = str(runs / "litesam.md")
    data = load_data(a.smoke)
    train = {}
    base = dict(datasets=DATASETS, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, threads=a.threads,
                out_dir=str(runs))
    for m in (LITESAM, BASELINE):
        if (runs / m / "results.json").is_file():  # finished: skip (a crashed run resumes from last.safetensors)
            train[m] = json.loads((runs / m / "results.json").read_text())
        else:  # the baseline gets LiteSAM's wall-clock budget
            budget = train[LITESAM]["train_time_s"] if m == BASELINE else None
            train[m] = train_sam(SamTrainConfig(model=m, time_budget_s=budget, **base), data)
    if a.long_epochs:  # optional extra row: does a longer schedule widen the margin over the box prior?
        name = f"{LITESAM}_e{a.long_epochs}"
        done = runs / name / "results.json"
        train[name] = json.loads(done.read_text()) if done.is_file() else train_sam(
            SamTrainConfig(model=LITESAM, name=name, **{**base, "epochs": a.long_epochs}), data)
    ev = {m: _json(runs / f"eval_{m}.json", lambda m=m: evaluate(runs / m, data), _has_both_nsd) for m in train}
    wall = _json(runs / "walltime.json", lambda: {
        m: wall_time(runs / m, data["busi"].test, a.wall_images) for m in (LITESAM, BASELINE)})
    def _models() -> dict:
        models = {m: load_model(runs / m / "best.safetensors")[0] for m in (LITESAM, BASELINE)}
        return {**models, **{m: create_model(m, num_classes=1) for m in (*PUBLISHED, *DISTILLED)}}

    eff = _json(runs / "efficiency.json", lambda: efficiency(_models(), runs / "onnx", [1, 2], a.repeats))
    refs = _json(runs / "box_references.json", lambda: box_references(data), _has_both_nsd)
    from medlite import zoo

    pre = {k: _json(runs / f"eval_{k}.json", lambda k=k: evaluate(zoo.load(k)[0], data), _has_both_nsd)
           for k in PRETRAINED}
    lines = write(a, train, ev, wall, eff, data, refs) + pretrained_section(pre, eff, refs)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
