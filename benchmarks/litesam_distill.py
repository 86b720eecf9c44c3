"""LiteSAM distilled from the real LiteMedSAM, against LiteMedSAM zero-shot and the box-only references.

Stages (each resumes or is skipped when its output exists; runs under --runs, which is not committed):

1. cache: LiteMedSAM's image embedding (256x64x64, float16) of every train / val image of every
   segmentation set in $MEDLITE_DATA (BUSI split 1, PH2 fold 0, HC18, MoNuSeg, CXR lungs); test splits
   are never read, so no evaluation image is ever seen, not even unlabelled;
2. distill: ``litesam_swin_xs``'s encoder (+ a 1x1 adapter) regresses the cached embeddings (MSE), all of
   those images, selected on validation MSE. Variants (``--distill-grid``): "upsampled" (the student's 16x16
   embedding upsampled to the teacher's 64x64; run folders ``distill``, ``prompt*``), "pooled" (the teacher's
   embedding average-pooled to 16x16; folders ``*_pooled``), both without augmentation, and "pooled_photo"
   (pooled, with intensity-only augmentation of the student's input, which leaves the cached target valid;
   folders ``*_pooled_photo``), and "md" / "md8": ``litesam_swin_xs_md`` / ``litesam_swin_xs_md8`` (256-wide
   embedding at 16x16 / 32x32) with the real LiteMedSAM's prompt encoder and mask decoder copied in before
   distillation, the encoder regressing the teacher's pooled embedding itself (folders ``*_md``, ``*_md8``;
   their distill checkpoint already answers prompts: the "no masks" rows; their prompt stage runs at
   ``--finetune-lr``, and their BUSI + PH2 model is then fine-tuned on each set's train split alone);
3. prompt: the whole model from the distilled weights on box / point / scribble prompts with the ground truth
   (the recipe of ``results/litesam.md``: BUSI + PH2 fold-0 train), selected on validation Dice;
   cross-domain runs: BUSI train only (tested on all of PH2) and PH2 fold-0 train only (tested on BUSI);
   ``--scratch``: the same prompt recipe from random weights, the same-run reference for what distilling adds;
   ``--all-sets`` (from the first variant named): prompt training on the train splits of all five sets
   (``--all-epochs``, 24), and on all but BUSI / all but PH2 for the cross-domain rows; then fine-tuning of
   the all-sets model on BUSI's and on PH2 fold 0's train split alone (``--finetune-epochs``, 8, at
   ``--finetune-lr``); all selected on their own validation Dice;
   ``--pseudo-boxes N`` (default 4; 0 = off): the all-sets runs again, from the same distilled weights, with
   N random boxes per training image answered by LiteMedSAM from its cached embedding and its confident
   masks as extra training cases (``medlite.engine.tasks.promptable.pseudo``: output distillation where no
   ground truth answers the prompt), for ``--pseudo-epochs`` (10); then the same fine-tuning; folders
   ``*_pooled_pseudo``;
4. evaluate: box / point DSC and NSD at the original size; LiteMedSAM zero-shot and the references on the
   same cases; encoder and decoder time of LiteMedSAM and of each student architecture on 1 and 2 threads,
   interleaved; two references for the distillation (the channel-mean MSE, and LiteMedSAM's decoder on its
   own embedding pooled to 32x32 / 16x16).

    python benchmarks/litesam_distill.py --threads 1     # writes results/litesam_distill.md and .json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from common import RESULTS, ROOT, header
from litesam import _subset, box_references, efficiency

import medlite
from medlite.data.base import data_root
from medlite.engine.checkpoint import load_model
from medlite.engine.tasks.promptable import SamTrainConfig, evaluate_sam, load_dataset, train_sam
from medlite.engine.tasks.promptable.teacher import cache_embeddings, dataset_folder, load_teacher
from medlite.engine.tasks.promptable.train import concat
from medlite.metrics.segmentation import reduce_cases

STUDENT, TEACHER = "litesam_swin_xs", "litemedsam"
VARIANTS = {"upsampled": ("teacher", ""), "pooled": ("student", "_pooled"),  # name: (distill_grid, folder suffix)
            "pooled_photo": ("student", "_pooled_photo"), "md": ("student", "_md"), "md8": ("student", "_md8"),
            "md8x2": ("student", "_md8x2"), "md8on": ("student", "_md8on")}
STUDENTS = {"md": "litesam_swin_xs_md", "md8": "litesam_swin_xs_md8",  # variants whose student is not STUDENT
            "md8on": "litesam_swin_xs_md8"}
HEADS = {"md": "litemedsam", "md8": "litemedsam", "md8on": "litemedsam"}  # decoder starts as LiteMedSAM's
# variants whose distill stage runs elsewhere, the teacher online on augmented images (litesam_online_distill.py;
# a GPU): this script finds its run folder (imported with --import-from) and runs the prompt stages as for md8
ONLINE = {"md8on"}
# variants whose distillation continues another variant's: (that variant, peak LR); a warm restart of the cosine
# schedule for --distill-epochs more epochs, the head not copied again (the checkpoint holds it); each takes its
# base's student and head
CONTINUES = {"md8x2": ("md8", 5e-4)}
for _v, (_base, _) in CONTINUES.items():
    STUDENTS[_v], HEADS[_v] = STUDENTS[_base], HEADS[_base]
DISTILL_AUGMENT = {"pooled_photo": "photometric"}  # variants whose distill stage augments (intensity only)
FOLDERS = {"both": "prompt", "busi_only": "prompt_busi", "ph2_only": "prompt_ph2",  # prompt run: folder stem
           "all": "prompt_all", "all_but_busi": "prompt_nobusi", "all_but_ph2": "prompt_noph2",
           "ft_busi": "finetune_busi", "ft_ph2": "finetune_ph2", "zeroshot": "distill"}
PLAN = {"both": ("busi", "ph2"), "busi_only": ("busi", "ph2_all"), "ph2_only": ("ph2", "busi"),  # run: test sets
        "all": ("busi", "ph2"), "all_but_busi": ("busi",), "all_but_ph2": ("ph2_all",), "ft_busi": ("busi",),
        "ft_ph2": ("ph2",), "zeroshot": ("busi", "ph2_all")}
ON = {"both": "BUSI + PH2 f0", "busi_only": "BUSI only", "ph2_only": "PH2 f0 only", "all": "all five sets",
      "all_but_busi": "four sets, no BUSI", "all_but_ph2": "four sets, no PH2",
      "ft_busi": "all five, then BUSI", "ft_ph2": "all five, then PH2 f0",
      "zeroshot": "no masks: encoder distilled only"}
ON_HEADS = {"ft_busi": "BUSI + PH2 f0, then BUSI", "ft_ph2": "BUSI + PH2 f0, then PH2 f0"}  # md / md8 fine-tuning
LABELS = {"upsampled": "LiteSAM xs distilled (upsampled)", "pooled": "LiteSAM xs distilled (pooled)",
          "pooled_photo": "LiteSAM xs distilled (pooled, photometric augmentation)",
          "md": "LiteSAM xs-md distilled (pooled, LiteMedSAM's decoder)",
          "md8": "LiteSAM xs-md8 distilled (32x32 grid, LiteMedSAM's decoder)",
          "md8x2": "LiteSAM xs-md8 distilled 2x longer (32x32 grid, LiteMedSAM's decoder)",
          "md8on": "LiteSAM xs-md8 distilled online (teacher on augmented images, 32x32 grid, LiteMedSAM's decoder)",
          "scratch": "LiteSAM xs from scratch",
          "pseudo": "LiteSAM xs distilled (pooled) + teacher-labelled random boxes"}
XS, XS_MD, XS_MD8 = "LiteSAM xs (distilled)", "LiteSAM xs-md (distilled)", "LiteSAM xs-md8 (distilled)"
# one timing per architecture: model -> (its row in the timing table, the run folder timed for it)
TIMING_ROWS = {STUDENT: (XS, "prompt"), "litesam_swin_xs_md": (XS_MD, "prompt_md"),
               "litesam_swin_xs_md8": (XS_MD8, "prompt_md8")}
PSEUDO = "pseudo"  # the runs with teacher-labelled random boxes (from the first --distill-grid variant)


def suffix(v: str, base: str = "_pooled") -> str:
    """Run-folder suffix of a row group: a distillation variant, "scratch", or "pseudo" (on ``base``)."""
    return {"scratch": "_scratch", PSEUDO: f"{base}_pseudo"}.get(v) or VARIANTS[v][1]


def distill_sets() -> tuple[str, ...]:
    root = data_root(None)
    return ("busi", "ph2", *(f"folder:{root / n}" for n in ("hc18", "monuseg", "cxr_lung") if (root / n).is_dir()))


def datasets(sets, smoke: bool) -> dict:
    """Every dataset once, letterboxed to 256 px (``smoke``: 4 cases per split)."""
    out = {}
    for spec in sets:
        ds = load_dataset(spec, 256)
        if smoke:
            ds.train, ds.val, ds.test = _subset(ds.train, 8), _subset(ds.val, 4), _subset(ds.test, 4)
        out[spec] = ds
    return out


def stage_cache(args, data: dict) -> Path:
    model, name = load_teacher(TEACHER)
    root = Path(args.runs) / "teacher_cache"
    for spec, ds in data.items():
        for split in ("train", "val"):
            t0 = time.time()
            n = cache_embeddings(model, getattr(ds, split), root / f"{name}-256" / dataset_folder(spec))
            print(f"[cache] {spec} {split}: {n} new in {time.time() - t0:.0f} s", flush=True)
    return root


def cfg(args, name: str, **kw) -> SamTrainConfig:
    base = dict(model=STUDENT, img_size=256, batch_size=8, threads=args.threads, out_dir=args.runs, name=name,
                progress=False)
    return SamTrainConfig(**{**base, **kw})


def run(c: SamTrainConfig, data: dict) -> dict:
    done = c.run_dir() / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.time()
    res = train_sam(c, {k: data[k] for k in c.datasets})
    print(f"[{c.name}] {res['steps']} steps in {(time.time() - t0) / 60:.1f} min", flush=True)
    return res


def finetune(args, data: dict, suf: str, start: str, model: str = STUDENT) -> dict:
    """The model of run folder ``start`` fine-tuned on BUSI's and on PH2 fold 0's train split alone
    (``--finetune-epochs`` at ``--finetune-lr``; none when the epochs are 0), into ``finetune_*{suf}``."""
    init = str(Path(args.runs) / start / "best.safetensors")
    return {name: run(cfg(args, f"{FOLDERS[name]}{suf}", model=model, datasets=(spec,), epochs=args.finetune_epochs,
                          lr=args.finetune_lr, init=init), data)
            for name, spec in (("ft_busi", "busi"), ("ft_ph2", "ph2")) if args.finetune_epochs}


def test_sets(data: dict) -> dict:
    ph2 = data["ph2"]
    return {"busi": data["busi"].test, "ph2": ph2.test, "ph2_all": concat([ph2.train, ph2.val, ph2.test])}


def _scored(res: dict) -> bool:
    """True if a cached evaluation has both NSDs (files from before the challenge NSD are scored again)."""
    return all("boundary_nsd" in res[k] for k in ("box", "point"))


def _from_zeroshot(split, key: str) -> dict | None:
    """LiteMedSAM's cases of ``split`` from ``litemedsam_zeroshot.py``'s per-case results (same weights,
    protocol and cases), so its 2-3 s per image are not spent twice; None if they are not there."""
    src = ROOT / "runs" / "litemedsam_zeroshot" / f"{'busi' if key.endswith('busi') else 'ph2'}.json"
    if not src.is_file():
        return None
    zs, want = json.loads(src.read_text()), set(split.names)
    if not _scored(zs):
        return None
    out = {"encoder_ms": zs["encoder_ms"]}
    for kind in ("box", "point"):
        cases = [c for c in zs[kind]["cases"] if c["case"] in want]
        if len(cases) != len(want):
            return None
        out[kind] = {**reduce_cases(cases, ("dsc", "nsd", "boundary_nsd"), skip_nan=True), "cases": cases,
                     "decoder_ms": zs[kind]["decoder_ms"]}
    return out


def evaluate(model, split, runs: Path, key: str) -> dict:
    f = runs / "eval" / f"{key}.json"
    if f.is_file() and _scored(res := json.loads(f.read_text())):
        return res
    res = (key.startswith("litemedsam_") and _from_zeroshot(split, key)) or evaluate_sam(
        model, split, prompts=("box", "point"))
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(res, default=float) + "\n")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--distill-epochs", type=int, default=10)
    ap.add_argument("--distill-lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=12, help="prompt-stage epochs (results/litesam.md: 12)")
    ap.add_argument("--lr", type=float, default=8e-4, help="prompt-stage peak LR (results/litesam.md: 8e-4)")
    ap.add_argument("--cross", action=argparse.BooleanOptionalAction, default=True,
                    help="also the cross-domain runs (BUSI only, PH2 only)")
    ap.add_argument("--repeats", type=int, default=30, help="timed decoder runs per graph (encoders: a third)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "litesam_distill"))
    ap.add_argument("--out", default=str(RESULTS / "litesam_distill.md"))
    ap.add_argument("--distill-grid", nargs="+", default=["pooled"], choices=list(VARIANTS),
                    help="distillation variants to train (finished ones stay in the report)")
    ap.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True,
                    help="also the prompt recipe from random weights (same-run reference)")
    ap.add_argument("--all-sets", action=argparse.BooleanOptionalAction, default=True,
                    help="also prompt-train on every segmentation set (and on all but BUSI / all but PH2 for "
                         "the cross-domain rows), from the first --distill-grid variant and from scratch")
    ap.add_argument("--all-epochs", type=int, default=24, help="prompt-stage epochs of the all-sets runs")
    ap.add_argument("--finetune-epochs", type=int, default=8,
                    help="epochs of fine-tuning the all-sets model on one dataset's train split (0: none)")
    ap.add_argument("--finetune-lr", type=float, default=2e-4, help="peak LR of that fine-tuning")
    ap.add_argument("--pseudo-boxes", type=int, default=4,
                    help="random boxes per training image labelled by LiteMedSAM's masks for the all-sets runs "
                         "(0: no such runs)")
    ap.add_argument("--pseudo-epochs", type=int, default=10, help="prompt-stage epochs of those runs")
    ap.add_argument("--prior", default="",
                    help="an earlier run's results .json: its rows of variants not run here, LiteMedSAM's rows and "
                         "the timing table are read from it instead of recomputed (run folders do not survive "
                         "machines); the references are always recomputed")
    ap.add_argument("--smoke", action="store_true", help="4-8 cases per split, 1 epoch per stage (own folders)")
    args = ap.parse_args()
    if args.smoke:
        args.runs, args.out = args.runs + "_smoke", str(Path(args.runs + "_smoke") / "litesam_distill.md")
        args.distill_epochs = args.epochs = args.all_epochs = args.finetune_epochs = args.pseudo_epochs = 1
        args.repeats = 2
    torch.set_num_threads(args.threads)
    runs = Path(args.runs)
    sets = distill_sets()
    data = datasets(sets, args.smoke)
    prior = json.loads(Path(args.prior).read_text()) if args.prior else None
    t0 = time.time()  # the cache serves the cached distill stages, the teacher-labelled boxes and the baselines
    need_cache = any(v not in ONLINE for v in args.distill_grid) or (args.all_sets and args.pseudo_boxes) or not prior
    cache = stage_cache(args, data) if need_cache else None
    cache_min = (time.time() - t0) / 60
    distilled, trained = {}, {}
    for v in args.distill_grid:
        grid, suf = VARIANTS[v]
        student = STUDENTS.get(v, STUDENT)
        start = dict(init_head=HEADS.get(v, ""), lr=args.distill_lr)
        if v in CONTINUES:
            base, lr = CONTINUES[v]
            start = dict(init=str(runs / f"distill{VARIANTS[base][1]}" / "best.safetensors"), lr=lr)
        if v in ONLINE:
            f = runs / f"distill{suf}" / "results.json"
            if not f.is_file():
                raise SystemExit(f"{f.parent}: no online distillation here; run litesam_online_distill.py (sized for "
                                 "a GPU) and bring its result with --import-from first")
            distilled[v] = json.loads(f.read_text())
        else:
            distilled[v] = run(cfg(args, f"distill{suf}", model=student, datasets=sets, stage="distill",
                                   teacher=TEACHER, teacher_cache=str(cache), distill_grid=grid,
                                   augment=DISTILL_AUGMENT.get(v, "none"), epochs=args.distill_epochs, **start), data)
        # (an xs-md distill checkpoint already holds LiteMedSAM's head, copied in before distillation)
        prompt = dict(model=student, epochs=args.epochs, init=str(runs / f"distill{suf}" / "best.safetensors"),
                      lr=args.finetune_lr if v in HEADS else args.lr)
        trained[v] = {"both": run(cfg(args, f"prompt{suf}", datasets=("busi", "ph2"), **prompt), data)}
        if v in HEADS:  # the distilled encoder with LiteMedSAM's decoder answers prompts before any mask is seen
            trained[v]["zeroshot"] = distilled[v]
            trained[v].update(finetune(args, data, suf, f"prompt{suf}", student))  # as the all-sets model is
        if args.cross:
            trained[v]["busi_only"] = run(cfg(args, f"prompt_busi{suf}", datasets=("busi",), **prompt), data)
            trained[v]["ph2_only"] = run(cfg(args, f"prompt_ph2{suf}", datasets=("ph2",), **prompt), data)
    if args.scratch:
        trained["scratch"] = {"both": run(cfg(args, "prompt_scratch", datasets=("busi", "ph2"), epochs=args.epochs,
                                              lr=args.lr), data)}
    if args.all_sets:  # every set, and every set but the one tested, for the cross-domain rows
        v = args.distill_grid[0]
        suf = VARIANTS[v][1]
        groups = {"all": sets, "all_but_busi": tuple(s for s in sets if s != "busi"),
                  "all_but_ph2": tuple(s for s in sets if s != "ph2")}
        init = str(runs / f"distill{suf}" / "best.safetensors")
        for name, group in groups.items():
            trained[v][name] = run(cfg(args, f"{FOLDERS[name]}{suf}", datasets=group, epochs=args.all_epochs,
                                       lr=args.lr, init=init), data)
        trained[v].update(finetune(args, data, suf, f"prompt_all{suf}"))
        if args.scratch:
            trained["scratch"]["all"] = run(cfg(args, "prompt_all_scratch", datasets=sets, epochs=args.all_epochs,
                                                lr=args.lr), data)
        if args.pseudo_boxes:  # the same groups with teacher-labelled random boxes, then the same fine-tuning
            psuf = suffix(PSEUDO, suf)
            pseudo = dict(teacher=TEACHER, teacher_cache=str(cache), distill_weight=0.0,
                          pseudo_boxes=args.pseudo_boxes)
            trained[PSEUDO] = {name: run(cfg(args, f"{FOLDERS[name]}{psuf}", datasets=group, epochs=args.pseudo_epochs,
                                             lr=args.lr, init=init, **pseudo), data) for name, group in groups.items()}
            trained[PSEUDO].update(finetune(args, data, psuf, f"prompt_all{psuf}"))
    for v in VARIANTS:  # runs finished by earlier runs of this script (other variants, --cross) stay in the report
        grid, suf = VARIANTS[v]
        if v not in distilled and (runs / f"distill{suf}" / "results.json").is_file():
            distilled[v] = json.loads((runs / f"distill{suf}" / "results.json").read_text())
        if v in distilled:
            trained.setdefault(v, {}).update(
                {n: json.loads((runs / f"{folder}{suf}" / "results.json").read_text()) for n, folder in FOLDERS.items()
                 if n not in trained[v] and (runs / f"{folder}{suf}" / "results.json").is_file()
                 and (n != "zeroshot" or v in HEADS)})
    for v in ("scratch", PSEUDO):  # scratch / pseudo runs finished by earlier runs of this script
        for name, folder in FOLDERS.items():
            f = runs / f"{folder}{suffix(v)}" / "results.json"
            if name not in trained.get(v, {}) and f.is_file():
                trained.setdefault(v, {})[name] = json.loads(f.read_text())

    tests = test_sets(data)
    teacher = medlite.create_model(TEACHER, num_classes=1, pretrained=True).eval()
    if prior and set(prior["eval"].get("litemedsam", {})) >= set(tests):
        ev: dict = {"litemedsam": prior["eval"]["litemedsam"]}
    else:
        ev = {"litemedsam": {k: evaluate(teacher, tests[k], runs, f"litemedsam_{k}") for k in tests}}
    for v, runs_v in trained.items():
        for name in runs_v:
            model, _ = load_model(runs / f"{FOLDERS[name]}{suffix(v)}" / "best.safetensors")
            key = name if v == "upsampled" else f"{v}_{name}"  # the first run's cached evaluations keep their keys
            ev[f"{v}:{name}"] = {k: evaluate(model, tests[k], runs, f"{key}_{k}") for k in PLAN[name]}
    if prior:  # rows of the earlier run that this one did not retrain, with their training records
        ev.update({k: r for k, r in prior["eval"].items() if k not in ev})
        for v, d in prior["train"]["distill"].items():
            distilled.setdefault(v, d)
        for v, r in prior["train"]["prompt"].items():
            trained.setdefault(v, {}).update({n: x for n, x in r.items() if n not in trained[v]})
    refs = {k: box_references({"busi": SimpleNamespace(test=v), "ph2": SimpleNamespace(test=v)})["busi"]
            for k, v in tests.items()}  # the helper scores two named sets; both are this one
    # one timing per architecture: every LiteSAM xs row shares one, every xs-md row the other
    timed = {"LiteMedSAM": None, **{row: runs / folder / "best.safetensors" for row, folder in TIMING_ROWS.values()
                                    if (runs / folder / "best.safetensors").is_file()}}
    eff_file = runs / "efficiency.json"  # ONNX export + interleaved ORT timing, 1 and 2 threads
    archs = {TIMING_ROWS[STUDENTS.get(v, STUDENT)][0] for v in args.distill_grid}
    if prior and archs | {"LiteMedSAM"} <= set(prior["times"]) and not eff_file.is_file():
        eff_file.parent.mkdir(parents=True, exist_ok=True)
        eff_file.write_text(json.dumps(prior["times"], indent=2) + "\n")  # same architectures, timed then
    elif not eff_file.is_file() or set(json.loads(eff_file.read_text())) != set(timed):
        eff = efficiency({k: teacher if f is None else load_model(f)[0] for k, f in timed.items()}, runs / "onnx",
                         [1, 2], args.repeats)
        eff_file.write_text(json.dumps(eff, indent=2, default=float) + "\n")
    baseline = None
    if cache is not None:
        baseline = channel_mean_mse(cache / f"{TEACHER}-256", data, runs)
        baseline["ceiling"] = pooled_ceiling(teacher, cache / f"{TEACHER}-256", data, runs)
    write(args, sets, distilled, trained, ev, refs, json.loads(eff_file.read_text()), cache_min, baseline)


@torch.no_grad()
def pooled_ceiling(teacher, folder: Path, data: dict, runs: Path) -> dict:
    """Validation box Dice of LiteMedSAM's own decoder on its own cached embedding average-pooled to 64x64 (none),
    32x32 and 16x16, BUSI and PH2 fold 0: what a student grid can carry at best, before any training."""
    from medlite.engine.tasks.promptable.evaluate import val_dice
    from medlite.engine.tasks.promptable.teacher import load_embeddings
    f = runs / "pooled_ceiling.json"
    if f.is_file():
        return json.loads(f.read_text())

    class Pooled(torch.nn.Module):  # the teacher's head on a given (pooled) embedding, as val_dice calls a model
        def __init__(self, emb: torch.Tensor) -> None:
            super().__init__()
            self.emb, self.i = emb, 0

        def forward(self, images, coords, labels, dense, has_dense):
            e = self.emb[self.i:self.i + len(images)]
            self.i += len(images)
            g = e.shape[-1]
            pe = teacher.prompt_encoder
            sparse, _, _ = pe(coords, labels, dense, has_dense)
            masks, iou = teacher.mask_decoder(e, (), pe.pe.grid(g, g), sparse,
                                              pe.no_dense_embed.expand(len(e), -1, g, g))
            return F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False), iou

    out = {}
    for spec in ("busi", "ph2"):
        val = data[spec].val
        emb = load_embeddings(folder / dataset_folder(spec), val.names).float()
        out[spec] = {str(g): val_dice(Pooled(F.adaptive_avg_pool2d(emb, g)), val) for g in (64, 32, 16)}
    f.write_text(json.dumps(out) + "\n")
    return out


def channel_mean_mse(folder: Path, data: dict, runs: Path) -> dict[str, float]:
    """Validation MSE of the constant guess "each channel's training mean", on the 16x16 and 32x32 grids: what
    the pooled distillation MSEs are to be read against (LiteMedSAM's embedding is small: mean square ~0.01)."""
    from medlite.engine.tasks.promptable.teacher import load_embeddings

    f = runs / "channel_mean_mse.json"
    if f.is_file() and set(res := json.loads(f.read_text())) == {"16", "32"}:
        return res
    grids = (16, 32)
    pooled = {split: {g: [] for g in grids} for split in ("train", "val")}
    for spec, ds in data.items():  # each set's embeddings read once, pooled to both grids
        for split in pooled:
            emb = load_embeddings(folder / dataset_folder(spec), getattr(ds, split).names).float()
            for g in grids:
                pooled[split][g].append(F.adaptive_avg_pool2d(emb, g))
    res = {}
    for g in grids:
        mean = torch.cat(pooled["train"][g]).mean((0, 2, 3), keepdim=True)
        res[str(g)] = float((torch.cat(pooled["val"][g]) - mean).pow(2).mean())
    f.write_text(json.dumps(res) + "\n")
    return res


def prior_note(args, distilled: dict) -> list[str]:
    """What of this report comes from ``--prior`` and where the online distillation ran."""
    out = []
    for v, d in distilled.items():
        if v in ONLINE:
            c = d["config"]
            out.append(f"- distill stage '{v}' ran online on {c['extra'].get('machine', '?')} (torch "
                       f"{c['extra'].get('torch', '?')}; `litesam_online_distill.py`, then `--import-from`): batch "
                       f"{c['batch_size']}, AdamW LR {c['lr']:g}, {c['warmup_steps']} warm-up steps then cosine, "
                       f"augmentation '{c['augment']}' on the {c.get('augment_on', 'cpu').upper()} (geometric and "
                       f"intensity: the teacher embeds the augmented image), schedule fitted to "
                       f"{c['time_budget_s']:.0f} s; teacher LiteMedSAM carried as float16 weights (run in fp32), "
                       "its exact float32 head put back on import (the stage never changes it); its prompt stages "
                       "ran here on the CPU, as md8's")
    if args.prior:
        src = Path(args.prior)
        head = {ln.split(":", 1)[0][2:]: ln.split(":", 1)[1].strip() for ln in
                src.with_suffix(".md").read_text().splitlines()[:6] if ln.startswith("- ") and ":" in ln}
        out.append(f"- rows of variants not trained in this run, their training lines, LiteMedSAM's rows and the "
                   f"timing table are read from `{src.name}` (run of {head.get('date', '?')} on "
                   f"{head.get('machine', '?')}; same weights, protocol and test cases; a new variant shares its "
                   "architecture's timing); the box references are recomputed here; the channel-mean and "
                   "pooled-decoder references need the teacher cache and are in that run's report")
    return out


def _enc(times: dict, name: str) -> float:
    return times[name]["latency_ms"]["encoder"]["1"]["median"]


def cost_table(times: dict) -> list[str]:
    """The params / MACs / ONNX latency table of :func:`litesam.efficiency`'s results, one row per model."""
    lines = ["| ONNX Runtime, 1 image | params enc / dec (M) | MACs enc / dec (G) | encoder ms 1 / 2 thr "
             "| decoder ms 1 / 2 thr |", "|---|---|---|---|---|"]
    for k, v in times.items():
        lat = v["latency_ms"]
        lines.append(f"| {k} | {v['params']['encoder'] / 1e6:.2f} / {v['params']['decoder'] / 1e6:.2f} | "
                     f"{v['macs']['encoder'] / 1e9:.2f} / {v['macs']['decoder'] / 1e9:.2f} | "
                     f"{lat['encoder']['1']['median']:.1f} / {lat['encoder']['2']['median']:.1f} | "
                     f"{lat['decoder']['1']['median']:.2f} / {lat['decoder']['2']['median']:.2f} |")
    return lines


def _c(r: dict) -> str:
    return f"{r['mean']:.3f} ± {r['std']:.3f}"


def write(args, sets, distilled, trained, ev, refs, times, cache_min, baseline) -> None:
    lines = header("LiteSAM distilled from LiteMedSAM: box / point DSC, in-domain and cross-domain")
    d0 = next(iter(distilled.values()))
    lines += [f"- torch threads: {args.threads}; distillation images: {d0['train_cases']} train + "
              f"{d0['val_cases']} val from {', '.join(Path(s.split(':')[-1]).name for s in sets)} (test splits "
              f"never read)", f"- teacher cache: {cache_min:.0f} min this run (0 when it existed)",
              *(f"- distill stage '{v}' (grid: {VARIANTS[v][0]}'s): {d['steps']} steps, "
                f"{d['train_time_s'] / 60:.1f} min, best val MSE {d['best_val_distill_mse']:.4f}"
                for v, d in distilled.items()),
              *prior_note(args, distilled),
              *([] if baseline is None else [
                  f"- guessing each channel's training mean scores a val MSE of {baseline['16']:.4f} on the 16x16 "
                  f"grid and {baseline['32']:.4f} on the 32x32 grid (the MSEs above are to be read against these)",
                  "- LiteMedSAM's own decoder on its own embedding average-pooled to a student's grid (validation box "
                  "Dice, no training; what a grid can carry at best): " + "; ".join(
                      f"{k.upper()} " + ", ".join(f"{g}x{g} {v:.3f}" for g, v in r.items())
                      for k, r in baseline["ceiling"].items())]),
              *(f"- prompt stage '{v}', '{k}': {r['steps']} steps, {r['train_time_s'] / 60:.1f} min, best val "
                f"Dice {r['best_val_dice']:.3f}" for v, runs_v in trained.items() for k, r in runs_v.items()
                if k != "zeroshot"), "",
              "- evaluations are cached per (model, test set) under --runs/eval; the LiteMedSAM rows "
              + ("come from the --prior run, where they " if args.prior else "of this run ") +
              "reuse the per-case results of `litemedsam_zeroshot.py` (same weights, protocol and cases; the PH2 "
              "fold-0 row is the fold's 20 cases of it)", "",
              "- NSD at 2 px: **challenge** = the official CVPR 2024 scoring (DeepMind surface-distance, a 2-D case as "
              "a one-slice volume, so every foreground pixel is surface; 0 where DSC <= 0.2), comparable with "
              "published challenge NSDs; **boundary** = the 2-D contour NSD (MONAI), stricter, not gated", "",
              "| model | trained on (prompts) | test | box DSC | box NSD challenge | box NSD boundary | point DSC |",
              "|---|---|---|---|---|---|---|"]
    n = {k: ev["litemedsam"][k]["box"]["dsc"]["n"] for k in ev["litemedsam"]}
    names = {"busi": f"BUSI test list ({n['busi']})", "ph2": f"PH2 fold-0 test ({n['ph2']})",
             "ph2_all": f"PH2 dev half, all ({n['ph2_all']})"}
    for k in ("busi", "ph2", "ph2_all"):
        r = ev["litemedsam"][k]
        lines.append(f"| LiteMedSAM (real, zero-shot) | – | {names[k]} | {_c(r['box']['dsc'])} | "
                     f"{_c(r['box']['nsd'])} | {_c(r['box']['boundary_nsd'])} | {_c(r['point']['dsc'])} |")
        for ref in ("box ellipse", "box fill"):
            lines.append(f"| {ref} (no model) | – | {names[k]} | {_c(refs[k][ref]['dsc'])} | "
                         f"{_c(refs[k][ref]['nsd'])} | {_c(refs[k][ref]['boundary_nsd'])} | – |")
    for key, res in ev.items():
        if key == "litemedsam":
            continue
        v, name = key.split(":")
        for k, r in res.items():
            on = ON_HEADS.get(name, ON[name]) if v in HEADS else ON[name]
            lines.append(f"| {LABELS[v]} | {on} | {names[k]} | {_c(r['box']['dsc'])} | "
                         f"{_c(r['box']['nsd'])} | {_c(r['box']['boundary_nsd'])} | {_c(r['point']['dsc'])} |")
    lines += ["", *cost_table(times)]
    ratios = ", ".join(f"{k} {_enc(times, 'LiteMedSAM') / _enc(times, k):.1f}x" for k in times if k != "LiteMedSAM")
    lines += ["", f"Encoder speed-up over LiteMedSAM in the same run: {ratios} (ONNX Runtime, 1 thread, "
              "candidates interleaved; both graphs parity-checked against PyTorch; the LiteSAM xs rows share one "
              "architecture and the xs-md rows another, so one timing serves each). LiteMedSAM was trained with box "
              "prompts only; its point-prompt column shows what a single click gives it.", ""]
    lines += targets(ev, refs, times)
    lines += findings(ev, refs, distilled, args)
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"eval": {m: {k: {p: {q: r[p][q] for q in ("dsc", "nsd", "boundary_nsd")} for p in ("box", "point")}
                      for k, r in res.items()} for m, res in ev.items()},
         "references": refs, "times": times, "train": {"distill": distilled, "prompt": trained}},
        indent=2, default=float) + "\n")
    print("\n".join(lines))


