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

import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, header
from litesam import _subset, efficiency

from medlite.data.base import data_root
from medlite.engine.checkpoint import load_model
from medlite.engine.tasks.promptable import SamTrainConfig, evaluate_sam, train_sam
from medlite.engine.tasks.promptable.teacher import cache_embeddings, dataset_folder, load_embeddings, load_teacher
from medlite.engine.tasks.promptable.train import concat, load_dataset

TEACHER, STUDENT, RUN = "litemedsam", "litesam_lite0_md8", "distill_lite0"
FOLDER_SETS = ("hc18", "monuseg", "cxr_lung")


def sets() -> tuple[str, ...]:
    root = data_root(None)
    return ("busi", *(f"folder:{root / n}" for n in FOLDER_SETS if (root / n).is_dir()))


def stage_cache(data: dict, cache: Path) -> float:
    """Teacher embeddings of every train / val case not cached yet; returns the minutes it took."""
    t0 = time.time()
    teacher, name = None, TEACHER
    for spec, ds in data.items():
        for split in ("train", "val"):
            folder = cache / f"{name}-256" / dataset_folder(spec)
            names = getattr(ds, split).names
            if all((folder / f"{n}.safetensors").is_file() for n in names):
                continue
            teacher = teacher or load_teacher(TEACHER)[0]
            n = cache_embeddings(teacher, getattr(ds, split), folder)
            print(f"[cache] {spec} {split}: {n} new", flush=True)
    return (time.time() - t0) / 60


def channel_mean_mse(data: dict, cache: Path) -> float:
    """Validation MSE, on the student's 32x32 grid, of the constant guess "each channel's training mean"."""
    pooled = {"train": [], "val": []}
    for spec, ds in data.items():
        for split, out in pooled.items():
            emb = load_embeddings(cache / f"{TEACHER}-256" / dataset_folder(spec), getattr(ds, split).names)
            out.append(F.adaptive_avg_pool2d(emb.float(), 32))
    mean = torch.cat(pooled["train"]).mean((0, 2, 3), keepdim=True)
    return float((torch.cat(pooled["val"]) - mean).pow(2).mean())


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
    cache = runs / "teacher_cache"
    cache_min = stage_cache(data, cache)
    cfg = SamTrainConfig(model=STUDENT, pretrained=True, init_head=TEACHER, datasets=specs, img_size=256,
                         stage="distill", teacher=TEACHER, teacher_cache=str(cache), distill_grid="student",
                         augment="photometric", batch_size=8, lr=args.lr, warmup_steps=50,
                         time_budget_s=60.0 if args.smoke else args.budget_s, threads=args.threads,
                         out_dir=str(runs), name=RUN, progress=False)
    done = cfg.run_dir() / "results.json"
    t0 = time.time()
    res = json.loads(done.read_text()) if done.is_file() else train_sam(cfg, data)
    wall = (time.time() - t0) / 60
    zs = {"zeroshot": zero_shot(cfg.run_dir(), data["busi"], runs, args.smoke, "zeroshot")}
    if args.prompt_epochs:
        prompt = SamTrainConfig(model=STUDENT, datasets=("busi",), img_size=256, epochs=1 if args.smoke else
                                args.prompt_epochs, batch_size=8, lr=2e-4, init=str(cfg.run_dir() / "best.safetensors"),
                                threads=args.threads, out_dir=str(runs), name=f"prompt_busi_{RUN}", progress=False)
        done = prompt.run_dir() / "results.json"
        t0 = time.time()
        zs["prompt"] = json.loads(done.read_text()) if done.is_file() else train_sam(prompt, {"busi": data["busi"]})
        zs["prompt_min"] = (time.time() - t0) / 60
        zs["busi_only"] = zero_shot(prompt.run_dir(), data["busi"], runs, args.smoke, "busi_only")
        zs["cost"] = cost(prompt.run_dir(), runs, args.smoke)
    write(args, data, res, channel_mean_mse(data, cache), cache_min, wall, cfg.time_budget_s, zs)


def cost(run: Path, runs: Path, smoke: bool) -> dict:
    """Params, MACs and ONNX latency (1 and 2 threads, interleaved) of the student and LiteMedSAM (cached)."""
    import medlite

    f = runs / ("cost_smoke.json" if smoke else "cost.json")
    if f.is_file():
        return json.loads(f.read_text())
    models = {STUDENT: load_model(run)[0], "LiteMedSAM": medlite.create_model(TEACHER, num_classes=1, pretrained=True)}
    out = efficiency(models, runs / "onnx", [1, 2], 3 if smoke else 30)
    f.write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


def zero_shot(run: Path, busi, runs: Path, smoke: bool, key: str) -> dict:
    """Box DSC of the model of ``run`` on BUSI test and all PH2 (cached as ``runs/<key>.json``)."""
    f = runs / (f"{key}_smoke.json" if smoke else f"{key}.json")
    if f.is_file():
        return json.loads(f.read_text())
    ph2 = load_dataset("ph2", 256)
    sets = {"busi": busi.test, "ph2_all": concat([ph2.train, ph2.val, ph2.test])}
    if smoke:
        sets = {k: _subset(v, 4) for k, v in sets.items()}
    model, _ = load_model(run)
    with torch.no_grad():
        out = {k: evaluate_sam(model, v, prompts=("box",))["box"]["dsc"] for k, v in sets.items()}
    out = {k: {"mean": v["mean"], "std": v["std"], "n": v["n"]} for k, v in out.items()}
    f.write_text(json.dumps(out, indent=1) + "\n")
    return out


