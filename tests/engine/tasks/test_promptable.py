from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from litesam_tiny import TINY
from PIL import Image

from medlite.engine.checkpoint import load_model, read_checkpoint
from medlite.engine.tasks.promptable import (
    SamTrainConfig,
    evaluate_sam,
    load_dataset,
    sam_loss,
    train_sam,
)
from medlite.models.litesam.predictor import normalise


@pytest.fixture
def blob_folder(tmp_path) -> Path:
    """A folder dataset of non-square images with one bright ellipse each (mask = the ellipse)."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(12):
        h, w = 48, 72
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.integers(15, 33), rng.integers(15, 57), rng.integers(6, 12)
        m = ((yy - cy) ** 2 + ((xx - cx) / 1.3) ** 2 < r ** 2).astype(np.uint8)
        img = (rng.integers(0, 60, (h, w)) + 150 * m).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(m * 255).save(tmp_path / "masks" / f"c{i}.png")
    return tmp_path


def test_sam_loss_perfect_prediction_is_small():
    t = torch.zeros(2, 1, 16, 16)
    t[:, :, 4:12, 4:12] = 1
    logits = (t * 2 - 1) * 20
    loss, parts = sam_loss(logits, torch.full((2, 1), 20.0), t)
    assert parts["dice_loss"] < 1e-3 and parts["bce"] < 1e-3 and parts["iou_mse"] < 1e-3
    bad, _ = sam_loss(-logits, torch.full((2, 1), 20.0), t)
    assert bad > 1.0


def test_train_resume_evaluate(tmp_path, blob_folder):
    spec = f"folder:{blob_folder}"
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=1, out_dir=str(tmp_path / "runs"))
    data = {spec: load_dataset(spec, 64)}
    res = train_sam(cfg, data)
    assert res["epochs_run"] == 1 and res["steps"] >= 1
    cfg.epochs = 2  # resume: one more epoch from last.safetensors
    res2 = train_sam(cfg, data)
    assert res2["epochs_run"] == 2 and res2["history"][0] == res["history"][0]
    model, meta = load_model(cfg.run_dir())  # the tiny widths travel in the checkpoint
    assert meta["kind"] == "promptable" and model.cfg.dims == TINY["dims"]
    out = evaluate_sam(model, data[spec].test, prompts=("box", "point"))
    for k in ("box", "point"):
        assert 0.0 <= out[k]["dsc"]["mean"] <= 1.0 and out[k]["dsc"]["n"] == len(data[spec].test)
        assert all(c["nsd"] == 0.0 for c in out[k]["cases"] if c["dsc"] <= 0.2)  # the challenge rule
    assert json.loads((cfg.run_dir() / "results.json").read_text())["epochs_run"] == 2


def test_a_sam_style_head_trains_and_validates_on_its_first_mask(tmp_path, blob_folder):
    """litesam_swin_xs_md answers with 4 masks and predicts IoU itself (SAM's head): training and validation
    read mask 0, the single-prompt answer, and its IoU without a sigmoid."""
    from medlite.engine.tasks.promptable.train import _PromptableStep, prompt_batch

    spec = f"folder:{blob_folder}"
    data = {spec: load_dataset(spec, 64)}
    cfg = SamTrainConfig(model="litesam_swin_xs_md", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=1, out_dir=str(tmp_path), progress=False)
    res = train_sam(cfg, data)
    assert res["epochs_run"] == 1 and 0.0 <= res["best_val_dice"] <= 1.0
    model, _ = load_model(cfg.run_dir())
    split = data[spec].train
    masks = split.masks[:4]
    batch = (normalise(split.images[:4]), masks, prompt_batch(masks, np.random.default_rng(0), cfg), 4)
    with torch.no_grad():
        loss = _PromptableStep(model, None, 1.0, 0.0)(batch)[0]
        logits, iou = model.forward_head(model.forward_features(batch[0]), *batch[2])
        want, _ = sam_loss(logits[:, :1], iou[:, :1], masks.float(), 1.0, iou_is_logit=False)
    assert logits.shape[1] == 4 and torch.allclose(loss, want)


def test_distillation_from_a_teacher_checkpoint(tmp_path, blob_folder):
    spec = f"folder:{blob_folder}"
    data = {spec: load_dataset(spec, 64)}
    teacher_cfg = SamTrainConfig(model="litemedsam_xs", model_kwargs={**TINY, "windows": (4, 4, 4, 4)},
                                 datasets=(spec,), img_size=64, epochs=1, batch_size=4, warmup_steps=1,
                                 out_dir=str(tmp_path), name="teacher")
    train_sam(teacher_cfg, data)
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=1, out_dir=str(tmp_path), name="student",
                         teacher=str(teacher_cfg.run_dir() / "best.safetensors"))
    res = train_sam(cfg, data)
    assert res["steps"] >= 1 and np.isfinite(res["history"][0]["loss"])


def test_encoder_lr_mult_gives_the_image_encoder_a_fraction_of_the_rate(tmp_path, blob_folder):
    import medlite

    spec = f"folder:{blob_folder}"
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=0, lr=1e-3, encoder_lr_mult=0.1, out_dir=str(tmp_path),
                         progress=False)
    train_sam(cfg, {spec: load_dataset(spec, 64)})
    _, meta, _ = read_checkpoint(cfg.run_dir() / "last.safetensors")
    groups = meta["optimizer"]["param_groups"]
    enc = [g for g in groups if g.get("lr_mult") == 0.1]
    rest = [g for g in groups if g.get("lr_mult", 1.0) == 1.0]
    assert enc and rest and groups[0] in rest  # metrics.csv logs groups[0]: the schedule's own rate
    assert groups[0]["lr"] > 0 and all(g["lr"] == pytest.approx(0.1 * groups[0]["lr"], rel=1e-9) for g in enc)
    model = medlite.create_model("litesam_swin_xs", num_classes=1, img_size=64, **TINY)
    n_enc = sum(1 for n, _ in model.named_parameters() if n.startswith("image_encoder."))
    assert sum(len(g["params"]) for g in enc) == n_enc > 0
    assert sum(len(g["params"]) for g in rest) == len(list(model.parameters())) - n_enc


def test_time_budget_sizes_the_schedule(tmp_path, blob_folder):
    spec = f"folder:{blob_folder}"
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=1, out_dir=str(tmp_path), time_budget_s=1.0, progress=False)
    data = {spec: load_dataset(spec, 64)}
    res = train_sam(cfg, data)
    _, meta, _ = read_checkpoint(cfg.run_dir() / "last.safetensors")
    planned, per_epoch = meta["resume"]["total_steps"], len(data[spec].train) // cfg.batch_size
    assert res["steps"] == planned >= 1  # the timed plan, run to its end; cfg.epochs no longer limits it
    assert res["epochs_run"] == -(-planned // per_epoch)


def test_encoder_distillation_from_cached_teacher_embeddings(tmp_path, blob_folder):
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.promptable.teacher import cache_embeddings, dataset_folder, load_teacher
    from medlite.engine.tasks.promptable.train import model_meta
    from medlite.errors import ConfigError
    from medlite.registry import create_model

    spec = f"folder:{blob_folder}"
    data = {spec: load_dataset(spec, 64)}
    torch.manual_seed(0)
    t = create_model("litemedsam_xs", num_classes=1, img_size=64, **{**TINY, "windows": (4, 4, 4, 4)})
    teacher_ckpt = save_checkpoint(tmp_path / "teacher" / "best.safetensors", t,
                                   model_meta(t, SamTrainConfig(model="litemedsam_xs", img_size=64,
                                                                model_kwargs={**TINY, "windows": (4, 4, 4, 4)})))
    teacher, name = load_teacher(str(teacher_ckpt))
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=3,
                         batch_size=4, warmup_steps=1, augment="none", out_dir=str(tmp_path), name="distill",
                         stage="distill", teacher=str(teacher_ckpt), teacher_cache=str(tmp_path / "cache"),
                         progress=False)
    with pytest.raises(ConfigError, match="cache-teacher"):  # nothing cached yet: says how to make it
        train_sam(cfg, data)
    folder = tmp_path / "cache" / f"{name}-64" / dataset_folder(spec)
    n = sum(cache_embeddings(teacher, getattr(data[spec], s), folder) for s in ("train", "val"))
    assert n == len(data[spec].train) + len(data[spec].val)
    assert cache_embeddings(teacher, data[spec].train, folder) == 0  # resumable: nothing left to do
    assert not any((folder / f"{c}.safetensors").exists() for c in data[spec].test.names)  # test untouched
    res = train_sam(cfg, data)
    mse = [h["val_distill_mse"] for h in res["history"]]
    assert mse[-1] < mse[0]  # the student's embedding moves towards the teacher's
    _, meta, _ = read_checkpoint(cfg.run_dir() / "best.safetensors")
    assert meta["epoch"] == int(np.argmin(mse))  # selected on the lowest validation MSE
    prompt = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                            batch_size=4, warmup_steps=1, out_dir=str(tmp_path), name="prompt",
                            init=str(cfg.run_dir() / "best.safetensors"), progress=False)
    res2 = train_sam(prompt, data)
    assert res2["epochs_run"] == 1 and 0.0 <= res2["best_val_dice"] <= 1.0
    # intensity-only augmentation keeps the cached target valid; geometry would not, and is refused
    photo = train_sam(dataclasses.replace(cfg, augment="photometric", epochs=1, name="distill_photo"), data)
    assert photo["epochs_run"] == 1 and np.isfinite(photo["best_val_distill_mse"])
    with pytest.raises(ConfigError, match="'none' or 'photometric'"):
        train_sam(dataclasses.replace(cfg, augment="light", name="distill_light"), data)


def test_distiller_meets_the_teacher_on_either_grid():
    """grid "student": the 64x64 teacher embedding average-pooled to the 16x16 student grid (a student equal
    to the pooled target scores 0); grid "teacher": the student upsampled, which cannot match detail inside
    a 4x4 cell; anything else is refused. Equal widths: no projection, the student regresses the teacher's
    embedding itself (so the teacher's decoder can read it); other widths go through a 1x1 convolution."""
    from medlite.engine.tasks.promptable.train import _Distiller
    from medlite.errors import ConfigError

    torch.manual_seed(0)
    teacher = torch.randn(2, 8, 64, 64)
    pooled = torch.nn.functional.avg_pool2d(teacher, 4)
    d = _Distiller(None, 8, 8, grid="student")
    assert isinstance(d.proj, torch.nn.Identity) and not list(d.parameters())
    assert float(d(None, pooled, teacher)) < 1e-10
    up = _Distiller(None, 8, 8, grid="teacher")
    assert float(up(None, pooled, teacher)) > 0.5  # white-noise detail stays in the loss
    narrow = _Distiller(None, 4, 8, grid="student")
    assert narrow.proj.weight.shape == (8, 4, 1, 1) and narrow(None, pooled[:, :4], teacher).shape == ()
    with pytest.raises(ConfigError, match="distill_grid"):
        _Distiller(None, 8, 8, grid="both")


def test_encoder_distillation_with_the_teacher_online_on_augmented_images(tmp_path, blob_folder):
    """No cache: the teacher embeds every augmented batch (geometry allowed), validation targets once; the
    time budget sizes a distill schedule from the task's own batches."""
    from medlite.engine import distributed
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.promptable.teacher import load_teacher
    from medlite.engine.tasks.promptable.train import PromptableTask, model_meta
    from medlite.registry import create_model

    spec = f"folder:{blob_folder}"
    data = {spec: load_dataset(spec, 64)}
    torch.manual_seed(0)
    kw = {**TINY, "windows": (4, 4, 4, 4)}
    t = create_model("litemedsam_xs", num_classes=1, img_size=64, **kw)
    teacher_ckpt = save_checkpoint(tmp_path / "teacher" / "best.safetensors", t,
                                   model_meta(t, SamTrainConfig(model="litemedsam_xs", img_size=64, model_kwargs=kw)))
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=3,
                         batch_size=4, warmup_steps=1, augment="light", out_dir=str(tmp_path), name="online",
                         stage="distill", teacher=str(teacher_ckpt), device="cpu", progress=False)
    res = train_sam(cfg, data)
    mse = [h["val_distill_mse"] for h in res["history"]]
    assert res["epochs_run"] == 3 and mse[-1] < mse[0]
    task = PromptableTask(dataclasses.replace(cfg, name="check"), data)
    task.dist, task.resuming = distributed.setup("cpu"), False
    task.setup(tmp_path / "check")
    teacher, _ = load_teacher(str(teacher_ckpt))
    with torch.no_grad():
        want = teacher.forward_features(normalise(data[spec].val.images)).embedding
    assert torch.allclose(task.targets["val"], want, atol=1e-5)  # the un-augmented validation images
    batch = next(iter(task.batches(0)))
    assert batch[1] is None and batch[0].shape[0] == cfg.batch_size  # no cached target: the teacher runs online
    timed = train_sam(dataclasses.replace(cfg, name="timed", time_budget_s=1.0, epochs=1), data)
    assert timed["steps"] >= 1 and np.isfinite(timed["best_val_distill_mse"])
    batched = train_sam(dataclasses.replace(cfg, name="batched", augment_on="device", epochs=1), data)
    assert batched["epochs_run"] == 1 and np.isfinite(batched["best_val_distill_mse"])
    prompt = train_sam(SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64,
                                      epochs=1, batch_size=4, warmup_steps=1, augment="strong", augment_on="device",
                                      out_dir=str(tmp_path), name="prompt_batched", progress=False), data)
    assert 0.0 <= prompt["best_val_dice"] <= 1.0