def targets(ev, refs, times) -> list[str]:
    out = ["## Targets", ""]
    rows = [("both", "busi", "in-domain BUSI"), ("both", "ph2", "in-domain PH2"),
            ("ph2_only", "busi", "cross-domain BUSI (trained on PH2)"),
            ("busi_only", "ph2_all", "cross-domain PH2 (trained on BUSI)"),
            ("all", "busi", "in-domain BUSI (all five sets)"), ("all", "ph2", "in-domain PH2 (all five sets)"),
            ("all_but_busi", "busi", "cross-domain BUSI (the four other sets)"),
            ("all_but_ph2", "ph2_all", "cross-domain PH2 (the four other sets)"),
            ("zeroshot", "busi", "zero-shot BUSI (no mask seen)"), ("zeroshot", "ph2_all", "zero-shot PH2 (all)")]
    for v, run_name, k, what in ((v, *row) for v in (*VARIANTS, PSEUDO) for row in rows):
        m = f"{v}:{run_name}"
        if m not in ev:
            continue
        what = f"{what}, {v}"
        dsc = ev[m][k]["box"]["dsc"]["mean"]
        ell = refs[k]["box ellipse"]["dsc"]["mean"]
        lm = ev["litemedsam"][k]["box"]["dsc"]["mean"]
        out.append(f"- {what}: box DSC {dsc:.3f}; ellipse {ell:.3f} (margin {dsc - ell:+.4f}, target >= +0.03: "
                   f"{'met' if dsc - ell >= 0.03 else 'missed'}); LiteMedSAM zero-shot {lm:.3f} (ratio "
                   f"{dsc / lm:.3f}, target >= 0.97: {'met' if dsc / lm >= 0.97 else 'missed'})")
    for v in (*VARIANTS, PSEUDO):
        pairs = [("ft_busi", "busi", "BUSI"), ("ft_ph2", "ph2", "PH2 fold 0")]
        if v in HEADS:  # its decoder is pretrained: prompt training on one set alone is a fine-tuning too
            pairs = [("busi_only", "busi", "BUSI"), ("ph2_only", "ph2", "PH2 fold 0"), *pairs]
        for run_name, k, what in pairs:
            if f"{v}:{run_name}" in ev:
                dsc = ev[f"{v}:{run_name}"][k]["box"]["dsc"]["mean"]
                lm = ev["litemedsam"][k]["box"]["dsc"]["mean"]
                on = ON_HEADS.get(run_name, ON[run_name]) if v in HEADS else ON[run_name]
                out.append(f"- fine-tuned on {what}'s train split ({on}), {v}: box DSC {dsc:.3f} vs LiteMedSAM "
                           f"zero-shot {lm:.3f} ({dsc - lm:+.3f}; target: beat it: {'met' if dsc > lm else 'missed'})")
    for k in (k for k in times if k != "LiteMedSAM"):
        speed = _enc(times, "LiteMedSAM") / _enc(times, k)
        dec = times[k]["latency_ms"]["decoder"]["1"]["median"]
        out.append(f"- {k}: encoder >= 5x faster than LiteMedSAM's (1 thread): {speed:.1f}x "
                   f"({'met' if speed >= 5 else 'missed'}); prompt from the cached embedding < 10 ms (1 thread): "
                   f"{dec:.2f} ms ({'met' if dec < 10 else 'missed'})")
    return [*out, ""]