def write(args, data: dict, res: dict, baseline: float, cache_min: float, wall: float, budget: float,
          zs: dict) -> None:
    hist = res["history"]
    best = min(hist, key=lambda h: h["val_distill_mse"])
    first = hist[0]["val_distill_mse"]
    counts = ", ".join(f"{Path(s.split(':', 1)[-1]).name} {len(d.train)} / {len(d.val)}" for s, d in data.items())
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
        *zero_shot_rows(zs["zeroshot"]),
        "",
        *prompt_rows(zs),
        f"The distilled encoder is `{Path(args.runs).name}/{RUN}/best.safetensors`; `segmentation.py --set "
        "encoder_init=...` starts `medlitenet_lite0_s4` / `unet_lite0` from it (`results/segmentation_medsam.md`).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def prompt_rows(zs: dict) -> list[str]:
    """Stage 4's table: prompt-trained on BUSI alone, tested on BUSI (in-domain) and all PH2 (cross-domain)."""
    if "busi_only" not in zs:
        return []
    ref = json.loads((RESULTS / "litesam_distill.json").read_text())
    md8, refs = ref["eval"]["md8:busi_only"], ref["references"]
    p = zs["prompt"]

    def cell(d) -> str:
        return f"{d['mean']:.3f} ± {d['std']:.3f}"

    return [
        f"Prompt-trained on BUSI's train split alone (stage 4: {p['steps']} steps, {p['epochs_run']} epochs, best "
        f"validation Dice {p['best_val_dice']:.3f}; {zs['prompt_min']:.0f} min in this run, 0 when it had "
        "finished), box DSC:",
        "",
        "| model | BUSI test (in-domain) | PH2, all 100 (cross-domain) |",
        "|---|---|---|",
        f"| {STUDENT} (this run) | {cell(zs['busi_only']['busi'])} | {cell(zs['busi_only']['ph2_all'])} |",
        f"| litesam_swin_xs_md8, same recipe (`results/litesam_distill.json`, busi_only) | "
        f"{cell(md8['busi']['box']['dsc'])} | {cell(md8['ph2_all']['box']['dsc'])} |",
        f"| the ellipse inscribed in the box | {cell(refs['busi']['box ellipse']['dsc'])} | "
        f"{cell(refs['ph2_all']['box ellipse']['dsc'])} |",
        "",
        *cost_rows(zs["cost"]),
    ]


def cost_rows(c: dict) -> list[str]:
    """Stage 5's table and the encoder speed ratio (same run, 1 thread)."""
    rows = ["Cost (ONNX Runtime, batch 1, median ms, encoder and box-decoder graphs timed interleaved in this run):",
            "", "| model | encoder params (M) | encoder MACs (G) | decoder MACs (G) | encoder ms, 1 / 2 threads | "
            "decoder ms, 1 / 2 threads |", "|---|---|---|---|---|---|"]
    for name, v in c.items():
        lat = v["latency_ms"]
        rows.append(f"| {name} | {v['params']['encoder'] / 1e6:.2f} | {v['macs']['encoder'] / 1e9:.2f} | "
                    f"{v['macs']['decoder'] / 1e9:.3f} | {lat['encoder']['1']['median']:.1f} / "
                    f"{lat['encoder']['2']['median']:.1f} | {lat['decoder']['1']['median']:.2f} / "
                    f"{lat['decoder']['2']['median']:.2f} |")
    s, t = (c[k]["latency_ms"]["encoder"]["1"]["median"] for k in (STUDENT, "LiteMedSAM"))
    d = c[STUDENT]["latency_ms"]["decoder"]["1"]["median"]
    rows += ["", f"- encoder {t / s:.1f}x faster than LiteMedSAM's (1 thread, same run; target >= 5x: "
             f"{'met' if t / s >= 5 else 'missed'}); a box prompt from the cached embedding {d:.1f} ms "
             f"(target < 10 ms: {'met' if d < 10 else 'missed'})", ""]
    return rows


def zero_shot_rows(zs: dict) -> list[str]:
    ref = json.loads((RESULTS / "litesam_distill.json").read_text())

    def cell(d) -> str:
        return f"{d['mean']:.3f} ± {d['std']:.3f}"

    rows = [f"| {STUDENT} distilled here (this run) | {cell(zs['busi'])} | {cell(zs['ph2_all'])} |"]
    md8 = ref["eval"]["md8:zeroshot"]
    rows.append(f"| litesam_swin_xs_md8 distilled (random init; BUSI + PH2 f0 + three sets) | "
                f"{cell(md8['busi']['box']['dsc'])} | {cell(md8['ph2_all']['box']['dsc'])} |")
    rows.append(f"| LiteMedSAM (the teacher) | {cell(ref['eval']['litemedsam']['busi']['box']['dsc'])} | "
                f"{cell(ref['eval']['litemedsam']['ph2_all']['box']['dsc'])} |")
    for kind, label in (("box ellipse", "the ellipse inscribed in the box"), ("box fill", "the box itself, filled")):
        rows.append(f"| {label} | "
                    f"{cell(ref['references']['busi'][kind]['dsc'])} | "
                    f"{cell(ref['references']['ph2_all'][kind]['dsc'])} |")
    return rows


if __name__ == "__main__":
    main()
