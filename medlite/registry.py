"""One registry for every model medlite can build.

A model is registered with :func:`register_model` on a factory function
``fn(num_classes: int, in_chans: int, img_size: int, **kwargs) -> nn.Module``.  The factory's module is
imported lazily by :func:`create_model`, so ``import medlite`` stays cheap and side-effect free.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn

# Modules that register models when imported. Imported on first use of the registry, never at import.
_MODEL_MODULES = ("medlite.models.baselines", "medlite.models.medlit", "medlite.models.medlitenet",
                  "medlite.models.litesam")


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to know about a registered model before using it."""

    name: str  # registry name, e.g. "resnet18"
    family: str  # "baseline", "medlit", "segmentation", ...
    task: str  # "classification" or "segmentation"
    description: str  # one line
    default_size: int = 28  # input side length in pixels the variant is designed for
    mean: tuple[float, ...] = (0.5,)  # per-channel normalisation mean (repeated to in_chans)
    std: tuple[float, ...] = (0.5,)  # per-channel normalisation std
    weights: str = "none (trained by medlite)"  # where pretrained weights come from
    licence: str = "Apache-2.0 (code)"
    intended_use: str = "research; not a medical device"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelCard]] = {}
_loaded = False


def register_model(card: ModelCard) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` under ``card.name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if card.name in _REGISTRY and _REGISTRY[card.name][0] is not fn:
            raise ValueError(f"model '{card.name}' is registered twice")
        _REGISTRY[card.name] = (fn, card)
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _MODEL_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a model family not written yet must not break the others
            if e.name != mod:
                raise
    _loaded = True


def list_models(family: str | None = None) -> list[str]:
    """Names of all registered models, optionally of one family, sorted."""
    _load_all()
    return sorted(n for n, (_, c) in _REGISTRY.items() if family is None or c.family == family)


def model_card(name: str) -> ModelCard:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _REGISTRY[name][1]


def create_model(
    name: str, num_classes: int = 2, in_chans: int = 3, img_size: int | None = None, **kwargs
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: number of output logits.
        in_chans: input channels (1 for grey, 3 for colour).
        img_size: input side length in pixels; ``None`` takes the model card's default.
        **kwargs: model-specific options (documented on each factory).

    Returns:
        an ``nn.Module`` mapping (B, in_chans, img_size, img_size) float32 to (B, num_classes) logits.
    """
    card = model_card(name)
    fn = _REGISTRY[name][0]
    size = card.default_size if img_size is None else int(img_size)
    model = fn(num_classes=num_classes, in_chans=in_chans, img_size=size, **kwargs)
    model.medlite_name = name  # lets checkpoints record what built the model
    return model
