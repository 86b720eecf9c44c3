"""The metadata an exported model carries, and its validation (numpy-free, torch-free).

An exported file is self-describing: the checkpoint's ``meta`` dict (model name and options,
preprocessing, task, label names, metrics, medlite version) travels with it, plus an ``export`` entry
(format, opset, exporter, quantization). ONNX files store it as JSON under the ``medlite`` key of
``metadata_props``; ExecuTorch ``.pte`` files in a JSON sidecar ``<file>.pte.json``.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from medlite.errors import MedliteError, ModelFileError  # noqa: F401  (ModelFileError: re-exported)
from medlite.record import META_KEY, RecordError, RunRecord  # noqa: F401  (META_KEY: used by the runtime)

TASKS = ("binary", "multi-class", "ordinal", "multi-label")


class ExportError(MedliteError, RuntimeError):
    """An export that failed or does not reproduce the PyTorch model; the message says which and why."""


def validate_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Check that ``meta`` is a run record a deployed model can use and return a JSON-safe deep copy.

    Every kind needs ``model`` (name, num_classes, in_chans, img_size) and ``preprocessing`` (size,
    channels, mean, std); classifiers also ``data`` (task, label_names with one name per output) and a
    known task. Records written before ``kind`` was required are upgraded (see :mod:`medlite.record`).

    Raises:
        ExportError: a missing or inconsistent entry (named in the message).
    """
    try:
        out = json.loads(json.dumps(meta, default=_jsonable))
    except (TypeError, ValueError) as e:
        raise ExportError(f"meta is not JSON serialisable: {e}") from e
    try:
        out = RunRecord.from_dict(out, "meta").to_dict()
    except RecordError as e:
        raise ExportError(f"{e}; export needs a checkpoint's meta") from e
    if out["kind"] == "classifier" and task_kind(out["data"]["task"]) not in TASKS:
        raise ExportError(f"unknown task '{out['data']['task']}'; expected one of {TASKS}")
    return out


def task_kind(task: str) -> str:
    """MedMNIST-style task strings to one of :data:`TASKS` ("multi-label, binary-class" -> "multi-label")."""
    t = task.lower().strip()
    if t.startswith("multi-label"):
        return "multi-label"
    if t.startswith("ordinal"):
        return "ordinal"
    if t.startswith("binary"):
        return "binary"
    if t.startswith("multi-class"):
        return "multi-class"
    return t


def with_export_info(meta: dict[str, Any], **info: Any) -> dict[str, Any]:
    """A copy of ``meta`` whose ``export`` entry is updated with ``info``."""
    out = copy.deepcopy(meta)
    out.setdefault("export", {}).update(info)
    return out


def default_meta(
    name: str,
    num_classes: int = 2,
    in_chans: int = 1,
    img_size: int | None = None,
    task: str = "multi-class",
    label_names: list[str] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A classifier meta for a registry model that has no checkpoint (benchmarks, tests).

    Preprocessing comes from the model card (mean / std repeated to ``in_chans``).
    """
    from medlite import __version__
    from medlite.registry import model_card

    card = model_card(name)
    size = card.default_size if img_size is None else int(img_size)
    mean, std = list(card.mean), list(card.std)
    if len(mean) == 1:
        mean, std = mean * in_chans, std * in_chans
    return {
        "medlite_version": __version__,
        "kind": "classifier",
        "model": {"name": name, "num_classes": num_classes, "in_chans": in_chans, "img_size": size,
                  "kwargs": dict(kwargs or {})},
        "preprocessing": {"size": size, "channels": in_chans, "mean": mean[:in_chans], "std": std[:in_chans]},
        "data": {"name": "untrained", "task": task,
                 "label_names": label_names or [f"class_{i}" for i in range(num_classes)]},
    }


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)  # paths and other plain objects


def write_onnx_meta(path, meta: dict[str, Any]) -> None:
    """Store ``meta`` as JSON under ``metadata_props['medlite']`` of an ONNX file (rewritten atomically)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    props = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta, default=_jsonable))
    m, d = meta.get("model", {}), meta.get("data", {})
    proto.doc_string = (f"medlite {m.get('name', '?')} classifier, task {d.get('task', '?')}, "
                        f"labels {d.get('label_names', '?')}; preprocessing in metadata_props['{META_KEY}']")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_onnx_meta(path) -> dict[str, Any]:
    """The medlite meta stored in an ONNX file (with the ``onnx`` package; no torch, no onnxruntime).

    Raises:
        ModelFileError: unreadable file, or no medlite metadata in it.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError
        raise ModelFileError(f"{path}: not a readable ONNX file ({e})") from e
    for p in proto.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    raise ModelFileError(f"{path}: ONNX file has no '{META_KEY}' metadata (not exported by medlite)")
