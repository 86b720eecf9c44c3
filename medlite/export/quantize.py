"""int8 quantization of exported ONNX classifiers (``onnxruntime.quantization``) and its cost in AUC / ACC.

Two recipes, both on the matmul-like ops only (Conv, MatMul, Gemm: where the compute and the weights are;
norms, softmax and the MoE gating stay fp32):

- dynamic: int8 weights, activations quantized per batch at run time; needs no data;
- static: int8 weights (per channel) and activations with scales calibrated on training images, QDQ
  format (what ORT's CPU kernels fuse into int8 Conv / MatMul).

The fp32 file's medlite metadata is copied, with ``export.precision = "int8"`` and the recipe added.
This module imports no torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from medlite.export.meta import ExportError, read_onnx_meta, with_export_info, write_onnx_meta

log = logging.getLogger(__name__)

QUANT_OPS = ["Conv", "MatMul", "Gemm"]


def quantize_dynamic_int8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Dynamic int8 quantization of ``src`` (an fp32 medlite ONNX file) into ``dst``; returns ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_onnx_meta(src)
    dst = Path(dst)
    with _preprocessed(src) as pre:
        _run(lambda: quantize_dynamic(pre, str(dst), weight_type=QuantType.QInt8,
                                      op_types_to_quantize=QUANT_OPS), src, "dynamic")
    write_onnx_meta(dst, with_export_info(meta, precision="int8", quantization={
        "method": "dynamic", "weights": "int8", "activations": "uint8, per batch", "ops": QUANT_OPS}))
    return dst


def quantize_static_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calib_images: np.ndarray,
    batch_size: int = 16,
    per_channel: bool = True,
) -> Path:
    """Static (QDQ) int8 quantization of ``src`` calibrated on ``calib_images``; returns ``dst``.

    Args:
        src: fp32 medlite ONNX file.
        dst: output file.
        calib_images: (N, C, S, S) float32, already preprocessed (normalised) training images; a few
            hundred are enough (min-max calibration).
        batch_size: images per calibration run.
        per_channel: per-output-channel weight scales (recommended for convolutions).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    meta = read_onnx_meta(src)
    calib = np.ascontiguousarray(calib_images, dtype=np.float32)
    pre = meta["preprocessing"]
    expected = (int(pre["channels"]), int(pre["size"]), int(pre["size"]))
    if calib.ndim != 4 or calib.shape[1:] != expected or len(calib) == 0:
        want = ", ".join(map(str, expected))
        raise ValueError(f"calib_images of shape {calib.shape}; expected (N > 0, {want})")
    input_name = meta.get("export", {}).get("input", "image")
    dst = Path(dst)
    with _preprocessed(src) as prep:
        reader = ArrayCalibrationReader(calib, input_name, batch_size)
        _run(lambda: quantize_static(prep, str(dst), reader, quant_format=QuantFormat.QDQ,
                                     activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                     per_channel=per_channel, op_types_to_quantize=QUANT_OPS,
                                     calibrate_method=CalibrationMethod.MinMax), src, "static")
    write_onnx_meta(dst, with_export_info(meta, precision="int8", quantization={
        "method": "static", "format": "QDQ", "weights": "int8" + (" per channel" if per_channel else ""),
        "activations": "uint8, min-max calibrated", "calibration_images": len(calib), "ops": QUANT_OPS}))
    return dst


def _run(fn, src, method: str) -> None:
    # onnxruntime.quantization logs one line per tensor on the root logger; keep it to warnings
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        fn()
    except Exception as e:  # onnxruntime.quantization raises plain Exceptions from many places
        raise ExportError(f"{src}: {method} int8 quantization failed: {type(e).__name__}: {e}") from e
    finally:
        root.setLevel(level)


class _preprocessed:
    """Context manager: ORT's recommended pre-processing (shape inference + graph optimisation) of
    ``src`` into a temporary file; the unprocessed file if that fails (it is an optimisation only)."""

    def __init__(self, src: str | os.PathLike) -> None:
        self.src = str(src)
        self.tmp: str | None = None

    def __enter__(self) -> str:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        fd, self.tmp = tempfile.mkstemp(suffix=".onnx")
        os.close(fd)
        try:
            quant_pre_process(self.src, self.tmp)
            return self.tmp
        except Exception as e:  # an optional optimisation: the raw graph quantizes too
            log.warning("ORT quantization pre-processing failed on %s (%s); quantizing the raw graph",
                        self.src, e)
            return self.src

    def __exit__(self, *exc) -> None:
        if self.tmp and os.path.exists(self.tmp):
            os.unlink(self.tmp)


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds (N, C, S, S) float32 images to ORT's calibrator in batches of ``batch_size``."""

    def __init__(self, images: np.ndarray, input_name: str = "image", batch_size: int = 16) -> None:
        self.images = images
        self.input_name = input_name
        self.batch_size = max(1, int(batch_size))
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self.images):
            return None
        batch = self.images[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._pos = 0


def compare_on(
    path_fp32: str | os.PathLike,
    path_int8: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    task: str,
    threads: int | None = None,
) -> dict[str, Any]:
    """MedMNIST AUC / ACC of an fp32 and an int8 model on the same preprocessed images.

    Args:
        images: (N, C, S, S) float32, preprocessed.
        labels: (N,) int class indices, or (N, L) {0, 1} for multi-label tasks.
        task: "binary", "multi-class", "ordinal" or "multi-label".

    Returns:
        {"fp32": {"auc", "acc"}, "int8": {"auc", "acc"}, "delta_auc", "delta_acc" (int8 - fp32),
        "agreement" (fraction of images with the same decision), "max_abs_prob_diff", "n"}.
    """
    from medlite.export.runtime import OnnxClassifier, decisions
    from medlite.metrics.classification import medmnist_acc, medmnist_auc

    out: dict[str, Any] = {"n": int(len(images))}
    probs = {}
    for key, path in (("fp32", path_fp32), ("int8", path_int8)):
        p = OnnxClassifier(path, threads=threads).predict_array(images)
        probs[key] = p
        out[key] = {"auc": float(medmnist_auc(labels, p, task)), "acc": float(medmnist_acc(labels, p, task))}
    out["delta_auc"] = out["int8"]["auc"] - out["fp32"]["auc"]
    out["delta_acc"] = out["int8"]["acc"] - out["fp32"]["acc"]
    same = decisions(probs["fp32"], task) == decisions(probs["int8"], task)
    out["agreement"] = float(same.reshape(len(images), -1).all(axis=1).mean())
    out["max_abs_prob_diff"] = float(np.abs(probs["fp32"] - probs["int8"]).max())
    return out
