"""Distillation: loss terms finite and switchable, attention maps from MedLiT / timm ViT / CNN teachers,
grid resampling, the training loop end to end."""

from __future__ import annotations

import pytest
import torch
from compress_tiny import SIZE, meta_for, tiny_medlit

import medlite
from medlite.compress.distill import (
    LossWeights,
    attention_rows,
    cam_rows,
    class_activation_map,
    distill_loss,
    forward_with_attention,
    has_attention,
    has_cam,
    kd_loss,
    layer_map,
    token_layout,
)
from medlite.engine.checkpoint import load_model
from medlite.engine.tasks.distill import DistillConfig, distill


def tiny_vit():
    torch.manual_seed(1)
    return medlite.create_model("vit_tiny_patch16_224", num_classes=3, in_chans=1, img_size=SIZE, depth=3,
                                embed_dim=48, num_heads=3).eval()


def test_layer_map_spreads_evenly_and_pairs_the_last_blocks():
    assert layer_map(4, 12) == [2, 5, 8, 11]
    assert layer_map(2, 2) == [0, 1]
    assert layer_map(3, 2)[-1] == 1


def test_timm_vit_attention_maps_are_read_and_fused_attention_restored():
    vit = tiny_vit()
    x = torch.randn(2, 1, SIZE, SIZE)
    logits, maps = forward_with_attention(vit, x)
    assert logits.shape == (2, 3) and len(maps) == 3
    assert maps[0].shape == (2, 3, 17, 17)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 3, 17))
    torch.testing.assert_close(logits, vit(x))  # the non-fused path computes the same function
    assert all(b.attn.fused_attn == vit.blocks[0].attn.fused_attn for b in vit.blocks)
    assert token_layout(vit) == (1, (4, 4))


def test_cnn_teacher_has_no_attention_maps():
    cnn = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=SIZE).eval()
    assert not has_attention(cnn)
    logits, maps = forward_with_attention(cnn, torch.randn(2, 1, SIZE, SIZE))
    assert maps is None and logits.shape == (2, 3)


def test_attention_rows_resample_to_the_student_grid_and_stay_distributions():
    attn = torch.rand(2, 3, 1 + 49, 1 + 49).softmax(-1)
    rows = attention_rows(attn, 1, (7, 7), (4, 4))
    assert rows.shape == (2, 1 + 16, 16)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 17))
    same = attention_rows(attn, 1, (7, 7), (7, 7))
    a = attn.mean(1)[:, :, 1:]
    torch.testing.assert_close(same, a / a.sum(-1, keepdim=True))
    # a teacher without a cls token: patch rows only
    assert attention_rows(torch.rand(2, 3, 16, 16).softmax(-1), 0, (4, 4), (4, 4)).shape == (2, 16, 16)


def _terms(w: LossWeights, multi_label: bool = False):
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    task = "multi-label" if multi_label else "multi-class"
    y = torch.randint(0, 2, (4, 3)) if multi_label else torch.randint(0, 3, (4,))
    s_rows = [torch.rand(4, 5, 4, requires_grad=True).softmax(-1) for _ in range(2)]
    t_rows = [torch.rand(4, 5, 4).softmax(-1) for _ in range(2)]
    return distill_loss(s, y, task, w, t, s_rows, t_rows, aux=torch.tensor(0.01))


def test_every_term_is_finite_and_each_switches_off():
    total, terms = _terms(LossWeights())
    assert set(terms) == {"task", "kd", "attn", "aux"}
    assert torch.isfinite(total) and all(torch.isfinite(torch.tensor(v)) for v in terms.values())
    total.backward()
    for off in ("task", "kd", "attn"):
        w = LossWeights(**{**LossWeights().__dict__, off: 0.0})
        _, t = _terms(w)
        assert off not in t and len(t) == 3
    _, t = _terms(LossWeights(), multi_label=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in t.values())
    with pytest.raises(ValueError, match="switched off"):
        distill_loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long), "multi-class", LossWeights(0, 0, 0))


def test_kd_loss_is_zero_for_identical_logits():
    z = torch.randn(5, 4)
    assert kd_loss(z, z, 4.0, "multi-class").abs() < 1e-6
    assert kd_loss(z, z + torch.randn(5, 4), 4.0, "multi-class") > 0


