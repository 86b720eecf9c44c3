import torch
import torch.nn.functional as F

from medlite.layers import SwiGLU


def test_swiglu_formula():
    torch.manual_seed(0)
    m = SwiGLU(8, 5, bias=True)
    x = torch.randn(3, 4, 8)
    ref = m.w2(F.silu(m.w(x)) * m.v(x))
    torch.testing.assert_close(m(x), ref)
    assert sum(p.numel() for p in SwiGLU(8, 5, bias=False).parameters()) == 3 * 8 * 5
