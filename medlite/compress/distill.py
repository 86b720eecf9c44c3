"""Knowledge distillation with attention alignment: a trained teacher -> a (smaller) student.

Loss (each term switched off by a zero weight):

    L = task_weight * CE(student, y)
      + kd_weight   * T^2 * KL(softmax(teacher / T) || softmax(student / T))      (Hinton et al. 2015)
      + hard_weight * CE(student, argmax teacher)                                    (DeiT, Touvron et al. 2021)
      + attn_weight * mean over mapped layers of KL(teacher attention || student attention)
      + cam_weight  * KL(teacher class activation map || student cls attention, last block)   (CNN teachers)
      + the student's MoE load-balancing loss (MedLiT).

Multi-label tasks use per-label binary KL (sigmoid) for the logit term.

Layer mapping.  Student block ``i`` (of ``L_s``) is matched with teacher block
``round((i + 1) * L_t / L_s) - 1``: blocks are spread evenly and the last blocks are always paired
(12 teacher / 4 student blocks: 2, 5, 8, 11).  ``layer_map`` overrides it.

Attention maps.  Teacher and student may differ in heads and token grids.  Per mapped layer both maps are
averaged over heads, ``(B, H, N, N) -> (B, N, N)``; prefix tokens (cls) are dropped as KEYS and each row
is renormalised over the patch keys, so every row is a distribution over image regions.  The rows kept
are the cls query (where the classifier looks, if there is a cls token) and every patch query.  The
teacher's rows are resampled to the student's patch grid, keys then queries (bilinear, antialiased when
shrinking) and renormalised.  The term is the KL divergence of the student rows from the teacher rows,
averaged over rows, samples and layers.

Teachers.  A MedLiT (its ``forward_features(return_attn=True)``), a timm VisionTransformer (attention
probabilities read by forward hooks on ``attn_drop`` with fused attention switched off for that forward)
or any other classifier, e.g. a CNN, whose maps are unavailable: then only the logit terms apply.

CAM alignment (CNN teachers).  A CNN that ends in global average pooling and one linear layer (timm's
EfficientNet, ResNet) has an exact class activation map (Zhou et al., CVPR 2016): ``W_c . F(x, y)``, the
class weights applied to the last feature map at each position, whose spatial mean plus the bias is the
logit of class ``c``.  The map of the teacher's predicted class, negative evidence clipped at 0, resampled
to the student's patch grid and normalised, is a distribution over image regions like the student's cls
attention row (last block, heads averaged, patch keys renormalised: where the student's classifier reads
from).  The term is KL(teacher map || student row): it tells a ViT student where the CNN looked, the
spatial knowledge that logits alone do not carry.

Ensemble teachers.  :class:`LogitEnsemble` averages the logits of several trained classifiers (e.g. the same
recipe trained twice): a steadier teacher than any one training of it.  An ensemble of CNNs that each end in
average pooling and one linear layer is itself such a CNN (features concatenated along channels, classifier
``[W_1 .. W_n] / n`` with the mean bias), so its class activation map is exact too: the mean of the members'
maps for the ensemble's predicted class.

The training task that uses these losses (teacher cache, run folder, selection on validation AUC) is
:mod:`medlite.engine.tasks.distill`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ attention maps
def has_attention(model: nn.Module) -> bool:
    """True for models whose attention maps :func:`forward_with_attention` can read."""
    return hasattr(model, "attention_maps") or _is_timm_vit(model)


def _is_timm_vit(model: nn.Module) -> bool:
    blocks = getattr(model, "blocks", None)
    return blocks is not None and len(blocks) > 0 and all(
        hasattr(b, "attn") and hasattr(b.attn, "fused_attn") and hasattr(b.attn, "attn_drop") for b in blocks)


def token_layout(model: nn.Module) -> tuple[int, tuple[int, int]]:
    """(prefix tokens before the patches, patch grid (rows, cols)) of a ViT-style model."""
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    return int(getattr(model, "num_prefix_tokens", 1)), (grid[0], grid[1])


def forward_with_attention(model: nn.Module, x: Tensor, need_attn: bool = True
                           ) -> tuple[Tensor, list[Tensor] | None]:
    """Logits and, if the model exposes them, the attention probabilities of every block.

    Args:
        model: MedLiT, timm VisionTransformer or any classifier.
        x: (B, C, S, S) float32 images normalised for the model.

    Returns:
        (B, num_classes) logits; per block (B, H, N, N) attention probabilities (differentiable for
        MedLiT), or None when ``need_attn`` is false or the model has no readable attention.
    """
    if not need_attn or not has_attention(model):
        return model(x), None
    if hasattr(model, "forward_features") and hasattr(model, "attention_maps"):
        tokens, maps = model.forward_features(x, return_attn=True)
        return model.forward_head(tokens), maps
    maps: list[Tensor] = []
    handles, fused = [], []
    for blk in model.blocks:
        fused.append(blk.attn.fused_attn)
        blk.attn.fused_attn = False
        handles.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(i[0])))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
        for blk, f in zip(model.blocks, fused, strict=True):
            blk.attn.fused_attn = f
    return logits, maps


def has_cam(model: nn.Module) -> bool:
    """True for CNN classifiers whose class activation map :func:`class_activation_map` computes exactly:
    ``forward_features`` -> global average pooling -> one linear layer (timm CNNs such as EfficientNet)."""
    get = getattr(model, "get_classifier", None)
    pool = getattr(model, "global_pool", None)
    return (callable(get) and isinstance(get(), nn.Linear) and hasattr(model, "forward_features")
            and hasattr(model, "forward_head") and getattr(pool, "pool_type", None) == "avg"
            and not has_attention(model))


def class_activation_map(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and the class activation map of each image's predicted class (a model with :func:`has_cam`).

    Returns:
        (B, C) logits; (B, h, w) float32 map on the last feature grid, ``W_c . F`` at each position (its
        spatial mean plus the class bias is the class logit).
    """
    feats = model.forward_features(x)
    logits = model.forward_head(feats)
    weight = model.get_classifier().weight.float()  # (C, K)
    top = logits.argmax(-1) if logits.shape[-1] > 1 else torch.zeros(len(logits), dtype=torch.long)
    return logits, torch.einsum("bkhw,bk->bhw", feats.float(), weight[top])


