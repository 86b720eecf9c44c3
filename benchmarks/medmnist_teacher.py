"""A strong teacher for the small MedMNIST models: ImageNet EfficientNet-Lite0 fine-tuned on 28 px images
upsampled to 64 px, distilled into MedLiT-nano and MedLiT-seed at 28 px.

Stages per subset (each skipped when its run folder is finished, resumed when interrupted):

1. teacher: ``efficientnet_lite0`` with its ImageNet weights (``medlite[pretrained]``), 28 px images resized
   to 64 px (bilinear, as MedMNIST+'s larger sizes are made by upsampling), fine-tuned whole: AdamW lr 1e-3,
   weight decay 0.05, batch 64, 1 warmup epoch then cosine, light augmentation, fp32;
2. students, from scratch at 28 px, the teacher run online on the same augmented batch (resized to 64 px):
   - ``kd``: label cross-entropy + T^2-scaled KL on logits (T = 4), Hinton et al.;
   - ``deit``: 0.5 label CE + 0.5 CE with the teacher's hard decision (DeiT's hard distillation; MedLiT has
     no distillation token, so both terms act on the class token's head);
   - ``fm`` (opt-in, ``--recipes fm``; added later, after ``kd`` and ``deit`` left MedLiT-nano 0.07 AUC behind
     ResNet-18 on BreastMNIST): function matching (Beyer et al. 2022, "Knowledge distillation: a good teacher
     is patient and consistent"): no label term, KL on logits at T = 1, every augmented image mixed with
     another of its batch (mixup, weight ~ Beta(1, 1)) and the teacher run on that very image, 3x the epochs;
   - ``deit_mae`` (opt-in, ``--recipes deit_mae``; added after the Lite2 teacher's ``deit`` still left MedLiT-nano
     0.035 AUC behind ResNet-18 on BreastMNIST, fixed before its first run): ``deit`` from the student's
     MAE-pretrained encoder (``medmnist_medlit.py``'s MAE pretraining, the same run folder, pretrained first if
     missing), which on its own lifted MedLiT-nano's BreastMNIST AUC by 0.09 over random weights there;
   - ``deit_long`` (opt-in): ``deit`` for 1.5x the epochs; added when MedLiT-seed's ``deit`` run on DermaMNIST
     (Lite2 teacher) chose its last epoch (validation AUC still rising), fixed before its run;
   - ``deit_ema`` (opt-in): ``deit`` validated, selected and tested on a moving average of its weights
     (``DistillConfig.ema``); added with the loop's weight averaging, because BreastMNIST's validation split
     (78 images) makes the per-epoch choice of raw weights noisy; fixed before its run;
   - ``deit_cam`` (opt-in): ``deit`` plus CAM alignment (``DistillConfig.cam_weight`` 1.0): the KL between the
     teacher's class activation map of its predicted class (4x4 for Lite2 at 128 px, resampled to the student's
     7x7 patch grid) and the student's cls attention row in its last block, the "CAM alignment for a CNN
     teacher" of issue 13 (logits alone do not say where the teacher looked); fixed before its run;
   - ``deit_cam3`` (opt-in): ``deit_cam`` with the CAM term weighted 3.0; added when ``deit_cam`` (weight 1.0)
     had lifted BreastMNIST's test AUC by 0.046 over ``deit`` yet stayed 0.027 below ResNet-18, with its CAM
     loss flat (~0.14) for the second half of training while its validation AUC stalled; fixed before its run;
   AdamW lr 1e-3, weight decay 0.05, batch 64, 10 % warmup + cosine, light augmentation.

``kd`` and ``deit`` were fixed before any run, ``fm`` before its first run; of the recipes run on a subset,
the one with the better VALIDATION AUC is the row of the results table (the others are listed too).
MedLiT-seed (about 3x nano's cost) runs only the recipe that won on nano's validation AUC for the subset (or
those of ``--seed-recipes``), and by default only on DermaMNIST (``--seed-subsets``), the subset where a
published row is within reach.
Test AUC is read only for the table.

Writes ``results/medmnist_teacher.md`` / ``.json`` and adds compact records to ``results/medmnist_runs.json``
(read by ``medmnist_medlit.py``, whose table gains the teacher and distilled rows).

``--teacher efficientnet_lite2`` (with ``--teacher-size``, default 96 px) runs the same stages with the larger
ImageNet EfficientNet-Lite2 (4.8 M without its ImageNet head) into run folders prefixed ``lite2_96-`` and
writes ``results/medmnist_teacher_lite2_96.md``: the teacher ``compress.py --teacher efficientnet_lite2`` needs
for its >= 8x size and >= 3x speed ratios.

``--ensemble N M ...`` teaches with replicates N, M, ... as one teacher, their logits averaged (a steadier
teacher than any one training: BreastMNIST's test AUC moved by 0.027 between two trainings of the same
recipe); the class activation map of the ensemble is exact too (``medlite.compress.distill.LogitEnsemble``).
Stage ``teacher`` trains the missing members and scores the ensemble; run folders prefixed ``...eN_M-``.

``--replicate N`` trains the teacher again with the same recipe into run folders prefixed ``...rN-`` and
writes ``results/medmnist_teacher_..._rN.md``: training on another machine (another CPU's floating-point
kernels) or after a lost run folder gives another teacher, and a student is only compared with students of
the same teacher. Replicate 1 of Lite2 at 128 px (BreastMNIST) was trained on 2026-12-03, when the run
folders of the first had gone with their machine. Replicates 1 and 2 trained with seed 0, as the first did (they
differ by the machine's kernels and thread count only); from replicate 3 on, replicate N trains with seed N
(``SEEDED_FROM``), so that two replicates trained side by side on one machine are two different teachers.

    python benchmarks/medmnist_teacher.py --threads 1
    python benchmarks/medmnist_teacher.py --threads 1 --teacher efficientnet_lite2 --subsets dermamnist
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from common import PUBLISHED, RESULTS, ROOT, header, parse_map, remember, run_job, stored, stored_names
from medmnist_baselines import SUBSETS

from medlite.engine.tasks.classify import TrainConfig

RUNS = ROOT / "runs" / "medmnist_teacher"
TEACHER = "efficientnet_lite0"  # the first teacher (its run folders have no prefix); medmnist_medlit.py reads it
TEACHER_SIZE = 64
TEACHER_EPOCHS = {"breastmnist": 30, "pneumoniamnist": 10, "dermamnist": 10}
STUDENT_EPOCHS = {"breastmnist": 100, "pneumoniamnist": 10, "dermamnist": 8}  # sized to one CPU session
STUDENTS = ("medlit_nano_28", "medlit_seed_28")
DEIT = {"task_weight": 0.5, "kd_weight": 0.0, "hard_weight": 0.5}
RECIPES = {  # DistillConfig fields of each student recipe
    "kd": {"task_weight": 1.0, "kd_weight": 1.0, "hard_weight": 0.0, "temperature": 4.0},
    "deit": DEIT,
    # function matching (Beyer et al. 2022, "a good teacher is patient and consistent"): no labels, KL at T = 1
    # on mixup of the augmented batch, the teacher online on the very same image, a longer schedule
    "fm": {"task_weight": 0.0, "kd_weight": 1.0, "hard_weight": 0.0, "temperature": 1.0, "mixup": 1.0},
    # deit from the student's MAE-pretrained encoder (medmnist_medlit.py's, same run folder) instead of random
    "deit_mae": DEIT,
    "deit_long": DEIT,  # deit, 1.5x the epochs
    # deit whose validation, checkpoint and test use a moving average of the weights (decay capped at 0.998,
    # warm-up 1 - (1 + step)^-3/4: ~0.994 at the end of 100 BreastMNIST epochs, i.e. the last ~fifth)
    "deit_ema": {**DEIT, "ema": 0.998},
    # deit plus CAM alignment: the teacher's class activation map -> the student's last cls attention row
    "deit_cam": {**DEIT, "cam_weight": 1.0},
    "deit_cam3": {**DEIT, "cam_weight": 3.0},  # the CAM target 3x as strong
}
DEFAULT_RECIPES = ("kd", "deit")  # opt-in: fm (3x), deit_mae (MAE first), deit_long, deit_ema, deit_cam, deit_cam3
RECIPE_EPOCH_FACTOR = {"fm": 3, "deit_long": 1.5}
MAE_INIT = ("deit_mae",)  # recipes whose student starts from its MAE encoder
LABELS = {"medlit_nano_28": "MedLiT-nano", "medlit_seed_28": "MedLiT-seed"}
OURS = "medmnist_medlit.md"  # where the same-recipe ResNet-18 and from-scratch MedLiT rows live


@dataclass(frozen=True)
class Teacher:
    """One ImageNet teacher: model, input size, and the prefix of its run folders (also their keys in
    results/medmnist_runs.json, so two teachers' runs never share a record)."""

    model: str
    size: int
    prefix: str
    label: str
    members: tuple[int, ...] = ()  # an ensemble of these replicates (0 = the first training), logits averaged
    seed: int = 0  # the teacher's training seed (replicate N >= SEEDED_FROM: N)

    def run(self, name: str) -> Path:
        return RUNS / f"{self.prefix}{name}"

    def member_teachers(self) -> tuple[Teacher, ...]:
        return tuple(teacher(self.model, self.size, r) for r in self.members)

    def spec(self, subset: str) -> str:
        """What a student's ``DistillConfig.teacher`` gets: the teacher's run folder, or the members' run
        folders joined by commas (an ensemble: their logits averaged)."""
        if not self.members:
            return str(self.run(f"teacher-{subset}"))
        return ",".join(str(m.run(f"teacher-{subset}")) for m in self.member_teachers())

    @property
    def results(self) -> str:
        """Stem of the results file."""
        return "medmnist_teacher" + (f"_{self.prefix.rstrip('-').replace('-', '_')}" if self.prefix else "")


SEEDED_FROM = 3  # replicates 1 and 2 were trained with seed 0 (as the first training); later ones with seed N


def teacher(model: str = TEACHER, size: int | None = None, replicate: int = 0,
            ensemble: tuple[int, ...] = ()) -> Teacher:
    """The teacher ``model`` at ``size`` px; ``replicate`` N > 0: the same recipe trained again (own run folders
    prefixed ``...rN-``, own results file), so that its students are compared with each other, never with the
    students of another training of the teacher; ``ensemble`` (two or more replicates, 0 = the first
    training): those trainings as one teacher, their logits averaged (run folders prefixed ``...eN_M-``)."""
    if replicate < 0 or any(r < 0 for r in ensemble):
        raise ValueError(f"replicate {replicate} / ensemble {ensemble}: replicates are >= 0")
    if ensemble and (replicate or len(set(ensemble)) < 2):
        raise ValueError(f"ensemble {ensemble}: two or more different replicates, and no --replicate with it")
    members = tuple(sorted(set(ensemble)))
    if members:
        tag, note = "e" + "_".join(map(str, members)) + "-", " (ensemble of replicates " + \
            ", ".join(map(str, members)) + ")"
    else:
        tag, note = (f"r{replicate}-", f" (replicate {replicate})") if replicate else ("", "")
    seed = replicate if replicate >= SEEDED_FROM else 0
    if model == TEACHER and size in (None, TEACHER_SIZE):
        return Teacher(TEACHER, TEACHER_SIZE, tag, "EfficientNet-Lite0" + note, members, seed)
    if model != "efficientnet_lite2":
        raise ValueError(f"unknown teacher {model!r}")
    size = size or 96
    return Teacher(model, size, f"lite2_{size}-{tag}", "EfficientNet-Lite2" + note, members, seed)


def run_teacher(t: Teacher, subset: str, epochs: int, threads: int, progress: bool) -> None:
    """Train the teacher (an ensemble: each missing member), then for an ensemble write its own results.json
    (validation and test AUC of the averaged logits; it trains nothing itself, so its history is empty and
    the report reads epochs and wall time from the members' run folders)."""
    if not t.members:
        run_job(teacher_cfg(subset, epochs, threads, progress, t))
        return
    for m in t.member_teachers():
        run_job(teacher_cfg(subset, epochs, threads, progress, m))
    out = t.run(f"teacher-{subset}")
    if (out / "results.json").is_file():
        return
    from medlite.data import load_classification
    from medlite.engine.evaluate import evaluate_split
    from medlite.engine.tasks.distill import load_teacher

    model, meta = load_teacher(t.spec(subset))
    data = load_classification(subset, size=t.size)
    pre = meta["preprocessing"]
    res = {"model": t.model, "data": subset, "ensemble": t.spec(subset).split(","), "history": []}
    for split in ("val", "test"):
        res[split], _, _ = evaluate_split(model, data.splits()[split], pre["mean"], pre["std"], data.task,
                                          n_boot=1000, seed=0, label_names=data.label_names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(f"{t.label} {subset}: val AUC {res['val']['auc']:.3f} test AUC {res['test']['auc']:.3f}", flush=True)


def teacher_cfg(subset: str, epochs: int, threads: int, progress: bool, t: Teacher | None = None) -> TrainConfig:
    t = t or teacher()
    return TrainConfig(model=t.model, data=subset, size=t.size, epochs=epochs, batch_size=64,
                       optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1.0,
                       augment="light", seed=t.seed, pretrained=True, out=str(t.run(f"teacher-{subset}")),
                       progress=progress, threads=threads, plots=False)


def student_run(t: Teacher, student: str, recipe: str, subset: str, seed: int = 0) -> Path:
    """Run folder of one student run (seed 0, the table's run, keeps the name it always had)."""
    return t.run(f"{student}-{recipe}-{subset}" + (f"-s{seed}" if seed else ""))


def run_student(student: str, subset: str, recipe: str, epochs: int, threads: int, progress: bool,
                t: Teacher | None = None, seed: int = 0) -> dict:
    from medlite.engine.tasks.distill import DistillConfig, distill

    t = t or teacher()
    out = student_run(t, student, recipe, subset, seed)
    done = out / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    t0 = time.time()
    epochs = round(epochs * RECIPE_EPOCH_FACTOR.get(recipe, 1))
    init = ""
    if recipe in MAE_INIT:  # the MAE encoder of medmnist_medlit.py's (MAE) rows, pretrained first if missing
        from medmnist_medlit import MAE_EPOCHS, RUNS, mae_cfg, run_mae

        init = run_mae(mae_cfg(student, parse_map(MAE_EPOCHS)[student], RUNS, threads))
    cfg = DistillConfig(student=student, teacher=t.spec(subset), size=28, epochs=epochs,
                        batch_size=64, lr=1e-3, weight_decay=0.05, attn_weight=0.0, augment="light",
                        out=str(out), threads=threads, progress=progress, init=init, seed=seed, **RECIPES[recipe])
    res = distill(cfg, resume=(out / "last.safetensors").is_file())
    print(f"[{time.time() - t0:.0f}s] {student} {recipe} {subset} seed {seed}: val AUC {res['val']['auc']:.3f} "
          f"test AUC {res['test']['auc']:.3f}", flush=True)
    return res


def _compact(run_dir: Path) -> dict | None:
    """Test AUC / ACC and validation AUC of a finished run (recorded in medmnist_runs.json, which also
    serves them when the run folder is not on this machine); None if it has not finished."""
    res_file = run_dir / "results.json"
    if res_file.is_file():
        res = json.loads(res_file.read_text())
        rec = remember(run_dir, {**res, "model": res.get("model", res.get("student"))})
    else:
        rec = stored(run_dir)
    if rec is None:
        return None
    val = (rec.get("val") or {}).get("auc")
    if val is None and rec.get("val_auc_per_epoch"):
        val = max(rec["val_auc_per_epoch"])
    return {"test_auc": rec["test"]["auc"], "test_acc": rec["test"]["acc"],
            "val_auc": float("nan") if val is None else val, "best_epoch": rec.get("best_epoch")}


def teachers() -> tuple[Teacher, ...]:
    """The teachers this script has run: EfficientNet-Lite0 at 64 px and EfficientNet-Lite2 at 128 px."""
    return teacher(), teacher("efficientnet_lite2", 128)


def chosen_recipe(t: Teacher, student: str, subset: str, on_disk: bool = False) -> str | None:
    """The recipe of ``student`` distilled from ``t`` on ``subset`` with the best VALIDATION AUC among its finished
    runs (``on_disk``: only runs whose folder is on this machine); None if none has finished."""
    recs = {r: rec for r in RECIPES
            if (not on_disk or (student_run(t, student, r, subset) / "results.json").is_file())
            and (rec := _compact(student_run(t, student, r, subset))) is not None}
    return max(recs, key=lambda r: recs[r]["val_auc"]) if recs else None


def _wall(run_dir: Path) -> float | None:
    """Training seconds the run recorded (epochs only: caching, evaluation and start-up excluded)."""
    res_file = run_dir / "results.json"
    if not res_file.is_file():
        return None
    res = json.loads(res_file.read_text())
    if "history" in res:
        return sum(float(h.get("epoch_seconds", 0.0)) for h in res["history"]) or None
    return float(res.get("epoch_seconds", 0.0)) * int(res.get("epochs", 0)) or None


def report(args) -> None:
    import medlite
    from medlite.models.flops import count_macs, count_params

    t = args.t
    ours = _ours()
    data = {}
    lines = header(f"MedMNIST: an ImageNet {t.label} teacher and MedLiT students distilled from it")
    lines[-1:-1] = ["- precision: fp32 training and evaluation (no bf16 autocast in these runs, whatever the CPU)"]
    lines += [__doc__.split("\n\n", 1)[1].split("\n\n    python")[0].strip(), ""]
    if (t.model, t.size) != (TEACHER, TEACHER_SIZE):  # the stage text above describes the default teacher
        lines += [f"In this report the teacher is ``{t.model}`` at {t.size} px{' (an ensemble)' if t.members else ''} "
                  f"wherever the stages above say ``{TEACHER}`` and {TEACHER_SIZE} px.", ""]
    sizes = {}
    for name, size in ((t.model, t.size), *((s, 28) for s in STUDENTS)):
        m = medlite.create_model(name, num_classes=2, in_chans=1, img_size=size)
        sizes[name] = (count_params(m) / 1e6, count_macs(m, (1, 1, size, size)) / 1e6)
    names = {"breastmnist": "BreastMNIST", "pneumoniamnist": "PneumoniaMNIST", "dermamnist": "DermaMNIST"}
    head = "| model | input | params | MACs | " + " | ".join(names.get(s, s) for s in SUBSETS) + " |"
    lines += ["Cells: test AUC / ACC (validation AUC in brackets: it chose the student recipe and every "
              "checkpoint). Params and MACs for 1 channel and 2 classes.", "", head,
              "|" + "---|" * (4 + len(SUBSETS))]

    def cell(rec):
        if rec is None:
            return "not run"
        return f"{rec['test_auc']:.3f} / {rec['test_acc']:.3f} ({rec['val_auc']:.3f})"

    teachers = {s: _compact(t.run(f"teacher-{s}")) for s in SUBSETS}
    k = len(t.members) or 1  # an ensemble runs every member
    p, m = (k * v for v in sizes[t.model])
    lines.append(f"| {t.label}, ImageNet, fine-tuned (teacher) | {t.size} px | {p:.2f} M | {m:.0f} M | "
                 + " | ".join(cell(teachers[s]) for s in SUBSETS) + " |")
    best = {}
    for st in STUDENTS:
        p, m = sizes[st]
        per = {s: {r: _compact(student_run(t, st, r, s)) for r in RECIPES} for s in SUBSETS}
        chosen = {}
        for s in SUBSETS:
            done = {r: rec for r, rec in per[s].items() if rec is not None}
            chosen[s] = max(done, key=lambda r: done[r]["val_auc"]) if done else None
        best[st] = {s: per[s][chosen[s]] if chosen[s] else None for s in SUBSETS}
        lines.append(f"| {LABELS[st]} distilled (recipe chosen on val) | 28 px | {p:.2f} M | {m:.0f} M | "
                     + " | ".join(cell(best[st][s]) + (f" [{chosen[s]}]" if chosen[s] else "") for s in SUBSETS)
                     + " |")
        for r in RECIPES:
            lines.append(f"| &nbsp; {LABELS[st]}, `{r}` only | 28 px | | | "
                         + " | ".join(cell(per[s][r]) for s in SUBSETS) + " |")
        data[st] = per
    for label, vals in ours.items():
        lines.append(f"| {label} (from `{OURS}`) | 28 px | | | "
                     + " | ".join(f"{vals[s]:.3f}" if s in vals else "" for s in SUBSETS) + " |")
    for label, vals in PUBLISHED.items():
        lines.append(f"| {label} (published, MedMNIST v2) | | | | "
                     + " | ".join(f"{vals[s][0]:.3f} / {vals[s][1]:.3f}" for s in SUBSETS) + " |")
    if t.members:
        lines += [""] + [f"- {s}: the ensemble's members alone: " + "; ".join(
            f"{m.label} test AUC {rec['test_auc']:.3f} (val {rec['val_auc']:.3f})"
            for m in t.member_teachers() if (rec := _compact(m.run(f"teacher-{s}"))) is not None)
            for s in SUBSETS if teachers[s] is not None]
    lines += ["", "## Targets", ""]
    resnet = ours.get("ResNet-18 (28), ours", {})
    wins = [s for s in SUBSETS if best["medlit_nano_28"][s] and s in resnet
            and best["medlit_nano_28"][s]["test_auc"] >= resnet[s]]
    diffs = "; ".join(f"{s} {best['medlit_nano_28'][s]['test_auc']:.3f} vs {resnet[s]:.3f} "
                      f"({best['medlit_nano_28'][s]['test_auc'] - resnet[s]:+.3f})"
                      for s in SUBSETS if best["medlit_nano_28"][s] and s in resnet)
    lines.append(f"- MedLiT-nano distilled >= our ResNet-18 (28) test AUC on {len(wins)} of {len(SUBSETS)} "
                 f"subsets (target 3 of 3): {diffs or 'no student run'}")
    seed_lines = []
    for s in SUBSETS:
        rec = best["medlit_seed_28"][s]
        if rec is None:
            continue
        top = max(v[s][0] for v in PUBLISHED.values())
        seed_lines.append(f"{s} {rec['test_auc']:.3f} vs best published {top:.3f} ({rec['test_auc'] - top:+.3f})")
    n_above = sum(1 for s in SUBSETS if best["medlit_seed_28"][s]
                  and best["medlit_seed_28"][s]["test_auc"] > max(v[s][0] for v in PUBLISHED.values()))
    lines.append(f"- MedLiT-seed distilled above every published MedMNIST v2 row on {n_above} subset(s) "
                 f"(target >= 1): {'; '.join(seed_lines) or 'not run'}")
    nano_top = [f"{s} {best['medlit_nano_28'][s]['test_auc']:.3f} vs {max(v[s][0] for v in PUBLISHED.values()):.3f}"
                for s in SUBSETS if best["medlit_nano_28"][s]
                and best["medlit_nano_28"][s]["test_auc"] > max(v[s][0] for v in PUBLISHED.values())]
    lines.append("- (not a target) MedLiT-nano distilled above every published MedMNIST v2 row on: "
                 + ("; ".join(nano_top) if nano_top else "none"))
    lines += _seed_section(t, data)
    lines += ["", "## Epochs and wall time", ""]
    for s in SUBSETS:
        if _compact(t.run(f"teacher-{s}")) is None:
            lines.append(f"- {s}: not run")
            continue
        if t.members:  # an ensemble trains nothing itself: its members' epochs and wall times
            runs = [m.run(f"teacher-{s}") for m in t.member_teachers()]
            eps = sorted({str(_epochs(r)) for r in runs})
            walls = [_wall(r) for r in runs]
            ep = f"{len(runs)} members x {'/'.join(eps)}"
            wall = f" ({sum(walls) / 60:.1f} min in all)" if all(walls) else ""
        else:
            ep, wall = _epochs(t.run(f"teacher-{s}")), _fmt_wall(t.run(f"teacher-{s}"))
        parts = [f"teacher {ep} epochs" + wall]
        for st in STUDENTS:
            for r in RECIPES:
                if data[st][s][r] is not None:
                    parts.append(f"{LABELS[st]} `{r}` {_epochs(student_run(t, st, r, s))} epochs"
                                 + _fmt_wall(student_run(t, st, r, s)))
        lines.append(f"- {s}: " + ", ".join(parts))
    lines += ["", "Runs not listed were not run (MedLiT-seed: the recipe that won on MedLiT-nano's "
              "validation AUC, or those of `--seed-recipes`, on the subsets of `--seed-subsets`). Wall times "
              "are the runs' own epoch times (one thread per process, beside one other job on the 2 cores); a run "
              "finished on another machine shows none.", ""]
    (RESULTS / f"{t.results}.md").write_text("\n".join(lines))
    (RESULTS / f"{t.results}.json").write_text(json.dumps(
        {"teacher": teachers, "students": data, "best": best}, indent=2, default=float) + "\n")
    print("\n".join(lines))


def _seeds(t: Teacher) -> dict[tuple[str, str, str], list[int]]:
    """(student, recipe, subset) -> the seeds > 0 run for it (run folders here, or records in the store)."""
    names = {p.name for p in RUNS.glob(f"{t.prefix}*-s*")} | set(stored_names(t.prefix))
    found: dict[tuple[str, str, str], list[int]] = {}
    for name in sorted(names):
        m = re.fullmatch(rf"{re.escape(t.prefix)}(\w+?)-(\w+)-(\w+)-s(\d+)", name)
        if m and m[1] in STUDENTS and m[2] in RECIPES and m[3] in SUBSETS:
            found.setdefault((m[1], m[2], m[3]), []).append(int(m[4]))
    return found


def _seed_section(t: Teacher, table: dict) -> list[str]:
    """Mean and spread over seeds of each (student, recipe, subset) with runs of more than one seed;
    ``table``: student -> subset -> recipe -> the seed-0 record (None if not run)."""
    import numpy as np

    out = []
    for (st, r, s), seeds in sorted(_seeds(t).items()):
        recs = {0: table[st][s][r]} if table[st][s][r] is not None else {}
        for seed in sorted(seeds):
            if (rec := _compact(student_run(t, st, r, s, seed))) is not None:
                recs[seed] = rec
        if len(recs) < 2:
            continue
        test = np.array([v["test_auc"] for v in recs.values()])
        val = np.array([v["val_auc"] for v in recs.values()])
        each = ", ".join(f"{k}: {v['test_auc']:.3f} ({v['val_auc']:.3f})" for k, v in recs.items())
        out.append(f"- {LABELS[st]} `{r}` on {s}, {len(recs)} seeds: test AUC {test.mean():.3f} ± "
                   f"{test.std(ddof=1):.3f}, validation AUC {val.mean():.3f} ± {val.std(ddof=1):.3f} "
                   f"(per seed, test (val): {each})")
    if not out:
        return []
    return ["", "## More seeds", "",
            "The table above shows seed 0 of each run; where a recipe was also run with other seeds "
            "(`--student-seeds`; the seed sets the student's initial weights, batch order and augmentation, the "
            "teacher is the same), mean ± standard deviation over its seeds:", "", *out]


def _epochs(run_dir: Path) -> int | str:
    """Epochs the run trained (its history), "?" for a run finished on another machine."""
    res_file = run_dir / "results.json"
    if not res_file.is_file():
        return "?"
    res = json.loads(res_file.read_text())
    return len(res.get("history", [])) or res.get("epochs") or "?"


def _fmt_wall(run_dir: Path) -> str:
    w = _wall(run_dir)
    if not w:
        return ""
    cfg = run_dir / "config.json"
    threads = json.loads(cfg.read_text()).get("threads") if cfg.is_file() else None
    return f" ({w / 60:.1f} min" + (f", {threads} threads" if threads and threads != 1 else "") + ")"


def _ours() -> dict[str, dict[str, float]]:
    """Our ResNet-18 (28) and best from-scratch MedLiT test AUCs, read from medmnist_runs.json."""
    store = json.loads((RESULTS / "medmnist_runs.json").read_text())
    out: dict[str, dict[str, float]] = {"ResNet-18 (28), ours": {}}
    for s in SUBSETS:
        rec = store.get(f"resnet18-{s}-s0")
        if rec:
            out["ResNet-18 (28), ours"][s] = rec["test"]["auc"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS)
    ap.add_argument("--stages", nargs="+", default=["teacher", "students"], choices=["teacher", "students"])
    ap.add_argument("--students", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    ap.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), choices=list(RECIPES),
                    help="student recipes (opt-in: fm, function matching, 3x the epochs; deit_mae, deit from "
                         "the student's MAE encoder, pretrained first if missing; deit_long, 1.5x the epochs; "
                         "deit_ema, deit on a moving average of the weights; deit_cam, deit plus the "
                         "teacher's class activation map as the student's cls attention target; deit_cam3, "
                         "that target weighted 3x)")
    ap.add_argument("--seed-subsets", nargs="+", default=["dermamnist"], choices=SUBSETS,
                    help="subsets medlit_seed_28 is distilled on (the nano recipe best on validation)")
    ap.add_argument("--seed-recipes", nargs="+", default=None, choices=list(RECIPES),
                    help="medlit_seed_28's recipes (default: the one best on medlit_nano_28's validation AUC)")
    ap.add_argument("--student-seeds", type=int, nargs="+", default=[0],
                    help="student seeds (seed 0 is the table's run; the others, in their own run folders, give "
                         "the spread of a recipe in a section of their own)")
    ap.add_argument("--teacher-epochs", default="", help="subset=epochs,... (default: TEACHER_EPOCHS)")
    ap.add_argument("--student-epochs", default="", help="subset=epochs,... (default: STUDENT_EPOCHS)")
    ap.add_argument("--teacher", default=TEACHER, choices=(TEACHER, "efficientnet_lite2"),
                    help="ImageNet teacher (Lite2: run folders prefixed lite2_SIZE-, its own results file)")
    ap.add_argument("--teacher-size", type=int, default=None, help="teacher input px (Lite0: 64, Lite2: 96)")
    ap.add_argument("--replicate", type=int, default=0,
                    help="N > 0: train the teacher again with the same recipe (seed N from replicate 3 on) into "
                         "its own run folders and results file (its students are compared only with each other)")
    ap.add_argument("--ensemble", type=int, nargs="+", default=[],
                    help="replicates (0 = the first training) taught as one teacher, their logits averaged "
                         "(stage teacher trains the missing members and scores the ensemble); own run folders "
                         "and results file")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args()
    args.t = t = teacher(args.teacher, args.teacher_size, args.replicate, tuple(args.ensemble))
    t_ep = args.teacher_epochs_map = {**TEACHER_EPOCHS,
                                      **(parse_map(args.teacher_epochs) if args.teacher_epochs else {})}
    s_ep = args.student_epochs_map = {**STUDENT_EPOCHS,
                                      **(parse_map(args.student_epochs) if args.student_epochs else {})}
    if not args.report_only:
        for s in args.subsets:
            if "teacher" in args.stages:
                run_teacher(t, s, t_ep[s], args.threads, args.progress)
        if "students" in args.stages:
            for st in args.students:
                for s in args.subsets:
                    if st == "medlit_seed_28":
                        if s not in args.seed_subsets:
                            continue
                        best = chosen_recipe(t, "medlit_nano_28", s)
                        recipes = args.seed_recipes or ([best] if best else [])
                    else:
                        recipes = args.recipes
                    for r in recipes:
                        for seed in args.student_seeds:
                            run_student(st, s, r, s_ep[s], args.threads, args.progress, t, seed)
    report(args)


if __name__ == "__main__":
    main()
