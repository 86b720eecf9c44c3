"""Users' own data: class folders and CSVs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from medlite.data import DataError, load_classification
from medlite.data.folder import load_csv, load_image_folder


def _img(path, value, size=(20, 14), mode="L", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (value, 255 - value, 0) if mode == "RGB" else value
    Image.new(mode, size, colour).save(path, fmt)
    return path


def _class_folder(root, counts=None, ext=".png"):
    """root/<class>/<i>.png with grey level 20 * class index + i."""
    for c, (cls, n) in enumerate((counts or {"benign": 10, "malignant": 10}).items()):
        for i in range(n):
            _img(root / cls / f"{i:02d}{ext}", 20 * c + i)
    return root


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def test_folder_seeded_stratified_split_and_split_file(tmp_path):
    root = _class_folder(tmp_path / "ds")
    split_file = tmp_path / "out" / "split.csv"
    d = load_image_folder(root, size=8, seed=3, split_file_out=split_file)
    assert d.name == "ds" and d.task == "binary" and d.label_names == ["benign", "malignant"]
    assert d.channels == 1 and d.train.images.shape == (14, 1, 8, 8) and d.train.images.dtype == torch.uint8
    assert [len(s) for s in d.splits().values()] == [14, 2, 4]
    assert d.val.labels.bincount().tolist() == [1, 1] and d.test.labels.bincount().tolist() == [2, 2]
    assert d.info["split"] == "seeded" and split_file.is_file()
    # the saved split reproduces the run exactly
    again = load_csv(split_file, size=8, seed=99, allow_outside=True)  # its images lie outside out/
    for a, b in zip(d.splits().values(), again.splits().values(), strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # same seed, same split; another seed, another split
    assert torch.equal(load_image_folder(root, 8, seed=3).test.images, d.test.images)
    assert not torch.equal(load_image_folder(root, 8, seed=4).test.images, d.test.images)


def test_folder_three_classes_and_formats(tmp_path):
    root = tmp_path / "f"
    for name, fmt in (("a.jpg", "JPEG"), ("b.bmp", "BMP"), ("c.jpeg", "JPEG")):
        _img(root / "c" / name, 100, fmt=fmt)
    for name in ("d.tif", "e.tiff", "f.TIF"):
        _img(root / "a" / name, 50, fmt="TIFF")
    for name in ("g.png", "h.png", "i.PNG"):
        _img(root / "b" / name, 10, fmt="PNG")
    (root / "b" / "notes.txt").write_text("ignored")
    d = load_image_folder(root, 6, seed=0, split_ratios=(1, 1, 1))
    assert d.task == "multi-class" and d.label_names == ["a", "b", "c"] and d.channels == 1
    assert [s.labels.tolist() for s in d.splits().values()] == [[0, 1, 2]] * 3
    assert d.train.images.shape == (3, 1, 6, 6) and abs(int(d.train.images[2].float().mean()) - 100) <= 2


def test_colour_makes_three_channels_and_16bit_scales(tmp_path):
    root = tmp_path / "f"
    _img(root / "x" / "rgb.png", 200, mode="RGB")
    for i in range(2):
        _img(root / "x" / f"g{i}.png", 30)
    (root / "y").mkdir()
    Image.fromarray(np.full((10, 10), 257 * 100, np.uint16)).save(root / "y" / "a.png")
    for i in range(2):
        Image.fromarray(np.full((10, 10), 65535, np.uint16)).save(root / "y" / f"b{i}.png")
    csv = tmp_path / "s.csv"
    csv.write_text(
        "path,label,split\nf/x/rgb.png,x,train\nf/x/g0.png,x,val\nf/x/g1.png,x,test\n"
        "f/y/a.png,y,train\nf/y/b0.png,y,val\nf/y/b1.png,y,test\n"
    )
    d = load_csv(csv, size=4, seed=0)
    assert d.channels == 3 and d.info["split"] == "given"
    rgb, grey16 = d.train.images[0], d.train.images[1]
    assert rgb[:, 0, 0].tolist() == [200, 55, 0]
    assert grey16.unique().tolist() == [100] and d.val.images[1].unique().tolist() == [255]
    assert torch.equal(d.val.images[0][0], d.val.images[0][1])  # grey repeated over channels


def test_presplit_folder_and_carved_val(tmp_path):
    root = tmp_path / "p"
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        _class_folder(root / split, {"a": n, "b": n})
    d = load_classification(str(root), size=5)
    assert [len(s) for s in d.splits().values()] == [12, 4, 4] and d.info["split"] == "given"
    shutil.rmtree(root / "val")
    d = load_image_folder(root, 5, seed=0, split_ratios=(0.5, 0.5, 0))
    assert [len(s) for s in d.splits().values()] == [6, 6, 4]


def test_csv_without_split_column(tmp_path):
    _class_folder(tmp_path / "imgs")
    rows = [f"imgs/{c}/{i:02d}.png,{c}" for c in ("benign", "malignant") for i in range(10)]
    (tmp_path / "d.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    d = load_classification(str(tmp_path / "d.csv"), size=8, seed=1)
    assert d.name == "d" and [len(s) for s in d.splits().values()] == [14, 2, 4]


# -------------------------------------------------------------------------------------------- errors


def test_unreadable_image_names_file(tmp_path):
    root = _class_folder(tmp_path / "ds")
    bad = root / "benign" / "05.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    msg = _error(load_image_folder, root, 8, 0)
    assert str(bad) in msg and "corrupt" in msg


def test_truncated_jpeg_names_file(tmp_path):
    root = _class_folder(tmp_path / "ds")
    bad = _img(root / "benign" / "big.jpg", 0, size=(64, 64), fmt="JPEG")
    Image.effect_noise((64, 64), 50).save(bad, "JPEG")
    bad.write_bytes(bad.read_bytes()[:300])
    assert str(bad) in _error(load_image_folder, root, 8, 0)


def test_empty_class_folder(tmp_path):
    root = _class_folder(tmp_path / "ds")
    (root / "empty").mkdir()
    msg = _error(load_image_folder, root, 8, 0)
    assert str(root / "empty") in msg and "empty class folder" in msg


def test_fewer_than_two_classes(tmp_path):
    root = _class_folder(tmp_path / "ds", {"only": 5})
    assert "at least 2 classes" in _error(load_image_folder, root, 8, 0)
    assert "not found" in _error(load_image_folder, tmp_path / "nope", 8, 0)


def test_csv_unknown_split(tmp_path):
    _class_folder(tmp_path / "imgs")
    csv = tmp_path / "d.csv"
    csv.write_text("path,label,split\nimgs/benign/00.png,benign,train\nimgs/benign/01.png,benign,holdout\n")
    msg = _error(load_csv, csv, 8, 0)
    assert str(csv) in msg and "line 3" in msg and "holdout" in msg


def test_csv_bad_header_and_missing_image(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("file,class\na.png,x\n")
    assert str(csv) in _error(load_csv, csv, 8, 0)
    csv.write_text("path,label,split\nmissing.png,x,train\nm2.png,y,val\nm3.png,x,test\nm4.png,y,train\n")
    assert str(tmp_path / "missing.png") in _error(load_csv, csv, 8, 0)


def test_label_in_val_never_in_train(tmp_path):
    _class_folder(tmp_path / "imgs", {"a": 2, "b": 2, "c": 1})
    csv = tmp_path / "d.csv"
    csv.write_text(
        "path,label,split\nimgs/a/00.png,a,train\nimgs/a/01.png,a,val\nimgs/b/00.png,b,train\n"
        "imgs/b/01.png,b,test\nimgs/c/00.png,c,val\n"
    )
    msg = _error(load_csv, csv, 8, 0)
    assert str(csv) in msg and "'c'" in msg and "never appears in train" in msg
    root = tmp_path / "p"
    _class_folder(root / "train", {"a": 2, "b": 2})
    _class_folder(root / "val", {"a": 1, "z": 1})
    _class_folder(root / "test", {"a": 1, "b": 1})
    assert "'z'" in _error(load_image_folder, root, 8, 0)


def test_split_too_small_is_an_error(tmp_path):
    root = _class_folder(tmp_path / "ds", {"a": 2, "b": 2})
    assert "would be empty" in _error(load_image_folder, root, 8, 0)


def test_nan_tiff_in_a_class_folder_is_refused_by_name(tmp_path):
    """Hardening issue, item 3: float TIFF with NaN / inf used to be cast to garbage during training."""
    root = _class_folder(tmp_path / "ds")
    for i, value in enumerate((np.nan, np.inf)):
        a = np.full((14, 20), 0.5, np.float32)
        a[3, 4] = value
        bad = root / "benign" / f"float{i}.tif"
        Image.fromarray(a, mode="F").save(bad)
        msg = _error(load_image_folder, root, 8, 0)
        assert str(bad) in msg and "NaN or infinite" in msg
        bad.unlink()
    ok = root / "benign" / "float.tif"
    Image.fromarray(np.full((14, 20), 100.0, np.float32), mode="F").save(ok)
    assert sum(map(len, load_image_folder(root, 8, 0).splits().values())) == 21  # finite floats still load


def test_csv_paths_stay_under_the_csv_folder(tmp_path, monkeypatch):
    """Hardening issue, item 7: ../ and absolute paths leaving the CSV's folder are refused before any
    file is opened; allowed only on purpose."""
    _class_folder(tmp_path / "outside")
    inner = tmp_path / "project"
    inner.mkdir()
    rows = [f"../outside/{c}/{i:02d}.png,{c}" for c in ("benign", "malignant") for i in range(10)]
    (inner / "d.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    msg = _error(load_csv, inner / "d.csv", 8)
    assert "line 2" in msg and "outside the CSV's folder" in msg and "MEDLITE_CSV_ALLOW_OUTSIDE" in msg
    (inner / "e.csv").write_text("path,label\n/etc/passwd,benign\n")
    assert "outside the CSV's folder" in _error(load_csv, inner / "e.csv", 8)
    assert sum(map(len, load_csv(inner / "d.csv", 8, allow_outside=True).splits().values())) == 20
    monkeypatch.setenv("MEDLITE_CSV_ALLOW_OUTSIDE", "1")
    assert sum(map(len, load_classification(str(inner / "d.csv"), size=8).splits().values())) == 20
