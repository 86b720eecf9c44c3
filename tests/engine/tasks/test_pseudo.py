"""Teacher-labelled training cases: random boxes inside the image, the teacher's confident masks kept, cached
once, turned into training cases, and joined to a prompt-training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from litesam_tiny import TINY
from test_promptable import blob_folder  # noqa: F401 (fixture)

from medlite.data.frames import Geometry
from medlite.engine.tasks.promptable import SamTrainConfig, load_dataset, train_sam
from medlite.engine.tasks.promptable.pseudo import (
    PseudoSettings,
    label_split,
    load_or_label,
    pseudo_split,
    random_boxes,
)
from medlite.errors import ConfigError


class BoxTeacher(torch.nn.Module):
    """A stand-in teacher that answers a box with the filled box (logit +4 inside, -4 outside), and a
    predicted IoU that falls with the box's width, so the IoU filter has something to drop."""

    def __init__(self, size: int = 32) -> None:
        super().__init__()
        self.cfg = type("Cfg", (), {"img_size": size})()  # as LiteSAMConfig

    def forward_head(self, feats, coords, labels, dense, has_dense):
        n, s = len(coords), self.cfg.img_size
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        out = torch.full((n, 1, s, s), -4.0)
        for i, ((x0, y0), (x1, y1)) in enumerate(coords.tolist()):
            inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
            out[i, 0][inside] = 4.0
        width = coords[:, 1, 0] - coords[:, 0, 0]
        return out, (1.0 - width / s)[:, None]

    def iou_score(self, iou):
        return iou


def _split(n: int = 3):
    from medlite.data.segmentation import SegSplit

    g = Geometry.of(16, 32, 32, "pad")  # a wide image: rows 8..23 hold it, the rest is padding
    return SegSplit(torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8), torch.zeros(n, 1, 32, 32,
                    dtype=torch.uint8), [f"c{i}" for i in range(n)], [g] * n, [np.zeros((16, 32))] * n)


def test_random_boxes_stay_inside_the_image_region():
    g = Geometry.of(100, 300, 256, "pad")
    b = random_boxes(g, 200, np.random.default_rng(0), 0.1, 0.6)
    assert b.shape == (200, 4) and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert b[:, 1].min() >= g.top and b[:, 3].max() <= g.top + g.new_h
    assert b[:, 0].min() >= g.left and b[:, 2].max() <= g.left + g.new_w
    w = (b[:, 2] - b[:, 0]) / g.new_w
    assert w.min() >= 0.1 - 1e-6 and w.max() <= 0.6 + 1e-6


def test_confident_answers_become_cases_with_the_teachers_mask():
    split = _split()
    s = PseudoSettings(boxes=6, min_side=0.2, max_side=0.9, min_iou=0.5, min_stability=0.5, min_area=0.0,
                       max_area=1.0)
    labels = label_split(BoxTeacher(), split, torch.zeros(len(split), 8, 4, 4), s)
    widths = labels["box"][:, 2] - labels["box"][:, 0]
    assert len(labels["case"]) and (labels["iou"] >= 0.5).all() and (widths <= 16).all()  # wide boxes dropped
    cases = pseudo_split(split, labels)
    assert len(cases) == len(labels["case"]) and cases.masks.shape[1:] == (1, 32, 32)
    for k, i in enumerate(labels["case"].tolist()):
        assert torch.equal(cases.images[k], split.images[i]) and cases.names[k].startswith(f"c{i}~teacher")
        x0, y0, x1, y1 = labels["box"][k].tolist()
        ys, xs = np.nonzero(cases.masks[k, 0].numpy())
        assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1  # the box, unpacked
        assert ys.min() >= 8 and ys.max() <= 23  # never in the padding


def test_area_filter_and_the_cache(tmp_path):
    split = _split()
    tight = PseudoSettings(boxes=6, min_iou=0.0, min_stability=0.0, min_area=0.9)
    assert len(label_split(BoxTeacher(), split, torch.zeros(3, 8, 4, 4), tight)["case"]) == 0  # nothing that big
    s = PseudoSettings(boxes=4, min_iou=0.0, min_stability=0.0)
    calls = []

    def teacher():
        calls.append(1)
        return BoxTeacher()

    first = load_or_label(teacher, split, lambda: torch.zeros(3, 8, 4, 4), tmp_path, s)
    again = load_or_label(teacher, split, lambda: pytest.fail("embeddings read although cached"), tmp_path, s)
    assert len(calls) == 1 and all(torch.equal(first[k], again[k]) for k in first)
    assert (tmp_path / f"{s.tag()}.safetensors").is_file() and s.tag() != PseudoSettings(boxes=4, seed=1).tag()
    with pytest.raises(ConfigError, match="delete the file"):  # labels made for a larger split
        load_or_label(teacher, _split(1), lambda: None, tmp_path, s)


def test_prompt_training_with_teacher_labelled_cases(tmp_path, blob_folder, monkeypatch):  # noqa: F811
    from medlite.engine.checkpoint import save_checkpoint
    from medlite.engine.tasks.promptable.teacher import cache_embeddings, dataset_folder, load_teacher
    from medlite.engine.tasks.promptable.train import model_meta
    from medlite.registry import create_model

    spec = f"folder:{blob_folder}"
    data = {spec: load_dataset(spec, 64)}
    kw = {**TINY, "windows": (4, 4, 4, 4)}
    torch.manual_seed(0)
    t = create_model("litemedsam_xs", num_classes=1, img_size=64, **kw)
    ckpt = save_checkpoint(tmp_path / "teacher" / "best.safetensors", t,
                           model_meta(t, SamTrainConfig(model="litemedsam_xs", img_size=64, model_kwargs=kw)))
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, datasets=(spec,), img_size=64, epochs=1,
                         batch_size=4, warmup_steps=1, out_dir=str(tmp_path), name="pseudo", progress=False,
                         pseudo_boxes=3, pseudo_min_iou=0.0, teacher=str(ckpt), distill_weight=0.0)
    with pytest.raises(ConfigError, match="teacher-cache"):
        train_sam(cfg, data)
    teacher, name = load_teacher(str(ckpt))
    cache_embeddings(teacher, data[spec].train, tmp_path / "cache" / f"{name}-64" / dataset_folder(spec))
    cfg.teacher_cache = str(tmp_path / "cache")
    # an untrained teacher is never confident: answer boxes with the box itself (the labelling is tested above)
    import medlite.engine.tasks.promptable.teacher as teacher_mod

    monkeypatch.setattr(teacher_mod, "load_teacher", lambda spec: (BoxTeacher(64), name))
    res = train_sam(cfg, data)
    n_gt = len(data[spec].train)
    assert res["pseudo_cases"] > 0
    assert res["train_cases"] == n_gt + res["pseudo_cases"] and res["val_cases"] == len(data[spec].val)
    assert res["epochs_run"] == 1 and np.isfinite(res["history"][0]["loss"])