class LogitEnsemble(nn.Module):
    """Several trained classifiers as one teacher: the mean of their logits.

    When every member has :func:`has_cam` (same feature grid for the same input), the ensemble has it too:
    ``forward_features`` concatenates the members' feature maps, ``forward_head`` averages the members' heads
    on their own channels, and ``get_classifier`` is the equivalent single linear layer, so
    :func:`class_activation_map` gives the exact map of the averaged logits.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    @property
    def global_pool(self) -> nn.Module | None:
        """The members' pooling when every member averages (what :func:`has_cam` checks), else None."""
        pools = [getattr(m, "global_pool", None) for m in self.members]
        return pools[0] if all(getattr(p, "pool_type", None) == "avg" for p in pools) else None

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.cat([m.forward_features(x) for m in self.members], 1)

    def forward_head(self, feats: Tensor) -> Tensor:
        widths = [m.get_classifier().in_features for m in self.members]
        parts = feats.split(widths, 1)
        return torch.stack([m.forward_head(f) for m, f in zip(self.members, parts, strict=True)]).mean(0)

    def get_classifier(self) -> nn.Module:
        """One linear layer on the concatenated pooled features equal to the members' averaged heads (an
        ``nn.Identity`` when a member's head is not one linear layer: then there is no exact CAM)."""
        heads = [m.get_classifier() if callable(getattr(m, "get_classifier", None)) else None
                 for m in self.members]
        if not all(isinstance(h, nn.Linear) for h in heads):
            return nn.Identity()
        n = len(heads)
        lin = nn.Linear(sum(h.in_features for h in heads), heads[0].out_features,
                        bias=all(h.bias is not None for h in heads))
        with torch.no_grad():
            lin.weight.copy_(torch.cat([h.weight for h in heads], 1) / n)
            if lin.bias is not None:
                lin.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
        return lin.to(heads[0].weight)


def cam_rows(cam: Tensor, out_grid: tuple[int, int]) -> Tensor:
    """(B, h, w) class activation maps -> (B, 1, oh * ow) distributions over ``out_grid``: negative values
    clipped at 0, resampled (bilinear; antialiased when shrinking), normalised to sum 1 (uniform where the
    map has no positive value)."""
    grid = (cam.shape[-2], cam.shape[-1])
    m = _resample_keys(cam.float().clamp_min(0).flatten(1)[:, None], grid, out_grid)[:, 0].clamp_min(0)
    total = m.sum(-1, keepdim=True)
    m = torch.where(total > 1e-12, m / total.clamp_min(1e-12), torch.full_like(m, 1.0 / m.shape[-1]))
    return m[:, None]


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher block paired with each student block: evenly spread, last with last."""
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


def _resample_keys(a: Tensor, grid: tuple[int, int], out: tuple[int, int]) -> Tensor:
    """(B, R, gh*gw) distributions over a grid -> (B, R, oh*ow) over another grid (not renormalised)."""
    if grid == out:
        return a
    B, R, _ = a.shape
    img = a.reshape(B, R, *grid)
    shrink = out[0] < grid[0] or out[1] < grid[1]
    img = F.interpolate(img, size=out, mode="bilinear", align_corners=False, antialias=shrink)
    return img.reshape(B, R, out[0] * out[1])


def attention_rows(attn: Tensor, prefix: int, grid: tuple[int, int], out_grid: tuple[int, int]) -> Tensor:
    """Head-averaged attention as distributions over image regions on ``out_grid``.

    Args:
        attn: (B, H, N, N) attention probabilities, N = prefix + gh * gw, prefix tokens first.
        prefix: prefix (cls / register) tokens; the first one's row is kept as the cls row.
        grid: (gh, gw) patch grid of ``attn``.
        out_grid: (oh, ow) grid to resample to.

    Returns:
        (B, R, oh * ow) float32 rows summing to 1: the cls row first (if prefix >= 1), then one row per
        patch of ``out_grid`` in row-major order; R = min(prefix, 1) + oh * ow.
    """
    a = attn.float().mean(dim=1)[:, :, prefix:]  # keys: patches only
    patch_rows = _resample_keys(a[:, prefix:], grid, out_grid)  # (B, gh*gw, oh*ow)
    patch_rows = _resample_keys(patch_rows.transpose(1, 2), grid, out_grid).transpose(1, 2)  # queries
    rows = torch.cat([_resample_keys(a[:, :1], grid, out_grid), patch_rows], 1) if prefix else patch_rows
    rows = rows.clamp_min(0)
    return rows / rows.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def attention_kl(student: Tensor, teacher: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over rows and samples of KL(teacher || student) for (B, R, K) row distributions."""
    t = teacher.float()
    return (t * (torch.log(t + eps) - torch.log(student.float() + eps))).sum(-1).mean()


