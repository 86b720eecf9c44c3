"""Deploying a trained classifier, as functions that return data: the export formats and their file names,
calibration / comparison images, a PyTorch model behind the :class:`~medlite.export.runtime.Classifier`
API, and classifying a list of image files. ``medlite export`` and ``medlite predict`` print what these
return.

Loading a checkpoint is left to the caller (``medlite.engine.checkpoint.load_model``), so this module
depends on ``data`` and ``export`` only::

    clf = TorchClassifier(*load_model("runs/my-run"))   # or OnnxClassifier("model.onnx")
    results, _ = classify_files(clf, ["scan.dcm", "photo.jpg"])
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlite.data.io import ImageReadError, read_image
from medlite.export.runtime import Classifier, describe, probabilities

FORMATS = ("onnx", "onnx-int8", "onnx-int8-static", "executorch")
SUFFIXES = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "onnx-int8-static": ".int8-static.onnx",
            "executorch": ".pte"}


def export_path(checkpoint: str | os.PathLike, model_name: str, fmt: str) -> Path:
    """The default output of ``fmt``: ``<checkpoint folder>/export/<model><suffix>``."""
    return Path(checkpoint).parent / "export" / f"{model_name}{SUFFIXES[fmt]}"


def fp32_path(int8_path: str | os.PathLike) -> Path:
    """Where the fp32 graph of an int8 export goes: ``m.int8.onnx`` -> ``m.fp32.onnx`` beside it."""
    p = Path(int8_path)
    return p.with_name(p.name.split(".")[0] + ".fp32.onnx")


def reference_data(meta: dict[str, Any], data: str | None = None, data_root: str | os.PathLike | None = None):
    """The dataset to calibrate and compare on: ``data``, else the one the checkpoint was trained on.

    Returns:
        a :class:`medlite.data.ClassificationData` at the model's input size.

    Raises:
        DataError: no dataset recorded or given, not found, or of the wrong channel count.
    """
    from medlite.data import load_classification
    from medlite.data.base import DataError
    from medlite.data.medmnist import MEDMNIST

    d, pre = meta.get("data", {}), meta["preprocessing"]
    spec = data or (d.get("name") if d.get("name") in MEDMNIST else d.get("source"))
    if not spec:
        raise DataError("the checkpoint records no dataset; pass --data")
    ds = load_classification(spec, size=int(pre["size"]), root=data_root or None)
    if ds.channels != int(pre["channels"]):
        raise DataError(f"{spec}: {ds.channels}-channel images; the model expects {pre['channels']}")
    return ds


def sample_inputs(images, n: int, preprocessing: dict[str, Any], seed: int = 0) -> np.ndarray:
    """Up to ``n`` of ``images`` ((N, C, S, S) uint8; a seeded random choice, in their order), normalised as
    the model expects: (n, C, S, S) float32."""
    from medlite.data.transforms import to_float

    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    return to_float(images[idx], preprocessing["mean"], preprocessing["std"]).numpy().astype(np.float32)


class TorchClassifier(Classifier):
    """A PyTorch classifier and its checkpoint meta, with the API of :class:`OnnxClassifier`.

    Args:
        model: maps (B, C, S, S) float32 to (B, K) logits; put in eval mode.
        meta: the checkpoint's meta (preprocessing, data.task, data.label_names).
        threads: torch intra-op threads (None: leave as is).
    """

    def __init__(self, model, meta: dict[str, Any], threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.model, self.meta = model.eval(), meta

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float32, preprocessed -> (B, K) float32 probabilities."""
        import torch

        with torch.inference_mode():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        return probabilities(logits.float().numpy(), self.task)


def iter_classify_files(clf: Classifier, paths: Sequence[str | os.PathLike], batch_size: int = 64
                        ) -> Iterator[tuple[list[dict[str, Any]], list]]:
    """Classify image files ``batch_size`` at a time, so memory stays bounded however many there are.

    Yields, per batch in the given order: (results, loaded) as :func:`classify_files` returns them for that
    batch's files.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        errors: dict[int, str] = {}
        inputs, loaded, rows = [], [], []
        for i, path in enumerate(chunk):
            try:
                img = read_image(path)
            except ImageReadError as e:
                errors[i] = str(e)
                continue
            inputs.append(clf.preprocess(img))
            loaded.append((path, img))
            rows.append(i)
        described = describe(clf.predict_array(np.concatenate(inputs)), clf.task, clf.label_names) if inputs else []
        by_row = dict(zip(rows, described, strict=True))
        yield ([{"file": str(p), "error": errors[i]} if i in errors else {"file": str(p), **by_row[i]}
                for i, p in enumerate(chunk)], loaded)


def classify_files(clf: Classifier, paths: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], list]:
    """Classify image files; an unreadable file gets an error entry instead of a result. Holds every
    decoded image in ``loaded``: for many files use :func:`iter_classify_files`.

    Returns:
        (results, loaded): per path in the given order ``{"file", "label", "probs"}`` or
        ``{"file", "error"}``; and ``(path, image array)`` for each file that was read.
    """
    results, loaded = [], []
    for r, ld in iter_classify_files(clf, paths):
        results += r
        loaded += ld
    return results, loaded
