import pytest
import timm
import torch

import medlite
from medlite.models.medlit import MedLiT, MedLiTConfig

VARIANTS = ["medlit_seed", "medlit_nano", "medlit_seed_28", "medlit_nano_28"]
# Tiny versions of each variant: same structure (stages, GQA 6/3, MoE), small width and input.
TINY = dict(embed_dim=24, depth=3, expert_hidden_start=8, expert_hidden_end=4)
TINY_SIZE = {"medlit_seed": 32, "medlit_nano": 32, "medlit_seed_28": 28, "medlit_nano_28": 28}


def tiny(name: str, **kw) -> MedLiT:
    return medlite.create_model(name, num_classes=3, in_chans=1, img_size=TINY_SIZE[name], **{**TINY, **kw})


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_backward_all_parameters(name):
    torch.manual_seed(0)
    # top_k=5 >= every layer's expert count, so each token uses every expert and every expert's W slice
    # receives gradient; with top-2 routing a tiny batch may leave an expert unused (its slice of the
    # stacked W gets an all-zero, but still non-None, gradient).
    model = tiny(name, top_k=5).train()
    x = torch.randn(4, 1, TINY_SIZE[name], TINY_SIZE[name])
    logits = model(x)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    aux = model.aux_loss()
    assert aux.ndim == 0 and torch.isfinite(aux)
    (logits.logsumexp(-1).mean() + aux).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    h = model.blocks[0].moe.hidden
    w_grad = model.blocks[0].moe.w.weight.grad.view(-1, h, 24)
    assert (w_grad.abs().sum(dim=(1, 2)) > 0).all()  # every expert's gate projection learned something


def test_top2_training_aux_loss_positive_and_router_stats():
    torch.manual_seed(0)
    model = tiny("medlit_seed_28").train()  # experts 3/4/5 at top-2: smooth, noisy load estimate
    x = torch.randn(8, 1, 28, 28)
    logits = model(x)
    aux = model.aux_loss()
    assert torch.isfinite(aux) and aux > 0
    (logits.sum() + aux).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    stats = model.router_stats()
    assert [s.shape[0] for s in stats] == model.cfg.experts() == [3, 4, 5]
    for s in stats:
        torch.testing.assert_close(s.sum(), torch.tensor(2.0))  # fractions of tokens, k = 2 per token
    model.eval()
    assert model.aux_loss().item() == 0.0


def test_contract_shapes_and_attention_maps():
    model = tiny("medlit_nano_28").eval()
    x = torch.randn(2, 1, 28, 28)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 1 + 49, 24)  # 4x4 patches at 28 px: 7x7 tokens + cls
    torch.testing.assert_close(model.forward_head(tokens), model(x))
    assert model.forward_head(tokens, pre_logits=True).shape == (2, 24)
    maps = model.attention_maps(x)
    assert len(maps) == model.cfg.depth
    for a in maps:
        assert a.shape == (2, 6, 50, 50)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 6, 50))
    # the explicit-attention path gives the same tokens as the SDPA path
    torch.testing.assert_close(model.forward_features(x, return_attn=True)[0], tokens, atol=1e-5, rtol=1e-5)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)


def test_config_published_seed_schedule_and_overrides():
    cfg = MedLiTConfig()
    assert cfg.stages == (3, 3, 3)
    assert cfg.experts() == [3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert cfg.expert_hidden() == [81, 74, 67, 60, 54, 47, 40, 33, 27]
    model = medlite.create_model("medlit_seed", num_classes=5, in_chans=1, img_size=64, **TINY)
    assert model.cfg.stages == (1, 1, 1) and model.cfg.img_size == 64 and model.pos_embed.shape[1] == 17
    with pytest.raises(TypeError, match="unknown MedLiT option"):
        medlite.create_model("medlit_seed", widht=3)
    with pytest.raises(ValueError, match="sum to depth"):
        MedLiTConfig(depth=4, stages=(1, 1, 1))


# Parameter budgets (REFERENCES section 1): seed 2.1 M, nano 0.75 M, within 5 %.  Assumption: 3 input
# channels and 2 classes (a binary MedMNIST head; the head is 217 * num_classes of ~2 M either way).
@pytest.mark.parametrize(("name", "target", "exact"), [
    ("medlit_seed", 2.1e6, 2_109_375),
    ("medlit_seed_28", 2.1e6, 2_088_951),
    ("medlit_nano", 0.75e6, 758_774),
    ("medlit_nano_28", 0.75e6, 749_438),
])
def test_parameter_budget(name, target, exact):
    model = medlite.create_model(name, num_classes=2, in_chans=3)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - target) / target < 0.05
    assert n == exact  # documented in medlite/models/medlit.py


def test_registry_and_timm():
    assert set(VARIANTS) <= set(medlite.list_models(family="medlit"))
    assert medlite.model_card("medlit_seed").default_size == 256
    model = timm.create_model("medlit_nano_28", num_classes=7)
    assert isinstance(model, MedLiT) and model.cfg.num_classes == 7 and model.cfg.img_size == 28
    model = timm.create_model("medlit_seed_28", num_classes=4, in_chans=1, embed_dim=24, depth=3)
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 4)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("medlit_nano_28", pretrained=True)
