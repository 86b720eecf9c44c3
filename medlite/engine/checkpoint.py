"""Self-describing checkpoints: safetensors weights + JSON metadata, written atomically.

A checkpoint is one ``.safetensors`` file. Its header metadata holds the JSON description (model name,
model options, preprocessing, label names, training config, metrics, medlite version), so the file alone
rebuilds the model; a human-readable copy of the JSON is written beside it (``<name>.json``). Loading
never unpickles anything: safetensors stores raw tensors and the metadata is plain JSON.

Resumable training state (optimizer moments, RNG state) is stored as extra tensors under the ``state.``
prefix in the same file, so weights and state can never disagree after a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from medlite.errors import MedliteError
from medlite.files import atomic_write
from medlite.record import META_KEY, RecordError, RunRecord

STATE_PREFIX = "state."


class CheckpointError(MedliteError, ValueError):
    """A checkpoint that cannot be read; the message names the file."""


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | dict[str, torch.Tensor],
    meta: dict[str, Any],
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` weights, ``meta`` and optional training ``state`` tensors atomically.

    Args:
        path: destination ``.safetensors`` file; a ``.json`` copy of ``meta`` is written beside it.
        model: a module (its ``state_dict`` is saved, DDP/compile wrappers unwrapped) or a state dict.
        meta: the run record (:class:`medlite.record.RunRecord` as a dict), validated before writing.
        state: extra tensors for resuming (optimizer moments, RNG), saved under ``state.<key>``.
    """
    path = Path(path)
    try:  # a checkpoint that could not be loaded again is refused when written, not when read
        meta = RunRecord.from_dict(meta, f"metadata for {path}").to_dict()
    except RecordError as e:
        raise CheckpointError(str(e)) from e
    sd = model if isinstance(model, dict) else unwrap(model).state_dict()
    tensors = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    for k, v in (state or {}).items():
        tensors[STATE_PREFIX + k] = v.detach().contiguous().cpu()
    # safetensors refuses tensors sharing memory; clone the (rare) aliases.
    seen: dict[int, str] = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[k] = v.clone()
        seen[ptr] = k
    text = json.dumps(meta, indent=2, default=_json_default)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: text}))
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint without unpickling.

    Returns:
        (weights, meta, state): model state dict, metadata dict, resumable-state tensors.
    """
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except Exception as e:  # safetensors raises several error types for truncated / foreign files
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file has no medlite metadata (not a medlite checkpoint)")
    try:
        meta = RunRecord.from_dict(json.loads(raw), str(path)).to_dict()  # validated; old layouts upgraded
    except (RecordError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from e
    weights = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}
    state = {k[len(STATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    return weights, meta, state


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder (its ``best.safetensors`` or MAE ``encoder.safetensors``, else
    ``last.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "encoder.safetensors", "model.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: run folder holds no best.safetensors / last.safetensors")
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    return p


def _build_registered(meta: dict[str, Any]) -> nn.Module:
    """The registered model a (validated) record names, with its recorded options."""
    from medlite.errors import ConfigError
    from medlite.registry import check_checkpoint_options, create_model

    m = meta["model"]
    try:
        check_checkpoint_options(m["name"], m.get("kwargs", {}), "run record")
    except KeyError as e:
        raise CheckpointError(f"model {m['name']!r} of this checkpoint is not registered in this medlite") from e
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    try:
        return create_model(m["name"], num_classes=m["num_classes"], in_chans=m["in_chans"],
                            img_size=m["img_size"], **m.get("kwargs", {}))
    except KeyError as e:
        raise CheckpointError(f"model {m['name']!r} of this checkpoint is not registered in this medlite") from e
    except (TypeError, ValueError) as e:  # recorded options the model's config rejects
        raise CheckpointError(f"options {m.get('kwargs', {})} do not build model {m['name']!r}: {e}") from e


# How each kind of run record becomes a module. Every kind is listed: a new kind must say how it loads.
BUILDERS = {"classifier": _build_registered, "segmentation": _build_registered,
            "promptable": _build_registered, "mae-encoder": _build_registered}


def build_model_from_meta(meta: dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) model a checkpoint's record describes, dispatching on its ``kind``."""
    kind = meta.get("kind")
    if kind not in BUILDERS:
        raise CheckpointError(f"cannot build a model of kind {kind!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[kind](meta)


def load_model(path: str | os.PathLike, strict: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a checkpoint file or run folder, in eval mode.

    Returns:
        (model, meta): meta is the validated run record (old layouts upgraded), with a ``kind``.
    """
    weights, meta, _ = read_checkpoint(path)
    try:
        model = build_model_from_meta(meta)
    except CheckpointError as e:
        raise CheckpointError(f"{resolve_checkpoint(path)}: {e}") from e
    if meta["kind"] == "mae-encoder":
        from medlite.models.mae import load_encoder_into

        load_encoder_into(model, weights)
        return model.eval(), meta
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{resolve_checkpoint(path)}: weights do not fit model '{meta['model']['name']}' "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model.eval(), meta


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON (everything else)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_state_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if not key.startswith("optim."):
            continue
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    # safetensors stores contiguous tensors; give moments the strides of their parameter again, since
    # fused / foreach optimizers assume both share one layout (channels-last models would be scrambled)
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)
