import pytest
import torch

import medlite
from medlite.explain import attention_rollout, rollout_heatmap


def test_rollout_identity_and_uniform():
    B, H, N = 2, 3, 5
    eye = torch.eye(N).expand(B, H, N, N)
    assert torch.equal(attention_rollout([eye, eye]), torch.zeros(B, N - 1))
    uniform = torch.full((B, H, N, N), 1.0 / N)
    roll = attention_rollout([uniform], discard_ratio=0.0)
    torch.testing.assert_close(roll, torch.full((B, N - 1), 0.5 / N))  # (A + I) / 2, cls row


def test_rollout_discard_keeps_shape():
    maps = [torch.rand(2, 3, 10, 10).softmax(-1) for _ in range(3)]
    roll = attention_rollout(maps, discard_ratio=0.5)
    assert roll.shape == (2, 9) and torch.isfinite(roll).all() and (roll >= 0).all()


def test_rollout_heatmap_normalised():
    model = medlite.create_model("medlit_nano_28", in_chans=1, embed_dim=24, depth=2,
                                 expert_hidden_start=8, expert_hidden_end=4).train()
    heat = rollout_heatmap(model, torch.randn(3, 1, 28, 28))
    assert heat.shape == (3, 7, 7)
    assert heat.min() >= 0 and heat.max() <= 1
    torch.testing.assert_close(heat.amax(dim=(1, 2)), torch.ones(3))
    torch.testing.assert_close(heat.amin(dim=(1, 2)), torch.zeros(3))
    assert model.training  # mode restored


def test_gradcam_finds_the_object_a_cnn_was_trained_on():
    """Grad-CAM (MONAI) for CNN classifiers (ecosystem issue): a small CNN that learns 'a bright square
    somewhere' vs 'none' puts its relevance for the 'square' class on the square."""
    import torch

    from medlite.explain import gradcam_heatmap, last_conv_layer

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    g = torch.Generator().manual_seed(0)

    def batch(n):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
        where = torch.randint(0, 12, (n, 2), generator=g)
        for i in range(n):
            if y[i]:
                r, c = where[i].tolist()
                x[i, 0, r:r + 4, c:c + 4] = 1.0
        return x, y, where

    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        x, y, _ = batch(32)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert last_conv_layer(net) == "2"
    x, y, where = batch(16)
    assert (net(x).argmax(1) == y).float().mean() > 0.9  # it learned the task
    heat = gradcam_heatmap(net, x, class_idx=1)
    assert heat.shape == (16, 16, 16) and float(heat.min()) >= 0 and float(heat.max()) <= 1
    with_square = [i for i in range(16) if y[i]]
    on_square = [float(heat[i, r:r + 4, c:c + 4].mean()) > 2 * float(heat[i].mean())
                 for i in with_square for r, c in [where[i].tolist()]]
    assert all(on_square), on_square


def test_explain_cli_cnn_and_out_without_suffix(tmp_path, make_npz):
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from medlite.cli import app

    test_images = np.load(make_npz("d.npz", sizes=(16, 8, 8), hw=(28, 28)))["test_images"]
    runner = CliRunner()
    r = runner.invoke(app, ["train", "resnet18", "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--batch-size",
                            "8", "--out", str(tmp_path / "run"), "--no-progress", "--no-leakage"])
    assert r.exit_code == 0, r.output
    Image.fromarray(test_images[0]).save(tmp_path / "x.png")
    r = runner.invoke(app, ["explain", str(tmp_path / "run"), str(tmp_path / "x.png"), "--out",
                            str(tmp_path / "overlay")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert (tmp_path / "overlay.png").is_file() and str(tmp_path / "overlay.png") in r.output  # the file written
    assert json.loads((tmp_path / "run" / "results.json").read_text())["model"] == "resnet18"


def test_seg_gradcam_and_seg_predict_explain(tmp_path):
    """Grad-CAM for segmentation models (ecosystem issue): the map of the predicted mask, written by
    `medlite seg predict --explain` beside the mask; an ONNX graph (no gradients) is refused by name."""
    import numpy as np
    import torch
    from PIL import Image
    from typer.testing import CliRunner

    import medlite
    from medlite.cli import app
    from medlite.explain import seg_gradcam_heatmap

    torch.manual_seed(0)
    model = medlite.create_model("medlitenet", num_classes=1, in_chans=3, img_size=64).eval()
    heat = seg_gradcam_heatmap(model, torch.randn(2, 3, 64, 64))
    assert heat.shape == (2, 64, 64) and float(heat.min()) >= 0 and float(heat.max()) <= 1
    img = np.full((60, 80, 3), 40, np.uint8)
    img[20:40, 30:55] = 220
    Image.fromarray(img).save(tmp_path / "x.png")
    r = CliRunner().invoke(app, ["seg", "predict", "medlitenet_lite0_busi", str(tmp_path / "x.png"), "--out",
                                 str(tmp_path / "o"), "--explain"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o" / "x_explain.png").size[0] > 100
    from medlite.engine.tasks.segment.predict import SegPredictor
    from medlite.errors import ModelFileError

    meta = {"preprocessing": {"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3}, "model": {"name": "m"}}
    onnx_like = SegPredictor(lambda x: x[:, :1], meta, "onnx")  # no torch model behind it
    with pytest.raises(ModelFileError, match="no gradients"):
        onnx_like.explain_image(img)
