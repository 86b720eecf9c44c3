"""``medlite distill`` and ``medlite prune``: the compression commands.

Option defaults restate ``DistillConfig`` and :func:`medlite.compress.prune.prune_checkpoint` without
importing them (``medlite --help`` needs no torch); tests/cli/test_defaults.py keeps them equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from medlite.cli.common import (
    DATA_ROOT_HELP,
    CliError,
    Ema,
    Verbose,
    app,
    checked,
    console,
    model_or_checkpoint,
    one_of,
    parse_ints,
)


def _report_reference(teacher: str) -> str:
    """The model the compression report measures the student against: the teacher, or the first member of an
    ensemble teacher (said on the console: the report times and scores one model)."""
    from medlite.engine.tasks.distill import teacher_paths

    paths = teacher_paths(teacher)
    if len(paths) > 1:
        console.print(f"[dim]report: the student against {paths[0]}, the first of the {len(paths)} teachers "
                      "whose averaged logits it was distilled from[/dim]")
    return paths[0]


def _report(student: Path, reference: str, out: Path, data_root: str, latency: bool) -> None:
    from medlite.compress.report import compression_report

    compression_report(student, reference, out, data_root or None, latency)
    console.print(Markdown((out / "compression.md").read_text()))


@app.command()
@checked
def distill(
    student: Annotated[str, typer.Argument(help="Student: a model name (new, e.g. medlit_nano_28) or a "
                                                "checkpoint / run folder (e.g. a pruned model).")] = "",
    teacher: Annotated[str, typer.Option(help="Run folder / checkpoint of the trained teacher (a timm ViT, a "
                                              "MedLiT, or a CNN: logits and --cam-weight); several joined by "
                                              "commas: an ensemble, their logits averaged.")] = "",
    student_opt: Annotated[str, typer.Option("--student", hidden=True,
                                             help="The student (older spelling of the argument).")] = "",
    data: Annotated[str, typer.Option(help="MedMNIST subset or path (default: the teacher's data).")] = "",
    out: Annotated[str, typer.Option(help="Run folder (default: runs/ distill-STUDENT-DATA).")] = "",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak AdamW learning rate (warmup 10 %, cosine).")] = 1e-3,
    temperature: Annotated[float, typer.Option(help="Softening temperature T of the logit KL.")] = 4.0,
    task_weight: Annotated[float, typer.Option(help="Weight of the label loss (0 = off).")] = 1.0,
    kd_weight: Annotated[float, typer.Option(help="Weight of the T^2-scaled logit KL (0 = off).")] = 1.0,
    attn_weight: Annotated[float, typer.Option(help="Weight of the attention-map KL (0 = logit-only).")] = 1.0,
    hard_weight: Annotated[float, typer.Option(help="Weight of the cross-entropy with the teacher's hard "
                                                    "labels (DeiT; 0 = off).")] = 0.0,
    cam_weight: Annotated[float, typer.Option(help="Weight of the KL between a CNN teacher's class activation "
                                                   "map and the student's cls attention (0 = off).")] = 0.0,
    size: Annotated[int, typer.Option(help="Student input size (0 = the student checkpoint's, else the "
                                           "teacher's); the teacher sees its own size.")] = 0,
    layer_map: Annotated[str, typer.Option(help="Teacher block per student block, e.g. 2,5,8,11 (default: "
                                                "evenly spread, last with last).")] = "",
    augment: Annotated[str, typer.Option(help="none (teacher outputs cached), flip or light.")] = "none",
    mixup: Annotated[float, typer.Option(help="Mix images pairwise, weight ~ Beta(a, a), teacher online "
                                              "(function matching; needs --task-weight 0; 0 = off).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    ema: Ema = 0.0,
    init: Annotated[str, typer.Option(help="Start a new student from this checkpoint (e.g. `medlite "
                                           "pretrain`'s encoder.safetensors) instead of random weights.")] = "",
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    threads: Annotated[int, typer.Option(help="CPU threads (0 = all).")] = 0,
    latency: Annotated[bool, typer.Option(help="Time teacher and student (ONNX Runtime) in the report.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bars (off: one log line per epoch).")] = True,
    verbose: Verbose = False,
) -> None:
    """Distil a trained teacher into a student: label loss + temperature-scaled KL on logits + KL between
    head-averaged attention maps of mapped layers (resampled to the student's token grid), or for a CNN
    teacher its class activation map against the student's cls attention (--cam-weight). Keeps the
    best-validation-AUC epoch, then writes a compression report (size, MACs, latency, AUC retention,
    attention agreement with a PNG) into the run folder."""
    from medlite.engine.tasks.distill import DistillConfig
    from medlite.engine.tasks.distill import distill as run_distill

    student = one_of(student, student_opt, "STUDENT", "--student")
    if not teacher:
        raise typer.BadParameter("--teacher is required: the run folder or checkpoint to distil from")
    model_or_checkpoint(student, task="classification")
    cfg = DistillConfig(student=student, teacher=teacher, data=data, out=out, epochs=epochs,
                        batch_size=batch_size, lr=lr, temperature=temperature, task_weight=task_weight,
                        kd_weight=kd_weight, attn_weight=attn_weight, hard_weight=hard_weight,
                        cam_weight=cam_weight, size=size, layer_map=parse_ints(layer_map, "--layer-map"),
                        augment=augment, mixup=mixup, seed=seed, ema=ema, data_root=data_root, threads=threads,
                        progress=progress, init=init)
    res = run_distill(cfg)
    run_dir = Path(res["run_dir"])
    _report(run_dir / "best.safetensors", _report_reference(teacher), run_dir, data_root, latency)


def _check_prune_targets(heads, heads_latency_ms, ffn, ffn_latency_ms) -> None:
    """What :func:`medlite.compress.prune.prune_checkpoint` would reject, as one clear line before any work."""
    if heads is None and heads_latency_ms is None and ffn is None and ffn_latency_ms is None:
        raise CliError("nothing to prune: give a heads and/or an ffn target (--heads, --heads-latency-ms, --ffn, "
                       "--ffn-latency-ms)")
    for ratio, budget, what in ((heads, heads_latency_ms, "heads"), (ffn, ffn_latency_ms, "ffn")):
        if ratio is not None and budget is not None:
            raise CliError(f"give --{what} or --{what}-latency-ms, not both")
        if ratio is not None and not 0 <= ratio < 1:
            raise CliError(f"--{what} is a fraction in [0, 1); got {ratio}")


def _require_medlit(run: str) -> None:
    """Structured pruning needs a MedLiT; say so before loading data and scoring."""
    import medlite
    from medlite.engine.checkpoint import read_checkpoint

    _, meta, _ = read_checkpoint(run)
    name = meta["model"]["name"]
    if name in medlite.list_models() and medlite.model_card(name).family != "medlit":
        raise CliError(f"{run}: a {name} checkpoint; structured pruning supports MedLiT models "
                       f"({', '.join(medlite.list_models(family='medlit'))})")


@app.command()
@checked
def prune(
    run: Annotated[str, typer.Argument(help="Run folder / checkpoint of a trained MedLiT.")],
    heads: Annotated[float | None, typer.Option(help="Fraction of all attention query heads to remove "
                                                     "(least important first; a key/value group goes "
                                                     "with its last head).")] = None,
    heads_latency_ms: Annotated[float | None, typer.Option(
        help="Instead of --heads: remove the fewest heads that bring ONNX latency (batch 1) to this.")] = None,
    ffn: Annotated[float | None, typer.Option(help="Fraction of all MoE hidden units to remove (whole units "
                                                   "of the SwiGLU experts; matrices stay dense).")] = None,
    ffn_latency_ms: Annotated[float | None, typer.Option(help="Instead of --ffn: a latency budget in ms.")] = None,
    expert_min_load: Annotated[float, typer.Option(help="Remove experts routed at most this fraction of "
                                                        "validation tokens (0 = never routed).")] = 0.0,
    out: Annotated[str, typer.Option(help="Output folder (default RUN-pruned).")] = "",
    teacher: Annotated[str, typer.Option(help="Recover by distilling from this teacher (default: fine-tune "
                                              "on the labels).")] = "",
    recover_epochs: Annotated[int, typer.Option(help="Epochs of recovery after pruning (0 = none).")] = 2,
    data: Annotated[str, typer.Option(help="Dataset (default: the model's); scoring uses its val split.")] = "",
    data_root: Annotated[str, typer.Option(help=DATA_ROOT_HELP)] = "",
    threads: Annotated[int, typer.Option(help="CPU threads for scoring, recovery and latency.")] = 1,
    latency: Annotated[bool, typer.Option(help="Time the models (ONNX Runtime) in the report.")] = True,
    progress: Annotated[bool, typer.Option(help="Progress bars (off: one log line per epoch).")] = True,
    verbose: Verbose = False,
) -> None:
    """Prune a MedLiT physically: attention heads (--heads / --heads-latency-ms) and/or SwiGLU-expert
    hidden units and unused experts (--ffn / --ffn-latency-ms), scored by the gradient of the validation
    loss with respect to per-head / per-unit gates. Then recover by distillation (--teacher) or
    fine-tuning, and write a compression report. The checkpoint records what was removed and rebuilds
    exactly on load."""
    import torch

    from medlite.compress.prune import prune_checkpoint
    from medlite.engine.tasks.distill import DistillConfig, distill

    _check_prune_targets(heads, heads_latency_ms, ffn, ffn_latency_ms)
    _require_medlit(run)
    if threads:
        torch.set_num_threads(threads)
    src = Path(run)
    out_dir = Path(out) if out else src.parent / f"{src.stem}-pruned"
    pruned, _ = prune_checkpoint(run, out_dir / "pruned.safetensors", heads=heads,
                                 heads_latency_ms=heads_latency_ms, ffn=ffn, ffn_latency_ms=ffn_latency_ms,
                                 expert_min_load=expert_min_load, data=data, data_root=data_root, threads=threads)
    final = pruned
    if recover_epochs > 0:
        cfg = DistillConfig(student=str(pruned), teacher=teacher, data=data, out=str(out_dir),
                            epochs=recover_epochs, data_root=data_root, threads=threads, progress=progress)
        distill(cfg)
        final = out_dir / "best.safetensors"
    _report(final, _report_reference(teacher) if teacher else run, out_dir, data_root, latency)

