import pytest
import torch
import torch.nn.functional as F

from medlite.layers import MoESwiGLU, cv_squared


def _expert(moe: MoESwiGLU, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e on its own: W2(silu(W_e x) * V x), V and W2 shared."""
    h = moe.hidden
    w = moe.w.weight[e * h : (e + 1) * h]
    b = moe.w.bias[e * h : (e + 1) * h]
    return moe.w2(F.silu(x @ w.T + b) * moe.v(x))


def _randomise(moe: MoESwiGLU) -> None:
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.3)


def test_k_equals_e_is_dense_softmax_mixture():
    torch.manual_seed(0)
    moe = MoESwiGLU(16, 8, num_experts=3, top_k=3, noisy_gating=False).train()
    _randomise(moe)
    x = torch.randn(2, 5, 16)
    t = x.reshape(-1, 16)
    probs = moe.router(t).softmax(-1)
    dense = sum(probs[:, e : e + 1] * _expert(moe, e, t) for e in range(3)).reshape(2, 5, 16)
    torch.testing.assert_close(moe(x), dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moe.last_load, torch.ones(3))  # every token uses every expert


def test_top2_equals_sparse_mixture_of_selected_experts():
    torch.manual_seed(1)
    moe = MoESwiGLU(16, 8, num_experts=5, top_k=2).eval()
    _randomise(moe)
    t = torch.randn(11, 16)
    logits = moe.router(t)
    vals, idx = logits.topk(2, dim=-1)
    g = vals.softmax(-1)
    ref = torch.stack([
        sum(g[i, j] * _expert(moe, int(idx[i, j]), t[i : i + 1])[0] for j in range(2)) for i in range(11)
    ])
    torch.testing.assert_close(moe(t), ref, atol=1e-5, rtol=1e-5)
    assert moe.last_load.shape == (5,)
    torch.testing.assert_close(moe.last_load.sum(), torch.tensor(2.0))
    assert moe.last_aux_loss is None  # eval: no balancing loss


def test_aux_loss_training_and_gradients():
    torch.manual_seed(0)
    moe = MoESwiGLU(16, 8, num_experts=4, top_k=2, drop=0.1).train()
    x = torch.randn(4, 9, 16)
    y = moe(x)
    aux = moe.last_aux_loss
    assert aux is not None and aux.ndim == 0 and torch.isfinite(aux) and aux > 0
    (y.square().mean() + aux).backward()
    for name, p in moe.named_parameters():
        # The smooth load estimate makes the noise projection trainable through the aux loss.
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert moe.noise.weight.grad.abs().sum() > 0


def test_hard_load_when_k_equals_e():
    moe = MoESwiGLU(8, 4, num_experts=2, top_k=2).train()
    moe(torch.randn(6, 8))
    assert moe.last_aux_loss is not None and torch.isfinite(moe.last_aux_loss)


def test_cv_squared_and_validation():
    assert cv_squared(torch.ones(4)) == 0
    assert cv_squared(torch.tensor([3.0])) == 0
    torch.testing.assert_close(cv_squared(torch.tensor([1.0, 3.0])), torch.tensor(2.0 / 4.0))
    with pytest.raises(ValueError, match="top_k"):
        MoESwiGLU(8, 4, num_experts=2, top_k=3)


def test_parameter_count_shared_v_w2():
    # Published MedLiT-seed layer 1: D=216, hidden 81, 3 experts: router + noise 2*216*3,
    # per-expert W 3*(216*81+81), shared V 216*81+81, shared W2 81*216+216.
    moe = MoESwiGLU(216, 81, num_experts=3)
    assert sum(p.numel() for p in moe.parameters()) == 2 * 216 * 3 + 4 * (216 * 81 + 81) + 81 * 216 + 216
