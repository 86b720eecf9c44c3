import pytest
import timm
import torch

import medlite

BASELINES = ["resnet18", "resnet50", "mobilenetv3_small_100", "efficientnet_b0", "vit_tiny_patch16_224"]


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("size", [28, 64])
def test_baseline_forward_any_size(name, size):
    model = medlite.create_model(name, num_classes=5, in_chans=1, img_size=size).eval()
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


def test_resnet_cifar_stem_at_28px():
    small = medlite.create_model("resnet18", num_classes=2, in_chans=3, img_size=28)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    big = medlite.create_model("resnet18", num_classes=2, in_chans=3, img_size=224)
    assert big.conv1.kernel_size == (7, 7)
    forced = medlite.create_model("resnet50", num_classes=2, in_chans=3, img_size=224, cifar_stem=True)
    assert forced.conv1.kernel_size == (3, 3)


def test_resnet18_matches_timm_parameter_count():
    ours = medlite.create_model("resnet18", num_classes=10, in_chans=3, img_size=224)
    ref = timm.create_model("resnet18", num_classes=10)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_backward(name):
    model = medlite.create_model(name, num_classes=3, in_chans=3, img_size=32)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError, match="resnet18"):
        medlite.create_model("resnet17")


def test_list_models_wildcards_family_and_pretrained_like_timm():
    import medlite

    assert medlite.list_models("res*") == ["resnet18", "resnet50"]
    assert medlite.list_models(["*lite0", "resnet18"]) == ["efficientnet_lite0", "medlitenet_lite0", "resnet18",
                                                           "unet_lite0"]
    assert medlite.list_models("medlit_*", family="medlit") == [n for n in medlite.list_models(family="medlit")
                                                                if n.startswith("medlit_")]
    assert medlite.list_models("nothing*") == []
    with_weights = medlite.list_models(pretrained=True)
    assert "litemedsam" in with_weights and "efficientnet_lite0" in with_weights and "resnet18" not in with_weights
    assert medlite.list_models() == sorted(medlite.list_models())
