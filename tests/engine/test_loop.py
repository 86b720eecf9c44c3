"""The one training loop: the schedule, interruption and resume for every task, the finite-loss check,
and segmentation / LiteSAM training under ``torchrun`` with 2 processes (classification's DDP test is in
tasks/test_classify.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from litesam_tiny import TINY

from medlite.engine import loop, schedule
from medlite.engine.checkpoint import read_checkpoint

TINY_SEG = {"encoder": "mobilenetv2_035", "bottleneck_dim": 32, "transformer_dim": 32, "transformer_depth": 1,
            "transformer_heads": 2, "aspp_branch": 16, "decoder_dims": [16, 16, 16, 16]}
TINY_MEDLIT = {"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2, "experts_per_stage": [2, 3],
               "expert_hidden_start": 24, "expert_hidden_end": 12}


# ------------------------------------------------------------------------------------------ schedule
def test_cosine_with_warmup_and_step_schedule():
    f = [schedule.lr_factor(s, 100, 10, "cosine") for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[99] < 1e-3
    assert schedule.lr_factor(150, 100, 0, "cosine") == 0.0  # past the end: stays at 0
    steps = [schedule.lr_factor(s, 100, 0, "step", milestones=(50, 75), gamma=0.1) for s in (0, 49, 50, 75)]
    assert steps == pytest.approx([1.0, 1.0, 0.1, 0.01])
    assert schedule.epoch_milestones((0.5, 0.75), 100, 10) == [500, 750]
    with pytest.raises(ValueError, match="schedule"):
        schedule.lr_factor(0, 10, 0, "exp")


def test_optimizer_groups_exempt_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = schedule.build_optimizer(model, "adamw", 1e-3, 0.05)
    decay, rest = opt.param_groups
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 1  # the Linear weight
    assert rest["weight_decay"] == 0.0 and len(rest["params"]) == 3
    with pytest.raises(ValueError, match="optimizer"):
        schedule.build_optimizer(model, "sgd", 1e-3, 0.0)


# ------------------------------------------------------------------------- interruption and resume
class _Interrupt(Exception):
    pass


def _interrupt_after(task_cls, monkeypatch, epochs_done: int):
    """Make ``task_cls`` stop (as a kill would) when validating the epoch after ``epochs_done``: the loop
    has written last.safetensors for ``epochs_done`` epochs and nothing for the next."""
    calls = {"n": 0}
    original = task_cls.validate

    def validate(self):
        calls["n"] += 1
        if calls["n"] > epochs_done:
            raise _Interrupt
        return original(self)

    monkeypatch.setattr(task_cls, "validate", validate)


def _runs(kind: str, tmp: Path, folder: Path, npz: Path, out: str):
    """(task class, run function) for one kind of training, configured tiny, writing to tmp/out."""
    if kind.startswith("segment"):  # segment_ema: with a moving average of the weights
        from medlite.engine.tasks.segment.train import SegmentTask, SegTrainConfig, train_segmentation

        cfg = SegTrainConfig(model="medlitenet", data=str(folder), size=64, epochs=3, batch_size=4, folds=4,
                             model_kwargs=TINY_SEG, out=str(tmp / out), progress=False, plots=False, amp="none",
                             ema=0.9 if kind == "segment_ema" else 0.0)
        return SegmentTask, lambda resume: train_segmentation(cfg, resume=resume)
    if kind == "promptable":
        from medlite.engine.tasks.promptable import SamTrainConfig, load_dataset, train_sam
        from medlite.engine.tasks.promptable.train import PromptableTask

        spec = f"folder:{folder}"
        cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=3,
                             batch_size=4, warmup_steps=1, out_dir=str(tmp), name=out, progress=False)
        data = {spec: load_dataset(spec, 64)}
        return PromptableTask, lambda resume: train_sam(cfg, data, resume=resume)
    if kind == "mae":
        from medlite.engine.tasks.mae import MAETask, PretrainConfig, pretrain

        cfg = PretrainConfig(model="medlit_nano_28", data=str(npz), size=16, epochs=3, batch_size=32,
                             out=str(tmp / out), progress=False)
        return MAETask, lambda resume: pretrain(cfg, resume=resume)
    from medlite.engine.tasks.distill import DistillConfig, DistillTask, distill

    cfg = DistillConfig(student="medlit_nano_28", data=str(npz), epochs=3, batch_size=32, out=str(tmp / out),
                        student_kwargs=TINY_MEDLIT, n_boot=10, progress=False)
    return DistillTask, lambda resume: distill(cfg, resume=resume)


@pytest.mark.parametrize("kind", ["segment", "segment_ema", "promptable", "mae", "distill"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(kind, tmp_path, seg_folder, tiny_npz, monkeypatch):
    if kind == "mae":
        from medlite.models import medlit

        tiny = {k: tuple(v) if isinstance(v, list) else v for k, v in TINY_MEDLIT.items()}
        monkeypatch.setattr(medlit, "NANO_28", medlit.replace(medlit.NANO_28, stages=None, **tiny))
    task_cls, run_ref = _runs(kind, tmp_path, seg_folder, tiny_npz, "ref")
    ref = run_ref(False)
    task_cls, run_cut = _runs(kind, tmp_path, seg_folder, tiny_npz, "cut")
    with monkeypatch.context() as m:
        _interrupt_after(task_cls, m, epochs_done=1)
        with pytest.raises(_Interrupt):
            run_cut(False)
    cut_dir = tmp_path / "cut"
    _, meta, _ = read_checkpoint(cut_dir / "last.safetensors")
    assert meta["resume"]["epoch"] == 0  # one epoch finished and saved, the second lost
    resumed = run_cut(True)
    a, _, _ = read_checkpoint(tmp_path / "ref" / "last.safetensors")
    b, _, _ = read_checkpoint(cut_dir / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    hist_ref, hist_cut = _history(tmp_path / "ref"), _history(cut_dir)
    assert [r["epoch"] for r in hist_cut] == [1, 2, 3]
    for x, y in zip(hist_ref, hist_cut, strict=True):  # same numbers, wall-clock columns aside
        assert {k: v for k, v in x.items() if k not in ("images_per_s", "epoch_seconds")} == \
               {k: v for k, v in y.items() if k not in ("images_per_s", "epoch_seconds")}
    assert type(ref) is type(resumed)


def test_weight_averaging_validates_and_keeps_the_average(tmp_path, seg_folder, monkeypatch):
    """With ``ema``, validation scores the averaged weights and best.safetensors holds them; the training
    weights go on unchanged (last.safetensors), the average beside them."""
    from medlite.engine.tasks.segment.train import SegmentTask

    scored = []

    def validate(self):  # each epoch better than the last: the final epoch is the best
        scored.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return {"val_dice": float(len(scored))}

    monkeypatch.setattr(SegmentTask, "validate", validate)
    monkeypatch.setattr(SegmentTask, "finalize", lambda self, *a: {})
    _, run = _runs("segment_ema", tmp_path, seg_folder, None, "ema")
    run(False)
    last, meta, state = read_checkpoint(tmp_path / "ema" / "last.safetensors")
    best, best_meta, _ = read_checkpoint(tmp_path / "ema" / "best.safetensors")
    assert best_meta["epoch"] == meta["epoch"] == 2
    average = {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}
    assert average.keys() == last.keys() == best.keys()
    for k in best:
        torch.testing.assert_close(best[k], average[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(scored[-1][k], average[k], rtol=0, atol=0, msg=k)
    moved = [k for k in last if last[k].is_floating_point() and not torch.equal(last[k], average[k])]
    assert len(moved) > len(last) // 2  # the average lags the training weights


def test_weight_averaging_rejects_a_decay_outside_0_1():
    from medlite.errors import ConfigError

    model = torch.nn.Linear(2, 2)
    assert loop._ema(model, 0.0) is None
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="ema must be 0"):
            loop._ema(model, bad)


def _history(run: Path) -> list[dict]:
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    head = rows[0].split(",")
    return [dict(zip(head, (float(v) for v in r.split(",")), strict=True)) for r in rows[1:]]


def test_non_finite_loss_stops_with_a_clear_error(tmp_path, seg_folder, monkeypatch):
    from medlite.engine.tasks.segment import train as seg

    monkeypatch.setattr(seg, "seg_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    cfg = seg.SegTrainConfig(model="medlitenet", data=str(seg_folder), size=64, epochs=1, batch_size=4, folds=4,
                             model_kwargs=TINY_SEG, out=str(tmp_path / "nan"), progress=False, plots=False)
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1 step 1; lower --lr"):
        seg.train_segmentation(cfg)


def test_resume_of_a_run_without_resumable_state_names_the_file(tmp_path):
    from medlite.engine.checkpoint import CheckpointError

    legacy = Path(__file__).parent / "legacy"
    run = tmp_path / "old"
    run.mkdir()
    (run / "last.safetensors").write_bytes((legacy / "segmentation.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="last.safetensors: written by an older medlite"):
        loop._read_last(run)


# ----------------------------------------------------------------------------------- torchrun, 2 ranks
def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "medlite", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_seg_train_runs_under_torchrun_with_two_processes(tmp_path, seg_folder):
    out = tmp_path / "ddp"
    r = _torchrun("seg", "train", "medlitenet", "--data", str(seg_folder), "--size", "64", "--epochs", "2",
                  "--batch-size", "4", "--folds", "4", "--amp", "none", "--out", str(out),
                  "--set", f"model_kwargs={json.dumps(TINY_SEG)}", "--set", "progress=false")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert len(res["history"]) == 2 and 0.0 <= res["test"]["dice"]["mean"] <= 1.0
    assert res["history"][1]["train_loss"] < res["history"][0]["train_loss"] * 1.5
    _, meta, _ = read_checkpoint(out / "last.safetensors")
    assert meta["kind"] == "segmentation" and meta["resume"]["epoch"] == 1 and meta["resume"]["steps"] >= 2


@pytest.mark.slow
def test_sam_train_runs_under_torchrun_with_two_processes(tmp_path, seg_folder):
    opts = [a for k, v in TINY.items() for a in ("--model-opt", f"{k}={json.dumps(v)}")]
    r = _torchrun("sam", "train", "--model", "litesam_swin_xs", "--data", f"folder:{seg_folder}", "--img-size",
                  "64", "--epochs", "2", "--batch-size", "4", "--out-dir", str(tmp_path), "--name", "ddp",
                  "--no-progress", *opts)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert res["epochs_run"] == 2 and 0.0 <= res["best_val_dice"] <= 1.0
    _, meta, _ = read_checkpoint(tmp_path / "ddp" / "best.safetensors")
    assert meta["kind"] == "promptable" and meta["model"]["kwargs"]["dims"] == list(TINY["dims"])
