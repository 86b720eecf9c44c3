"""The ONNX graphs a server runs, made once per weights file and kept in a cache folder.

A promptable model becomes ``<cache>/onnx/<name>-<sha12>/{encoder,decoder}.onnx`` (``medlite sam export``'s
layout); a classifier becomes ``<cache>/onnx/<name>-<sha12>.onnx`` with the attention-rollout heat map as
a second output where the model has attention maps. ``sha12`` is the start of the SHA-256 of the weights
file (or of the zoo entry's recorded hash), so new weights never reuse an old export. Exports are written
into a temporary folder and moved into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from medlite.files import sha256_file

log = logging.getLogger(__name__)


def weights_key(spec: str) -> str:
    """A short content key of the weights behind ``spec`` (zoo name, checkpoint file or run folder)."""
    from medlite import zoo

    p = Path(spec)
    if not p.exists() and zoo.has(spec):
        e = zoo.get(spec)
        return (e.sha256 or hashlib.sha256(f"{e.package}:{e.model}".encode()).hexdigest())[:12]
    if p.is_dir():
        p = next((p / n for n in ("best.safetensors", "last.safetensors") if (p / n).is_file()), p)
    if not p.is_file():
        raise FileNotFoundError(f"{spec}: no zoo name, checkpoint or run folder")
    return sha256_file(p)[:12]


def onnx_cache(cache: str | os.PathLike | None = None) -> Path:
    from medlite.weights import cache_dir

    return cache_dir(cache) / "onnx"


def export_sam_cached(model, meta: dict, name: str, key: str, cache: str | os.PathLike | None = None) -> Path:
    """The folder of ``model``'s two graphs in the cache, exported (parity-checked) the first time."""
    from medlite.export.sam_onnx import export_litesam
    from medlite.export.sam_runtime import is_sam_folder

    dest = onnx_cache(cache) / f"{name}-{key}"
    if is_sam_folder(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        log.info("exporting %s to ONNX (once; cached in %s)", name, dest)
        export_litesam(model, meta, tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def export_classifier_cached(model, meta: dict, name: str, key: str, cache: str | os.PathLike | None = None
                             ) -> Path:
    """The ``.onnx`` file of a classifier in the cache (with a heat map output where the model has attention
    maps), exported (parity-checked) the first time."""
    from medlite.export.onnx import export_onnx

    dest = onnx_cache(cache) / f"{name}-{key}.onnx"
    if not dest.is_file():
        log.info("exporting %s to ONNX (once; cached in %s)", name, dest)
        export_onnx(model, meta, dest, explain=hasattr(model, "attention_maps"))  # written atomically
    return dest
