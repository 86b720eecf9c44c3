"""Medical knowledge for MedLiteNet's encoder: EfficientNet-Lite0, started from ImageNet, distilled from
LiteMedSAM's image embedding (LiteMedSAM is itself distilled from MedSAM, trained on over a million medical
image / mask pairs), then fine-tuned for segmentation by ``segmentation.py --set encoder_init=...``.

1. cache: LiteMedSAM's embedding (256x64x64, float16) of every train / val image of BUSI (shipped split 1:
   the train list; the test list is never read) and of the folder sets HC18, MoNuSeg and CXR lungs
   (``medlite sam cache-teacher``; about 2.5 s per image on one core, resumable).
2. distill: ``litesam_lite0_md8`` (tf_efficientnet_lite0 from ImageNet + an FPN-style neck to a 256-wide
   stride-8 embedding, LiteMedSAM's head and neck-final LayerNorm copied in) regresses the cached embedding
   average-pooled to its 32x32 grid (MSE), photometric augmentation only (the cached target must still fit),
   under a wall-clock budget, best validation MSE kept; ``--rounds N``: round k > 1 continues round k-1's best
   with a warm restart of the schedule and the same budget (folders ``distill_lite0x<k>``).
3. zero-shot: each round's distilled student answers ground-truth boxes with LiteMedSAM's decoder before it has
   seen a single mask (challenge DSC at the original size, as ``litesam_distill.py``), on the BUSI test list and
   on all 100 PH2 dev images (a set it never saw); the box references and LiteMedSAM's own zero-shot figures
   are quoted from ``results/litesam_distill.json`` (same protocol and images).
4. prompt (``--prompt-epochs``, 0 = skip): every round's student prompt-trained on BUSI's train split alone
   with ``litesam_distill.py``'s recipe for its LiteMedSAM-head variants (12 epochs, peak LR 2e-4, 'light'
   augmentation, box / point / scribble prompts; ``plain``), and the last round's student also with each other
   of ``--prompt-recipes`` (``ema``: validate and keep an EMA of the weights, decay 0.998; ``enc``: the image
   encoder at 0.1x the learning rate, biases and norms without weight decay; ``sets``: first 12 epochs on the
   ground truth of BUSI and of the three folder sets together, then 8 epochs at the same LR on BUSI alone: more
   images and modalities for the decoder, PH2 still unseen; ``setsenc``: ``sets`` with the encoder at 0.1x;
   ``setspseudo``: ``setsenc`` whose joint stage also trains on LiteMedSAM's masks for 2 random boxes per
   training image, the confident ones (output distillation: the teacher answers from its cached embedding,
   ``--pseudo-boxes`` of ``medlite sam train``)), then
   scored on the BUSI test list (in-domain) and on all of PH2 (cross-domain: neither its masks nor its images
   were seen), beside ``litesam_swin_xs_md8``'s run of the same recipe (``busi_only``; its encoder
   distillation did see PH2 fold 0's train / val images). The round and recipe with the best BUSI validation
   Dice is then trained on PH2 fold 0's train split alone the same way and scored on PH2 fold 0's test images
   (in-domain) and the BUSI test list (cross-domain); the issue's targets are checked on those two runs.
5. cost: parameters, MACs and ONNX Runtime latency of the encoder and the box decoder graphs on 1 and 2
   threads, interleaved with the real LiteMedSAM's in the same run (``litesam.py``'s ``efficiency``).

PH2 is left out of the distillation on purpose: ``segmentation.py`` scores PH2 by 5-fold cross-validation
over all of its 100 dev images, so every PH2 image is a test image once; the encoder must not have seen it.
PH2 is then a set the distilled encoder never saw. The BUSI images it saw are the segmentation runs' train
and validation images (the same train list), without their masks.

    python seg_encoder_distill.py --threads 2 --budget-s 1500
    python seg_encoder_distill.py --threads 1 --budget-s 1200 --rounds 3 --prompt-recipes plain ema enc
    python seg_encoder_distill.py --threads 1 --budget-s 1200 --rounds 3 \\
        --prompt-recipes plain enc sets setsenc setspseudo
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
# stage-4 recipes: name -> (SamTrainConfig overrides, run-folder suffix, eval-file suffix, label)
RECIPES = {"plain": ({}, "", "", "plain recipe"), "ema": ({"ema": 0.998}, "_ema998", "_ema0.998", "EMA 0.998"),
           "enc": ({"encoder_lr_mult": 0.1}, "_enc01", "_enc0.1", "encoder at 0.1x LR"),
           "sets": ({}, "_sets", "_sets", "with HC18 + MoNuSeg + CXR lungs, then alone"),
           "setsenc": ({"encoder_lr_mult": 0.1}, "_setsenc01", "_sets_enc0.1",
                       "with HC18 + MoNuSeg + CXR lungs, then alone, encoder at 0.1x LR"),
           "setspseudo": ({"encoder_lr_mult": 0.1}, "_setspseudo", "_sets_pseudo",
                          "with HC18 + MoNuSeg + CXR lungs and LiteMedSAM's masks for random boxes, then alone, "
                          "encoder at 0.1x LR")}
PSEUDO_BOXES = 2  # the "setspseudo" recipe: random boxes per training image answered by LiteMedSAM (joint stage)
SETS_FINETUNE = (8, 2e-4)  # the "sets" recipe's second run on the one set alone: epochs, peak LR (as
# litesam_distill.py's fine-tuning of its all-sets models)


def sets() -> tuple[str, ...]:
    root = data_root(None)
    return ("busi", *(f"folder:{root / n}" for n in FOLDER_SETS if (root / n).is_dir()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "enc_distill"))
    ap.add_argument("--budget-s", type=float, default=1500.0, help="wall-clock budget of each distill round")
    ap.add_argument("--rounds", type=int, default=1,
                    help="distill rounds: round k > 1 continues round k-1's best (warm restart, same budget)")
    ap.add_argument("--lr", type=float, default=5e-4, help="AdamW peak LR (50 warm-up steps, cosine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-epochs", type=int, default=12,
                    help="stage 4: prompt training on BUSI alone (0: skip)")
    ap.add_argument("--prompt-recipes", nargs="+", default=["plain"], choices=list(RECIPES),
                    help="stage 4: 'plain' from every round, the others from the last round")
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
    base = dict(model=STUDENT, datasets=specs, img_size=256, stage="distill", teacher=TEACHER,
                teacher_cache=str(cache), distill_grid="student", augment="photometric", batch_size=8, lr=args.lr,
                warmup_steps=50, time_budget_s=60.0 if args.smoke else args.budget_s, threads=args.threads,
                out_dir=str(runs), progress=False)
    rounds, t0 = [], time.time()
    for r in range(1, args.rounds + 1):  # round 1 from ImageNet + LiteMedSAM's head, then from the last best
        start = (dict(pretrained=True, init_head=TEACHER) if r == 1 else
                 dict(init=str(runs / round_name(r - 1) / "best.safetensors")))
        cfg = SamTrainConfig(**base, **start, name=round_name(r))
        done = cfg.run_dir() / "results.json"
        rounds.append(json.loads(done.read_text()) if done.is_file() else train_sam(cfg, data))
    wall = (time.time() - t0) / 60
    ph2 = load_dataset("ph2", 256)  # never distilled on: stage 4's second set and a test set
    if args.smoke:
        ph2.train, ph2.val = _subset(ph2.train, 8), _subset(ph2.val, 4)
    prompt_sets = {**data, "ph2": ph2}  # BUSI, PH2 and (the "sets" recipe) the folder sets
    tests = test_sets(prompt_sets)
    tests = {k: _subset(tests[k], 4) if args.smoke else tests[k] for k in ("busi", "ph2", "ph2_all")}
    zs = {"zeroshot": {r: scores(runs / round_name(r), tests, runs, "zeroshot", r, ("busi", "ph2_all"))
                       for r in range(1, args.rounds + 1)}, "prompt": {}}
    if args.prompt_epochs:
        t0 = time.time()
        for r in range(1, args.rounds + 1):
            for rec in args.prompt_recipes if r == args.rounds else ["plain"]:
                zs["prompt"][r, rec] = prompt_run(args, runs, prompt_sets, r, rec, "busi", tests)
        # the recipe and round with the best BUSI validation Dice is the one trained on PH2 fold 0 alone too
        zs["chosen"] = max(zs["prompt"], key=lambda k: zs["prompt"][k]["train"]["best_val_dice"])
        # runs of other recipes from earlier rounds that an earlier command left: reported, not selected from
        zs["extra"] = {(r, rec): prompt_run(args, runs, prompt_sets, r, rec, "busi", tests)
                       for r in range(1, args.rounds) for rec in RECIPES if rec != "plain"
                       and (runs / prompt_name(r, rec, "busi") / "results.json").is_file()}
        zs["ph2_only"] = prompt_run(args, runs, prompt_sets, *zs["chosen"], "ph2", tests)
        # other recipes' finished PH2 fold-0 runs (last round): reported beside the chosen one, not selected from
        zs["ph2_extra"] = {rec: prompt_run(args, runs, prompt_sets, args.rounds, rec, "ph2", tests)
                           for rec in RECIPES if (args.rounds, rec) != zs["chosen"]
                           and (runs / prompt_name(args.rounds, rec, "ph2") / "results.json").is_file()}
        zs["prompt_min"] = (time.time() - t0) / 60
        zs["cost"] = cost(runs / prompt_name(1, "plain", "busi"), runs)
    baseline = channel_mean_mse(cache / f"{TEACHER}-256", data, runs)["32"]
    write(args, data, rounds, baseline, cache_min, wall, base["time_budget_s"], zs)


def round_name(r: int) -> str:
    """Run folder of distill round ``r`` (round 1: ``distill_lite0``, later ones ``distill_lite0x<r>``)."""
    return RUN if r == 1 else f"{RUN}x{r}"


def prompt_name(r: int, rec: str, on: str) -> str:
    return f"prompt_{on}_{round_name(r)}{RECIPES[rec][1]}"


def prompt_run(args, runs: Path, data: dict, r: int, rec: str, on: str, tests: dict) -> dict:
    """Stage 4: round ``r``'s distilled student prompt-trained on ``data[on]``'s train split alone (BUSI, or PH2
    fold 0), scored in-domain and on the other set (cross-domain)."""
    base = dict(model=STUDENT, img_size=256, batch_size=8, lr=2e-4, threads=args.threads, out_dir=str(runs),
                progress=False, **RECIPES[rec][0])
    init, joint, (epochs, lr) = str(runs / round_name(r) / "best.safetensors"), None, (args.prompt_epochs, 2e-4)
    if rec.startswith("sets"):  # first the ground truth of ``on`` and of the folder sets together, then ``on``
        joint_sets = (on, *(k for k in data if k.startswith("folder:")))
        pseudo = {}
        if rec == "setspseudo":  # the teacher's masks for random boxes join the joint stage's cases
            pseudo = dict(teacher=TEACHER, teacher_cache=str(runs / "teacher_cache"), distill_weight=0.0,
                          pseudo_boxes=PSEUDO_BOXES)
        c = SamTrainConfig(**base, **pseudo, datasets=joint_sets, init=init,
                           epochs=1 if args.smoke else args.prompt_epochs,
                           name=f"prompt_{on}{RECIPES[rec][1][1:]}_{round_name(r)}")
        joint = _trained(c, data)
        init, (epochs, lr) = str(c.run_dir() / "best.safetensors"), SETS_FINETUNE
    c = SamTrainConfig(**{**base, "lr": lr}, datasets=(on,), epochs=1 if args.smoke else epochs, init=init,
                       name=prompt_name(r, rec, on))
    train = _trained(c, data)
    if joint is not None:
        train = {**train, "joint": joint}
    sets_ = ("busi", "ph2_all") if on == "busi" else ("ph2", "busi")
    return {"train": train, "scores": scores(c.run_dir(), tests, runs, f"{on}_only", r, sets_, rec)}


def _trained(c: SamTrainConfig, data: dict) -> dict:
    """The run record of ``c`` (trained now unless its folder holds a finished one)."""
    done = c.run_dir() / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    sets_ = {k: data[k] for k in c.datasets}
    if c.pseudo_boxes:  # the teacher answers from its embeddings of every set (PH2's: the distill stage left it out)
        stage_cache(SimpleNamespace(runs=str(Path(c.teacher_cache).parent)), sets_)
    return train_sam(c, sets_)


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


def scores(run: Path, tests: dict, runs: Path, key: str, r: int, sets_: tuple, rec: str = "plain") -> dict:
    """Box / point scores of the model of ``run`` on ``sets_`` (``litesam_distill.evaluate``: cached under
    ``runs/eval/<round>_<key>[_<recipe>]:<set>.json``)."""
    model = load_model(run)[0]
    tag = f"{round_name(r)}_{key}{RECIPES[rec][2]}"
    with torch.no_grad():
        return {k: evaluate(model, tests[k], runs, f"{tag}:{k}") for k in sets_}


def write(args, data: dict, rounds: list, baseline: float, cache_min: float, wall: float, budget: float,
          zs: dict) -> None:
    counts = ", ".join(f"{Path(s.split(':', 1)[-1]).name} {len(d.train)} / {len(d.val)}" for s, d in data.items())
    ref = json.loads((RESULTS / "litesam_distill.json").read_text())  # the quoted rows (same protocol, images)
    train_min = " + ".join(f"{r['train_time_s'] / 60:.0f}" for r in rounds)
    lines = header("LiteMedSAM -> EfficientNet-Lite0 encoder distillation (LiteSAM lite0 and MedLiteNet's encoder)")
    lines = lines[:-1] + [
        f"- this run: teacher cache {cache_min:.0f} min (0 when it existed: filled beforehand by `medlite sam "
        f"cache-teacher`, LiteMedSAM at about 2.5 s per image and core), distill stage {wall:.0f} min "
        f"(0 when it had finished); distill rounds ran on "
        f"{' / '.join(str(r['config']['threads']) for r in rounds)} torch thread(s), {train_min} min of training",
        "",
        f"Student `{STUDENT}`: timm `tf_efficientnet_lite0` from its ImageNet weights + an FPN-style neck "
        "(strides 8/16/32 -> 256 channels at stride 8) + LiteMedSAM's prompt encoder and mask decoder (copied, "
        "unchanged by this stage). Target: LiteMedSAM's cached image embedding of the letterboxed 256 px image, "
        "average-pooled to 32x32; loss MSE; photometric augmentation only; AdamW, peak LR "
        f"{args.lr:g}, 50 warm-up steps then cosine, batch 8, a {budget:.0f} s budget per round "
        f"({' + '.join(str(r['steps']) for r in rounds)} steps); round k > 1 restarts the schedule from round "
        "k-1's best; the epoch with the lowest validation MSE is kept.",
        "",
        f"Images (train / val): {counts}. Test images are never read; PH2 is left out (its 5-fold protocol "
        "tests every dev image once).",
        "",
        "| model | val MSE (32x32 grid) |",
        "|---|---|",
        f"| constant guess: each channel's training mean | {baseline:.5f} |",
        f"| {STUDENT} after its first epoch | {rounds[0]['history'][0]['val_distill_mse']:.5f} |",
    ]
    for r, res in enumerate(rounds, 1):
        best = min(res["history"], key=lambda h: h["val_distill_mse"])
        lines.append(f"| {STUDENT} distilled, {_round(r)} (best: epoch {best['epoch']} of {len(res['history'])}) | "
                     f"{best['val_distill_mse']:.5f} |")
    lines += [
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
        *target_rows(zs, ref),
        *(cost_rows(zs["cost"]) if "cost" in zs else []),
        f"The distilled encoders are `{Path(args.runs).name}/{round_name(1)}/best.safetensors` (round 1) and "
        f"`{Path(args.runs).name}/{round_name(len(rounds))}/best.safetensors` (round {len(rounds)}); "
        "`segmentation.py --set encoder_init=...` starts `medlitenet_lite0_s4` / `unet_lite0` from them "
        "(`results/segmentation_medsam.md`: round 1, `results/segmentation_medsam_x3.md`: round 3).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def _round(r: int) -> str:
    return "round 1" if r == 1 else f"round {r} (continues round {r - 1})"


def _recipe(r: int, rec: str) -> str:
    return f"{_round(r)}, {RECIPES[rec][3]}"


def prompt_rows(zs: dict, ref: dict) -> list[str]:
    """Stage 4's tables: prompt-trained on BUSI alone (every round and recipe; the best BUSI validation Dice is
    chosen), and the chosen one trained on PH2 fold 0 alone; each in-domain and cross-domain."""
    if not zs["prompt"]:
        return []
    md8, refs, teacher = ref["eval"]["md8:busi_only"], ref["references"], ref["eval"]["litemedsam"]
    n, lr = SETS_FINETUNE
    rows = [f"Prompt-trained on one set's train split (stage 4: {args_epochs(zs)} epochs, peak LR 2e-4, "
            "'light' augmentation, box / point / scribble prompts; the `sets` recipe first trains on that set and "
            f"HC18, MoNuSeg and CXR lungs together, then {n} epochs at peak LR {lr:g} on the set alone; "
            f"{_pseudo_note(zs)}{zs['prompt_min']:.0f} min in this run, 0 when it had finished); box DSC. "
            "Trained on BUSI:",
            "", "| model | best val Dice (BUSI, 45) | BUSI test (in-domain) | PH2, all 100 (cross-domain) |",
            "|---|---|---|---|"]
    for (r, rec), p in [*zs["prompt"].items(), *zs["extra"].items()]:
        mark = (" **(chosen on validation)**" if (r, rec) == zs["chosen"] else
                " (an earlier command's run; not selected from)" if (r, rec) in zs["extra"] else "")
        rows.append(f"| {STUDENT}, {_recipe(r, rec)}{mark} | {p['train']['best_val_dice']:.3f} | "
                    f"{_c(p['scores']['busi']['box']['dsc'])} | {_c(p['scores']['ph2_all']['box']['dsc'])} |")
    rows += [f"| litesam_swin_xs_md8, same recipe (`results/litesam_distill.json`, busi_only) | – | "
             f"{_c(md8['busi']['box']['dsc'])} | {_c(md8['ph2_all']['box']['dsc'])} |",
             f"| LiteMedSAM zero-shot | – | {_c(teacher['busi']['box']['dsc'])} | "
             f"{_c(teacher['ph2_all']['box']['dsc'])} |",
             f"| the ellipse inscribed in the box | – | {_c(refs['busi']['box ellipse']['dsc'])} | "
             f"{_c(refs['ph2_all']['box ellipse']['dsc'])} |", ""]
    p, (r, rec), last = zs["ph2_only"], zs["chosen"], max(zs["zeroshot"])
    joint = (f"{p['train']['joint']['steps']} steps on PH2 fold 0 and the three folder sets together, then "
             if "joint" in p["train"] else "")
    rows += [f"The chosen recipe ({_recipe(r, rec)}) applied to PH2 fold 0's train split instead of BUSI's "
             f"({joint}{p['train']['steps']} steps on PH2 fold 0 alone, best validation Dice "
             f"{p['train']['best_val_dice']:.3f}); the other recipes' runs on PH2 fold 0 are listed too:", "",
             "| model | PH2 fold-0 test, 20 (in-domain) | BUSI test (cross-domain) |", "|---|---|---|",
             f"| {STUDENT}, {_recipe(r, rec)} **(chosen on BUSI validation)** | "
             f"{_c(p['scores']['ph2']['box']['dsc'])} | {_c(p['scores']['busi']['box']['dsc'])} |",
             *(f"| {STUDENT}, {_recipe(last, x)} (not selected; PH2 validation Dice "
               f"{q['train']['best_val_dice']:.3f}, the chosen run's {p['train']['best_val_dice']:.3f}) | "
               f"{_c(q['scores']['ph2']['box']['dsc'])} | {_c(q['scores']['busi']['box']['dsc'])} |"
               for x, q in zs.get("ph2_extra", {}).items()),
             f"| LiteMedSAM zero-shot | {_c(teacher['ph2']['box']['dsc'])} | {_c(teacher['busi']['box']['dsc'])} |",
             f"| the ellipse inscribed in the box | {_c(refs['ph2']['box ellipse']['dsc'])} | "
             f"{_c(refs['busi']['box ellipse']['dsc'])} |", ""]
    return rows


def _pseudo_note(zs: dict) -> str:
    """How many teacher-labelled cases the ``setspseudo`` recipe's joint stage trained on (BUSI run), if it ran."""
    p = next((p for (_, rec), p in zs["prompt"].items() if rec == "setspseudo"), None)
    if p is None:
        return ""
    j = p["train"]["joint"]
    return (f"`setspseudo` adds to its joint stage's {j['train_cases'] - j['pseudo_cases']} ground-truth cases "
            f"{j['pseudo_cases']} of LiteMedSAM's masks for {PSEUDO_BOXES} random boxes per training image, those "
            "with predicted IoU >= 0.75 and stability >= 0.7 (output distillation; "
            f"{j['steps']} joint steps); ")


