"""Medical knowledge for MedLiteNet's encoder: EfficientNet-Lite0, started from ImageNet, distilled from
LiteMedSAM's image embedding (LiteMedSAM is itself distilled from MedSAM, trained on over a million medical
image / mask pairs), then fine-tuned for segmentation by ``segmentation.py --set encoder_init=...``.

1. cache: LiteMedSAM's embedding (256x64x64, float16) of every train / val image of BUSI (shipped split 1:
   the train list; the test list is never read) and of the folder sets HC18, MoNuSeg and CXR lungs
   (``medlite sam cache-teacher``; about 2.5 s per image on one core, resumable).
2. distill: ``litesam_lite0_md8`` (tf_efficientnet_lite0 from ImageNet + an FPN-style neck to a 256-wide
   stride-8 embedding, LiteMedSAM's head and neck-final LayerNorm copied in) regresses the cached embedding
   average-pooled to its 32x32 grid (MSE), photometric augmentation only (the cached target must still fit),
   under a wall-clock budget, best validation MSE kept.
3. zero-shot: the distilled student answers ground-truth boxes with LiteMedSAM's decoder before it has seen a
   single mask (challenge DSC at the original size, as ``litesam_distill.py``), on the BUSI test list and on
   all 100 PH2 dev images (a set it never saw); the box references and LiteMedSAM's own zero-shot figures
   are quoted from ``results/litesam_distill.json`` (same protocol and images).
4. prompt (``--prompt-epochs``, 0 = skip): the distilled student prompt-trained on BUSI's train split alone
   with ``litesam_distill.py``'s recipe for its LiteMedSAM-head variants (12 epochs, peak LR 2e-4, 'light'
   augmentation, box / point / scribble prompts), then scored on the BUSI test list (in-domain) and on all of
   PH2 (cross-domain: neither its masks nor its images were seen), beside ``litesam_swin_xs_md8``'s run of the
   same recipe (``busi_only``; its encoder distillation did see PH2 fold 0's train / val images).
5. cost: parameters, MACs and ONNX Runtime latency of the encoder and the box decoder graphs on 1 and 2
   threads, interleaved with the real LiteMedSAM's in the same run (``litesam.py``'s ``efficiency``).

PH2 is left out of the distillation on purpose: ``segmentation.py`` scores PH2 by 5-fold cross-validation
over all of its 100 dev images, so every PH2 image is a test image once; the encoder must not have seen it.
PH2 is then a set the distilled encoder never saw. The BUSI images it saw are the segmentation runs' train
and validation images (the same train list), without their masks.

    python seg_encoder_distill.py --threads 2 --budget-s 1500
    python segmentation.py --models medlitenet_lite0_s4 unet_lite0 --datasets busi --ema 0.998 \\
        --set encoder_init=runs/enc_distill/distill_lite0/best.safetensors ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from common import RESULTS, ROOT, header
from litesam import _subset, efficiency
from litesam_distill import TEACHER, _c, channel_mean_mse, cost_table, evaluate, stage_cache, test_sets

from medlite.data.base import data_root
from medlite.engine.checkpoint import load_model
from medlite.engine.tasks.promptable import SamTrainConfig, train_sam
from medlite.engine.tasks.promptable.train import load_dataset

STUDENT, RUN = "litesam_lite0_md8", "distill_lite0"
FOLDER_SETS = ("hc18", "monuseg", "cxr_lung")


def sets() -> tuple[str, ...]:
    root = data_root(None)
    return ("busi", *(f"folder:{root / n}" for n in FOLDER_SETS if (root / n).is_dir()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "enc_distill"))
    ap.add_argument("--budget-s", type=float, default=1500.0, help="wall-clock budget of the distill stage")
    ap.add_argument("--lr", type=float, default=5e-4, help="AdamW peak LR (50 warm-up steps, cosine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-epochs", type=int, default=12,
                    help="stage 4: prompt training on BUSI alone (0: skip)")
    ap.add_argument("--smoke", action="store_true", help="8 train / 4 val cases per set, 60 s")
    ap.add_argument("--out", default=str(RESULTS / "seg_encoder_distill.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs, specs = Path(args.runs), sets()
    data = {}
    for spec in specs:
        ds = load_dataset(spec, 256)
        if args.smoke:
            ds.train, ds.val = _subset(ds.train, 8), _subset(ds.val, 4)
        data[spec] = ds
    t0 = time.time()
    cache = stage_cache(SimpleNamespace(runs=str(runs)), data)  # litesam_distill.py's layout: runs/teacher_cache
    cache_min = (time.time() - t0) / 60
    cfg = SamTrainConfig(model=STUDENT, pretrained=True, init_head=TEACHER, datasets=specs, img_size=256,
                         stage="distill", teacher=TEACHER, teacher_cache=str(cache), distill_grid="student",
                         augment="photometric", batch_size=8, lr=args.lr, warmup_steps=50,
                         time_budget_s=60.0 if args.smoke else args.budget_s, threads=args.threads,
                         out_dir=str(runs), name=RUN, progress=False)
    done = cfg.run_dir() / "results.json"
    t0 = time.time()
    res = json.loads(done.read_text()) if done.is_file() else train_sam(cfg, data)
    wall = (time.time() - t0) / 60
    tests = test_sets({"busi": data["busi"], "ph2": load_dataset("ph2", 256)})
    tests = {k: _subset(tests[k], 4) if args.smoke else tests[k] for k in ("busi", "ph2_all")}
    zs = {"zeroshot": scores(cfg.run_dir(), tests, runs, "zeroshot")}
    if args.prompt_epochs:
        prompt = SamTrainConfig(model=STUDENT, datasets=("busi",), img_size=256, epochs=1 if args.smoke else
                                args.prompt_epochs, batch_size=8, lr=2e-4, init=str(cfg.run_dir() / "best.safetensors"),
                                threads=args.threads, out_dir=str(runs), name=f"prompt_busi_{RUN}", progress=False)
        done = prompt.run_dir() / "results.json"
        t0 = time.time()
        zs["prompt"] = json.loads(done.read_text()) if done.is_file() else train_sam(prompt, {"busi": data["busi"]})
        zs["prompt_min"] = (time.time() - t0) / 60
        zs["busi_only"] = scores(prompt.run_dir(), tests, runs, "busi_only")
        zs["cost"] = cost(prompt.run_dir(), runs)
    baseline = channel_mean_mse(cache / f"{TEACHER}-256", data, runs)["32"]
    write(args, data, res, baseline, cache_min, wall, cfg.time_budget_s, zs)


def cost(run: Path, runs: Path) -> dict:
    """Params, MACs and ONNX latency (1 and 2 threads, interleaved) of the student and LiteMedSAM (cached)."""
    import medlite

    f = runs / "cost.json"
    if f.is_file():
        return json.loads(f.read_text())
    models = {STUDENT: load_model(run)[0], "LiteMedSAM": medlite.create_model(TEACHER, num_classes=1, pretrained=True)}
    out = efficiency(models, runs / "onnx", [1, 2], 30)
    f.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


def scores(run: Path, tests: dict, runs: Path, key: str) -> dict:
    """Box / point scores of the model of ``run`` on each test set (``litesam_distill.evaluate``: cached under
    ``runs/eval/<RUN>_<key>:<set>.json``)."""
    model = load_model(run)[0]
    with torch.no_grad():
        return {k: evaluate(model, split, runs, f"{RUN}_{key}:{k}") for k, split in tests.items()}


def write(args, data: dict, res: dict, baseline: float, cache_min: float, wall: float, budget: float,
          zs: dict) -> None:
    hist = res["history"]
    best = min(hist, key=lambda h: h["val_distill_mse"])
    first = hist[0]["val_distill_mse"]
    counts = ", ".join(f"{Path(s.split(':', 1)[-1]).name} {len(d.train)} / {len(d.val)}" for s, d in data.items())
    ref = json.loads((RESULTS / "litesam_distill.json").read_text())  # the quoted rows (same protocol, images)
    lines = header("LiteMedSAM -> EfficientNet-Lite0 encoder distillation (for MedLiteNet's encoder)")[:-1]
    lines += [
        f"- this run: teacher cache {cache_min:.0f} min (0 when it existed: filled beforehand by `medlite sam "
        f"cache-teacher`, LiteMedSAM at about 2.5 s per image and core), distill stage {wall:.0f} min "
        f"(0 when it had finished); the distill stage ran on {res['config']['threads']} torch thread(s), "
        f"{res['train_time_s'] / 60:.0f} min of training",
        "",
        f"Student `{STUDENT}`: timm `tf_efficientnet_lite0` from its ImageNet weights + an FPN-style neck "
        "(strides 8/16/32 -> 256 channels at stride 8) + LiteMedSAM's prompt encoder and mask decoder (copied, "
        "unchanged by this stage). Target: LiteMedSAM's cached image embedding of the letterboxed 256 px image, "
        "average-pooled to 32x32; loss MSE; photometric augmentation only; AdamW, peak LR "
        f"{args.lr:g}, 50 warm-up steps then cosine, batch 8, {res['steps']} steps in a {budget:.0f} s "
        "budget; the epoch with the lowest validation MSE is kept.",
        "",
        f"Images (train / val): {counts}. Test images are never read; PH2 is left out (its 5-fold protocol "
        "tests every dev image once).",
        "",
        "| model | val MSE (32x32 grid) |",
        "|---|---|",
        f"| constant guess: each channel's training mean | {baseline:.5f} |",
        f"| {STUDENT} after its first epoch | {first:.5f} |",
        f"| {STUDENT} distilled (best, epoch {best['epoch']} of {len(hist)}) | {best['val_distill_mse']:.5f} |",
        "",
        "Zero-shot box prompts (ground-truth box of the whole mask; challenge DSC at the original size, mean ± std "
        "over images), LiteMedSAM's decoder on the distilled embedding, no mask seen. The other rows are quoted "
        "from `results/litesam_distill.json` (same protocol, same images):",
        "",
        "| model | BUSI test (195) | PH2, all 100 dev images |",
        "|---|---|---|",
        *zero_shot_rows(zs["zeroshot"], ref),
        "",
        *prompt_rows(zs, ref),
        f"The distilled encoder is `{Path(args.runs).name}/{RUN}/best.safetensors`; `segmentation.py --set "
        "encoder_init=...` starts `medlitenet_lite0_s4` / `unet_lite0` from it (`results/segmentation_medsam.md`).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def prompt_rows(zs: dict, ref: dict) -> list[str]:
    """Stage 4's table: prompt-trained on BUSI alone, tested on BUSI (in-domain) and all PH2 (cross-domain)."""
    if "busi_only" not in zs:
        return []
    md8, refs, own, p = ref["eval"]["md8:busi_only"], ref["references"], zs["busi_only"], zs["prompt"]
    return [
        f"Prompt-trained on BUSI's train split alone (stage 4: {p['steps']} steps, {p['epochs_run']} epochs, best "
        f"validation Dice {p['best_val_dice']:.3f}; {zs['prompt_min']:.0f} min in this run, 0 when it had "
        "finished), box DSC:",
        "",
        "| model | BUSI test (in-domain) | PH2, all 100 (cross-domain) |",
        "|---|---|---|",
        f"| {STUDENT} (this run) | {_c(own['busi']['box']['dsc'])} | {_c(own['ph2_all']['box']['dsc'])} |",
        f"| litesam_swin_xs_md8, same recipe (`results/litesam_distill.json`, busi_only) | "
        f"{_c(md8['busi']['box']['dsc'])} | {_c(md8['ph2_all']['box']['dsc'])} |",
        f"| the ellipse inscribed in the box | {_c(refs['busi']['box ellipse']['dsc'])} | "
        f"{_c(refs['ph2_all']['box ellipse']['dsc'])} |",
        "",
        *cost_rows(zs["cost"]),
    ]