def test_student_attention_term_has_gradients():
    student = tiny_medlit().train()
    vit = tiny_vit()
    x = torch.randn(2, 1, SIZE, SIZE)
    _, s_maps = forward_with_attention(student, x)
    with torch.no_grad():
        _, t_maps = forward_with_attention(vit, x)
    pairs = layer_map(len(student.blocks), len(vit.blocks))
    s_rows = [attention_rows(m, 1, (4, 4), (4, 4)) for m in s_maps]
    t_rows = [attention_rows(t_maps[j], 1, (4, 4), (4, 4)) for j in pairs]
    loss, _ = distill_loss(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), "multi-class",
                           LossWeights(0, 0, 1), None, s_rows, t_rows)
    loss.backward()
    assert student.blocks[0].attn.q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("attn_weight", [1.0, 0.0])
def test_distill_end_to_end(vit_teacher, tiny_npz, tmp_path, attn_weight):
    cfg = DistillConfig(student="medlit_nano_28", teacher=str(vit_teacher), data=str(tiny_npz), epochs=2,
                        batch_size=32, out=str(tmp_path / "d"), n_boot=10, attn_weight=attn_weight,
                        student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2,
                                        "experts_per_stage": [2, 2]})
    res = distill(cfg)
    assert 0 <= res["test"]["auc"] <= 1 and len(res["history"]) == 2
    assert ("loss_attn" in res["history"][0]) == bool(attn_weight)
    model, meta = load_model(tmp_path / "d")
    rec = meta["compress"][-1]
    assert rec["step"] == "distill" and (rec["layer_map"] == [1, 2]) == bool(attn_weight)
    assert model(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 3)


def test_pruned_student_fine_tunes_without_teacher(medlit_run, tiny_npz, tmp_path):
    from medlite.compress.prune import prune_checkpoint

    pruned, _ = prune_checkpoint(medlit_run, tmp_path / "p.safetensors", heads=0.5, data=str(tiny_npz))
    res = distill(DistillConfig(student=str(pruned), data=str(tiny_npz), epochs=1, out=str(tmp_path / "ft"),
                                n_boot=10))
    _, meta = load_model(tmp_path / "ft")
    assert [r["step"] for r in meta["compress"]] == ["prune-heads", "fine-tune"]
    assert res["params"] == sum(p.numel() for p in load_model(pruned)[0].parameters())


def test_cnn_teacher_distils_with_logits_only(tiny_npz, tmp_path):
    from medlite.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cnn = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=SIZE)
    save_checkpoint(tmp_path / "cnn" / "best.safetensors", cnn, meta_for("resnet18", {}, str(tiny_npz)))
    res = distill(DistillConfig(student="medlit_nano_28", teacher=str(tmp_path / "cnn"), epochs=1, batch_size=48,
                                out=str(tmp_path / "d"), n_boot=10,
                                student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2}))
    assert set(k for k in res["history"][0] if k.startswith("loss_")) == {"loss_task", "loss_kd", "loss_aux"}
    _, meta = load_model(tmp_path / "d")
    assert meta["compress"][-1]["weights"]["attn"] == 0.0 and meta["compress"][-1]["layer_map"] is None


def test_init_starts_a_new_student_from_a_checkpoint_and_refuses_a_checkpoint_student(tiny_npz, tmp_path):
    from compress_tiny import TINY

    from medlite.engine.checkpoint import save_checkpoint
    from medlite.errors import ConfigError

    torch.manual_seed(0)
    cnn = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=SIZE)
    save_checkpoint(tmp_path / "cnn" / "best.safetensors", cnn, meta_for("resnet18", {}, str(tiny_npz)))
    start = tiny_medlit(seed=7)
    save_checkpoint(tmp_path / "start" / "best.safetensors", start, meta_for("medlit_nano_28", TINY, str(tiny_npz)))
    # lr 0: one step leaves the weights where init put them (AdamW's decay is scaled by the lr too)
    cfg = DistillConfig(student="medlit_nano_28", teacher=str(tmp_path / "cnn"), epochs=1, batch_size=48, lr=0.0,
                        out=str(tmp_path / "d"), n_boot=10, student_kwargs=TINY, max_steps_per_epoch=1,
                        progress=False, init=str(tmp_path / "start" / "best.safetensors"))
    distill(cfg)
    got, _ = load_model(tmp_path / "d")
    for k, v in start.state_dict().items():
        torch.testing.assert_close(got.state_dict()[k], v, msg=k)
    with pytest.raises(ConfigError, match="is a checkpoint already"):
        distill(DistillConfig(student=str(tmp_path / "start"), teacher=str(tmp_path / "cnn"), epochs=1,
                              out=str(tmp_path / "e"), init=str(tmp_path / "start" / "best.safetensors")))