def args_epochs(zs: dict) -> int:
    p = next(iter(zs["prompt"].values()))["train"]
    return p.get("joint", p)["epochs_run"]  # a "sets" recipe's first stage has the stage-4 epochs


def target_rows(zs: dict, ref: dict) -> list[str]:
    """The issue's accuracy targets, each a difference measured on the same images."""
    if not zs["prompt"]:
        return []
    refs, teacher = ref["references"], ref["eval"]["litemedsam"]
    busi, ph2 = zs["prompt"][zs["chosen"]]["scores"], zs["ph2_only"]["scores"]
    zero = zs["zeroshot"][max(zs["zeroshot"])]
    m = lambda d, k: d[k]["box"]["dsc"]["mean"]  # noqa: E731
    ell = lambda k: refs[k]["box ellipse"]["dsc"]["mean"]  # noqa: E731
    checks = [
        ("in-domain, BUSI: the ellipse + 0.03", m(busi, "busi"), ell("busi") + 0.03),
        ("in-domain, PH2 fold 0: the ellipse + 0.03", m(ph2, "ph2"), ell("ph2") + 0.03),
        ("cross-domain, BUSI -> PH2 (all 100): the ellipse + 0.03", m(busi, "ph2_all"), ell("ph2_all") + 0.03),
        ("cross-domain, PH2 f0 -> BUSI: the ellipse + 0.03", m(ph2, "busi"), ell("busi") + 0.03),
        ("zero-shot (no mask seen), BUSI: 0.97x LiteMedSAM", m(zero, "busi"), 0.97 * m(teacher, "busi")),
        ("zero-shot (no mask seen), PH2 (all 100): 0.97x LiteMedSAM", m(zero, "ph2_all"),
         0.97 * m(teacher, "ph2_all")),
        ("fine-tuned on BUSI beats LiteMedSAM zero-shot on BUSI", m(busi, "busi"), m(teacher, "busi")),
        ("fine-tuned on PH2 f0 beats LiteMedSAM zero-shot on PH2 f0", m(ph2, "ph2"), m(teacher, "ph2")),
    ]
    rows = ["Targets of the issue for this student (the chosen recipe, the last distill round; box DSC means):", "",
            "| target | measured | needed | |", "|---|---|---|---|"]
    for name, got, need in checks:
        rows.append(f"| {name} | {got:.3f} | {need:.3f} | {'met' if got >= need else f'missed by {need - got:.3f}'} |")
    return [*rows, ""]


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
    rows = [f"| {STUDENT} distilled here, {_round(r)} (this run) | {_c(z['busi']['box']['dsc'])} | "
            f"{_c(z['ph2_all']['box']['dsc'])} |" for r, z in zs.items()]
    rows += [f"| litesam_swin_xs_md8 distilled (random init; BUSI + PH2 f0 + three sets) | "
             f"{_c(md8['busi']['box']['dsc'])} | {_c(md8['ph2_all']['box']['dsc'])} |",
             f"| LiteMedSAM (the teacher) | {_c(teacher['busi']['box']['dsc'])} | "
             f"{_c(teacher['ph2_all']['box']['dsc'])} |"]
    for kind, label in (("box ellipse", "the ellipse inscribed in the box"), ("box fill", "the box itself, filled")):
        rows.append(f"| {label} | {_c(refs['busi'][kind]['dsc'])} | {_c(refs['ph2_all'][kind]['dsc'])} |")
    return rows


if __name__ == "__main__":
    main()
