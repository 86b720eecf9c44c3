"""Torch-free promptable segmentation: the two ONNX graphs of ``medlite sam export`` on ONNX Runtime.

Imports numpy, Pillow, onnxruntime and medlite's torch-free modules only, so ``medlite serve`` and
``medlite sam predict FOLDER`` run where PyTorch is not installed::

    p = OnnxSamPredictor("runs/sam/litesam_swin_xs/onnx", threads=1)
    p.set_image(image)                                   # (H, W[, C]) array; the encoder runs once
    prob, iou = p.segment(box=[40, 30, 200, 180], return_probs=True)   # (H, W) float32, predicted IoU

Preprocessing is LiteSAM's (longest side to S, zero padding, min-max over the image); masks come back at
the original size through :func:`medlite.data.frames.restore`, so they equal
:class:`medlite.models.litesam.LiteSAMPredictor`'s up to ONNX Runtime's float differences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medlite.data.frames import (
    Geometry,
    letterbox,
    minmax,
    restore,
    scribble_to_model_frame,
    sparse_prompt,
    to_rgb_uint8,
)
from medlite.export.meta import META_KEY, ModelFileError
from medlite.record import parse, require_kind

PARTS = ("encoder", "decoder")


def _session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"{path}: running an ONNX file needs onnxruntime: pip install 'medlite[export]'") from e
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ModelFileError(f"{path}: not a loadable ONNX model ({e})") from e


def is_sam_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding ``encoder.onnx`` and ``decoder.onnx``."""
    p = Path(path)
    return p.is_dir() and all((p / f"{part}.onnx").is_file() for part in PARTS)


class OnnxSamPredictor:
    """Encode an image once with ``encoder.onnx``, answer each prompt with ``decoder.onnx``.

    Args:
        folder: the output of ``medlite sam export`` (``encoder.onnx`` + ``decoder.onnx``).
        threads: ONNX Runtime intra-op threads per graph.

    Raises:
        ModelFileError: a missing or unloadable graph, or one without medlite's promptable metadata.
    """

    def __init__(self, folder: str | os.PathLike, threads: int = 1) -> None:
        self.folder = Path(folder)
        for part in PARTS:
            if not (self.folder / f"{part}.onnx").is_file():
                raise ModelFileError(f"{self.folder}: no {part}.onnx (export one with `medlite sam export`)")
        self.encoder = _session(self.folder / "encoder.onnx", threads)
        self.decoder = _session(self.folder / "decoder.onnx", threads)
        raw = self.encoder.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ModelFileError(f"{self.folder / 'encoder.onnx'}: no '{META_KEY}' metadata (not exported by medlite)")
        self.meta: dict[str, Any] = parse(raw, str(self.folder / "encoder.onnx"))
        require_kind(self.meta, "promptable", str(self.folder), "medlite sam predict")
        self.size = int(self.meta["preprocessing"]["size"])
        self.feature_names = [o.name for o in self.encoder.get_outputs()]
        self.features: list[np.ndarray] | None = None
        self.geometry: Geometry | None = None
        self.encoder_calls = 0

    @property
    def name(self) -> str:
        return str(self.meta["model"]["name"])

    def set_image(self, image: np.ndarray) -> None:
        """Run the encoder on an (H, W[, C]) image of any dtype (see :func:`medlite.data.frames.to_rgb_uint8`)."""
        boxed, self.geometry = letterbox(to_rgb_uint8(image), self.size, mode="pad")
        x = minmax(np.ascontiguousarray(boxed.transpose(2, 0, 1)))[None]
        self.features = self.encoder.run(None, {"image": x})
        self.encoder_calls += 1

    def reset_image(self) -> None:
        self.features, self.geometry = None, None

    def decode(self, box=None, points=None, point_labels=None, scribble=None) -> tuple[np.ndarray, float]:
        """(S, S) mask logits in the model frame and the predicted IoU (sigmoid of the IoU head) of one prompt."""
        if self.features is None:
            raise RuntimeError("call set_image(image) before segment()")
        if box is None and (points is None or not len(points)) and scribble is None:
            raise ValueError("give at least one prompt: box, points or scribble")
        coords, labels = sparse_prompt(box, points, point_labels, self.geometry)
        g = self.geometry
        if scribble is not None and np.asarray(scribble).shape != (g.height, g.width):
            raise ValueError(f"scribble is {np.asarray(scribble).shape}; the image is {(g.height, g.width)}")
        dense = np.zeros((g.size, g.size), np.float32) if scribble is None else scribble_to_model_frame(scribble, g)
        feeds = dict(zip(self.feature_names, self.features, strict=True))
        feeds.update(point_coords=coords[None], point_labels=labels[None], dense_prompt=dense[None, None],
                     has_dense=np.array([0.0 if scribble is None else 1.0], np.float32))
        masks, iou = self.decoder.run(None, feeds)
        return masks[0, 0], self._iou(float(iou[0, 0]))

    def _iou(self, raw: float) -> float:
        """The IoU head's output as predicted IoU in [0, 1] (LiteSAM.iou_score: a logit or a clamped value)."""
        if self.meta["model"].get("config", {}).get("iou_logits", True):
            return float(1.0 / (1.0 + np.exp(-raw)))
        return min(max(raw, 0.0), 1.0)

    def segment(self, box=None, points=None, point_labels=None, scribble=None,
                return_probs: bool = False) -> tuple[np.ndarray, float]:
        """One prompt (any of box (4,) xyxy, points (K, 2) with labels (K,), scribble (H, W) in {-1, 0, 1};
        original pixels) -> (H, W) bool mask (or float32 probabilities), predicted IoU in [0, 1]."""
        logits, iou = self.decode(box, points, point_labels, scribble)
        prob = restore(1.0 / (1.0 + np.exp(-logits.astype(np.float32))), self.geometry)
        return (prob if return_probs else prob > 0.5), iou
