import torch

import medlite
from medlite.explain import attention_rollout, rollout_heatmap


def test_rollout_identity_and_uniform():
    B, H, N = 2, 3, 5
    eye = torch.eye(N).expand(B, H, N, N)
    assert torch.equal(attention_rollout([eye, eye]), torch.zeros(B, N - 1))
    uniform = torch.full((B, H, N, N), 1.0 / N)
    roll = attention_rollout([uniform], discard_ratio=0.0)
    torch.testing.assert_close(roll, torch.full((B, N - 1), 0.5 / N))  # (A + I) / 2, cls row


def test_rollout_discard_keeps_shape():
    maps = [torch.rand(2, 3, 10, 10).softmax(-1) for _ in range(3)]
    roll = attention_rollout(maps, discard_ratio=0.5)
    assert roll.shape == (2, 9) and torch.isfinite(roll).all() and (roll >= 0).all()


def test_rollout_heatmap_normalised():
    model = medlite.create_model("medlit_nano_28", in_chans=1, embed_dim=24, depth=2,
                                 expert_hidden_start=8, expert_hidden_end=4).train()
    heat = rollout_heatmap(model, torch.randn(3, 1, 28, 28))
    assert heat.shape == (3, 7, 7)
    assert heat.min() >= 0 and heat.max() <= 1
    torch.testing.assert_close(heat.amax(dim=(1, 2)), torch.ones(3))
    torch.testing.assert_close(heat.amin(dim=(1, 2)), torch.zeros(3))
    assert model.training  # mode restored
