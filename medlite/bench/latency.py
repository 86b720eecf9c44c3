"""CPU latency / throughput of models across runtimes (PyTorch, ONNX Runtime fp32 / int8, ExecuTorch).

How the numbers are taken (so that ratios between candidates hold on a shared, noisy machine):

- a candidate is (model, runtime, threads); all candidates of one thread count are timed INTERLEAVED:
  each repetition runs every candidate once, in an order rotated by one per repetition, so a burst of
  load from a neighbour hits all candidates alike;
- batch-1 latency: ``warmup`` untimed calls each, then ``repeats`` timed calls each; median and p90 in
  ms (``time.perf_counter``);
- throughput: images / s at ``batch_for_throughput``, from the median of ``max(3, repeats // 10)``
  interleaved calls after one warm-up call each;
- threads: ``torch.set_num_threads`` for PyTorch, ``SessionOptions.intra_op_num_threads`` for ONNX
  Runtime (inter-op 1, thread spinning off so idle sessions do not steal cores from the one being
  timed), the XNNPACK thread pool size for ExecuTorch;
- peak memory (``peak_mem_mb``): increase of the process's peak resident set size (Linux ``VmHWM``, reset
  through ``/proc/self/clear_refs`` after ``malloc_trim``) while the candidate is loaded from its file and
  runs once at batch 1: weights + runtime buffers + activations. The same RSS method for every runtime
  (tracemalloc cannot see PyTorch's or ONNX Runtime's native allocations). None where unsupported;
- file size (``file_mb``): the exported file (``.onnx``, ``.pte``); for PyTorch the weights-only
  safetensors file;
- params and MACs (batch 1) from :mod:`medlite.models.flops`; ``floor_ms`` = MACs / the machine's
  measured fp32 matmul peak at that thread count (:func:`measure_peak_macs_per_s`), the time the model
  would take at peak compute, and ``compute_util`` = floor_ms / median latency. int8 runtimes are still
  compared with the fp32 peak.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlite.models.flops import count_macs, count_params

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "onnx-int8", "onnx-int8-static", "executorch")


# ---------------------------------------------------------------------------------------------- memory
def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> int | None:
    """Trim the heap, reset VmHWM, return the current RSS in bytes (None if unsupported)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _proc_status("VmRSS")


def _peak_rss_delta_mb(base: int | None) -> float | None:
    hwm = _proc_status("VmHWM")
    return None if base is None or hwm is None else max(0, hwm - base) / 2**20


# ------------------------------------------------------------------------------------------ candidates
@dataclass
class _Model:
    """One benchmarked model and its exported files."""

    label: str
    meta: dict[str, Any]
    params: int
    macs: int
    files: dict[str, Path] = field(default_factory=dict)  # runtime -> file
    errors: dict[str, str] = field(default_factory=dict)  # runtime -> why it is unavailable


@dataclass
class _Candidate:
    model: _Model
    runtime: str
    threads: int
    run: Callable[[np.ndarray], Any] | None = None
    mem_mb: float | None = None
    status: str = "ok"
    t1: list[float] = field(default_factory=list)
    tb: list[float] = field(default_factory=list)
    tb_status: str = ""  # why the throughput batch could not run, if it could not


def _prepare(spec: str | os.PathLike, size: int, in_chans: int, num_classes: int, runtimes: Sequence[str],
             work: Path, calib_n: int = 32) -> _Model:
    """Build (or load) the model, count it, and export every runtime's file into ``work``."""
    from medlite.engine.checkpoint import load_model, save_checkpoint
    from medlite.export.meta import default_meta

    if Path(spec).exists():
        model, meta = load_model(spec)
        label = f"{meta['model']['name']} ({Path(spec).name})"
    else:
        from medlite.registry import create_model

        meta = default_meta(str(spec), num_classes=num_classes, in_chans=in_chans, img_size=size)
        model = create_model(str(spec), num_classes=num_classes, in_chans=in_chans, img_size=size).eval()
        label = str(spec)
    pre = meta["preprocessing"]
    c, s = int(pre["channels"]), int(pre["size"])
    m = _Model(label, meta, count_params(model), count_macs(model, (1, c, s, s)))
    stem = work / f"{len(list(work.iterdir()))}_{meta['model']['name']}"
    m.files["torch"] = save_checkpoint(stem.with_suffix(".safetensors"), model, meta)
    try:
        _export_all(model, meta, stem, runtimes, m, calib_n)
    finally:
        del model
    return m


