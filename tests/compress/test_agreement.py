"""Attention agreement: top-k IoU by hand, rollout maps, the side-by-side plot, the CLI commands."""

from __future__ import annotations

import json

import torch
from compress_tiny import SIZE, tiny_medlit
from typer.testing import CliRunner

from medlite.compress.agreement import plot_attention_pairs, rollout_maps, topk_iou


def test_topk_iou_by_hand():
    a = torch.tensor([[[0.9, 0.8], [0.1, 0.0]]])
    b = torch.tensor([[[0.9, 0.0], [0.8, 0.1]]])
    assert topk_iou(a, a, frac=0.5).item() == 1.0
    assert abs(topk_iou(a, b, frac=0.5).item() - 1 / 3) < 1e-6  # {0,1} vs {0,2}
    assert topk_iou(a, b, frac=0.25).item() == 1.0  # the top cell agrees


def test_rollout_maps_are_distributions_on_the_requested_grid():
    m = tiny_medlit()
    x = torch.randn(3, 1, SIZE, SIZE)
    r = rollout_maps(m, x)
    assert r.shape == (3, 4, 4)
    torch.testing.assert_close(r.flatten(1).sum(1), torch.ones(3))
    assert rollout_maps(m, x, (7, 7)).shape == (3, 7, 7)
    assert m.training  # mode restored


def test_plot_attention_pairs(tmp_path):
    imgs = (torch.rand(2, 1, SIZE, SIZE) * 255).to(torch.uint8).numpy()
    maps = {"teacher": torch.rand(2, 4, 4).numpy(), "student": torch.rand(2, 4, 4).numpy()}
    path = plot_attention_pairs(imgs, maps, tmp_path / "a.png")
    assert path.stat().st_size > 1000


def test_cli_prune_then_distill(medlit_run, vit_teacher, tiny_npz, tmp_path):
    from medlite.cli import app

    runner = CliRunner()
    out = tmp_path / "pruned"
    r = runner.invoke(app, ["prune", str(medlit_run), "--heads", "0.5", "--ffn", "0.25", "--data", str(tiny_npz),
                            "--recover-epochs", "1", "--out", str(out), "--no-latency"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "compression.json").read_text())
    assert rep["student"]["params"] < rep["reference"]["params"]
    assert [s["step"] for s in rep["compress"]] == ["prune-heads", "prune-ffn", "fine-tune"]
    d = tmp_path / "distilled"
    r = runner.invoke(app, ["distill", "--teacher", str(vit_teacher), "--student", str(out), "--data", str(tiny_npz),
                            "--epochs", "1", "--out", str(d), "--no-latency"])
    assert r.exit_code == 0, r.output
    rep = json.loads((d / "compression.json").read_text())
    assert rep["attention_iou_top10"] is not None and (d / "compression_attention.png").is_file()
    r = runner.invoke(app, ["prune", str(medlit_run), "--data", str(tiny_npz), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "nothing to prune" in r.output