def test_hard_term_is_cross_entropy_with_the_teacher_decision():
    from medlite.compress.distill import hard_labels

    t = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert hard_labels(t, "multi-class").tolist() == [1, 0]
    assert hard_labels(torch.tensor([[1.0, -2.0]]), "multi-label").tolist() == [[1.0, 0.0]]
    s = torch.randn(2, 3)
    _, terms = distill_loss(s, torch.tensor([2, 2]), "multi-class", LossWeights(0, 0, 0, 4.0, hard=0.5), t)
    want = 0.5 * torch.nn.functional.cross_entropy(s, torch.tensor([1, 0]))
    assert set(terms) == {"hard"} and abs(terms["hard"] - float(want)) < 1e-6


def test_teacher_at_its_own_size_teaches_a_smaller_student(tiny_npz, tmp_path):
    """A CNN teacher recorded at 2x the student's size sees the student's batch resized to its size (the
    large-input teacher of a 28 px student); DeiT's hard term and augmentation run with it online."""
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.distill import TeacherTargets

    torch.manual_seed(0)
    cnn = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=2 * SIZE)
    meta = meta_for("resnet18", {}, str(tiny_npz))
    meta["preprocessing"]["size"] = meta["model"]["img_size"] = 2 * SIZE
    save_checkpoint(tmp_path / "cnn" / "best.safetensors", cnn, meta)
    seen = []
    cnn.register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[-2:])))
    targets = TeacherTargets(cnn, meta, tiny_medlit(), DistillConfig(), need_attn=False)
    x = torch.randint(0, 256, (4, 1, SIZE, SIZE), dtype=torch.uint8)
    logits, rows, cam = targets.compute(x)
    assert seen == [(2 * SIZE, 2 * SIZE)] and rows is None and cam is None
    big = torch.nn.functional.interpolate(x.float() / 255, size=(2 * SIZE, 2 * SIZE), mode="bilinear")
    torch.testing.assert_close(logits, cnn.eval()(big * 2 - 1), atol=1e-5, rtol=0)

    res = distill(DistillConfig(student="medlit_nano_28", teacher=str(tmp_path / "cnn"), size=SIZE, epochs=1,
                                batch_size=48, out=str(tmp_path / "d"), n_boot=10, augment="light",
                                task_weight=0.5, kd_weight=0.0, hard_weight=0.5,
                                student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2}))
    assert {k for k in res["history"][0] if k.startswith("loss_")} == {"loss_task", "loss_hard", "loss_aux"}
    model, smeta = load_model(tmp_path / "d")
    assert smeta["preprocessing"]["size"] == SIZE and model(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 3)

    from medlite.compress.report import compression_report
    from medlite.data import load_classification
    from medlite.engine.evaluate import predict
    from medlite.metrics.classification import medmnist_auc

    rep = compression_report(tmp_path / "d", tmp_path / "cnn", tmp_path / "rep", latency=False)
    big_test = load_classification(str(tiny_npz), size=2 * SIZE).test  # the teacher is scored at its own size
    probs, labels, _ = predict(cnn.eval(), big_test, [0.5], [0.5], "multi-class")
    assert rep["reference"]["auc"] == pytest.approx(float(medmnist_auc(labels, probs, "multi-class")))
    assert rep["reference"]["macs"] > 3 * rep["student"]["macs"] / 4  # counted at 32 px, not 16


def test_mix_batch_mixes_each_image_with_another_reproducibly():
    from medlite.engine.tasks.distill import mix_batch

    x = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(8)])
    a = mix_batch(x, torch.Generator().manual_seed(3), 1.0)
    b = mix_batch(x, torch.Generator().manual_seed(3), 1.0)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, x)
    # each output is a convex combination of two inputs: constant per image, within the batch's range
    assert torch.all(a.amax((1, 2, 3)) == a.amin((1, 2, 3))) and a.min() >= 0 and a.max() <= 7
    assert mix_batch(x[:1], torch.Generator(), 1.0) is not None


