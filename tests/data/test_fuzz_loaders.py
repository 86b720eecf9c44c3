"""Property-based fuzzing of every loader (hardening issue): random corruptions (truncation, overwritten
bytes, inserted junk) of real files give either a typed medlite error that names the file, or a result that
passes the loader's own invariants; never another exception type. A bounded number of examples per loader
(FUZZ_EXAMPLES, default 25) keeps CI short."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medlite.errors import MedliteError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def corruptions(draw, size: int):
    """A list of edits of a file of ``size`` bytes."""
    kind = draw(st.sampled_from(["truncate", "overwrite", "insert", "mixed"]))
    edits = []
    if kind in ("truncate", "mixed"):
        edits.append(("truncate", draw(st.integers(0, max(0, size - 1)))))
    if kind in ("overwrite", "mixed"):
        for _ in range(draw(st.integers(1, 8))):
            edits.append(("overwrite", draw(st.integers(0, max(0, size - 1))),
                          draw(st.binary(min_size=1, max_size=16))))
    if kind == "insert":
        edits.append(("insert", draw(st.integers(0, size)), draw(st.binary(min_size=1, max_size=64))))
    return edits


def corrupt(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for e in edits:
        if e[0] == "truncate":
            b = b[:e[1]]
        elif e[0] == "overwrite":
            b[e[1]:e[1] + len(e[2])] = e[2]
        else:
            b[e[1]:e[1]] = e[2]
    return bytes(b)


def _outcome(fn, path: Path, check) -> None:
    """``fn(path)`` either raises a medlite error naming the file, or returns something ``check`` accepts."""
    try:
        result = fn(path)
    except MedliteError as e:
        assert path.name in str(e), f"the error does not name the file: {e}"
        return
    check(result)


def _real(relative: str) -> Path:
    env = os.environ.get("MEDLITE_DATA")
    path = Path(env) / relative if env else None
    if path is None or not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data {relative} not found (MEDLITE_DATA={env!r})")
        pytest.skip(f"real data {relative} not found")
    return path


def _image_ok(a) -> None:
    assert a.dtype == np.float32 and a.ndim in (2, 3) and np.isfinite(a).all()
    assert a.min() >= 0 and a.max() <= 1 and (a.ndim == 2 or a.shape[2] == 3)


# ---------------------------------------------------------------------------------------------- images
def _fuzz_image(src: Path, tmp_path: Path, edits) -> None:
    from medlite.data.io import read_image

    dst = tmp_path / f"fuzz{src.suffix if not src.name.endswith('.nii.gz') else '.nii.gz'}"
    dst.write_bytes(corrupt(src.read_bytes(), edits))
    _outcome(read_image, dst, _image_ok)


@FUZZ
@given(data=st.data())
def test_fuzz_png_jpeg_tiff(tmp_path, data):
    from PIL import Image

    busi = _real("busi/images/benign (1).png")
    kind = data.draw(st.sampled_from(["png", "jpg", "tif"]))
    src = tmp_path / f"src.{kind}"
    if kind == "png":
        shutil.copy(busi, src)
    else:
        Image.open(busi).convert("L").resize((96, 80)).save(src)
    _fuzz_image(src, tmp_path, data.draw(corruptions(src.stat().st_size)))


@FUZZ
@given(data=st.data())
def test_fuzz_dicom(tmp_path, data):
    pydicom = pytest.importorskip("pydicom")
    src = Path(pydicom.data.get_testdata_file("CT_small.dcm"))  # a real CT slice shipped with pydicom
    _fuzz_image(src, tmp_path, data.draw(corruptions(src.stat().st_size)))


@FUZZ
@given(data=st.data())
def test_fuzz_nifti(tmp_path, data):
    nib = pytest.importorskip("nibabel")
    from PIL import Image

    busi = np.asarray(Image.open(_real("busi/images/benign (1).png")).convert("L").resize((40, 32)), np.float32)
    src = tmp_path / "src.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([busi] * 3, axis=2), np.eye(4)), src)
    _fuzz_image(src, tmp_path, data.draw(corruptions(src.stat().st_size)))


# ------------------------------------------------------------------------------------ classification
def _data_ok(d) -> None:
    for s in d.splits().values():
        assert s.images.dtype.is_floating_point is False and s.images.ndim == 4
        assert len(s.images) == len(s.labels)
    assert len(d.train) and len(d.test) and d.num_classes >= 2


@FUZZ
@given(data=st.data())
def test_fuzz_medmnist_npz(tmp_path, data):
    from medlite.data import load_classification

    src = _real("breastmnist/breastmnist.npz")
    dst = tmp_path / "breastmnist.npz"
    dst.write_bytes(corrupt(src.read_bytes(), data.draw(corruptions(src.stat().st_size))))
    _outcome(lambda p: load_classification(str(p), size=28), dst, _data_ok)


def _class_folder(root: Path, n: int = 6) -> None:
    from PIL import Image

    busi = Image.open(_real("busi/images/benign (1).png")).convert("L")
    for c in ("benign", "malignant"):
        for i in range(n):
            (root / c).mkdir(parents=True, exist_ok=True)
            busi.rotate(10 * i).resize((32, 32)).save(root / c / f"{i}.png")


@FUZZ
@given(data=st.data())
def test_fuzz_class_folder_and_csv(tmp_path, data):
    from medlite.data import load_classification

    root = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh folder per example
    _class_folder(root)
    victim = root / data.draw(st.sampled_from(["benign", "malignant"])) / f"{data.draw(st.integers(0, 5))}.png"
    victim.write_bytes(corrupt(victim.read_bytes(), data.draw(corruptions(victim.stat().st_size))))
    rows = [f"{c}/{i}.png,{c}" for c in ("benign", "malignant") for i in range(6)]
    csv = root / "labels.csv"
    csv.write_bytes(corrupt(("path,label\n" + "\n".join(rows) + "\n").encode(),
                            data.draw(corruptions(200))) if data.draw(st.booleans()) else
                    ("path,label\n" + "\n".join(rows) + "\n").encode())
    for spec in (root, csv):
        try:
            d = load_classification(str(spec), size=16)
        except MedliteError as e:
            assert victim.name in str(e) or spec.name in str(e) or "labels.csv" in str(e), str(e)
            continue
        except UnicodeDecodeError:
            pytest.fail(f"{spec}: undecodable CSV raised UnicodeDecodeError instead of a named error")
        _data_ok(d)


# -------------------------------------------------------------------------------------- segmentation
@FUZZ
@given(data=st.data())
def test_fuzz_segmentation_folder(tmp_path, data):
    from medlite.data.segmentation import load_segmentation

    root = Path(tempfile.mkdtemp(dir=tmp_path))  # a fresh folder per example
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    from PIL import Image

    img = Image.open(_real("busi/images/benign (1).png")).convert("RGB").resize((48, 40))
    mask = Image.open(_real("busi/masks/0/benign (1).png")).convert("L").resize((48, 40), Image.Resampling.NEAREST)
    for i in range(5):
        img.rotate(5 * i).save(root / "images" / f"c{i}.png")
        mask.rotate(5 * i).save(root / "masks" / f"c{i}_mask.png")
    i = data.draw(st.integers(0, 4))
    victim = root / "images" / f"c{i}.png" if data.draw(st.booleans()) else root / "masks" / f"c{i}_mask.png"
    victim.write_bytes(corrupt(victim.read_bytes(), data.draw(corruptions(victim.stat().st_size))))
    try:
        d = load_segmentation(root, "folder", size=32, folds=0, seed=0)
    except MedliteError as e:
        assert victim.name in str(e) or "masks" in str(e) or "images" in str(e), str(e)
        return
    for s in d.splits().values():
        assert s.images.dtype.is_floating_point is False and set(s.masks.unique().tolist()) <= {0, 1}


@FUZZ
@given(data=st.data())
def test_fuzz_challenge_npz(tmp_path, data):
    from PIL import Image

    from medlite.data.npz import read_npz

    img = np.asarray(Image.open(_real("busi/images/benign (1).png")).convert("RGB").resize((48, 40)))
    src = tmp_path / "case.npz"
    np.savez_compressed(src, imgs=img, gts=(img[..., 0] > 128).astype(np.uint8),
                        boxes=np.array([[5, 5, 30, 30]], np.float32))
    dst = tmp_path / "2DBox_fuzz.npz"
    dst.write_bytes(corrupt(src.read_bytes(), data.draw(corruptions(src.stat().st_size))))

    def ok(out):
        assert out["imgs"].dtype == np.uint8 and out["imgs"].ndim == 3 and out["boxes"].shape[1] == 4

    _outcome(read_npz, dst, ok)
    assert zipfile.is_zipfile(src)


# --------------------------------------------------------------------------------------------- prompts
@FUZZ
@given(box=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                              st.text(max_size=4)), min_size=0, max_size=6),
       point=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.text(max_size=3)),
                      min_size=0, max_size=4))
def test_fuzz_box_and_point_parsing(tmp_path, box, point):
    """`medlite sam predict` with random --box / --point strings: a mask, or exit 2 with one error line."""
    from PIL import Image
    from typer.testing import CliRunner

    from medlite.cli import app

    img = tmp_path / "x.png"
    if not img.exists():
        Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)).save(img)
    args = ["sam", "predict", "litesam_swin_xs_distilled", str(img), "--out", str(tmp_path / "o")]
    if box:
        args += ["--box", ",".join(str(v) for v in box)]
    if point:
        args += ["--point", ",".join(str(v) for v in point)]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code in (0, 2), (args, r.output, r.exception)
    if r.exit_code == 2:
        assert "rror" in r.output  # a named error, not a traceback
