"""Teacher image embeddings for encoder distillation, computed once per image and cached on disk.

The real LiteMedSAM encoder takes 2-3 s per 256 px image on one CPU core, far too slow to run at every
training step. :func:`cache_embeddings` runs it once per case (un-augmented, letterboxed and min-max
normalised exactly as training sees it) and writes one float16 safetensors file per case, atomically, so an
interrupted run resumes where it stopped; :func:`load_embeddings` stacks them in the order of a split.

Layout: ``<cache>/<teacher>-<img_size>/<dataset>/<case>.safetensors``, where ``<teacher>`` names the weights
(a registered model with pretrained weights, or a checkpoint's file stem and hash) and ``<dataset>`` the data
spec. Only the splits a run trains and validates on are cached; test splits are never read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import torch

from medlite.data.segmentation import SegSplit
from medlite.errors import ConfigError
from medlite.files import atomic_write
from medlite.models.litesam.predictor import normalise

log = logging.getLogger(__name__)


def load_teacher(spec: str) -> tuple[torch.nn.Module, str]:
    """(teacher model in eval mode, its cache name): a checkpoint / run folder, or a registered model
    with pretrained weights (e.g. ``litemedsam``)."""
    import medlite
    from medlite.engine.checkpoint import load_model

    if not Path(spec).exists():
        try:
            card = medlite.model_card(spec)
        except KeyError as e:
            raise ConfigError(f"teacher {spec!r} is neither a checkpoint nor a registered model") from e
        if not card.pretrained:
            raise ConfigError(f"teacher {spec!r} has no pretrained weights; give a trained checkpoint")
        model = medlite.create_model(spec, num_classes=1, pretrained=True)
        name = spec
    else:
        model, _ = load_model(spec)
        name = teacher_name(spec)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), name


def teacher_name(spec: str) -> str:
    """The cache name of a teacher spec (without loading it): the model name, or checkpoint stem + hash."""
    from medlite.engine.checkpoint import resolve_checkpoint
    from medlite.files import sha256_file

    if not Path(spec).exists():
        return spec
    path = resolve_checkpoint(spec)
    return f"{path.stem}-{sha256_file(path)[:10]}"


def dataset_folder(spec: str) -> str:
    """A file-system-safe, unique folder name for a dataset spec ("busi", "folder:/data/hc18", ...)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec.split(":", 1)[-1]).name or spec)
    return f"{base}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _case_file(folder: Path, name: str) -> Path:
    return folder / (re.sub(r"[/\\]", "_", name) + ".safetensors")


@torch.no_grad()
def cache_embeddings(teacher: torch.nn.Module, split: SegSplit, folder: str | os.PathLike,
                     progress=None) -> int:
    """Write the teacher embedding of every case of ``split`` missing from ``folder``; returns how many.

    Args:
        teacher: a LiteSAM-family model (its ``forward_features(x).embedding``).
        split: letterboxed cases (images (N, 3, S, S) uint8, names).
        progress: optional callable ``progress(done, total)``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i, n in enumerate(split.names) if not _case_file(folder, n).is_file()]
    for k, i in enumerate(todo):
        emb = teacher.forward_features(normalise(split.images[i:i + 1])).embedding[0].half().contiguous()
        atomic_write(_case_file(folder, split.names[i]), lambda tmp, emb=emb: save_file({"embedding": emb}, tmp))
        if progress is not None:
            progress(k + 1, len(todo))
    return len(todo)


def load_embeddings(folder: str | os.PathLike, names: list[str]) -> torch.Tensor:
    """(N, E, h, w) float16 embeddings of ``names`` in order; a ConfigError lists cases not cached."""
    from safetensors.torch import load_file

    folder = Path(folder)
    missing = [n for n in names if not _case_file(folder, n).is_file()]
    if missing:
        raise ConfigError(f"{folder}: no cached teacher embedding for {len(missing)} of {len(names)} cases "
                          f"(e.g. {missing[:3]}); compute them with `medlite sam cache-teacher`")
    return torch.stack([load_file(str(_case_file(folder, n)))["embedding"] for n in names])