def _export_all(model: nn.Module, meta: dict, stem: Path, runtimes: Sequence[str], m: _Model,
                calib_n: int) -> None:
    from medlite.export.meta import ExportError

    pre = meta["preprocessing"]
    shape = (calib_n, int(pre["channels"]), int(pre["size"]), int(pre["size"]))
    onnx_needed = any(r.startswith("onnx") for r in runtimes)
    try:
        if onnx_needed:
            from medlite.export.onnx import export_onnx

            export_onnx(model, meta, stem.with_suffix(".onnx"))
            m.files["onnx"] = stem.with_suffix(".onnx")
        if "onnx-int8" in runtimes:
            from medlite.export.quantize import quantize_dynamic_int8

            m.files["onnx-int8"] = quantize_dynamic_int8(m.files["onnx"], f"{stem}.int8.onnx")
        if "onnx-int8-static" in runtimes:
            from medlite.export.quantize import quantize_static_int8

            # latency does not depend on the calibration data; N(0, 1) stands in for normalised images
            calib = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
            m.files["onnx-int8-static"] = quantize_static_int8(m.files["onnx"], f"{stem}.int8s.onnx", calib)
    except (ExportError, ImportError) as e:
        for r in runtimes:
            if r.startswith("onnx") and r not in m.files:
                m.errors[r] = str(e)
    if "executorch" in runtimes:
        try:
            from medlite.export.executorch import export_executorch

            m.files["executorch"] = Path(export_executorch(model, meta, stem.with_suffix(".pte"))["path"])
        except ImportError:
            m.errors["executorch"] = "executorch not installed (pip install medlite[mobile])"
        except ExportError as e:
            m.errors["executorch"] = str(e)


def _load_runner(model: _Model, runtime: str, threads: int) -> Callable[[np.ndarray], Any]:
    """Load ``runtime``'s file and return ``run(x: (B, C, S, S) float32 ndarray)``."""
    path = model.files[runtime]
    if runtime == "torch":
        from medlite.engine.checkpoint import load_model

        net, _ = load_model(path)

        def run(x: np.ndarray):
            with torch.inference_mode():
                return net(torch.from_numpy(x))

        return run
    if runtime == "executorch":
        from medlite.export.executorch import load_method

        method = load_method(path)
        return lambda x: method.execute([torch.from_numpy(x)])
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def _set_threads(threads: int, executorch: bool) -> None:
    torch.set_num_threads(threads)
    if executorch:
        from medlite.export.executorch import set_threads

        set_threads(threads)


