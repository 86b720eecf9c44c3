import json

import pytest

from medlite.demo import run_demo


@pytest.mark.data
@pytest.mark.slow
def test_demo_end_to_end_on_real_breastmnist(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLITE_DATA", str(real_data_root))
    rep = run_demo(tmp_path / "demo", data="breastmnist", epochs=1, progress=False)
    assert rep["export"]["max_abs_diff"] < 1e-4
    assert {row["runtime"] for row in rep["latency"]} == {"torch", "onnx", "onnx-int8"}
    text = (tmp_path / "demo" / "demo_report.md").read_text()
    assert "AUC" in text and "ms" in text
    assert json.loads((tmp_path / "demo" / "demo_report.json").read_text())["results"]["test"]["n"] == 156
    # the shipped weights for the subset answer next to the model just trained, from PNG files
    z = rep["zoo"]
    assert z is not None and z["name"] == "medlit_nano_28_breastmnist" and len(z["rows"]) == 6
    assert all(r["zoo"] in ("malignant", "normal, benign") for r in z["rows"]), z["rows"]
    assert "Shipped weights `medlit_nano_28_breastmnist`" in text
