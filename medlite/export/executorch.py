"""PyTorch classifier -> ExecuTorch ``.pte`` with the XNNPACK backend, for Android / iOS apps.

``torch.export`` captures the model with a dynamic batch axis (1..``max_batch``), XNNPACK takes every
op it supports (all of the registered classifiers' convolutions, matmuls, norms and activations), and the
program is serialised to ``path``. ExecuTorch has no place for free-form metadata in the program, so the
meta goes into a JSON sidecar ``<path>.json`` (e.g. ``model.pte.json``) that apps ship beside the file.

ExecuTorch is an optional extra: ``pip install medlite[mobile]``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medlite.export.meta import ExportError, validate_meta, with_export_info

log = logging.getLogger(__name__)

FP32_ATOL = 1e-4


def _require_executorch():
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError as e:
        raise ImportError(f"ExecuTorch export needs executorch: pip install medlite[mobile] ({e})") from e
    return XnnpackPartitioner, to_edge_transform_and_lower


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.pte`` -> ``model.pte.json``."""
    return Path(str(path) + ".json")


def export_executorch(
    model: nn.Module,
    meta: dict[str, Any],
    path: str | os.PathLike,
    max_batch: int = 64,
    check: bool = True,
    atol: float = FP32_ATOL,
) -> dict[str, Any]:
    """Export ``model`` to an XNNPACK-delegated ExecuTorch program and write the meta sidecar.

    Args:
        model: classifier (B, C, S, S) float32 -> (B, num_classes) logits; exported from a CPU copy in
            eval mode (the original is left as it was).
        meta: checkpoint meta (see :func:`medlite.export.meta.validate_meta`).
        path: destination ``.pte`` file; ``<path>.json`` receives the meta.
        max_batch: largest batch the program accepts.
        check: run the program with the ExecuTorch Python runtime (batch 1 and 3, N(0, 1) input) and
            compare with PyTorch.
        atol: raise if the max absolute logit difference exceeds this.

    Returns:
        {"path", "sidecar", "size_bytes", "max_abs_diff" (None without check)}.

    Raises:
        ImportError: executorch is not installed (the message says ``pip install medlite[mobile]``).
        ExportError: export or lowering failed, or the program disagrees with PyTorch by more than ``atol``.
    """
    _require_executorch()  # fail before any work
    meta = validate_meta(meta)
    pre = meta["preprocessing"]
    c, s = int(pre["channels"]), int(pre["size"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    cpu_model = model.eval() if _on_cpu(model) else _cpu_copy(model)
    example = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0))
    try:
        buffer = _lower(cpu_model, example, max_batch, meta["model"]["name"])
        path.write_bytes(buffer)
        info = {"format": "executorch", "backend": "xnnpack", "max_batch": max_batch, "precision": "fp32",
                "torch_version": torch.__version__}
        sidecar = sidecar_path(path)
        sidecar.write_text(json.dumps(with_export_info(meta, **info), indent=2) + "\n")
        diff = parity(cpu_model, path, c, s) if check else None
    finally:
        model.train(was_training)
    if diff is not None and diff > atol:
        raise ExportError(f"{path}: ExecuTorch differs from PyTorch by {diff:.3g} > {atol:g}")
    log.info("exported %s to %s (%.2f MB, max |ET - torch| = %s)", meta["model"]["name"], path,
             len(buffer) / 1e6, "unchecked" if diff is None else f"{diff:.2e}")
    return {"path": str(path), "sidecar": str(sidecar), "size_bytes": len(buffer), "max_abs_diff": diff}


def _lower(model: nn.Module, example: torch.Tensor, max_batch: int, name: str) -> bytes:
    """torch.export with a dynamic batch axis -> XNNPACK-delegated ExecuTorch program bytes."""
    partitioner_cls, lower = _require_executorch()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            batch = torch.export.Dim("batch", min=1, max=max_batch)
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            return lower(program, partitioner=[partitioner_cls()]).to_executorch().buffer
    except Exception as e:  # torch.export / EXIR lowering raise many error types
        raise ExportError(f"ExecuTorch export of {name} failed: {type(e).__name__}: {e}") from e


def _on_cpu(model: nn.Module) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().eval()


def load_method(path: str | os.PathLike):
    """The ``forward`` method of a ``.pte`` program in the ExecuTorch Python runtime."""
    try:
        from executorch.runtime import Runtime
    except ImportError as e:
        raise ImportError(f"running .pte files needs executorch: pip install medlite[mobile] ({e})") from e
    return Runtime.get().load_program(Path(path)).load_method("forward")


def set_threads(n: int) -> None:
    """Size of ExecuTorch's (XNNPACK's) thread pool for this process."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(int(n))


@torch.no_grad()
def parity(model: nn.Module, path: str | os.PathLike, channels: int, size: int) -> float:
    """Max absolute logit difference between the ``.pte`` program and ``model`` at batch 1 and 3."""
    method = load_method(path)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    for b in (1, 3):
        x = torch.randn(b, channels, size, size, generator=g)
        got = method.execute([x])[0]
        ref = model(x)
        if tuple(got.shape) != tuple(ref.shape):
            raise ExportError(f"{path}: ExecuTorch output {tuple(got.shape)} != PyTorch {tuple(ref.shape)}")
        worst = max(worst, float((got - ref).abs().max()))
    return worst
