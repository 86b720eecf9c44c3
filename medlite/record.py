"""The run record: what every medlite checkpoint and exported model says about itself (torch-free).

One dataclass, written by every training task and read by ``load_model``, export, predict and evaluate,
which dispatch on its required ``kind``. It travels as flat JSON (safetensors header, ONNX
``metadata_props``, ``.pte.json`` sidecars)::

    {"medlite_version", "kind", "model", "preprocessing", "data", "train_config", "metrics", ...extra}

Metadata is data, never instructions: :meth:`RunRecord.from_dict` checks types and ranges before any
value reaches a model constructor, and upgrades the layouts medlite wrote before ``kind`` was required
(LiteSAM checkpoints with ``task: promptable-segmentation``, classifiers without ``kind``, MAE encoders
with ``pretrain_config``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from medlite.errors import MedliteError

META_KEY = "medlite"  # key of the JSON record in safetensors headers and ONNX metadata_props
KINDS = ("classifier", "segmentation", "promptable", "mae-encoder")
# What a person runs for each kind (used in errors when a command gets the wrong kind of model).
COMMANDS = {"classifier": "medlite predict / evaluate / export", "segmentation": "medlite seg predict / evaluate",
            "promptable": "medlite sam predict / evaluate / export",
            "mae-encoder": "medlite train MODEL --init (fine-tune it first)"}
_TOP = ("medlite_version", "kind", "model", "preprocessing", "data", "train_config", "metrics")
_JSON_SCALARS = (str, int, float, bool, type(None))


class RecordError(MedliteError, ValueError):
    """Metadata that is not a valid medlite run record; the message names the source and the field."""


@dataclass
class RunRecord:
    """The self-description of a trained model."""

    kind: str  # one of KINDS: classifier, segmentation, promptable, mae-encoder
    model: dict[str, Any]  # name (registry), num_classes, in_chans, img_size (px), kwargs (create_model options)
    preprocessing: dict[str, Any]  # size (px), channels, mean, std (+ mode, normalise, threshold, postprocess)
    data: dict[str, Any] = field(default_factory=dict)  # name, task and label_names (classifiers), sizes, ...
    train_config: dict[str, Any] | None = None  # the task's config dataclass as a dict
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"val": {"auc": ...}, "test": {...}}
    medlite_version: str = ""  # version that wrote the record
    extra: dict[str, Any] = field(default_factory=dict)  # epoch, compress, export, optimizer, resume, ...

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON layout stored with the weights."""
        out = {"medlite_version": self.medlite_version or _version(), "kind": self.kind, "model": self.model,
               "preprocessing": self.preprocessing, "data": self.data, "train_config": self.train_config,
               "metrics": self.metrics}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, meta: dict[str, Any], source: str = "metadata") -> RunRecord:
        """Validate (and upgrade a legacy layout of) ``meta``; raises RecordError naming ``source``."""
        if not isinstance(meta, dict):
            raise RecordError(f"{source}: medlite metadata is {type(meta).__name__}, not a JSON object")
        m = upgrade(meta, source)
        rec = cls(kind=m["kind"], model=m["model"], preprocessing=m["preprocessing"], data=m.get("data") or {},
                  train_config=m.get("train_config"), metrics=m.get("metrics") or {},
                  medlite_version=str(m.get("medlite_version", "")),
                  extra={k: v for k, v in m.items() if k not in _TOP})
        rec.validate(source)
        return rec

    def validate(self, source: str = "metadata") -> None:
        if self.kind not in KINDS:
            raise RecordError(f"{source}: unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        model, pre = _section(self.model, "model", source), _section(self.preprocessing, "preprocessing", source)
        if not isinstance(model.get("name"), str) or not model["name"]:
            raise RecordError(f"{source}: model.name must be a registered model name, got {model.get('name')!r}")
        for key in ("num_classes", "in_chans", "img_size"):
            _positive_int(model.get(key), f"model.{key}", source)
        kwargs = model.get("kwargs", {})
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) and _is_json_value(v) for k, v in kwargs.items()):
            raise RecordError(f"{source}: model.kwargs must map option names to JSON values")
        _positive_int(pre.get("size"), "preprocessing.size", source)
        _positive_int(pre.get("channels"), "preprocessing.channels", source)
        for key in ("mean", "std"):
            v = pre.get(key)
            if not (isinstance(v, list) and v and all(isinstance(x, int | float) and not isinstance(x, bool)
                                                         for x in v)):
                raise RecordError(f"{source}: preprocessing.{key} must be a non-empty list of numbers, got {v!r}")
        if any(s <= 0 for s in pre["std"]):
            raise RecordError(f"{source}: preprocessing.std must be positive, got {pre['std']}")
        if self.kind == "classifier":
            names, task = self.data.get("label_names"), self.data.get("task")
            if not isinstance(task, str) or not isinstance(names, list):
                raise RecordError(f"{source}: a classifier's record needs data.task and data.label_names")
            if len(names) != model["num_classes"]:
                raise RecordError(f"{source}: {len(names)} label names for a model with {model['num_classes']} "
                                  "outputs")


def upgrade(meta: dict[str, Any], source: str = "metadata") -> dict[str, Any]:
    """A deep copy of ``meta`` in the current layout (records written before ``kind`` was required)."""
    m = copy.deepcopy(meta)
    if "kind" not in m:
        if m.get("task") == "promptable-segmentation":  # LiteSAM checkpoints before the one loop
            m["kind"] = "promptable"
            m.pop("task")
            m["train_config"] = m.pop("train", None)
        elif isinstance(m.get("data"), dict) and "label_names" in m["data"]:
            m["kind"] = "classifier"
        else:
            raise RecordError(f"{source}: metadata has no 'kind' and is not a layout medlite wrote before "
                              "(neither a LiteSAM nor a classifier record)")
    if m["kind"] == "mae-encoder" and "pretrain_config" in m:  # MAE encoders before the one loop
        m["train_config"] = m.pop("pretrain_config")
        m.setdefault("data", {})["n_images"] = m.pop("n_images", None)
    for key in ("model", "preprocessing"):
        if key not in m:
            raise RecordError(f"{source}: metadata lacks '{key}'")
    return m


def require_kind(meta: dict[str, Any], kinds: tuple[str, ...] | str, source: str, command: str) -> None:
    """Raise a RecordError saying which command fits when ``meta`` is not of one of ``kinds``."""
    kinds = (kinds,) if isinstance(kinds, str) else kinds
    kind = meta.get("kind")
    if kind not in kinds:
        raise RecordError(f"{source} holds a {kind} model; `{command}` needs a {' or '.join(kinds)} model "
                          f"(for this one use {COMMANDS.get(kind, 'another command')})")


def parse(text: str, source: str) -> dict[str, Any]:
    """A record from its JSON text (an ONNX or safetensors header), validated and upgraded."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{source}: medlite metadata is not valid JSON ({e})") from e
    return RunRecord.from_dict(raw, source).to_dict()


def _version() -> str:
    from medlite import __version__

    return __version__


def _section(v: Any, name: str, source: str) -> dict:
    if not isinstance(v, dict):
        raise RecordError(f"{source}: '{name}' must be a JSON object, got {type(v).__name__}")
    return v


def _positive_int(v: Any, name: str, source: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise RecordError(f"{source}: {name} must be a positive integer, got {v!r}")


def _is_json_value(v: Any) -> bool:
    if isinstance(v, _JSON_SCALARS):
        return True
    if isinstance(v, list | tuple):
        return all(_is_json_value(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_json_value(x) for k, x in v.items())
    return False