def test_mixup_function_matching_runs_online_and_refuses_labels(tiny_npz, tmp_path):
    """With mixup the teacher must see the mixed image (no cache) and the label term is refused: a mixed
    image has no label of its own."""
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.distill import DistillTask
    from medlite.errors import ConfigError

    torch.manual_seed(0)
    cnn = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=SIZE)
    save_checkpoint(tmp_path / "cnn" / "best.safetensors", cnn, meta_for("resnet18", {}, str(tiny_npz)))
    kw = dict(student="medlit_nano_28", teacher=str(tmp_path / "cnn"), epochs=1, batch_size=48, n_boot=10,
              student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2})
    with pytest.raises(ConfigError, match="task_weight 0"):
        DistillTask(DistillConfig(**kw, mixup=1.0, out=str(tmp_path / "x"))).setup(tmp_path / "x")
    task = DistillTask(DistillConfig(**kw, mixup=1.0, task_weight=0.0, temperature=1.0, out=str(tmp_path / "d")))
    task.setup(tmp_path / "d")
    assert task.targets.cache is None  # teacher online on the mixed batch
    res = distill(DistillConfig(**kw, mixup=1.0, task_weight=0.0, temperature=1.0, out=str(tmp_path / "d")))
    assert {k for k in res["history"][0] if k.startswith("loss_")} == {"loss_kd", "loss_aux"}
    _, meta = load_model(tmp_path / "d")
    assert meta["compress"][-1]["config"]["mixup"] == 1.0


def test_class_activation_map_is_exact_for_average_pooled_cnns():
    """The map's spatial mean plus the class bias is the logit of the predicted class (EfficientNet-Lite,
    the medmnist teachers); ViTs and MedLiT have no such map."""
    torch.manual_seed(0)
    cnn = medlite.create_model("efficientnet_lite0", num_classes=3, in_chans=1, img_size=64).eval()
    assert has_cam(cnn) and not has_cam(tiny_vit()) and not has_cam(tiny_medlit())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits, cam = class_activation_map(cnn, x)
        torch.testing.assert_close(logits, cnn(x))
    top = logits.argmax(-1)
    assert cam.shape == (2, 2, 2)
    torch.testing.assert_close(cam.mean((1, 2)) + cnn.get_classifier().bias[top], logits[torch.arange(2), top],
                               atol=1e-4, rtol=1e-4)


def test_cam_rows_are_distributions_on_the_student_grid():
    cam = torch.tensor([[[4.0, -1.0], [0.0, 0.0]], [[-1.0, -2.0], [-3.0, -1.0]]])
    rows = cam_rows(cam, (4, 4))
    assert rows.shape == (2, 1, 16)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 1))
    assert rows[0, 0, 0] == rows[0].max() and rows[0, 0, -1] < rows[0, 0, 0]  # mass where the evidence is
    torch.testing.assert_close(rows[1], torch.full((1, 16), 1 / 16))  # no positive evidence: uniform
    torch.testing.assert_close(cam_rows(cam, (2, 2))[0, 0], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_cnn_teacher_teaches_where_to_look_through_its_class_activation_map(tiny_npz, tmp_path):
    """cam_weight with a CNN teacher: the term is logged, cached with the logits (no augmentation), reaches
    the student's attention, and is recorded; a ViT teacher (no CAM) switches it off."""
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.distill import DistillTask

    torch.manual_seed(0)
    cnn = medlite.create_model("efficientnet_lite0", num_classes=3, in_chans=1, img_size=2 * SIZE)
    meta = meta_for("efficientnet_lite0", {}, str(tiny_npz))
    meta["preprocessing"]["size"] = meta["model"]["img_size"] = 2 * SIZE
    save_checkpoint(tmp_path / "cnn" / "best.safetensors", cnn, meta)
    kw = dict(student="medlit_nano_28", teacher=str(tmp_path / "cnn"), size=SIZE, epochs=1, batch_size=48,
              n_boot=10, task_weight=0.5, kd_weight=0.0, hard_weight=0.5, cam_weight=1.0,
              student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2})
    task = DistillTask(DistillConfig(**kw, out=str(tmp_path / "t")))
    task.setup(tmp_path / "t")
    logits, rows, cams = task.targets.cache
    assert rows is None and cams.shape == (len(logits), 1, 16)  # the student's 4x4 patch grid
    idx = torch.arange(8)
    x01 = task.data.train.images[idx].float() / 255
    loss, terms, _ = task.trainable((idx, x01, task.data.train.labels[idx], 8))
    assert terms["loss_cam"] > 0
    loss.backward()
    assert task.model.blocks[-1].attn.q.weight.grad.abs().sum() > 0

    res = distill(DistillConfig(**kw, out=str(tmp_path / "d")))
    assert {k for k in res["history"][0] if k.startswith("loss_")} == {"loss_task", "loss_hard", "loss_cam",
                                                                       "loss_aux"}
    _, smeta = load_model(tmp_path / "d")
    assert smeta["compress"][-1]["weights"]["cam"] == 1.0


