import pytest
import torch
from torch import nn

from medlite.layers import GQAttention


def _mha_from_gqa(attn: GQAttention) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention computing the same function (K/V rows repeated over each group's heads)."""
    H, G, hd = attn.num_heads, attn.num_kv_groups, attn.head_dim
    dim = H * hd
    mha = nn.MultiheadAttention(dim, H, bias=True, batch_first=True)
    idx = torch.arange(H).div(H // G, rounding_mode="floor")  # query head -> its K/V group
    rows = (idx[:, None] * hd + torch.arange(hd)).reshape(-1)
    with torch.no_grad():
        w = torch.cat([attn.q.weight, attn.k.weight[rows], attn.v.weight[rows]])
        b = torch.cat([attn.q.bias, attn.k.bias[rows], attn.v.bias[rows]])
        mha.in_proj_weight.copy_(w)
        mha.in_proj_bias.copy_(b)
        mha.out_proj.weight.copy_(attn.proj.weight)
        mha.out_proj.bias.copy_(attn.proj.bias)
    return mha.eval()


@pytest.mark.parametrize("groups", [6, 3, 1])
def test_gqa_equals_mha_with_shared_kv(groups):
    torch.manual_seed(0)
    attn = GQAttention(24, 6, groups, qkv_bias=True).eval()
    mha = _mha_from_gqa(attn)
    x = torch.randn(2, 7, 24)
    ref, ref_w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    out = attn(x)
    out2, maps = attn(x, return_attn=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, ref_w, atol=1e-5, rtol=1e-5)
    assert maps.shape == (2, 6, 7, 7)


def test_gqa_parameter_count_and_validation():
    attn = GQAttention(216, 6, 3, qkv_bias=False, proj_bias=False)
    # q 216x216, k and v 216x108 each, proj 216x216 (the published MedLiT attention).
    assert sum(p.numel() for p in attn.parameters()) == 139_968
    with pytest.raises(ValueError, match="num_kv_groups"):
        GQAttention(24, 6, 4)
    with pytest.raises(ValueError, match="num_heads"):
        GQAttention(25, 6, 3)


def test_head_mask_gates_heads():
    torch.manual_seed(0)
    attn = GQAttention(24, 6, 3).eval()
    assert "head_mask" not in attn.state_dict()  # non-persistent: checkpoints unaffected
    x = torch.randn(2, 5, 24)
    attn.head_mask[2] = 0.0
    masked = attn(x)
    ref = GQAttention(24, 6, 3).eval()
    ref.load_state_dict(attn.state_dict())
    with torch.no_grad():  # zeroing the output-projection columns of head 2 is the same function
        ref.proj.weight[:, 8:12] = 0
    torch.testing.assert_close(masked, ref(x), atol=1e-6, rtol=1e-5)


def test_gqa_backward():
    attn = GQAttention(24, 6, 3, attn_drop=0.1, proj_drop=0.1).train()
    x = torch.randn(2, 5, 24, requires_grad=True)
    attn(x).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
