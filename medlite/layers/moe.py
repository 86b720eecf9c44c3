"""Mixture of SwiGLU experts with noisy top-k gating (Shazeer et al., ICLR 2017), as used by MedLiT.

Experts.  Expert ``e`` computes ``W2(silu(W_e x) * V x)``: within one layer all experts share the value
projection ``V`` and the output projection ``W2``; only the gate projection ``W_e`` is per expert (as in
the published MedLiT code).  Because the top-k gates of a token sum to 1, the gated sum of the experts is

    sum_e g_e W2(silu(W_e x) * V x) = W2((sum_e g_e silu(W_e x)) * V x)

so the layer computes all ``W_e x`` in one matmul, mixes them with the sparse gate matrix and applies
``V`` and ``W2`` once.  This dense formulation has no data-dependent shapes or branches (ONNX export is
exact) and is faster on CPU at MedLiT's sizes than dispatching tokens to experts; experts outside a
token's top-k get a zero gate, hence no output and no gradient from that token.

Gating.  ``logits = x W_g (+ N(0, 1) * (softplus(x W_noise) + 1e-2) in training)``; the top-k logits
(``torch.topk``) go through a softmax and are scattered into a (T, E) gate matrix.

Load balancing (training only).  ``aux = coef * (cv2(importance) + cv2(load))`` with
``importance = sum over tokens of the gates`` and ``cv2(v) = var(v) / (mean(v)^2 + 1e-10)`` (unbiased
variance, as the MedLiT code).  ``load`` is Shazeer's differentiable smooth estimate (sum over tokens of
the probability that the expert stays in the top-k under a new noise draw) when gating is noisy and
``k < E``; otherwise it is the hard count of tokens routed to each expert (no gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cv_squared(v: Tensor) -> Tensor:
    """Squared coefficient of variation of a (E,) vector; 0 for a single expert."""
    if v.numel() == 1:  # a constant of the layer, not of the data
        return v.new_zeros(())
    return v.float().var() / (v.float().mean() ** 2 + 1e-10)


def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


class MoESwiGLU(nn.Module):
    """Noisy top-k mixture of SwiGLU experts sharing ``V`` and ``W2``.

    Args:
        dim: token width D.
        hidden: hidden width of each expert.
        num_experts: experts E.
        top_k: experts per token k (1 <= k <= E).
        noisy_gating: add learned Gaussian noise to the router logits in training.
        aux_loss_coef: coefficient of the load-balancing loss.
        drop: dropout on the layer output.
        bias: bias on the expert projections (the router has none).
        noise_eps: floor of the noise standard deviation.

    Attributes:
        router: Linear D -> E, the clean gating logits ``x W_g``.
        noise: Linear D -> E, ``x W_noise`` (softplus gives the noise std); zero-initialised.
        w: Linear D -> E * hidden, the per-expert gate projections ``W_e`` stacked expert-major.
        v: Linear D -> hidden, shared value projection.
        w2: Linear hidden -> D, shared output projection.
        last_load: (E,) float32, detached: fraction of the tokens of the last forward routed to each
            expert (sums to k).
        last_aux_loss: scalar Tensor (with graph) from the last training forward, or None after an
            eval forward.
        unit_mask: (hidden,) float32 non-persistent buffer of ones, multiplied into the hidden units
            before ``w2``. A hidden unit is shared by all experts of the layer (``V`` and ``W2`` are shared),
            so FFN pruning scores and removes units per layer; the mask lets it gate them without touching
            the weights (not saved in the state dict).
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int,
        top_k: int = 2,
        noisy_gating: bool = True,
        aux_loss_coef: float = 1e-2,
        drop: float = 0.0,
        bias: bool = True,
        noise_eps: float = 1e-2,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be in [1, num_experts={num_experts}]")
        self.dim, self.hidden, self.num_experts, self.top_k = dim, hidden, num_experts, top_k
        self.noisy_gating = noisy_gating
        self.aux_loss_coef = aux_loss_coef
        self.noise_eps = noise_eps
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.noise = nn.Linear(dim, num_experts, bias=False)
        self.w = nn.Linear(dim, num_experts * hidden, bias=bias)
        self.v = nn.Linear(dim, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)
        self.register_buffer("last_load", torch.zeros(num_experts), persistent=False)
        self.register_buffer("unit_mask", torch.ones(hidden), persistent=False)
        self.last_aux_loss: Tensor | None = None
        self.init_router()

    def init_router(self) -> None:
        """Small random router, zero noise projection (noise std starts at softplus(0) ~ 0.69)."""
        nn.init.trunc_normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.noise.weight)

    def gate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Route tokens.

        Args:
            x: (T, D) tokens.

        Returns:
            gates (T, E) float (softmax over each token's top-k logits, 0 elsewhere), top-k expert
            indices (T, k) int64, and the training-only aux loss (scalar; zero in eval).
        """
        clean = self.router(x)
        noise_std = None
        logits = clean
        if self.noisy_gating and self.training:
            noise_std = F.softplus(self.noise(x)) + self.noise_eps
            logits = clean + torch.randn_like(clean) * noise_std
        top_vals, top_idx = logits.topk(min(self.top_k + 1, self.num_experts), dim=-1)
        idx = top_idx[:, : self.top_k]
        gates = torch.zeros_like(logits).scatter(1, idx, top_vals[:, : self.top_k].softmax(dim=-1))
        aux = logits.new_zeros(())
        if self.training:
            if noise_std is not None and self.top_k < self.num_experts:
                load = self._smooth_load(clean, logits, noise_std, top_vals)
            else:
                load = torch.zeros_like(gates).scatter(1, idx, 1.0).sum(0)
            aux = self.aux_loss_coef * (cv_squared(gates.sum(0)) + cv_squared(load))
        return gates, idx, aux

    def _smooth_load(self, clean: Tensor, noisy: Tensor, noise_std: Tensor, top_vals: Tensor) -> Tensor:
        """Shazeer's P(expert in top-k under a new noise draw), summed over tokens: (E,)."""
        k = self.top_k
        thr_in = top_vals[:, k : k + 1]  # the (k+1)-th noisy logit: an expert now in stays in above it
        thr_out = top_vals[:, k - 1 : k]  # the k-th noisy logit: an expert now out gets in above it
        is_in = noisy > thr_in
        p_in = _normal_cdf((clean - thr_in) / noise_std)
        p_out = _normal_cdf((clean - thr_out) / noise_std)
        return torch.where(is_in, p_in, p_out).sum(0)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the expert mixture token by token.

        Args:
            x: (..., D) tokens (typically (B, N, D)); routing statistics are over all of them.

        Returns:
            (..., D) mixture output.  Sets ``last_load`` and ``last_aux_loss``.
        """
        shape = x.shape
        t = x.reshape(-1, self.dim)
        gates, idx, aux = self.gate(t)
        hid = F.silu(self.w(t)).view(t.shape[0], self.num_experts, self.hidden)
        hid = torch.einsum("te,teh->th", gates, hid)  # gate-weighted sum of the experts' silu(W_e x)
        out = self.drop(self.w2(hid * self.v(t) * self.unit_mask.to(hid.dtype)))
        self.last_load = torch.zeros_like(gates).scatter(1, idx, 1.0).mean(0).detach()
        self.last_aux_loss = aux if self.training else None
        return out.reshape(shape)
