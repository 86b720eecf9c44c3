"""PyTorch classifier -> self-describing ONNX file, checked against ONNX Runtime.

The graph maps ``image: (batch, C, S, S) float32`` (normalised as ``meta['preprocessing']`` says) to
``logits: (batch, num_classes) float32``; the batch axis is dynamic. The checkpoint's meta is stored as
JSON in ``metadata_props['medlite']``, so :class:`medlite.export.runtime.OnnxClassifier` needs nothing but
the file.

Exporters: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``, the default: 1-3 s per model here and
exact for every registered classifier, MedLiT's top-k MoE routing included) or ``"dynamo"`` (the
``torch.export``-based exporter; 3-10x slower to export, same graphs up to fusion).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medlite.export.meta import ExportError, validate_meta, with_export_info, write_onnx_meta

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
HEATMAP_NAME = "heatmap"  # second output of a graph exported with explain=True
FP32_ATOL = 1e-4  # max |ORT - PyTorch| logit difference accepted for an fp32 export
FP32_RTOL = 1e-5  # relative part of the parity tolerance (see export_onnx)


def export_onnx(
    model: nn.Module,
    meta: dict[str, Any],
    path: str | os.PathLike,
    opset: int = 18,
    check: bool = True,
    exporter: str = "torchscript",
    atol: float = FP32_ATOL,
    explain: bool = False,
) -> dict[str, Any]:
    """Export ``model`` to ONNX with ``meta`` embedded, then check it against ONNX Runtime.

    Args:
        model: classifier mapping (B, C, S, S) float32 to (B, num_classes) logits; put in eval mode for
            the export (its mode is restored afterwards). Any device; the check runs on the CPU copy of
            the outputs.
        meta: checkpoint meta (see :func:`medlite.export.meta.validate_meta` for what is required).
        path: destination ``.onnx`` file (parent folders are created; written atomically).
        opset: ONNX opset.
        check: run the parity check (random N(0, 1) input of batch 3, another batch than the export's 2,
            so the dynamic batch axis is exercised too).
        exporter: "torchscript" or "dynamo".
        atol: raise if the max absolute logit difference exceeds this.
        explain: also output ``heatmap (batch, g, g)``, the attention rollout (MedLiT / ViT models only;
            torchscript exporter), so a torch-free runtime can show where the model looks.

    Returns:
        {"path", "opset", "exporter", "size_bytes", "max_abs_diff" (None without check)}.

    Raises:
        ExportError: the exporter failed, or ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    meta = validate_meta(meta)
    pre = meta["preprocessing"]
    c, s = int(pre["channels"]), int(pre["size"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = _device(model)
    example = torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        if explain:
            from medlite.explain import RolloutGraph

            try:
                graph = RolloutGraph(model).eval()  # the exporter restores the mode it found, for every child
            except ValueError as e:
                raise ExportError(f"{path}: {e}") from e
            _export(graph, example, tmp, opset, exporter, (OUTPUT_NAME, HEATMAP_NAME))
        else:
            _export(model, example, tmp, opset, exporter)
        info = {"format": "onnx", "opset": opset, "exporter": exporter, "torch_version": torch.__version__,
                "input": INPUT_NAME, "output": OUTPUT_NAME, "precision": "fp32"}
        if explain:
            info["heatmap"] = HEATMAP_NAME
        write_onnx_meta(tmp, with_export_info(meta, **info))
        diff, scale = parity_stats(model, tmp, c, s) if check else (None, 0.0)
        # as numpy's allclose: an absolute floor plus fp32's relative precision of the output's magnitude (an
        # untrained U-Net's logits reach the hundreds, where 1e-4 is below float32 rounding of the sums)
        limit = atol + FP32_RTOL * scale
        if diff is not None and diff > limit:
            raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} > {limit:.3g} (fp32; "
                              f"{atol:g} + {FP32_RTOL:g} x max |output| {scale:.3g})")
        os.replace(tmp, path)
    finally:
        model.train(was_training)
        if os.path.exists(tmp):
            os.unlink(tmp)
    result = {"path": str(path), "opset": opset, "exporter": exporter, "size_bytes": path.stat().st_size,
              "max_abs_diff": diff}
    log.info("exported %s to %s (%.2f MB, max |ORT - torch| = %s)", meta["model"]["name"], path,
             result["size_bytes"] / 1e6, "unchecked" if diff is None else f"{diff:.2e}")
    return result


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _export(model: nn.Module, example: torch.Tensor, path: str, opset: int, exporter: str,
            outputs: tuple[str, ...] = (OUTPUT_NAME,)) -> None:
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got '{exporter}'")
    if len(outputs) > 1 and exporter != "torchscript":
        raise ValueError("a graph with a heat map output is exported with the torchscript exporter")
    common = {"input_names": [INPUT_NAME], "output_names": list(outputs), "opset_version": opset}
    try:
        with warnings.catch_warnings():
            # timm's shape asserts trace to constants (TracerWarning) and the TorchScript exporter is
            # deprecated in favour of dynamo; neither changes the exported graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            if exporter == "torchscript":
                torch.onnx.export(model, (example,), path, dynamo=False, **common,
                                  dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *outputs)})
            else:
                batch = torch.export.Dim("batch", min=1, max=4096)
                torch.onnx.export(model, (example,), path, dynamo=True, external_data=False, verbose=False,
                                  dynamic_shapes=({0: batch},), **common)
    except Exception as e:  # exporter errors come from many layers (tracing, symbolic, onnxscript)
        name = getattr(model, "medlite_name", type(model).__name__)
        raise ExportError(f"{exporter} ONNX export of {name} failed: {type(e).__name__}: {e}") from e


@torch.no_grad()
def parity(model: nn.Module, path: str | os.PathLike, channels: int, size: int, batch: int = 3) -> float:
    """Max absolute logit difference between ONNX Runtime and ``model`` on N(0, 1) input (B, C, S, S)."""
    return parity_stats(model, path, channels, size, batch)[0]


def parity_stats(model: nn.Module, path: str | os.PathLike, channels: int, size: int, batch: int = 3
                 ) -> tuple[float, float]:
    """(max absolute difference, max absolute PyTorch output) of :func:`parity`'s comparison."""
    import onnxruntime as ort

    x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (got,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        ref = model(x.to(_device(model))).float().cpu().numpy()
    if got.shape != ref.shape:
        raise ExportError(f"{path}: ONNX output shape {got.shape} != PyTorch output shape {ref.shape}")
    return float(np.abs(got - ref).max()), float(np.abs(ref).max())