def findings(ev, refs, distilled, args) -> list[str]:
    """What the rows say, computed from them: distillation against the same-run scratch model, and the
    cross-domain rows against the box-only reference."""
    out = ["## What this run shows, and what was tried", ""]

    def dsc(key, k):
        return ev[key][k]["box"]["dsc"]["mean"] if key in ev and k in ev[key] else None

    for v in VARIANTS:
        for run_name, recipe in (("both", "BUSI + PH2, 12 epochs"), ("all", "all five sets, 24 epochs")):
            for k, name in (("busi", "BUSI"), ("ph2", "PH2 fold 0")):
                a, b = dsc(f"{v}:{run_name}", k), dsc(f"scratch:{run_name}", k)
                if a is not None and b is not None:
                    out.append(f"- {v} distillation vs the same prompt recipe ({recipe}) from random weights "
                               f"(same run), {name}: box DSC {a:.3f} vs {b:.3f} ({a - b:+.3f}).")
        for k, name in (("busi", "BUSI"), ("ph2", "PH2 fold 0")):
            a, b = dsc(f"{v}:all", k), dsc(f"{v}:both", k)
            if a is not None and b is not None:
                out.append(f"- {v}: prompt training on all five sets for 24 epochs vs BUSI + PH2 for 12, {name}: "
                           f"box DSC {a:.3f} vs {b:.3f} ({a - b:+.3f}).")
        a, b = dsc(f"{v}:all_but_busi", "busi"), dsc(f"{v}:all_but_ph2", "ph2_all")
        if a is not None and b is not None:
            out.append(f"- cross-domain, {v}, four other sets: tested on BUSI {a:.3f} (ellipse "
                       f"{refs['busi']['box ellipse']['dsc']['mean']:.3f}; the model that saw only PH2: "
                       f"{dsc(f'{v}:ph2_only', 'busi') or float('nan'):.3f}); tested on all of PH2 {b:.3f} (ellipse "
                       f"{refs['ph2_all']['box ellipse']['dsc']['mean']:.3f}; the model that saw only BUSI: "
                       f"{dsc(f'{v}:busi_only', 'ph2_all') or float('nan'):.3f}). The held-out set's images were "
                       "in the encoder-distillation stage (unlabelled: the teacher's embeddings of its train / val "
                       "images); its masks and its test images were never seen.")
    for v in VARIANTS:
        a = dsc(f"{v}:ph2_only", "busi")
        b = dsc(f"{v}:busi_only", "ph2_all")
        if a is not None:
            out.append(f"- cross-domain, {v}: trained on 80 PH2 images, tested on BUSI: {a:.3f} (the box ellipse "
                       f"{refs['busi']['box ellipse']['dsc']['mean']:.3f}); trained on BUSI, tested on all of PH2: "
                       f"{b:.3f} (ellipse {refs['ph2_all']['box ellipse']['dsc']['mean']:.3f}). The distilled "
                       "encoder does not carry LiteMedSAM's generality into the prompt stage: a model prompt-trained "
                       "on dermoscopy alone fails on ultrasound.")
    base = next((v for v in VARIANTS if f"{v}:all" in ev), None)
    for run_name, k, name in (("all", "busi", "in-domain BUSI"), ("all", "ph2", "in-domain PH2 fold 0"),
                              ("all_but_busi", "busi", "cross-domain BUSI"),
                              ("all_but_ph2", "ph2_all", "cross-domain PH2 (all)"),
                              ("ft_busi", "busi", "fine-tuned on BUSI"), ("ft_ph2", "ph2", "fine-tuned on PH2 f0")):
        a, b = dsc(f"{PSEUDO}:{run_name}", k), dsc(f"{base}:{run_name}", k) if base else None
        if a is not None and b is not None:
            out.append(f"- teacher-labelled random boxes ({ON[run_name]}), {name}: box DSC {a:.3f} vs {b:.3f} "
                       f"without them ({a - b:+.3f}; ground-truth cases and initial weights the same).")
    for v in HEADS:
        for run_name, k, name in (("both", "busi", "BUSI"), ("both", "ph2", "PH2 fold 0"),
                                  ("ph2_only", "busi", "BUSI, trained on PH2 only"),
                                  ("busi_only", "ph2_all", "all of PH2, trained on BUSI only")):
            a, b = dsc(f"{v}:{run_name}", k), dsc(f"pooled:{run_name}", k)
            if a is not None and b is not None:
                out.append(f"- {v} (LiteMedSAM's decoder on a 256-wide distilled embedding, prompt stage at LR "
                           f"{args.finetune_lr:g}) vs pooled (own 128-wide decoder, LR {args.lr:g}), {name}: box DSC "
                           f"{a:.3f} vs {b:.3f} ({a - b:+.3f}).")
        a, b = dsc(f"{v}:zeroshot", "busi"), dsc(f"{v}:zeroshot", "ph2_all")
        if a is not None:
            out.append(f"- {v} before any prompt training (the encoder regressed LiteMedSAM's embedding of "
                       f"unlabelled images; the decoder is LiteMedSAM's, untouched): BUSI {a:.3f}, all of PH2 "
                       f"{b:.3f} (ellipse {refs['busi']['box ellipse']['dsc']['mean']:.3f} / "
                       f"{refs['ph2_all']['box ellipse']['dsc']['mean']:.3f}).")
    def versus(v: str, base: str) -> list[str]:
        """Variant ``v`` against ``base`` on every row both have (same prompt stages after the distillation)."""
        rows = []
        for run_name, k, name in (("zeroshot", "busi", "BUSI, no mask seen"),
                                  ("zeroshot", "ph2_all", "all of PH2, no mask seen"),
                                  ("both", "busi", "BUSI"), ("both", "ph2", "PH2 fold 0"),
                                  ("ft_busi", "busi", "BUSI, then fine-tuned on it"),
                                  ("ft_ph2", "ph2", "PH2 fold 0, then fine-tuned on it"),
                                  ("ph2_only", "busi", "BUSI, trained on PH2 only"),
                                  ("busi_only", "ph2_all", "all of PH2, trained on BUSI only")):
            a, b = dsc(f"{v}:{run_name}", k), dsc(f"{base}:{run_name}", k)
            if a is not None and b is not None:
                rows.append(f"- {v} vs {base}, {name}: box DSC {a:.3f} vs {b:.3f} ({a - b:+.3f}).")
        return rows

    for v, (base, lr) in CONTINUES.items():
        if v not in distilled or base not in distilled:
            continue
        out.append(f"- {v}: {base}'s distillation continued for {distilled[v]['steps']} more steps (a warm restart "
                   f"of the cosine schedule at LR {lr:g}), validation MSE {distilled[base]['best_val_distill_mse']:.4f}"
                   f" -> {distilled[v]['best_val_distill_mse']:.4f}; then the same prompt stages as {base}.")
        out += versus(v, base)
    for v in ONLINE:
        if v not in distilled:
            continue
        d, m8, m8x2 = distilled[v], distilled.get("md8", {}), distilled.get("md8x2", {})
        views = d["steps"] * d["config"]["batch_size"] / 1000
        mse8, mse8x2 = (r.get("best_val_distill_mse", float("nan")) for r in (m8, m8x2))
        out.append(f"- {v}: the encoder distilled with the teacher online on augmented images ({d['steps']} steps of "
                   f"{d['config']['batch_size']}, {views:.0f}k image views, against md8's "
                   f"{m8.get('steps', 0) * 8 / 1000:.0f}k and md8x2's {2 * m8x2.get('steps', 0) * 8 / 1000:.0f}k "
                   f"un-augmented ones); validation MSE {d['best_val_distill_mse']:.4f} (md8 {mse8:.4f}, md8x2 "
                   f"{mse8x2:.4f}; validation images are un-augmented, as the cached recipes train); then the same "
                   "prompt stages as md8.")
        per_step = d["train_time_s"] / max(d["steps"], 1)
        a, b = dsc(f"{v}:both", "busi"), dsc("md8:both", "busi")
        on_cpu = d["config"].get("augment_on", "cpu") == "cpu"
        out.append(f"- {v} trained {per_step:.2f} s a step ({d['train_time_s']:.0f} s of training steps; augmentation "
                   + ("on the CPU, one image at a time, most likely what set the pace: a 2 M-parameter encoder and "
                      "its teacher at batch 32 need far less of an H200" if on_cpu else "batched on the device") + ")."
                   + (f" With about md8's number of steps ({d['steps']} vs {m8.get('steps', 0)}) it lands where md8 "
                      f"does (BUSI {a:.3f} vs {b:.3f}), not where md8x2's twice as many steps do: four times the "
                      "images per step and geometric augmentation did not replace steps. What the next GPU run "
                      "should change: augmentation on the device (`--augment-on device`, built after this run) and "
                      "several times the steps." if a is not None and b is not None and abs(a - b) < 0.005 else ""))
        for base in ("md8x2", "md8"):
            out += versus(v, base)
    for v, d in distilled.items():
        out.append(f"- distill stage '{v}': {d['steps']} steps, best validation MSE {d['best_val_distill_mse']:.4f} "
                   f"(on the {VARIANTS[v][0]}'s grid; the two MSEs are on different grids and not comparable).")
    out += ["- Tried so far: (1) the student's 16x16 embedding upsampled to the teacher's 64x64 (8 epochs): it "
            "learned about as much as predicting each channel's mean; (2) the teacher's embedding average-pooled "
            "to the student's grid (16 epochs), the target the student can represent; neither beat training "
            "from scratch at 12 prompt epochs on ~480 BUSI + PH2 images; (3) from (2), prompt training on the "
            "train splits of all five sets for 24 epochs, and on all sets but the one tested (the rows above; "
            "compare them with the single-set and from-scratch rows in the lines above): the in-domain rows do "
            "not move, and the cross-domain rows move both ways, up on BUSI (from the PH2-only model) and down "
            "on PH2 (from the BUSI-only model). One guess, not tested: the masks of MoNuSeg (many nuclei) and "
            "CXR (both lungs) make a box mean \"everything of this kind inside\" rather than \"the one "
            "object\"; (4) fine-tuning the all-sets model on one set's train split (8 epochs, lr 2e-4); (5) "
            "LiteMedSAM's own prompt encoder and mask decoder behind the student's encoder, widened to a 256-channel "
            "embedding (xs-md at 16x16, xs-md8 at 32x32 with the stride-8 stage in the neck): the encoder regresses "
            "the teacher's pooled embedding itself (no adapter; the neck's final LayerNorm starts as the teacher's, "
            "16 epochs), so the student answers boxes before it has seen a mask (the 'no masks' rows), then the "
            "whole model is prompt-trained at LR 2e-4. Its cost is the decoder: LiteMedSAM's is 256 wide, so a "
            "prompt costs more than the 128-wide xs decoder's, and 4x more again on the 32x32 grid (timing table).",
            "- Every set here has ground-truth masks, so the teacher's masks as targets \"where ground truth is "
            "absent\" have no place in these runs; where they would add information is on prompts no mask "
            "answers (random boxes on any image, the teacher's mask as the target).",
            *([] if f"{PSEUDO}:all" in ev else ["- Output distillation on random boxes (`--pseudo-boxes`, "
                                                 "implemented) has not been run yet."]),
            *(["- Also tried: (6) xs-md8's encoder distillation run twice as long ('md8x2', the lines above)."]
              if "md8x2" in distilled else []),
            "- Not tried yet, in order: " + ("" if "md8x2" in distilled else "longer encoder distillation for xs-md / "
                                             "xs-md8 (validation MSE still falling at 16 epochs); ") +
            "their prompt training on all five sets and with teacher-labelled boxes; a "
            "narrower copy of LiteMedSAM's decoder (distilled) to bring the 32x32 grid's prompt under 10 ms; the "
            "`pooled_photo` variant (implemented: intensity-only augmentation in the distillation stage, "
            "`--distill-grid pooled_photo`); `litesam_swin_t` (the published size, ~4x the encoder cost).", ""]
    return out


if __name__ == "__main__":
    main()