# ------------------------------------------------------------------------------------------------ bench
def bench(
    models: Sequence[str | os.PathLike],
    size: int = 28,
    threads: Sequence[int] = (1, 2),
    runtimes: Sequence[str] = ("torch", "onnx", "onnx-int8", "executorch"),
    batch_for_throughput: int = 64,
    warmup: int = 10,
    repeats: int = 50,
    in_chans: int = 1,
    num_classes: int = 2,
    compute_floor: bool = True,
    work_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Time models on the CPU across runtimes and thread counts (see the module docstring for how).

    Args:
        models: registry names (built untrained at ``size`` with ``in_chans`` / ``num_classes``) or
            checkpoint files / run folders (their own size and channels).
        size: input side length for registry models.
        threads: thread counts to time.
        runtimes: any of :data:`RUNTIMES`.
        batch_for_throughput: batch size of the throughput measurement.
        warmup, repeats: untimed and timed batch-1 calls per candidate.
        compute_floor: measure the fp32 matmul peak per thread count and report ``floor_ms``.
        work_dir: where exported files go (default: a temporary folder, removed afterwards).

    Returns:
        one dict per (model, runtime, threads): model, runtime, threads, status, latency_ms_median,
        latency_ms_p90, throughput_ips, batch, params, macs, peak_mem_mb, file_mb, floor_ms, compute_util.
    """
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        raise ValueError(f"unknown runtime(s) {sorted(unknown)}; choose from {RUNTIMES}")
    previous_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="medlite-bench-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prepared = [_prepare(m, size, in_chans, num_classes, runtimes, work) for m in models]
        rows = []
        try:
            for t in threads:
                peak = measure_peak_macs_per_s(t) if compute_floor else None
                cands = _time_block(prepared, runtimes, t, batch_for_throughput, warmup, repeats)
                rows += [_row(c, batch_for_throughput, peak) for c in cands]
        finally:
            torch.set_num_threads(previous_threads)
    return rows


def _time_block(models: list[_Model], runtimes: Sequence[str], threads: int, batch: int, warmup: int,
                repeats: int) -> list[_Candidate]:
    _set_threads(threads, executorch=any("executorch" in m.files for m in models))
    cands = [_Candidate(m, r, threads) for m in models for r in runtimes]
    inputs = {}
    for c in cands:
        if c.runtime in c.model.errors:
            c.status = c.model.errors[c.runtime]
            continue
        pre = c.model.meta["preprocessing"]
        shape = (int(pre["channels"]), int(pre["size"]), int(pre["size"]))
        if shape not in inputs:
            rng = np.random.default_rng(0)
            inputs[shape] = (rng.standard_normal((1, *shape), dtype=np.float32),
                             rng.standard_normal((batch, *shape), dtype=np.float32))
        base = _reset_peak_rss()
        try:
            c.run = _load_runner(c.model, c.runtime, threads)
        except Exception as e:  # a runtime that cannot load its file is reported, not fatal
            c.status = f"failed to load: {str(e).splitlines()[0][:120]}"
            continue
        if not _call(c, inputs[shape][0]):
            c.run = None
            continue
        c.mem_mb = _peak_rss_delta_mb(base)
    live = [c for c in cands if c.run is not None]
    x_of = {id(c): inputs[_shape(c)] for c in live}
    for _ in range(warmup):
        live = [c for c in live if _call(c, x_of[id(c)][0])]
    for i in range(repeats):
        for c in live[i % len(live):] + live[: i % len(live)] if live else []:
            t0 = time.perf_counter()
            if _call(c, x_of[id(c)][0]):
                c.t1.append(time.perf_counter() - t0)
        live = [c for c in live if c.status == "ok"]
    # A runtime may refuse the larger batch (e.g. a .pte exported with a static batch): keep its latency.
    batched = [c for c in live if _call(c, x_of[id(c)][1], f"batch {batch}")]
    for i in range(max(3, repeats // 10)):
        for c in batched[i % len(batched):] + batched[: i % len(batched)] if batched else []:
            t0 = time.perf_counter()
            c.run(x_of[id(c)][1])
            c.tb.append(time.perf_counter() - t0)
    for c in live:
        c.run = None  # free sessions before the next thread count
    gc.collect()
    return cands


def _call(c: _Candidate, x: np.ndarray, what: str = "batch 1") -> bool:
    """Run one call; a failure marks the candidate (its status says why) instead of ending the benchmark."""
    try:
        c.run(x)
        return True
    except Exception as e:  # runtimes raise their own error types
        log.warning("%s / %s failed at %s: %s", c.model.label, c.runtime, what, e)
        if what == "batch 1":
            c.status = f"failed: {str(e).splitlines()[0][:120]}"
            c.t1.clear()
        else:
            c.tb_status = f"{what} failed: {str(e).splitlines()[0][:120]}"
        return False


def _shape(c: _Candidate) -> tuple[int, int, int]:
    pre = c.model.meta["preprocessing"]
    return int(pre["channels"]), int(pre["size"]), int(pre["size"])


def _row(c: _Candidate, batch: int, peak: float | None) -> dict[str, Any]:
    m = c.model
    path = m.files.get(c.runtime)
    row: dict[str, Any] = {
        "model": m.label, "runtime": c.runtime, "threads": c.threads, "status": c.status,
        "latency_ms_median": None, "latency_ms_p90": None, "throughput_ips": None, "batch": batch,
        "params": m.params, "macs": m.macs, "peak_mem_mb": c.mem_mb,
        "file_mb": path.stat().st_size / 2**20 if path is not None and path.exists() else None,
        "floor_ms": m.macs / peak * 1e3 if peak else None, "compute_util": None,
        "throughput_note": c.tb_status or None,
    }
    if c.t1:
        row["latency_ms_median"] = float(np.median(c.t1) * 1e3)
        row["latency_ms_p90"] = float(np.percentile(c.t1, 90) * 1e3)
        row["throughput_ips"] = float(batch / np.median(c.tb)) if c.tb else None
        if row["floor_ms"]:
            row["compute_util"] = row["floor_ms"] / row["latency_ms_median"]
    return row


def measure_peak_macs_per_s(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """The machine's fp32 matmul rate in MAC/s at ``threads`` (best of ``repeats`` n x n matmuls)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return n**3 / best


# --------------------------------------------------------------------------------------------- report
_COLUMNS = (
    ("model", "model", "{}"), ("runtime", "runtime", "{}"), ("threads", "threads", "{}"),
    ("latency_ms_median", "batch-1 median (ms)", "{:.2f}"), ("latency_ms_p90", "p90 (ms)", "{:.2f}"),
    ("throughput_ips", "throughput (img/s)", "{:.0f}"), ("params", "params (M)", "{:.2f}"),
    ("macs", "MACs (M)", "{:.1f}"), ("floor_ms", "fp32 floor (ms)", "{:.3f}"),
    ("compute_util", "of peak", "{:.0%}"), ("peak_mem_mb", "peak RSS (MB)", "{:.1f}"),
    ("file_mb", "file (MB)", "{:.2f}"),
)
_SCALE = {"params": 1e-6, "macs": 1e-6}


def format_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Column titles and formatted cells of :func:`bench` rows ("-" where not measured)."""
    header = [title for _, title, _ in _COLUMNS]
    table = []
    for r in rows:
        cells = []
        for key, _, fmt in _COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v * _SCALE[key] if key in _SCALE else v))
        table.append(cells)
    return header, table


def legend(rows: Sequence[dict[str, Any]]) -> str:
    """What the columns mean, and why any candidate was not measured."""
    batch = rows[0]["batch"] if rows else 64
    text = (f"Throughput at batch {batch}. MACs at batch 1. fp32 floor: MACs / measured fp32 matmul peak at "
            "that thread count; 'of peak' = floor / median latency. Peak RSS: rise of the process's peak "
            "resident memory while loading the file and running batch 1.")
    notes = dict.fromkeys([f"{r['model']} / {r['runtime']}: {r['status']}" for r in rows
                           if r.get("status", "ok") != "ok"]
                          + [f"{r['model']} / {r['runtime']}: throughput not measured ({r['throughput_note']})"
                             for r in rows if r.get("throughput_note")])
    if notes:
        text += "\n\nNot measured:\n" + "\n".join(f"- {n}" for n in notes)
    return text


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`bench` rows followed by the :func:`legend`."""
    header, table = format_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |" for cells in table]
    return "\n".join(lines) + "\n\n" + legend(rows) + "\n"
