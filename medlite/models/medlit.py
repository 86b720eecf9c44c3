"""MedLiT: ultra-light vision transformers with grouped-query attention and mixtures of SwiGLU experts.

Lee, Feng, Tan, Chng, Front. Artif. Intell. 2026; after Tan, "How Lightweight Can A Vision Transformer
Be" (arXiv 2407.17783).  ``medlit_seed`` follows the published evaluation code of MedLiT-seed:

- 256x256 RGB, mean = std = 0.5; 16x16 patches -> 256 tokens, linear patch projection to 216 (no bias);
  one extra learned token; learned position embedding;
- 9 pre-norm blocks in 3 stages of 3; grouped-query attention with 6 query heads and 3 key/value groups
  (head dim 36), no biases in the attention projections;
- feed-forward: noisy top-2 mixture of SwiGLU experts sharing V and W2 (only W is per expert), 3/4/5
  experts per stage, expert hidden width shrinking linearly with depth 81 -> 27 (81, 74, 67, 60, 54, 47,
  40, 33, 27: ``end + floor((L-1-i) * (start-end) / (L-1))`` as in the published code);
  load-balancing loss coefficient 1e-2; dropout 0.1 (0.2 before the head).

Deviations from the published code, on purpose:
- the extra token is prepended (index 0, the timm convention) and is a learned ``cls_token`` plus its
  position embedding; the published code appends a zero patch whose embedding is its position embedding
  alone, which is the same function with 216 fewer parameters;
- the blocks are textbook pre-norm (``x + attn(norm(x))``); the published block normalises ``x`` in place
  before the residual (``x = norm(x); x = x + attn(x)``), which has the same parameters;
- the experts of a layer are evaluated densely with the gate matrix (see ``medlite.layers.moe``): the
  same outputs, one dropout on the mixture instead of one per expert.

Parameter count.  ``medlit_seed`` with 2 classes has 2,109,375 parameters: patch projection 165,888,
position embedding 55,512, cls token 216, attention 9 x 139,968, layer norms 8,208, mixtures of experts
619,405 (routers and noise projections included), head 434.  The published ~2.16 M also counts the MAE
pretraining parts kept in the published encoder (216x216 output projection and mask token, 46,872).

28 px variants.  With 4x4 patches (7x7 = 49 tokens, chosen over 2x2 / 196 tokens for CPU speed: attention
and expert compute grow with the token count) the patch projection and position embedding shrink from
221 k to 21 k parameters.  ``medlit_seed_28`` spends the freed budget on width (embed 228, head dim 38;
the paper found width helps more than experts): 2.09 M parameters.

Nano.  MedLiT-nano's hyper-parameters are not public.  Following the paper's finding that embedding width
matters more than expert count, nano keeps seed's width (216) and cuts depth and experts; see
``medlit_nano`` and ``medlit_nano_28``.

The head reads the cls token (index 0) after the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import Tensor, nn

from medlite.layers import GQAttention, MoESwiGLU
from medlite.registry import ModelCard, register_model


@dataclass(frozen=True)
class MedLiTConfig:
    """Hyper-parameters of a MedLiT classifier (defaults: the published MedLiT-seed)."""

    img_size: int = 256  # input side length, pixels (square inputs)
    patch_size: int = 16  # patch side length, pixels; tokens = (img_size / patch_size)^2
    in_chans: int = 3  # input channels (1 grey, 3 colour)
    num_classes: int = 2  # output logits
    embed_dim: int = 216  # token width D; divisible by num_heads
    depth: int = 9  # transformer blocks L
    stages: tuple[int, ...] | None = None  # blocks per stage, sums to depth; None: split depth evenly
    num_heads: int = 6  # query heads per block
    num_kv_groups: int = 3  # key/value heads per block (grouped-query attention)
    experts_per_stage: tuple[int, ...] = (3, 4, 5)  # experts of every MoE layer in each stage
    expert_hidden_start: int = 81  # expert hidden width of the first block
    expert_hidden_end: int = 27  # expert hidden width of the last block (linear in between)
    top_k: int = 2  # experts per token
    noisy_gating: bool = True  # learned Gaussian router noise in training (Shazeer et al. 2017)
    aux_loss_coef: float = 1e-2  # coefficient of each MoE layer's load-balancing loss
    drop: float = 0.1  # dropout after attention and after each MoE layer
    attn_drop: float = 0.0  # dropout on attention probabilities
    head_drop: float = 0.2  # dropout on the cls token before the classifier
    qkv_bias: bool = False  # biases in the q/k/v and attention output projections (published: none)
    patch_bias: bool = False  # bias in the patch projection (published: none)
    # Pruned shapes (set by medlite.compress.prune and stored in checkpoints; None = the regular shapes).
    block_heads: tuple[tuple[int, ...], ...] | None = None  # per block, key/value group of each query head
    block_experts: tuple[int, ...] | None = None  # per block, experts of its MoE layer
    block_hidden: tuple[int, ...] | None = None  # per block, hidden units of its MoE layer (shared by experts)

    def __post_init__(self) -> None:
        if self.stages is None:
            n = len(self.experts_per_stage)
            split = tuple(self.depth // n + (i < self.depth % n) for i in range(n))
            object.__setattr__(self, "stages", split)
        if sum(self.stages) != self.depth:
            raise ValueError(f"stages {self.stages} do not sum to depth={self.depth}")
        if len(self.stages) != len(self.experts_per_stage):
            raise ValueError(
                f"stages {self.stages} and experts_per_stage {self.experts_per_stage} differ in length"
            )
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")
        for name in ("block_heads", "block_experts", "block_hidden"):
            value = getattr(self, name)
            if value is not None and len(value) != self.depth:
                raise ValueError(f"{name} has {len(value)} entries for depth={self.depth}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head (pruning removes heads, never narrows them)."""
        return self.embed_dim // self.num_heads

    def kv_maps(self) -> list[tuple[int, ...]]:
        """Per block, the key/value group of each query head, (depth,) tuples."""
        if self.block_heads is not None:
            return [tuple(m) for m in self.block_heads]
        rep = self.num_heads // self.num_kv_groups
        return [tuple(h // rep for h in range(self.num_heads))] * self.depth

    def experts(self) -> list[int]:
        """Experts of each block, (depth,)."""
        if self.block_experts is not None:
            return list(self.block_experts)
        return [e for n, e in zip(self.stages, self.experts_per_stage, strict=True) for _ in range(n)]

    def expert_hidden(self) -> list[int]:
        """Expert hidden width of each block, (depth,), shrinking linearly (published rounding)."""
        if self.block_hidden is not None:
            return list(self.block_hidden)
        L, a, b = self.depth, self.expert_hidden_start, self.expert_hidden_end
        if L == 1:
            return [a]
        return [b + int((L - 1 - i) * (a - b) / (L - 1)) for i in range(L)]


class MedLiTBlock(nn.Module):
    """Pre-norm transformer block: grouped-query attention, then a mixture of SwiGLU experts."""

    def __init__(self, cfg: MedLiTConfig, num_experts: int, hidden: int,
                 kv_map: tuple[int, ...] | None = None) -> None:
        super().__init__()
        d = cfg.embed_dim
        kv_map = kv_map or cfg.kv_maps()[0]
        self.norm1 = nn.LayerNorm(d)
        self.attn = GQAttention(d, len(kv_map), max(kv_map) + 1, qkv_bias=cfg.qkv_bias,
                                attn_drop=cfg.attn_drop, proj_drop=cfg.drop, proj_bias=cfg.qkv_bias,
                                head_dim=cfg.head_dim, kv_map=kv_map)
        self.norm2 = nn.LayerNorm(d)
        self.moe = MoESwiGLU(d, hidden, num_experts, top_k=min(cfg.top_k, num_experts),
                             noisy_gating=cfg.noisy_gating, aux_loss_coef=cfg.aux_loss_coef, drop=cfg.drop)

    def forward(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, N, D) -> (B, N, D), and with ``return_attn`` also (B, H, N, N) attention."""
        if return_attn:
            a, attn = self.attn(self.norm1(x), return_attn=True)
        else:
            a, attn = self.attn(self.norm1(x)), None
        x = x + a
        x = x + self.moe(self.norm2(x))
        return (x, attn) if return_attn else x


class MedLiT(nn.Module):
    """MedLiT classifier: (B, in_chans, img_size, img_size) float32 -> (B, num_classes) logits.

    Token layout: index 0 is the cls token, indices 1..N the patches in row-major order.
    """

    def __init__(self, cfg: MedLiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.embed_dim = self.num_features = cfg.embed_dim
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim,
                                      bias=cfg.patch_bias)
        self.grid_size = self.patch_embed.grid_size[0]
        n = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            MedLiTBlock(cfg, e, h, m)
            for e, h, m in zip(cfg.experts(), cfg.expert_hidden(), cfg.kv_maps(), strict=True)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head_drop = nn.Dropout(cfg.head_drop)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight  # initialise the patch conv like a linear layer (as MAE)
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for blk in self.blocks:
            blk.moe.init_router()

    @property
    def moe_layers(self) -> list[MoESwiGLU]:
        return [blk.moe for blk in self.blocks]

    def embed(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, N, D) patch tokens with their position embedding (no cls)."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def prepend_cls(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, 1 + N, D): the cls token (with its position embedding) in front."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def forward_tokens(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Blocks and final norm on (B, 1 + M, D) tokens (any M; MAE passes the visible patches only)."""
        maps = []
        for blk in self.blocks:
            if return_attn:
                x, a = blk(x, return_attn=True)
                maps.append(a)
            else:
                x = blk(x)
        x = self.norm(x)
        return (x, maps) if return_attn else x

    def forward_features(self, x: Tensor, return_attn: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Encode images.

        Args:
            x: (B, in_chans, img_size, img_size) float32, normalised with mean = std = 0.5.
            return_attn: also return the attention probabilities of every block (differentiable, for
                distillation); computed explicitly instead of with SDPA.

        Returns:
            (B, 1 + N, D) normalised tokens, cls first; with ``return_attn`` also a list of ``depth``
            tensors (B, H_l, 1 + N, 1 + N) (H_l = the query heads of block l, fewer after pruning).
        """
        return self.forward_tokens(self.prepend_cls(self.embed(x)), return_attn=return_attn)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, 1 + N, D) tokens -> (B, num_classes) logits from the cls token (or (B, D) if pre_logits)."""
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, img_size, img_size) float32 -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    def aux_loss(self) -> Tensor:
        """Sum of the MoE load-balancing losses (coefficient included) of the last training forward.

        Returns a zero scalar in eval mode or before any training forward.  Add it to the task loss.
        """
        zero = self.head.weight.new_zeros(())
        if not self.training:
            return zero
        losses = [m.last_aux_loss for m in self.moe_layers if m.last_aux_loss is not None]
        return torch.stack(losses).sum() if losses else zero

    def router_stats(self) -> list[Tensor]:
        """Per block, (E_l,) fraction of the last forward's tokens routed to each expert (sums to top_k)."""
        return [m.last_load.clone() for m in self.moe_layers]

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Attention probabilities of every block for images x: ``depth`` tensors (B, H, 1 + N, 1 + N)."""
        return self.forward_features(x, return_attn=True)[1]

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


# Named configurations (img_size / in_chans / num_classes are set by the factory).
SEED = MedLiTConfig()
SEED_28 = MedLiTConfig(img_size=28, patch_size=4, embed_dim=228)
# Nano at 256 px: seed's width and heads, 3 blocks (one per stage), experts 2/3/4, hidden 54 -> 18.
NANO = MedLiTConfig(depth=3, experts_per_stage=(2, 3, 4), expert_hidden_start=54, expert_hidden_end=18)
# Nano at 28 px: the tiny patch projection frees budget for a 4th block (stages 2 + 2, experts 2 / 3).
NANO_28 = MedLiTConfig(img_size=28, patch_size=4, depth=4, experts_per_stage=(2, 3),
                       expert_hidden_start=60, expert_hidden_end=24)


def build_medlit(base: MedLiTConfig, num_classes: int, in_chans: int, img_size: int, **kwargs) -> MedLiT:
    """MedLiT from a named configuration, with any config field overridden by keyword.

    Overriding ``depth`` or ``experts_per_stage`` without ``stages`` re-splits the blocks evenly.
    """
    names = {f.name for f in fields(MedLiTConfig)}
    unknown = set(kwargs) - names
    if unknown:
        raise TypeError(f"unknown MedLiT option(s) {sorted(unknown)}; options: {sorted(names)}")
    if "stages" not in kwargs and ({"depth", "experts_per_stage"} & set(kwargs)):
        kwargs["stages"] = None
    for key in ("stages", "experts_per_stage", "block_experts", "block_hidden"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    if kwargs.get("block_heads") is not None:  # JSON brings lists back
        kwargs["block_heads"] = tuple(tuple(m) for m in kwargs["block_heads"])
    cfg = replace(base, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    return MedLiT(cfg)


def _card(name: str, description: str, size: int) -> ModelCard:
    return ModelCard(name=name, family="medlit", task="classification", description=description,
                     default_size=size, mean=(0.5,), std=(0.5,),
                     options=tuple(f.name for f in fields(MedLiTConfig)))


@register_model(_card("medlit_seed", "MedLiT-seed, published configuration (2.1 M, 256 px)", 256))
def medlit_seed(num_classes: int = 2, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiT:
    """MedLiT-seed: 216 wide, 9 blocks in 3 stages, GQA 6/3, experts 3/4/5, hidden 81 -> 27; 2.11 M."""
    return build_medlit(SEED, num_classes, in_chans, img_size, **kwargs)


@register_model(_card("medlit_nano", "MedLiT-nano (0.76 M, 256 px; assumed config)", 256))
def medlit_nano(num_classes: int = 2, in_chans: int = 3, img_size: int = 256, **kwargs) -> MedLiT:
    """MedLiT-nano (assumed config): seed's width 216 and GQA 6/3 kept, 3 blocks (1 per stage), experts
    2/3/4, hidden 54 -> 18; 0.76 M.  Width is kept because the paper found it matters more than experts;
    the 16x16 patch projection + position embedding alone take 221 k of the 0.75 M budget."""
    return build_medlit(NANO, num_classes, in_chans, img_size, **kwargs)


@register_model(_card("medlit_seed_28", "MedLiT-seed for 28 px MedMNIST (4x4 patches, 2.09 M)", 28))
def medlit_seed_28(num_classes: int = 2, in_chans: int = 3, img_size: int = 28, **kwargs) -> MedLiT:
    """MedLiT-seed at 28 px: 4x4 patches (49 tokens), width 228 (head dim 38) to keep the 2.1 M budget."""
    return build_medlit(SEED_28, num_classes, in_chans, img_size, **kwargs)


@register_model(_card("medlit_nano_28", "MedLiT-nano for 28 px MedMNIST (4x4 patches, 0.75 M)", 28))
def medlit_nano_28(num_classes: int = 2, in_chans: int = 3, img_size: int = 28, **kwargs) -> MedLiT:
    """MedLiT-nano at 28 px (assumed config): 4x4 patches (49 tokens), width 216, GQA 6/3, 4 blocks
    in 2 stages, experts 2/3, hidden 60 -> 24; 0.75 M.  The small patch projection leaves room for a
    4th block."""
    return build_medlit(NANO_28, num_classes, in_chans, img_size, **kwargs)


VARIANTS = {"medlit_seed": medlit_seed, "medlit_nano": medlit_nano,
            "medlit_seed_28": medlit_seed_28, "medlit_nano_28": medlit_nano_28}


def _register_with_timm() -> None:
    """Make the variants buildable by ``timm.create_model`` under the same names (timm has no medlit)."""
    from timm.models import register_model as timm_register_model

    for name, fn in VARIANTS.items():

        def entry(pretrained: bool = False, _fn=fn, **kwargs) -> MedLiT:
            if pretrained:
                raise ValueError("medlit has no pretrained weights to download; load a medlite checkpoint")
            for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
                kwargs.pop(key, None)
            return _fn(**kwargs)

        entry.__name__ = entry.__qualname__ = name
        entry.__module__ = __name__
        entry.__doc__ = fn.__doc__
        timm_register_model(entry)


_register_with_timm()
