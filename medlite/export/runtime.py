"""Torch-free inference: an exported medlite ONNX classifier from image files or arrays.

Imports numpy, Pillow, onnxruntime, json and :mod:`medlite.data.io` only, so it runs on a hospital
desktop or a Raspberry Pi without PyTorch::

    clf = OnnxClassifier("model.onnx", threads=2)
    clf.predict(["scan.dcm", "photo.jpg"])   # [{"label": "normal", "probs": {"malignant": 0.1, ...}}, ...]

Preprocessing (size, channels, mean, std), task and label names come from the file's metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# medlite.data imports lazily, so its io module (numpy + Pillow) loads without torch.
from medlite.data.io import read_image, to_model_input  # noqa: E402
from medlite.export.meta import META_KEY, ModelFileError, task_kind
from medlite.record import parse, require_kind

ImageLike = str | os.PathLike | np.ndarray


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """(B, K) logits -> (B, K) float32 probabilities: sigmoid for multi-label, softmax otherwise."""
    z = np.asarray(logits, dtype=np.float64)
    if task_kind(task) == "multi-label":
        p = 1.0 / (1.0 + np.exp(-z))
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


def decisions(probs: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """(B, K) probabilities -> (B,) class index, or (B, K) bool for multi-label (p >= threshold)."""
    return probs >= threshold if task_kind(task) == "multi-label" else probs.argmax(axis=1)


def describe(probs: np.ndarray, task: str, label_names: Sequence[str]) -> list[dict[str, Any]]:
    """Per image: ``{"label": name (or list of names for multi-label), "probs": {name: p}}``."""
    out = []
    dec = decisions(probs, task)
    for p, d in zip(probs, dec, strict=True):
        label = [n for n, on in zip(label_names, d, strict=True) if on] if d.ndim else label_names[int(d)]
        out.append({"label": label, "probs": {n: float(v) for n, v in zip(label_names, p, strict=True)}})
    return out


class Classifier:
    """What every medlite predictor offers, given ``meta`` and a ``predict_array``; see OnnxClassifier."""

    meta: dict[str, Any]

    @property
    def task(self) -> str:
        return self.meta["data"]["task"]

    @property
    def label_names(self) -> list[str]:
        return list(self.meta["data"]["label_names"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.meta["preprocessing"]

    def preprocess(self, image: ImageLike) -> np.ndarray:
        """A path (any format :func:`medlite.data.io.read_image` reads) or a (H, W) / (H, W, 3) array in
        [0, 1] (or uint8) -> (1, C, S, S) float32 model input.

        Raises:
            ImageReadError: an unreadable file.
        """
        img = image if isinstance(image, np.ndarray) else read_image(image)
        p = self.preprocessing
        return to_model_input(img, int(p["size"]), int(p["channels"]), p["mean"], p["std"])

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float32 preprocessed images -> (B, num_classes) float32 probabilities."""
        raise NotImplementedError

    def predict(self, images: Sequence[ImageLike], batch_size: int = 32) -> list[dict[str, Any]]:
        """Classify images given as paths or arrays.

        Returns:
            per image ``{"label": name, "probs": {name: p}}``; for multi-label tasks ``label`` is the list
            of names with p >= 0.5.

        Raises:
            ImageReadError: the first unreadable file (use :meth:`preprocess` per file to skip bad ones).
        """
        out: list[dict[str, Any]] = []
        for i in range(0, len(images), batch_size):
            x = np.concatenate([self.preprocess(im) for im in images[i : i + batch_size]])
            out += describe(self.predict_array(x), self.task, self.label_names)
        return out


class OnnxClassifier(Classifier):
    """An exported medlite ONNX file (fp32 or int8) on ONNX Runtime's CPU provider.

    Args:
        path: ``.onnx`` file written by :func:`medlite.export.export_onnx` or the int8 quantizers.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).

    Raises:
        ModelFileError: missing or unreadable file, or a file without medlite metadata.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: model file not found")
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"{self.path}: running an ONNX file needs onnxruntime: pip install 'medlite[export]'"
                              ) from e
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
            raise ModelFileError(f"{self.path}: not a loadable ONNX model ({e})") from e
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ModelFileError(f"{self.path}: no '{META_KEY}' metadata (not exported by medlite)")
        self.meta = parse(raw, str(self.path))  # validated run record (torch-free)
        require_kind(self.meta, "classifier", str(self.path), "medlite predict")
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name  # the logits

    @property
    def has_heatmap(self) -> bool:
        """Whether the file was exported with ``explain=True`` (a second output, the attention rollout)."""
        return any(o.name == "heatmap" for o in self.session.get_outputs())

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float32 -> (B, num_classes) float32 logits."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, C, S, S) float32 -> probabilities (B, num_classes), heat map (B, g, g) in [0, 1].

        Raises:
            ModelFileError: the file has no heat map output (export with ``explain=True``).
        """
        if not self.has_heatmap:
            raise ModelFileError(f"{self.path}: no heat map output (export it with explain=True)")
        logits, heat = self.session.run([self.output_name, "heatmap"],
                                        {self.input_name: np.ascontiguousarray(x, np.float32)})
        return probabilities(logits, self.task), heat

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        return probabilities(self.logits(x), self.task)