def kd_loss(student: Tensor, teacher: Tensor, temperature: float, task: str) -> Tensor:
    """T^2-scaled KL between temperature-softened teacher and student predictions, (B, C) logits."""
    T = temperature
    if task.startswith("multi-label"):
        p = torch.sigmoid(teacher / T)
        log_q, log_1q = F.logsigmoid(student / T), F.logsigmoid(-student / T)
        eps = 1e-8
        kl = p * (torch.log(p + eps) - log_q) + (1 - p) * (torch.log(1 - p + eps) - log_1q)
        return kl.sum(-1).mean() * T * T
    return F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True,
                    reduction="batchmean") * T * T


def hard_labels(teacher: Tensor, task: str) -> Tensor:
    """The teacher's decisions as targets: argmax class (B,), or (B, L) 0/1 for multi-label logits."""
    if task.startswith("multi-label"):
        return (teacher > 0).to(teacher.dtype)
    return teacher.argmax(-1)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the distillation terms; 0 switches a term off (it is then not even computed)."""

    task: float = 1.0  # cross-entropy (BCE for multi-label) with the labels
    kd: float = 1.0  # T^2-scaled KL on logits
    attn: float = 1.0  # attention-map KL over the mapped layers
    temperature: float = 4.0  # softening temperature T of the logit term
    hard: float = 0.0  # cross-entropy with the teacher's hard labels (argmax; DeiT's hard distillation)
    cam: float = 0.0  # KL of the student's last cls attention row from a CNN teacher's class activation map


def distill_loss(s_logits: Tensor, y: Tensor, task: str, w: LossWeights, t_logits: Tensor | None = None,
                 s_rows: Sequence[Tensor] | None = None, t_rows: Sequence[Tensor] | None = None,
                 aux: Tensor | None = None, s_cls: Tensor | None = None, t_cam: Tensor | None = None
                 ) -> tuple[Tensor, dict[str, float]]:
    """Total distillation loss and its terms (floats, for logging).

    Args:
        s_logits, t_logits: (B, C) student / teacher logits.
        y: (B,) class indices or (B, L) multi-label targets.
        s_rows, t_rows: per mapped layer, (B, R, K) attention rows (:func:`attention_rows`) on one grid.
        aux: the student's MoE load-balancing loss (scalar), added as is.
        s_cls, t_cam: (B, 1, K) the student's last cls attention row and the teacher's class activation
            map (:func:`cam_rows`), on the student's patch grid.
    """
    from medlite.engine.evaluate import loss_fn

    terms: dict[str, Tensor] = {}
    if w.task:
        terms["task"] = w.task * loss_fn(s_logits, y, task)
    if w.kd and t_logits is not None:
        terms["kd"] = w.kd * kd_loss(s_logits, t_logits, w.temperature, task)
    if w.hard and t_logits is not None:
        terms["hard"] = w.hard * loss_fn(s_logits, hard_labels(t_logits, task), task)
    if w.attn and s_rows and t_rows:
        pairs = list(zip(s_rows, t_rows, strict=True))
        terms["attn"] = w.attn * torch.stack([attention_kl(s, t) for s, t in pairs]).mean()
    if w.cam and s_cls is not None and t_cam is not None:
        terms["cam"] = w.cam * attention_kl(s_cls, t_cam)
    if aux is not None:
        terms["aux"] = aux
    if not terms:
        raise ValueError("every distillation term is switched off")
    total = torch.stack(list(terms.values())).sum()
    return total, {k: float(v.detach()) for k, v in terms.items()}
