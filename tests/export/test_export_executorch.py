"""ExecuTorch export (optional extra): XNNPACK program matches PyTorch; a clear error without the extra."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from medlite.engine.checkpoint import load_model
from medlite.export.executorch import export_executorch, load_method, sidecar_path

HAS_EXECUTORCH = importlib.util.find_spec("executorch") is not None


def test_missing_executorch_names_the_extra(monkeypatch, trained_run, tmp_path):
    monkeypatch.setitem(sys.modules, "executorch", None)  # as if the extra were not installed
    model, meta = load_model(trained_run)
    with pytest.raises(ImportError, match=r"pip install medlite\[mobile\]"):
        export_executorch(model, meta, tmp_path / "m.pte")
    assert not (tmp_path / "m.pte").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_EXECUTORCH, reason="executorch not installed (optional extra medlite[mobile])")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
def test_executorch_matches_pytorch(trained_run, tmp_path, test_set):
    model, meta = load_model(trained_run)
    res = export_executorch(model, meta, tmp_path / "m.pte", max_batch=8)
    assert res["max_abs_diff"] <= 1e-4
    assert (tmp_path / "m.pte").stat().st_size == res["size_bytes"]
    side = json.loads(sidecar_path(tmp_path / "m.pte").read_text())
    assert side["export"]["format"] == "executorch" and side["export"]["backend"] == "xnnpack"
    assert {k: v for k, v in side.items() if k != "export"} == meta
    x = torch.from_numpy(test_set[0][:5])  # another batch size than the export example
    got = load_method(tmp_path / "m.pte").execute([x])[0]
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=1e-4, rtol=0)
