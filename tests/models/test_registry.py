"""The registry, the timm way: every registered model is a ``def`` of that name, and every one builds as a
tiny variant that runs forward and backward (right output shape, a finite gradient for every parameter)."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch

import medlite
from medlite.data.prompts import LABEL_BOX_BR, LABEL_BOX_TL, LABEL_NEG, LABEL_PAD, LABEL_POS
from medlite.registry import ModelCard, model_entrypoint, register_model

_LITESAM = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), heads=(1, 1, 1, 1), embed_dim=32, decoder_heads=2,
                decoder_mlp_dim=32)  # as tests/litesam_tiny.py
# top_k=5 >= every layer's expert count: each token uses every expert, so each expert's slice of the stacked
# weights gets a non-zero gradient (with top-2 a tiny batch may route no token to some expert).
_MEDLIT = dict(embed_dim=24, depth=3, expert_hidden_start=8, expert_hidden_end=4, top_k=5)
_MEDLITENET = dict(bottleneck_dim=16, transformer_dim=16, transformer_depth=1, transformer_heads=2, aspp_branch=8,
                   decoder_dims=(16, 8, 8, 8))
# name -> (img_size, kwargs) of its tiny variant. A new model needs an entry (test_every_model_has_a_tiny_variant).
TINY: dict[str, tuple[int, dict]] = {
    "resnet18": (32, {}),
    "resnet50": (32, {}),
    "mobilenetv3_small_100": (32, {}),
    "efficientnet_b0": (32, {}),
    "efficientnet_lite0": (64, {}),  # at 32 px stages 5-6 are 1 x 1: a batch of 2 gives BN exact zero grads
    "efficientnet_lite2": (64, {}),
    "vit_tiny_patch16_224": (32, {"depth": 2}),
    "medlit_seed": (32, _MEDLIT),
    "medlit_nano": (32, _MEDLIT),
    "medlit_seed_28": (28, _MEDLIT),
    "medlit_nano_28": (28, _MEDLIT),
    "medlitenet": (64, _MEDLITENET),
    "medlitenet_nobaa": (64, _MEDLITENET),
    "medlitenet_r18": (64, _MEDLITENET),
    "unet": (64, {"channels": (4, 8, 8, 8, 8), "num_res_units": 1}),
    "medlitenet_lite0": (64, _MEDLITENET),  # the encoder is the full EfficientNet-Lite0 (as efficientnet_lite0)
    "medlitenet_lite0_s4": (64, {**_MEDLITENET, "decoder_dims": (16, 8, 8)}),
    "unet_lite0": (64, {"decoder_channels": (16, 8, 8, 8, 8)}),
    "litesam_swin_t": (64, _LITESAM),
    "litesam_swin_xs": (64, _LITESAM),
    "litemedsam": (64, {**_LITESAM, "windows": (7, 7, 7, 7)}),
    "litemedsam_xs": (64, _LITESAM),
    "litesam_swin_xs_md": (64, _LITESAM),
    "litesam_swin_xs_md8": (64, _LITESAM),
    "litesam_lite0_md8": (64, {"embed_dim": 32, "decoder_heads": 2, "decoder_mlp_dim": 32}),  # full Lite0 encoder
}
NUM_CLASSES = {"classification": 3, "segmentation": 2, "promptable-segmentation": 1}


def test_every_model_has_a_tiny_variant():
    assert set(TINY) == set(medlite.list_models())


@pytest.mark.parametrize("name", medlite.list_models())
def test_registered_name_is_a_def_of_that_name(name):
    fn = model_entrypoint(name)
    assert fn.__name__ == name and fn.__module__.startswith("medlite.models.")
    assert getattr(sys.modules[fn.__module__], name) is fn  # a module-level function, not a closure
    assert f"def {name}(" in inspect.getsource(fn)  # so grepping the model name finds its definition
    assert medlite.model_card(name).name == name


def test_register_checks_the_name():
    card = ModelCard("registry_test_model", "test", "classification", "never registered")
    with pytest.raises(ValueError, match="registry_test_model"):

        @register_model(card)
        def some_other_name(num_classes: int, in_chans: int, img_size: int):
            return torch.nn.Linear(in_chans, num_classes)

    assert "registry_test_model" not in medlite.list_models()
    with pytest.raises(ValueError, match="twice"):

        @register_model(ModelCard("resnet18", "baseline", "classification", "a second resnet18"))
        def resnet18(num_classes: int, in_chans: int, img_size: int):
            return torch.nn.Linear(in_chans, num_classes)


def test_unknown_name_is_a_key_error_naming_the_known_models():
    for call in (medlite.create_model, medlite.model_card, model_entrypoint):
        with pytest.raises(KeyError, match="unknown model 'resnet17'.*litesam_swin_xs"):
            call("resnet17")


def _prompts(b: int, s: int) -> tuple[torch.Tensor, ...]:
    """Every prompt label once per image; a dense prompt on image 0 only, so every prompt embedding is used."""
    coords = torch.tensor([[[10.0, 12.0], [40.0, 44.0], [20.0, 20.0], [30.0, 8.0], [0.0, 0.0]]]).expand(b, -1, -1)
    labels = torch.tensor([[LABEL_BOX_TL, LABEL_BOX_BR, LABEL_POS, LABEL_NEG, LABEL_PAD]]).float().expand(b, -1)
    dense = torch.zeros(b, 1, s, s)
    dense[:, :, 20:24, 20:30] = 1.0
    return coords, labels, dense, (torch.arange(b) == 0).float()


def _unzero_residual_norms(model: torch.nn.Module) -> None:
    """Set to 1 every norm scale that is initialised to exactly 0.

    timm zero-initialises the last BatchNorm scale of each residual branch (ResNet blocks, TinyViT's MBConv),
    so at init the branch is the identity and the gradients of its layers before that scale are exactly 0:
    connected, but indistinguishable from dead parameters. With the scales at 1 an all-zero gradient means
    a parameter that does not reach the output.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.weight is not None and not m.weight.any():
            torch.nn.init.ones_(m.weight)


@pytest.mark.parametrize("name", medlite.list_models())
def test_tiny_forward_backward(name):
    card = medlite.model_card(name)
    size, kwargs = TINY[name]
    k = NUM_CLASSES[card.task]
    torch.manual_seed(0)
    model = medlite.create_model(name, num_classes=k, in_chans=3, img_size=size, **kwargs).train()
    _unzero_residual_norms(model)
    x = torch.rand(2, 3, size, size)
    if card.task == "classification":
        out = model(x)
        assert out.shape == (2, k)
        loss = out.logsumexp(-1).mean()
    elif card.task == "segmentation":
        out = model(x)
        assert out.shape == (2, k, size, size)
        loss = out.pow(2).mean()
    else:
        out, iou = model(x, *_prompts(2, size))
        m = model.cfg.num_mask_tokens  # one mask per mask token (LiteMedSAM: 3 multimask + 1); mask 0 answers
        assert out.shape == (2, m, size, size) and iou.shape == (2, m)
        assert torch.isfinite(iou).all()
        loss = out.mean() + iou.mean()
    assert torch.isfinite(out).all()
    if hasattr(model, "aux_loss"):  # MoE load balancing: the router's noise projection learns only from it
        loss = loss + model.aux_loss()
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"