def test_cam_weight_is_switched_off_for_a_teacher_without_a_class_activation_map(vit_teacher, tiny_npz, tmp_path):
    res = distill(DistillConfig(student="medlit_nano_28", teacher=str(vit_teacher), data=str(tiny_npz), epochs=1,
                                batch_size=48, out=str(tmp_path / "d"), n_boot=10, attn_weight=0.0, cam_weight=1.0,
                                student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2}))
    assert "loss_cam" not in res["history"][0]
    _, meta = load_model(tmp_path / "d")
    assert meta["compress"][-1]["weights"]["cam"] == 0.0


def test_logit_ensemble_averages_logits_and_its_class_activation_map_is_exact():
    """Two average-pooled CNNs as one teacher: the mean of their logits, and (concatenated features, the
    equivalent linear head) an exact CAM, the mean of the members' maps for the ensemble's class."""
    from medlite.compress.distill import LogitEnsemble

    torch.manual_seed(0)
    a, b = (medlite.create_model("efficientnet_lite0", num_classes=3, in_chans=1, img_size=64).eval()
            for _ in range(2))
    ens = LogitEnsemble([a, b]).eval()
    assert has_cam(ens)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits, cam = class_activation_map(ens, x)
        torch.testing.assert_close(logits, (a(x) + b(x)) / 2)
        torch.testing.assert_close(ens(x), logits)
        top = logits.argmax(-1)
        per_member = [torch.einsum("bkhw,bk->bhw", m.forward_features(x), m.get_classifier().weight[top])
                      for m in (a, b)]
    torch.testing.assert_close(cam, (per_member[0] + per_member[1]) / 2, atol=1e-5, rtol=1e-5)
    bias = (a.get_classifier().bias + b.get_classifier().bias)[top] / 2
    torch.testing.assert_close(cam.mean((1, 2)) + bias, logits[torch.arange(2), top], atol=1e-4, rtol=1e-4)
    assert not has_cam(LogitEnsemble([a, tiny_vit()]))
    with pytest.raises(ValueError, match="at least 2"):
        LogitEnsemble([a])


def test_comma_separated_teachers_distil_as_an_ensemble_and_must_agree(tiny_npz, tmp_path):
    """--teacher A,B: the student learns from the averaged logits (and CAM); members trained for other data
    or reading other sizes are refused by name, an empty path too."""
    from medlite.compress.distill import LogitEnsemble
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.distill import DistillTask, load_teacher
    from medlite.errors import ConfigError

    paths = []
    for i in range(2):
        torch.manual_seed(i)
        cnn = medlite.create_model("efficientnet_lite0", num_classes=3, in_chans=1, img_size=2 * SIZE)
        meta = meta_for("efficientnet_lite0", {}, str(tiny_npz))
        meta["preprocessing"]["size"] = meta["model"]["img_size"] = 2 * SIZE
        save_checkpoint(tmp_path / f"cnn{i}" / "best.safetensors", cnn, meta)
        paths.append(str(tmp_path / f"cnn{i}"))
    model, meta = load_teacher(",".join(paths))
    assert isinstance(model, LogitEnsemble) and meta["ensemble"] == paths
    kw = dict(student="medlit_nano_28", teacher=",".join(paths), size=SIZE, epochs=1, batch_size=48, n_boot=10,
              hard_weight=0.5, cam_weight=1.0,
              student_kwargs={"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2})
    task = DistillTask(DistillConfig(**kw, out=str(tmp_path / "t")))
    task.setup(tmp_path / "t")
    logits, _, cams = task.targets.cache
    x = task.targets.compute(task.data.train.images[:4])[0]
    singles = [DistillTask(DistillConfig(**{**kw, "teacher": p}, out=str(tmp_path / f"s{i}")))
               for i, p in enumerate(paths)]
    for s in singles:
        s.setup(tmp_path / "s")
    torch.testing.assert_close(x, sum(s.targets.compute(task.data.train.images[:4])[0] for s in singles) / 2)
    assert cams is not None and cams.shape == (len(logits), 1, 16)
    res = distill(DistillConfig(**kw, out=str(tmp_path / "d")))
    assert "loss_cam" in res["history"][0]

    other = load_model(paths[1])[1]
    other["preprocessing"]["size"] = SIZE
    save_checkpoint(tmp_path / "cnn_small" / "best.safetensors", load_model(paths[1])[0], other)
    with pytest.raises(ConfigError, match=r"cnn_small differs from .*cnn0 in size"):
        load_teacher(f"{paths[0]},{tmp_path / 'cnn_small'}")
    with pytest.raises(ConfigError, match="empty path"):
        load_teacher(f"{paths[0]},")
