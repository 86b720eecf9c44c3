"""bench() mechanics and its Markdown table (no timing assertions: the machine is shared)."""

from __future__ import annotations

import pytest
import torch

import medlite
from medlite.bench import latency
from medlite.bench.latency import bench, measure_peak_macs_per_s, to_markdown
from medlite.engine.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime")
TINY = {"embed_dim": 24, "num_heads": 2, "num_kv_groups": 1, "depth": 2, "experts_per_stage": [2, 2],
        "expert_hidden_start": 16, "expert_hidden_end": 8}


@pytest.fixture
def checkpoint(tmp_path):
    model = medlite.create_model("medlit_nano_28", num_classes=2, in_chans=1, img_size=16, **TINY)
    meta = {"medlite_version": medlite.__version__, "kind": "classifier",
            "model": {"name": "medlit_nano_28", "num_classes": 2, "in_chans": 1, "img_size": 16, "kwargs": TINY},
            "preprocessing": {"size": 16, "channels": 1, "mean": [0.5], "std": [0.5]},
            "data": {"name": "toy", "task": "binary", "label_names": ["no", "yes"]}}
    return save_checkpoint(tmp_path / "tiny.safetensors", model, meta)


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in line[1:-1].split("|")]


def test_bench_rows_and_markdown(checkpoint, monkeypatch):
    def no_executorch():
        raise ImportError("ExecuTorch export needs executorch: pip install medlite[mobile]")

    monkeypatch.setattr("medlite.export.executorch._require_executorch", no_executorch)
    previous = torch.get_num_threads()
    runtimes = ("torch", "onnx", "onnx-int8", "onnx-int8-static", "executorch")
    rows = bench([checkpoint], threads=(1,), runtimes=runtimes, batch_for_throughput=4, warmup=1, repeats=3)
    assert torch.get_num_threads() == previous
    assert [r["runtime"] for r in rows] == list(runtimes)
    for r in rows[:4]:
        assert r["status"] == "ok" and r["threads"] == 1 and r["batch"] == 4
        assert 0 < r["latency_ms_median"] <= r["latency_ms_p90"]
        assert r["throughput_ips"] > 0 and r["file_mb"] > 0 and r["macs"] > 0 and r["params"] > 0
        assert r["floor_ms"] > 0 and r["compute_util"] > 0
    assert rows[0]["params"] == rows[1]["params"]
    assert rows[4]["status"].startswith("executorch not installed") and rows[4]["latency_ms_median"] is None

    md = to_markdown(rows)
    lines = md.splitlines()
    header = _cells(lines[0])
    assert header[:3] == ["model", "runtime", "threads"] and "batch-1 median (ms)" in header
    assert set(lines[1].strip("|").split("|")) == {"---"} and len(_cells(lines[1])) == len(header)
    body = lines[2 : 2 + len(rows)]
    assert all(len(_cells(line)) == len(header) for line in body)
    assert _cells(body[4])[3] == "-"  # not measured
    assert "Not measured" in md and "pip install medlite[mobile]" in md


def test_registry_name_and_unknown_runtime():
    rows = bench(["medlit_nano_28"], size=16, threads=(1,), runtimes=("torch",), batch_for_throughput=2,
                 warmup=0, repeats=2, compute_floor=False)
    assert rows[0]["model"] == "medlit_nano_28" and rows[0]["floor_ms"] is None
    with pytest.raises(ValueError, match="unknown runtime"):
        bench(["resnet18"], runtimes=("tensorflow",))


def test_peak_matmul_rate_and_rss_probe():
    assert measure_peak_macs_per_s(1, n=128, repeats=2) > 1e6
    base = latency._reset_peak_rss()
    if base is None:
        pytest.skip("no /proc/self/clear_refs on this platform: peak memory is reported as None")
    assert latency._peak_rss_delta_mb(base) >= 0
