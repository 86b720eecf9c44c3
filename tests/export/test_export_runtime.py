"""The torch-free runtime: runs where torch cannot be imported, and gives PyTorch's probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medlite
from medlite.data.io import ImageReadError, read_image, to_model_input
from medlite.engine.checkpoint import load_model
from medlite.export.meta import ModelFileError, default_meta
from medlite.export.onnx import export_onnx
from medlite.export.runtime import OnnxClassifier

pytest.importorskip("onnxruntime")
REPO = Path(__file__).resolve().parents[2]


def _torch_probs(run, x: np.ndarray) -> np.ndarray:
    model, _ = load_model(run)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


@pytest.fixture
def images(tmp_path, test_set) -> list[Path]:
    """Two PNGs (16 px and 40 px: the second is resized) and a DICOM."""
    x, _ = test_set
    paths = []
    for i, side in enumerate((16, 40)):
        grey = ((x[i, 0] * 0.5 + 0.5) * 255).round().astype(np.uint8)
        p = tmp_path / f"img{i}.png"
        Image.fromarray(grey).resize((side, side), Image.Resampling.NEAREST).save(p)
        paths.append(p)
    pydicom = pytest.importorskip("pydicom")
    paths.append(Path(pydicom.data.get_testdata_file("CT_small.dcm")))
    return paths


def test_runtime_without_torch_matches_pytorch(trained_onnx, trained_run, images, tmp_path):
    """A subprocess where ``import torch`` fails imports the runtime, reads PNG + DICOM and predicts."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        from medlite.export.runtime import OnnxClassifier
        clf = OnnxClassifier({str(trained_onnx)!r}, threads=1)
        out = clf.predict({[str(p) for p in images]!r})
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(json.dumps({{"out": out, "torch_modules": loaded}}))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["torch_modules"] == ["torch"]  # only the blocking None entry: nothing imported torch
    names = ["left", "middle", "right"]
    x = np.concatenate([to_model_input(read_image(p), 16, 1, [0.5], [0.5]) for p in images])
    ref = _torch_probs(trained_run, x)
    for got, want in zip(res["out"], ref, strict=True):
        np.testing.assert_allclose([got["probs"][n] for n in names], want, atol=1e-4, rtol=0)
        assert got["label"] == names[int(want.argmax())]


def test_predict_array_and_paths_agree(trained_onnx, trained_run, images, test_set):
    clf = OnnxClassifier(trained_onnx, threads=1)
    assert clf.label_names == ["left", "middle", "right"] and clf.task == "multi-class"
    x, y = test_set
    probs = clf.predict_array(x[:50])
    np.testing.assert_allclose(probs, _torch_probs(trained_run, x[:50]), atol=1e-4, rtol=0)
    assert (probs.argmax(1) == y[:50]).mean() > 0.9
    by_path = clf.predict(images)
    by_array = clf.predict([read_image(p) for p in images])
    assert by_path == by_array


def test_multi_label_uses_sigmoid_and_lists_labels(tmp_path):
    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=16)
    meta = default_meta("resnet18", 3, 1, 16, task="multi-label, binary-class", label_names=["a", "b", "c"])
    export_onnx(model, meta, tmp_path / "ml.onnx")
    clf = OnnxClassifier(tmp_path / "ml.onnx", threads=1)
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16), dtype=np.float32)
    with torch.no_grad():
        ref = torch.sigmoid(model.eval()(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(clf.predict_array(x), ref, atol=1e-5)
    (res,) = clf.predict([np.full((16, 16), 0.5, np.float32)])
    assert isinstance(res["label"], list) and set(res["label"]) <= {"a", "b", "c"}
    assert all(res["probs"][n] >= 0.5 for n in res["label"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the plain TorchScript export below
def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        OnnxClassifier(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not protobuf at all")
    with pytest.raises(ModelFileError, match="junk.onnx"):
        OnnxClassifier(tmp_path / "junk.onnx")
    plain = torch.nn.Linear(4, 2)
    torch.onnx.export(plain, (torch.zeros(1, 4),), str(tmp_path / "plain.onnx"), dynamo=False)
    with pytest.raises(ModelFileError, match="no 'medlite' metadata"):
        OnnxClassifier(tmp_path / "plain.onnx")


def test_predict_raises_on_corrupt_image(trained_onnx, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageReadError, match="bad.png"):
        OnnxClassifier(trained_onnx, threads=1).predict([tmp_path / "bad.png"])


def test_explain_graph_gives_the_rollout_heatmap_without_torch(trained_run, tmp_path):
    """Serve issue: the ONNX file exported with explain=True carries the attention rollout, equal to
    medlite.explain.rollout_heatmap, so the torch-free runtime can show where the model looks."""
    import torch

    from medlite.engine.checkpoint import load_model
    from medlite.explain import rollout_heatmap
    from medlite.export.onnx import export_onnx
    from medlite.export.runtime import OnnxClassifier

    model, meta = load_model(trained_run)
    res = export_onnx(model, meta, tmp_path / "m.onnx", explain=True)
    assert res["max_abs_diff"] < 1e-4
    clf = OnnxClassifier(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    probs, heat = clf.explain(x)
    want = rollout_heatmap(model, torch.from_numpy(x)).numpy()
    assert heat.shape == want.shape == (2, 4, 4)
    np.testing.assert_allclose(heat, want, atol=1e-4)
    np.testing.assert_allclose(probs, clf.predict_array(x), atol=1e-6)
    plain = OnnxClassifier(export_onnx(model, meta, tmp_path / "p.onnx")["path"])
    assert clf.has_heatmap and not plain.has_heatmap
    with pytest.raises(Exception, match="no heat map output"):
        plain.explain(x)
