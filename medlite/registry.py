"""One registry for every model medlite can build (the timm way).

A variant is a module-level factory ``fn(num_classes: int, in_chans: int, img_size: int, **kwargs) ->
nn.Module`` decorated with :func:`register_model`; the function's name is the model name, so grepping a
model name finds its ``def``.  ``medlite.models`` imports every model module; the registry imports
``medlite.models`` on first use, so ``import medlite`` stays cheap and side-effect free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from torch import nn

from medlite.errors import ConfigError, UnknownModelError


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
    pretrained: str = ""  # name of the medlite.weights entry the factory loads with pretrained=True; "" = none
    licence: str = "Apache-2.0 (code)"
    intended_use: str = "research; not a medical device"
    # the keyword options a checkpoint's run record may pass to the factory (an allow-list: metadata is data,
    # not instructions); None = the factory's named parameters only
    options: tuple[str, ...] | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelCard]] = {}
_loaded = False


def register_model(card: ModelCard) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` under its own name, which must be ``card.name``.

    Raises:
        ValueError: the function's name differs from the card's, or another function has that name.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ != card.name:
            raise ValueError(f"a model is registered under its function's name; the card says '{card.name}' "
                             f"but the function is '{fn.__name__}'")
        if card.name in _REGISTRY and _REGISTRY[card.name][0] is not fn:
            raise ValueError(f"model '{card.name}' is registered twice")
        _REGISTRY[card.name] = (fn, card)
        return fn

    return deco


def _load_all() -> None:
    """Import the model modules (they register their variants) on first use of the registry."""
    global _loaded
    if not _loaded:
        import medlite.models  # noqa: F401  (registers every model; imports torch, timm)

        _loaded = True


def list_models(filter: str | Sequence[str] = "", family: str | None = None, pretrained: bool = False
                ) -> list[str]:
    """Names of the registered models, sorted, as timm's ``list_models``.

    Args:
        filter: shell-style wildcard(s), e.g. ``"medlit*"`` or ``["res*", "*lite0"]`` ("" = all).
        family: only this family (baseline, medlit, medlitenet, litesam).
        pretrained: only models with ready weights (``create_model(name, pretrained=True)`` works).
    """
    import fnmatch

    _load_all()
    patterns = [filter] if isinstance(filter, str) else list(filter)
    names = [n for n, (_, c) in _REGISTRY.items() if (family is None or c.family == family)
             and (not any(patterns) or any(fnmatch.fnmatchcase(n, p) for p in patterns if p))]
    if pretrained:
        names = [n for n in names if _REGISTRY[n][1].pretrained]
    return sorted(names)


def model_card(name: str) -> ModelCard:
    """The card of a registered model; KeyError naming the known models for an unknown name."""
    _load_all()
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _REGISTRY[name][1]


_FIXED = ("num_classes", "in_chans", "img_size", "pretrained")  # given by the record's own fields, or never


def checkpoint_options(name: str) -> frozenset[str]:
    """Option names a run record may give ``name``'s factory: the card's ``options``, else the factory's
    named keyword parameters (never ``pretrained``, nor ``**kwargs`` that a factory forwards to timm / MONAI)."""
    import inspect

    card = model_card(name)
    if card.options is not None:
        return frozenset(card.options) - set(_FIXED)
    params = inspect.signature(_REGISTRY[name][0]).parameters.values()
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) - set(_FIXED)


def check_checkpoint_options(name: str, kwargs: dict, source: str = "checkpoint") -> None:
    """Refuse recorded options that ``name`` does not declare, and strings that name a path or a hub
    (``hf-hub:...``, ``a/b``): loading a checkpoint must never open another file or the network."""
    allowed = checkpoint_options(name)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"{source}: option(s) {unknown} are not options of model '{name}' a checkpoint may set "
                          f"(allowed: {', '.join(sorted(allowed)) or 'none'})")

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, list | tuple):
            for x in v:
                yield from strings(x)
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)

    for key, value in kwargs.items():
        for text in strings(value):
            if any(c in text for c in ":/\\") or text.startswith("."):
                raise ConfigError(f"{source}: option {key}={text!r} looks like a path or a hub reference; "
                                  "checkpoint options may only name built-in choices")


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered factory function of ``name`` (its ``__name__`` is ``name``); KeyError if unknown."""
    model_card(name)
    return _REGISTRY[name][0]


def create_model(
    name: str, num_classes: int = 2, in_chans: int = 3, img_size: int | None = None, pretrained: bool = False,
    **kwargs
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        num_classes: number of output logits.
        in_chans: input channels (1 for grey, 3 for colour).
        img_size: input side length in pixels; ``None`` takes the model card's default.
        pretrained: start from the weights the model card names (``card.pretrained``; from the package its
            extra installs, converted once and cached: see :mod:`medlite.weights`). With a model-zoo name
            (``medlite models`` lists them, e.g. ``medlit_nano_28_dermamnist``) it loads those weights, and
            the architecture, classes and channels are the weights' own (the other arguments are ignored).
        **kwargs: model-specific options (documented on each factory).

    Returns:
        an ``nn.Module`` mapping (B, in_chans, img_size, img_size) float32 to (B, num_classes) logits.
    """
    _load_all()
    if name not in _REGISTRY:
        from medlite import zoo  # zoo weights by name; imported here, not at module level (it reads files)

        if zoo.has(name):
            entry = zoo.get(name)
            if not pretrained:
                raise ConfigError(f"'{name}' names weights of the model zoo: create_model('{name}', pretrained=True) "
                                  f"loads them; create_model('{entry.model}') builds the untrained architecture")
            return zoo.load(name)[0]  # architecture, classes and channels are those the weights were trained with
    card = model_card(name)
    fn = _REGISTRY[name][0]
    size = card.default_size if img_size is None else int(img_size)
    if pretrained and not card.pretrained:
        from medlite import zoo

        with_weights = [n for n in list_models() if _REGISTRY[n][1].pretrained]
        trained = zoo.for_model(name)
        hint = (f"; its trained weights in the model zoo: {', '.join(trained)} (create_model(NAME, pretrained=True), "
                "or `medlite train ... --init NAME` to fine-tune)" if trained else "")
        raise ConfigError(f"'{name}' has no pretrained weights of its own (models with weights: "
                          f"{', '.join(with_weights)}){hint}")
    if pretrained:
        kwargs["pretrained"] = True  # the factory loads card.pretrained and adapts it (channels, classes)
    model = fn(num_classes=num_classes, in_chans=in_chans, img_size=size, **kwargs)
    model.medlite_name = name  # lets checkpoints record what built the model
    return model
