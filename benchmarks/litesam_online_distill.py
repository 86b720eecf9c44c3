"""Encoder distillation with the teacher online: LiteSAM xs-md8 regresses LiteMedSAM's embedding of every
augmented batch (geometric and intensity augmentation: the teacher sees the same image, so the target always
fits), instead of the cached embeddings of un-augmented images that ``litesam_distill.py``'s distill stage is
limited to on a CPU (the teacher costs 2-3 s per image there). Same student, head, sets and validation as the
``md8`` variant; the result is that script's ``md8on`` variant, whose prompt stages run as for ``md8``.

Runs anywhere (``--device``); sized for a GPU. On a machine without ``$MEDLITE_DATA`` or the ``medlite[sam]``
package, the data travel as ``device_pack.py``'s lossless pack and the teacher as a float16 copy of
LiteMedSAM (``--write-teacher``); the encoder and neck come back in files under 16 MiB (``--export``) and
``--import-from`` rebuilds the run folder here with LiteMedSAM's exact float32 head (the distill stage never
changes the head):

    python litesam_online_distill.py --write-teacher ../.pack/litemedsam_fp16.safetensors   # here
    python litesam_online_distill.py --pack ../.pack --teacher ../.pack/litemedsam_fp16.safetensors \\
        --budget-s 360 --export $OUT                                                         # GPU machine
    python litesam_online_distill.py --import-from DIR                                       # here again
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch
from common import ROOT
from litesam_distill import STUDENTS, VARIANTS
from safetensors.torch import load_file, save_file

import medlite
from medlite.engine.checkpoint import read_checkpoint, save_checkpoint
from medlite.engine.tasks.promptable import SamTrainConfig, train_sam
from medlite.engine.tasks.promptable.train import model_meta
from medlite.models.litesam.model import litemedsam_head_keys, load_litemedsam_head

VARIANT = "md8on"  # litesam_distill.py's variant whose distill stage this script runs
STUDENT, NAME = STUDENTS[VARIANT], f"distill{VARIANTS[VARIANT][1]}"


def write_teacher(path: Path) -> None:
    teacher = medlite.create_model("litemedsam", num_classes=1, pretrained=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in teacher.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, state, model_meta(teacher))
    print(f"{path}: LiteMedSAM in float16, {path.stat().st_size / 2**20:.1f} MiB")


def export(run: Path, out: Path) -> None:
    """The distill run's best weights without the (unchanged) LiteMedSAM head, its record and results."""
    out.mkdir(parents=True, exist_ok=True)
    state, meta, _ = read_checkpoint(run / "best.safetensors")
    head = set(litemedsam_head_keys(state))
    keep = {k: v for k, v in state.items() if k not in head}
    save_file({k: v.contiguous() for k, v in keep.items()}, str(out / "encoder.safetensors"))
    (out / "meta.json").write_text(json.dumps(meta, default=str) + "\n")
    for f in ("results.json", "metrics.csv"):
        if (run / f).is_file():
            (out / f).write_bytes((run / f).read_bytes())


