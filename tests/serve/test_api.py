"""The server's routes and its safety rules, without a browser."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medlite.cli import app as cli
from medlite.export.sam_runtime import OnnxSamPredictor


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (120, 160), dtype=np.uint8)
    img[30:80, 40:110] += 150
    return img


def _upload(client, data: bytes, name: str = "scan.png"):
    return client.post("/api/image", content=data, headers={"X-Filename": name})


def _decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_page_and_static_files_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas id=\"overlay\">" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f__init__.py",
                 "/static//etc/passwd", "/static/..\\app.py", "/../../etc/passwd"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert "import" not in r.text


def test_a_box_gives_the_predictors_own_mask(client, graphs):
    img = _image()
    r = _upload(client, _png(img))
    assert r.status_code == 200, r.text
    info = r.json()
    assert (info["width"], info["height"], info["kind"], info["medical"]) == (160, 120, "pil", False)
    head = {"X-Session": info["session"]}
    r = client.post("/api/segment", json={"object": 0, "box": [38, 28, 112, 82]}, headers=head)
    assert r.status_code == 200, r.text
    out = r.json()
    assert 0 <= out["iou"] <= 1 and out["area_px"] > 0
    assert _decode(out["prob"]).shape == (120, 160)
    mask = np.asarray(Image.open(io.BytesIO(client.get("/api/download/mask.png", headers=head).content)))
    p = OnnxSamPredictor(graphs[0])
    p.set_image(np.repeat(img[:, :, None], 3, axis=2))
    want, _ = p.segment(box=[38, 28, 112, 82])
    np.testing.assert_array_equal(mask > 0, want)
    assert set(np.unique(mask)) <= {0, 255}


def test_several_objects_labels_overlay_undo(client):
    info = _upload(client, _png(_image())).json()
    head = {"X-Session": info["session"]}
    client.post("/api/segment", json={"object": 0, "box": [38, 28, 112, 82]}, headers=head)
    r = client.post("/api/segment", json={"object": 3, "points": [[20, 100, 1]],
                                          "strokes": [{"points": [[5, 5], [30, 10]], "label": 0}]}, headers=head)
    assert r.status_code == 200, r.text
    labels = np.asarray(Image.open(io.BytesIO(client.get("/api/download/labels.png", headers=head).content)))
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels == 1).sum() > 0
    overlay = client.get("/api/download/overlay.png?threshold=0.3", headers=head)
    assert overlay.headers["content-disposition"] == 'attachment; filename="scan_overlay.png"'
    assert np.asarray(Image.open(io.BytesIO(overlay.content))).shape == (120, 160, 3)
    assert client.delete("/api/objects/3", headers=head).json() == {"objects": [0]}
    assert client.get("/api/download/labels.nii.gz", headers=head).status_code == 409  # not a medical image
    assert client.get("/api/download/secret.txt", headers=head).status_code == 404
    assert client.get("/api/download/mask.png?threshold=2", headers=head).status_code == 422


def test_dicom_gives_a_nifti_label_map(client):
    import nibabel as nib
    from pydicom.data import get_testdata_file

    info = _upload(client, Path(get_testdata_file("CT_small.dcm")).read_bytes(), "ct").json()
    assert info["kind"] == "dicom" and info["medical"]
    head = {"X-Session": info["session"]}
    client.post("/api/segment", json={"box": [10, 10, 50, 50]}, headers=head)
    r = client.get("/api/download/labels.nii.gz", headers=head)
    img = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    assert img.shape == (128, 128, 1)


@pytest.mark.parametrize(("data", "code", "fragment"), [
    (b"", 415, "empty file"),
    (b"GIF89a" + bytes(64), 415, "not an image medlite reads"),
    (b"<html><script>alert(1)</script></html>", 415, "not an image medlite reads"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), 422, "corrupt or unreadable"),
    (gzip.compress(bytes(2**20)), 422, "not an image medlite reads"),
    (b"\x1f\x8b" + bytes(64), 422, "corrupt gzip"),
])
def test_bad_uploads_are_named_and_refused(client, data, code, fragment):
    r = _upload(client, data, "../../etc/passwd")
    assert r.status_code == code, r.text
    assert fragment in r.json()["error"] and r.json()["error"].startswith("passwd:")


def test_a_huge_declared_image_is_refused(client):
    buf = io.BytesIO()
    Image.new("L", (10000, 10000)).save(buf, format="PNG")  # 100 M pixels in a file of a few hundred kB
    r = _upload(client, buf.getvalue())
    assert r.status_code == 422 and "too large to decode safely" in r.json()["error"]


def test_uploads_over_the_cap_are_refused_with_or_without_a_length(client):
    big = bytes(3 * 2**20)
    r = _upload(client, big)
    assert r.status_code == 413 and "2 MB upload limit" in r.json()["error"]
    r = client.post("/api/image", content=iter([bytes(2**20)] * 3), headers={"X-Filename": "x.png"})  # chunked
    assert r.status_code == 413


def test_sessions_do_not_see_each_other(client):
    a = _upload(client, _png(_image())).json()["session"]
    b = _upload(client, _png(_image()[::-1])).json()["session"]
    assert a != b and len(a) >= 22
    client.post("/api/segment", json={"box": [38, 28, 112, 82]}, headers={"X-Session": a})
    assert client.get("/api/download/mask.png", headers={"X-Session": b}).status_code == 409  # b has no mask
    for head in ({}, {"X-Session": "nope"}, {"X-Session": a[:-1] + "x"}):
        assert client.get("/api/download/mask.png", headers=head).status_code == 404
        assert client.post("/api/segment", json={"box": [1, 1, 9, 9]}, headers=head).status_code == 404


def test_old_sessions_are_dropped(server, client):
    tokens = [_upload(client, _png(_image())).json()["session"] for _ in range(server.max_sessions + 2)]
    assert len(server.sessions) == server.max_sessions
    assert client.post("/api/segment", json={"box": [1, 1, 9, 9]}, headers={"X-Session": tokens[0]}).status_code == 404


@pytest.mark.parametrize(("body", "fragment"), [
    ({"box": [0, 0, 500, 50]}, "outside the 160 x 120 image"),
    ({"box": [50, 50, 10, 10]}, "x0 < x1"),
    ({"points": [[10, 10, 7]]}, ""),
    ({"object": 999, "box": [1, 1, 9, 9]}, ""),
    ({"box": "1,2,3,4"}, ""),
    ({}, "at least one prompt"),
])
def test_bad_prompts_are_422(client, body, fragment):
    head = {"X-Session": _upload(client, _png(_image())).json()["session"]}
    r = client.post("/api/segment", json=body, headers=head)
    assert r.status_code == 422 and fragment in json.dumps(r.json())


def test_classify_gives_probabilities_and_a_heat_map(client):
    head = {"X-Session": _upload(client, _png(_image())).json()["session"]}
    out = client.post("/api/classify", json={"model": "medlit_nano_28_breastmnist"}, headers=head).json()
    assert sum(out["probs"].values()) == pytest.approx(1, abs=1e-5) and out["label"] in out["probs"]
    assert _decode(out["heatmap"]).shape == (120, 160, 3)
    r = client.post("/api/classify", json={"model": "../../model"}, headers=head)
    assert r.status_code == 404 and "unknown classifier" in r.json()["error"]


def test_other_hosts_are_refused(client):
    assert client.get("/api/info", headers={"Host": "attacker.example"}).status_code == 400


def test_nothing_is_written_to_disk(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spool = tmp_path / "tmp"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    before = set(os.listdir(tempfile.gettempdir()))
    head = {"X-Session": _upload(client, _png(_image())).json()["session"]}
    client.post("/api/segment", json={"box": [38, 28, 112, 82]}, headers=head)
    client.get("/api/download/mask.png", headers=head)
    client.post("/api/classify", json={"model": "medlit_nano_28_breastmnist"}, headers=head)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and set(os.listdir(spool)) == before


def test_cli_refuses_a_remote_host_without_the_flag():
    r = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "--allow-remote" in r.output
