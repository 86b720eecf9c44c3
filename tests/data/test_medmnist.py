"""MedMNIST registry, npz / DermaMNIST-zip loaders, download and load_classification."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from medlite.data import TASKS, DataError, load_classification
from medlite.data import medmnist as mm

# ------------------------------------------------------------------------------------------ registry


def test_registry_has_the_12_2d_subsets():
    assert len(mm.MEDMNIST) == 12
    tasks = {n: s.task for n, s in mm.MEDMNIST.items()}
    assert tasks["chestmnist"] == "multi-label" and tasks["retinamnist"] == "ordinal"
    assert tasks["breastmnist"] == tasks["pneumoniamnist"] == "binary"
    assert sum(t == "multi-class" for t in tasks.values()) == 8 and set(tasks.values()) <= set(TASKS)
    for s in mm.MEDMNIST.values():
        assert set(s.urls) == set(s.md5) == set(mm.SIZES)
        assert all(re.fullmatch(r"[0-9a-f]{32}", m) for m in s.md5.values())
        assert set(s.n_samples) == {"train", "val", "test"} and s.channels in (1, 3)
    b = mm.MEDMNIST["breastmnist"]
    assert b.urls[28] == "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"
    assert b.urls[64] == "https://zenodo.org/records/10519652/files/breastmnist_64.npz?download=1"
    assert b.md5[28] == "750601b1f35ba3300ea97c75c52ff8f6" and b.num_classes == 2
    assert mm.MEDMNIST["chestmnist"].num_classes == 14 and mm.MEDMNIST["dermamnist"].channels == 3


# ------------------------------------------------------------------------------------------ load_npz


@pytest.mark.parametrize("label_shape", ["n1", "n"])
def test_load_npz_grey(make_npz, label_shape):
    d = mm.load_npz(make_npz("mydata.npz", label_shape=label_shape, classes=3))
    assert d.name == "mydata" and d.task == "multi-class" and d.label_names == ["0", "1", "2"]
    assert d.train.images.shape == (6, 1, 8, 8) and d.train.images.dtype == torch.uint8
    assert d.train.labels.tolist() == [0, 1, 2, 0, 1, 2] and d.train.labels.dtype == torch.int64
    assert (len(d.val), len(d.test)) == (3, 3)


def test_load_npz_colour_keeps_pixels(make_npz):
    path = make_npz("c.npz", colour=True)
    d = mm.load_npz(path)
    raw = np.load(path)["train_images"]
    assert d.channels == 3 and d.task == "binary"
    assert torch.equal(d.train.images, torch.from_numpy(raw).permute(0, 3, 1, 2))


def test_load_npz_multilabel(make_npz):
    y = np.zeros((6, 14), np.uint8)
    y[0, 3] = 1
    n = {f"{s}_labels": np.zeros((3, 14), np.uint8) for s in ("val", "test")}
    with pytest.warns(UserWarning, match="differ from the official"):
        d = mm.load_npz(make_npz("chestmnist.npz", train_labels=y, **n))
    assert d.task == "multi-label" and d.train.labels.dtype == torch.float32
    assert d.train.labels.shape == (6, 14) and d.train.labels[0, 3] == 1 and d.label_names[0] == "atelectasis"


def test_nonofficial_split_sizes_warn(make_npz):
    with pytest.warns(UserWarning, match="differ from the official"):
        d = mm.load_npz(make_npz("breastmnist.npz"))
    assert d.name == "breastmnist" and d.label_names == ["malignant", "normal, benign"]
    assert d.info["warnings"]


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kwargs)
    return str(e.value)


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    msg = _error(mm.load_npz, path)
    assert str(path) in msg and "not found" in msg


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file at all" * 10)
    assert str(path) in _error(mm.load_npz, path)


def test_npz_truncated(make_npz):
    path = make_npz("cut.npz", sizes=(60, 10, 10), hw=(28, 28))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(mm.load_npz, path)
    assert str(path) in msg and "truncated" in msg


def test_npz_missing_keys_are_listed(make_npz):
    path = make_npz("k.npz", val_labels=None, test_images=None)
    msg = _error(mm.load_npz, path)
    assert str(path) in msg and "val_labels" in msg and "test_images" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"train_images": np.zeros((6, 8), np.uint8)}, "shape"),
        ({"train_images": np.zeros((6, 8, 8, 5), np.uint8)}, "shape"),
        ({"val_images": np.zeros((3, 8, 8), np.float32)}, "uint8"),
        ({"val_images": np.zeros((3, 9, 9), np.uint8)}, "different image shapes"),
        ({"test_labels": np.zeros((4, 1), np.uint8)}, "3 images but test_labels has 4"),
        ({"train_labels": np.zeros((6, 2), np.uint8)}, "expected (N,) or (N, 1)"),
        ({"train_labels": np.array([0, 1, 2, 0, 1, 0], np.uint8)}, "outside [0, 1]"),
        ({"train_labels": np.array([0, 1, np.nan, 0, 1, 0], np.float32)}, "NaN"),
        ({"train_labels": np.array([0, 1, 0.5, 0, 1, 0], np.float32)}, "non-integer"),
    ],
)
def test_npz_bad_content(make_npz, override, fragment):
    path = make_npz("breastmnist.npz", **override)
    msg = _error(mm.load_npz, path)
    assert str(path) in msg and fragment in msg


def test_npz_multilabel_bad_values(make_npz):
    y = np.full((6, 14), 2, np.uint8)
    path = make_npz("chestmnist.npz", train_labels=y)
    msg = _error(mm.load_npz, path)
    assert str(path) in msg and "0 or 1" in msg


# --------------------------------------------------------------------------------- DermaMNIST zip


def _derma_zip(path, per_split=(3, 2, 2), corrupt=None, dx_override=None, drop_row=None):
    """Tiny zip in the shared-data layout; image (split, i) is filled with 10 * label + i."""
    rows, buf = [], io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for split, n in zip(("train", "val", "test"), per_split, strict=True):
            for i in reversed(range(n)):  # stored out of order on purpose
                image_id = f"DermaMNIST_{split}_{i:05d}"
                label = i % 7
                jpg = io.BytesIO()
                Image.new("RGB", (28, 28), (10 * label + i,) * 3).save(jpg, "JPEG", quality=95)
                data = b"garbage" if image_id == corrupt else jpg.getvalue()
                z.writestr(f"images/{image_id}.jpg", data)
                if image_id != drop_row:
                    rows.append([image_id, (dx_override or {}).get(image_id, mm.DERMA_DX[label]), "x"])
        text = io.StringIO()
        csv.writer(text).writerows([["image_id", "dx", "lesion_id"], *rows])
        z.writestr("HAM10000_metadata.csv", text.getvalue())
    path.write_bytes(buf.getvalue())
    return path


def test_derma_zip_labels_order_and_cache(tmp_path, monkeypatch):
    path = _derma_zip(tmp_path / "dermamnist_jpeg28.zip")
    with pytest.warns(UserWarning, match="differ from the official"):
        d = mm.load_dermamnist_jpeg_zip(path, cache_dir=tmp_path / "cache")
    assert d.name == "dermamnist" and d.task == "multi-class" and d.num_classes == 7
    assert [len(s) for s in d.splits().values()] == [3, 2, 2] and d.train.images.shape[1:] == (3, 28, 28)
    assert d.train.labels.tolist() == [0, 1, 2]  # sorted by NNNNN, label from dx
    grey = d.train.images.float().mean(dim=(1, 2, 3))
    assert torch.allclose(grey, torch.tensor([0.0, 11.0, 22.0]), atol=2)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_decode(_):
        raise AssertionError("second load should come from the cache")

    monkeypatch.setattr(mm, "_decode_derma_zip", no_decode)
    with pytest.warns(UserWarning, match="differ from the official"):
        d2 = mm.load_dermamnist_jpeg_zip(path, cache_dir=tmp_path / "cache")
    assert torch.equal(d2.train.images, d.train.images) and torch.equal(d2.test.labels, d.test.labels)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"corrupt": "DermaMNIST_val_00001"}, "cannot decode images/DermaMNIST_val_00001.jpg"),
        ({"dx_override": {"DermaMNIST_train_00000": "zzz"}}, "unknown dx 'zzz'"),
        ({"drop_row": "DermaMNIST_test_00000"}, "has no row"),
    ],
)
def test_derma_zip_errors(tmp_path, kwargs, fragment):
    path = _derma_zip(tmp_path / "d.zip", **kwargs)
    msg = _error(mm.load_dermamnist_jpeg_zip, path, cache_dir=tmp_path / "cache")
    assert str(path) in msg and fragment in msg


def test_derma_zip_missing_or_not_zip(tmp_path):
    assert "not found" in _error(mm.load_dermamnist_jpeg_zip, tmp_path / "none.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"nope")
    assert str(bad) in _error(mm.load_dermamnist_jpeg_zip, bad, cache_dir=tmp_path)


# --------------------------------------------------------------------------- find / load_classification


def test_find_subset_file_prefers_asked_size(tmp_path):
    assert mm.find_subset_file("breastmnist", 28, tmp_path) is None
    (tmp_path / "breastmnist").mkdir()
    plain = tmp_path / "breastmnist" / "breastmnist.npz"
    plain.touch()
    assert mm.find_subset_file("BreastMNIST", 28, tmp_path) == plain
    assert mm.find_subset_file("breastmnist", 64, tmp_path) == plain  # fallback, caller resizes
    sized = tmp_path / "breastmnist_64.npz"
    sized.touch()
    assert mm.find_subset_file("breastmnist", 64, tmp_path) == sized
    z = tmp_path / "dermamnist_jpeg28" / "dermamnist_jpeg28.zip"
    z.parent.mkdir()
    z.touch()
    assert mm.find_subset_file("dermamnist", 28, tmp_path) == z


def test_load_classification_by_name_and_resize(tmp_path, make_npz):
    (tmp_path / "pneumoniamnist").mkdir()
    make_npz("pneumoniamnist/pneumoniamnist.npz")
    with pytest.warns(UserWarning):
        d = load_classification("PneumoniaMNIST", size=16, root=tmp_path)
    assert d.name == "pneumoniamnist" and d.train.images.shape == (6, 1, 16, 16)
    assert d.info["resized_from"] == [8, 8]


def test_load_classification_missing_subset_says_where(tmp_path):
    msg = _error(load_classification, "bloodmnist", root=tmp_path)
    assert str(tmp_path) in msg and "download=True" in msg
    assert "neither a MedMNIST subset" in _error(load_classification, str(tmp_path / "x"))


def test_load_classification_downloads(tmp_path, http_server, make_npz, monkeypatch):
    base, server = http_server
    src = make_npz("www/bloodmnist.npz", classes=8, colour=True)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    info = dataclasses.replace(mm.MEDMNIST["bloodmnist"], urls={28: f"{base}/bloodmnist.npz"}, md5={28: md5})
    monkeypatch.setitem(mm.MEDMNIST, "bloodmnist", info)
    root = tmp_path / "root"
    with pytest.warns(UserWarning):
        d = load_classification("bloodmnist", root=root, download=True)
    assert d.channels == 3 and d.num_classes == 8 and (root / "bloodmnist" / "bloodmnist.npz").is_file()


# ------------------------------------------------------------------------------------------ download


def _serve(server, name, n=200_000) -> tuple[bytes, str]:
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    (server.www / name).write_bytes(data)
    return data, hashlib.md5(data).hexdigest()


def test_download_good_md5(tmp_path, http_server):
    base, server = http_server
    data, md5 = _serve(server, "f.npz")
    out = mm.download("breastmnist", root=tmp_path, url=f"{base}/f.npz", md5=md5, progress=False)
    assert out == tmp_path / "breastmnist" / "breastmnist.npz" and out.read_bytes() == data
    assert not out.with_name("breastmnist.npz.part").exists()
    # an existing file is returned without another request
    assert mm.download("breastmnist", root=tmp_path, url=f"{base}/f.npz", md5=md5, progress=False) == out
    assert len(server.requests) == 1


def test_download_bad_md5_removes_part(tmp_path, http_server):
    base, server = http_server
    _, md5 = _serve(server, "f.npz")
    msg = _error(mm.download, "breastmnist", 64, root=tmp_path, url=f"{base}/f.npz", progress=False)
    dest = tmp_path / "breastmnist" / "breastmnist_64.npz"
    assert str(dest) in msg and mm.MEDMNIST["breastmnist"].md5[64] in msg and md5 in msg
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


@pytest.mark.parametrize("ranges", [True, False])
def test_download_resumes_part(tmp_path, http_server, ranges):
    base, server = http_server
    server.ranges = ranges
    data, md5 = _serve(server, "f.npz")
    part = tmp_path / "breastmnist" / "breastmnist.npz.part"
    part.parent.mkdir()
    part.write_bytes(data[:70_000])
    out = mm.download("breastmnist", root=tmp_path, url=f"{base}/f.npz", md5=md5, progress=True)
    assert out.read_bytes() == data and not part.exists()
    assert server.requests == ["bytes=70000-"]  # asked to resume; restarted when not honoured


def test_download_unreachable_names_file(tmp_path):
    msg = _error(mm.download, "breastmnist", root=tmp_path, url="http://127.0.0.1:9/x.npz", progress=False)
    assert "breastmnist.npz.part" in msg


# ----------------------------------------------------------------------------------------- real data


@pytest.mark.data
def test_real_breastmnist(medlite_data):
    d = mm.load_npz(medlite_data("breastmnist/breastmnist.npz"))
    assert [len(s) for s in d.splits().values()] == [546, 78, 156]
    assert d.train.labels.bincount().tolist() == [147, 399] and d.train.images.shape[1:] == (1, 28, 28)


@pytest.mark.data
def test_real_pneumoniamnist_warns(medlite_data):
    with pytest.warns(UserWarning, match="3882"):
        d = mm.load_npz(medlite_data("pneumoniamnist/pneumoniamnist.npz"))
    assert [len(s) for s in d.splits().values()] == [3882, 524, 624]
    assert d.train.labels.bincount().tolist() == [388, 3494]


@pytest.mark.data
def test_real_dermamnist_zip(medlite_data, tmp_path):
    path = medlite_data("dermamnist_jpeg28/dermamnist_jpeg28.zip")
    d = mm.load_dermamnist_jpeg_zip(path, cache_dir=tmp_path)
    assert [len(s) for s in d.splits().values()] == [7007, 1003, 2005]
    assert d.train.labels.bincount().tolist() == [228, 359, 769, 80, 779, 4693, 99]
    assert d.val.labels.bincount().tolist() == [33, 52, 110, 12, 111, 671, 14]
    assert d.test.labels.bincount().tolist() == [66, 103, 220, 23, 223, 1341, 29]
    assert d.train.images.shape[1:] == (3, 28, 28)