def import_from(src: Path, run: Path) -> None:
    from medlite.models.litesam import pretrained as _weights
    from medlite.weights import load_weights

    meta = json.loads((src / "meta.json").read_text())
    part = load_file(str(src / "encoder.safetensors"))
    exact = load_weights(_weights.LITEMEDSAM.name)
    model = medlite.create_model(STUDENT, num_classes=1)
    own = model.state_dict()
    head = {k: exact[k] for k in litemedsam_head_keys(own)}
    missing = set(own) - set(part) - set(head)
    if missing:
        raise SystemExit(f"{src}: {len(missing)} tensors missing, e.g. {sorted(missing)[:3]}")
    model.load_state_dict({**part, **head})
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run / "best.safetensors", model, meta)
    for f in ("results.json", "metrics.csv"):
        (run / f).write_bytes((src / f).read_bytes())
    print(f"{run}: rebuilt ({len(part)} tensors from {src}, {len(head)} head tensors from LiteMedSAM's float32 "
          "weights)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "litesam_distill"))
    ap.add_argument("--pack", default="", help="device_pack.py folder (default: the sets under $MEDLITE_DATA)")
    ap.add_argument("--teacher", default="litemedsam", help="teacher: litemedsam (installed) or a checkpoint")
    ap.add_argument("--budget-s", type=float, default=360.0, help="training time; the schedule fits it")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--augment", default="strong", choices=["none", "photometric", "light", "strong"])
    ap.add_argument("--augment-on", default="device", choices=["cpu", "device"],
                    help="device: batched torch augmentation on the GPU (the first H200 run, with 'cpu', spent "
                         "0.23 s a step on albumentations: it was bound by the CPU, not the GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", default="", help="write the transportable result here")
    ap.add_argument("--write-teacher", default="", help="only write LiteMedSAM as a float16 checkpoint here")
    ap.add_argument("--import-from", default="", help="only rebuild the run folder from an --export folder")
    ap.add_argument("--name", default=NAME, help="run folder")
    ap.add_argument("--continue-from", default="",
                    help="start from an --export'ed encoder file (a warm restart) instead of LiteMedSAM's neck init")
    ap.add_argument("--smoke", action="store_true", help="4 cases per split, own run folder (a check of the path)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    run = Path(args.runs) / args.name
    if args.write_teacher:
        return write_teacher(Path(args.write_teacher))
    if args.import_from:
        return import_from(Path(args.import_from), run)
    if args.pack:
        from device_pack import unpack

        data = unpack(args.pack)
    else:
        from litesam_distill import datasets, distill_sets

        data = datasets(distill_sets(), smoke=False)
    if args.smoke:
        from litesam import _subset

        for ds in data.values():
            ds.train, ds.val = _subset(ds.train, 4), _subset(ds.val, 2)
        args.runs = args.runs + "_smoke"
        run = Path(args.runs) / args.name
    init = Path(args.runs) / f"init_{args.name}.safetensors"  # the student with LiteMedSAM's head, as md8 starts
    if not init.is_file():  # (the training run loads the teacher itself)
        from medlite.engine.tasks.promptable.teacher import load_teacher

        teacher = load_teacher(args.teacher)[0]
        torch.manual_seed(0)
        student = medlite.create_model(STUDENT, num_classes=1)
        load_litemedsam_head(student, {k: v.float() for k, v in teacher.state_dict().items()})
        if args.continue_from:  # the encoder and neck of an earlier run; the head stays LiteMedSAM's
            part = load_file(args.continue_from)
            student.load_state_dict({**student.state_dict(), **{k: v.float() for k, v in part.items()}})
        init.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(init, student, model_meta(student))
    cfg = SamTrainConfig(model=STUDENT, datasets=tuple(data), img_size=256, batch_size=args.batch_size,
                         stage="distill", teacher=args.teacher, distill_grid="student", augment=args.augment,
                         augment_on=args.augment_on,
                         lr=args.lr, warmup_steps=args.warmup_steps, time_budget_s=args.budget_s, init=str(init),
                         device=args.device, threads=args.threads, out_dir=args.runs, name=args.name, progress=False,
                         extra={"recipe": "online teacher, augmented; litesam_online_distill.py",
                                "machine": torch.cuda.get_device_name() if torch.cuda.is_available()
                                else platform.processor() or "CPU", "torch": torch.__version__})
    t0 = time.time()
    res = train_sam(cfg, data)
    print(f"[{args.name}] {res['steps']} steps, {res['epochs_run']} epochs in {(time.time() - t0) / 60:.1f} min, "
          f"best val MSE {res['best_val_distill_mse']:.5f}", flush=True)
    if args.export:
        export(run, Path(args.export))


if __name__ == "__main__":
    main()