def cost_rows(c: dict) -> list[str]:
    """Stage 5's table (``litesam_distill.cost_table``) and the targets it answers (same run, 1 thread)."""
    s, t = (c[k]["latency_ms"]["encoder"]["1"]["median"] for k in (STUDENT, "LiteMedSAM"))
    d = c[STUDENT]["latency_ms"]["decoder"]["1"]["median"]
    return ["Cost (ONNX Runtime, batch 1, median ms, encoder and box-decoder graphs timed interleaved in this run):",
            "", *cost_table(c), "",
            f"- encoder {t / s:.1f}x faster than LiteMedSAM's (1 thread, same run; target >= 5x: "
            f"{'met' if t / s >= 5 else 'missed'}); a box prompt from the cached embedding {d:.1f} ms "
            f"(target < 10 ms: {'met' if d < 10 else 'missed'})", ""]


def zero_shot_rows(zs: dict, ref: dict) -> list[str]:
    md8, teacher, refs = ref["eval"]["md8:zeroshot"], ref["eval"]["litemedsam"], ref["references"]
    rows = [f"| {STUDENT} distilled here (this run) | {_c(zs['busi']['box']['dsc'])} | "
            f"{_c(zs['ph2_all']['box']['dsc'])} |",
            f"| litesam_swin_xs_md8 distilled (random init; BUSI + PH2 f0 + three sets) | "
            f"{_c(md8['busi']['box']['dsc'])} | {_c(md8['ph2_all']['box']['dsc'])} |",
            f"| LiteMedSAM (the teacher) | {_c(teacher['busi']['box']['dsc'])} | "
            f"{_c(teacher['ph2_all']['box']['dsc'])} |"]
    for kind, label in (("box ellipse", "the ellipse inscribed in the box"), ("box fill", "the box itself, filled")):
        rows.append(f"| {label} | {_c(refs['busi'][kind]['dsc'])} | {_c(refs['ph2_all'][kind]['dsc'])} |")
    return rows


if __name__ == "__main__":
    main()
