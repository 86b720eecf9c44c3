"""Structured pruning of MedLiT: attention heads (grouped-query aware), SwiGLU hidden units and experts.

Importance.  Every query head and every MoE hidden unit has a gate that multiplies its output
(``GQAttention.head_mask``, ``MoESwiGLU.unit_mask``, ones by default).  Its importance is the accumulated
magnitude of the gradient of the task loss with respect to the gate on held-out data (Michel et al.,
"Are Sixteen Heads Really Better than One?", NeurIPS 2019): ``I = sum over batches |dL/dg| * batch size``,
the first-order estimate of the loss change when the gate goes from 1 to 0.  Scores are normalised per
layer (L2) so that layers compete on equal terms when the least important units are chosen globally.

Units.  A hidden unit of a MoE layer is shared by all its experts (``V`` and ``W2`` are shared): unit ``j``
is row ``j`` of ``V``, column ``j`` of ``W2`` and row ``j`` of every expert's ``W_e``; removing it keeps
every matrix dense.  A whole expert goes only where the router (top-k, eval mode, no noise) sends it at
most ``expert_min_load`` of the held-out tokens (default: never), so removing it leaves the routing of
the other experts unchanged.

Grouped-query structure.  Query heads are removed one by one; a key/value group is removed when all of
its query heads are gone, and the remaining groups are renumbered (``MedLiTConfig.block_heads``).  Heads
keep their width (``head_dim``) and at least one head stays per layer.

Physical removal.  :func:`prune_heads` and :func:`prune_ffn` return a NEW MedLiT whose config records the
pruned shapes (``block_heads``, ``block_experts``, ``block_hidden``); the weights are sliced copies, so the
model saves, loads (``build_model_from_meta`` rebuilds it from the config in the checkpoint), exports and
runs like any other.  Each function also returns a JSON record of what was removed (indices relative to
the model it was given), which the commands append to ``meta["compress"]``.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medlite.models.medlit import MedLiT

log = logging.getLogger(__name__)

Batches = Iterable[tuple[Tensor, Tensor]]  # (x (B, C, S, S) float32 normalised, y (B,) or (B, L) labels)


def _require_medlit(model: nn.Module) -> MedLiT:
    if not isinstance(model, MedLiT):
        raise TypeError(f"structured pruning supports MedLiT models, got {type(model).__name__}")
    return model


# ------------------------------------------------------------------------------------------ importance
def gate_importance(model: nn.Module, batches: Batches, task: str, kind: str) -> list[Tensor]:
    """Accumulated |dL/d gate| of every head (``kind="heads"``) or MoE hidden unit (``kind="units"``).

    Args:
        model: a MedLiT; run in eval mode (no dropout, no router noise), its mode and gates are restored.
        batches: held-out (x, y) batches, x normalised for the model.
        task: MedMNIST task string (selects cross-entropy or BCE).

    Returns:
        per block, (H_l,) or (hidden_l,) float32 scores, L2-normalised within the block.
    """
    from medlite.engine.evaluate import loss_fn

    model = _require_medlit(model)
    attr = {"heads": "head_mask", "units": "unit_mask"}[kind]
    owners = [blk.attn if kind == "heads" else blk.moe for blk in model.blocks]
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    gates = [torch.ones_like(getattr(m, attr), requires_grad=True) for m in owners]
    scores = [torch.zeros_like(g) for g in gates]
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)  # only the gates need gradients
        for m, g in zip(owners, gates, strict=True):
            setattr(m, attr, g)
        with torch.enable_grad():
            for x, y in batches:
                loss = loss_fn(model(x), y, task)
                grads = torch.autograd.grad(loss, gates)
                for s, gr in zip(scores, grads, strict=True):
                    s += gr.abs() * len(x)
    finally:
        for m, g in zip(owners, gates, strict=True):
            setattr(m, attr, torch.ones_like(g.detach()))
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return [s / s.norm().clamp_min(1e-12) for s in scores]


@torch.no_grad()
def expert_load(model: nn.Module, batches: Batches) -> list[Tensor]:
    """Per block, (E_l,) fraction of held-out tokens whose top-k includes each expert (eval routing)."""
    model = _require_medlit(model)
    was_training = model.training
    model.eval()
    total, n = None, 0
    try:
        for x, _ in batches:
            model(x)
            loads = [v * len(x) for v in model.router_stats()]
            total = loads if total is None else [a + b for a, b in zip(total, loads, strict=True)]
            n += len(x)
    finally:
        model.train(was_training)
    if total is None:
        raise ValueError("expert_load needs at least one batch")
    return [t / n for t in total]


# ------------------------------------------------------------------------------------------- selection
def select_global(scores: list[Tensor], n_remove: int, min_keep: list[int]) -> list[list[int]]:
    """Indices to KEEP per layer after removing the ``n_remove`` lowest scores over all layers.

    Args:
        scores: per layer, (n_l,) importance (comparable across layers).
        n_remove: how many to remove in total.
        min_keep: per layer, the fewest that must stay.
    """
    order = sorted((float(v), li, i) for li, s in enumerate(scores) for i, v in enumerate(s.tolist()))
    left = [len(s) for s in scores]
    removed: list[set[int]] = [set() for _ in scores]
    for _, li, i in order:
        if n_remove <= 0:
            break
        if left[li] > min_keep[li]:
            removed[li].add(i)
            left[li] -= 1
            n_remove -= 1
    return [[i for i in range(len(s)) if i not in removed[li]] for li, s in enumerate(scores)]


def removable(scores: list[Tensor], min_keep: list[int]) -> int:
    """The most that :func:`select_global` can remove."""
    return sum(len(s) - k for s, k in zip(scores, min_keep, strict=True))


# --------------------------------------------------------------------------------------- physical prune
def _rebuild(model: MedLiT, cfg, slicers: dict[str, Callable[[Tensor], Tensor]]) -> MedLiT:
    new = MedLiT(cfg)
    sd = {k: slicers[k](v) if k in slicers else v for k, v in model.state_dict().items()}
    new.load_state_dict(sd, strict=True)
    return new.train(model.training)


def _rows(blocks: list[int], width: int) -> Tensor:
    return torch.tensor([b * width + j for b in blocks for j in range(width)], dtype=torch.long)


def prune_heads(model: nn.Module, keep: list[list[int]]) -> tuple[MedLiT, dict[str, Any]]:
    """Remove attention heads physically.

    Args:
        model: a MedLiT.
        keep: per block, the (current) query-head indices to keep, at least one per block.

    Returns:
        (new MedLiT with smaller q/k/v/proj matrices, record of the removed heads and key/value groups).
    """
    model = _require_medlit(model)
    cfg, hd = model.cfg, model.cfg.head_dim
    maps, slicers, removed_heads, removed_groups = [], {}, [], []
    for li, (blk, k) in enumerate(zip(model.blocks, keep, strict=True)):
        k = sorted(set(int(h) for h in k))
        kv = blk.attn.kv_map
        if not k or k[-1] >= len(kv):
            raise ValueError(f"block {li}: keep {k} must name 1..{len(kv)} of its {len(kv)} heads")
        groups = sorted({kv[h] for h in k})
        maps.append(tuple(groups.index(kv[h]) for h in k))
        removed_heads.append([h for h in range(len(kv)) if h not in k])
        removed_groups.append([g for g in range(blk.attn.num_kv_groups) if g not in groups])
        q_rows, kv_rows = _rows(k, hd), _rows(groups, hd)
        p = f"blocks.{li}.attn."
        for name, rows in (("q", q_rows), ("k", kv_rows), ("v", kv_rows)):
            slicers[p + name + ".weight"] = lambda t, r=rows: t[r]
            slicers[p + name + ".bias"] = lambda t, r=rows: t[r]
        slicers[p + "proj.weight"] = lambda t, r=q_rows: t[:, r]
    new = _rebuild(model, replace(cfg, block_heads=tuple(maps)), slicers)
    record = {"step": "prune-heads", "removed_heads": removed_heads, "removed_kv_groups": removed_groups,
              "heads_before": [len(b.attn.kv_map) for b in model.blocks],
              "heads_after": [len(m) for m in maps]}
    return new, record


def prune_ffn(model: nn.Module, keep_units: list[list[int]],
              keep_experts: list[list[int]] | None = None) -> tuple[MedLiT, dict[str, Any]]:
    """Remove MoE hidden units (and optionally whole experts) physically.

    Args:
        model: a MedLiT.
        keep_units: per block, the hidden-unit indices to keep (at least one).
        keep_experts: per block, the expert indices to keep (at least one); None keeps all.

    Returns:
        (new MedLiT with smaller expert matrices, record of the removed units and experts).
    """
    model = _require_medlit(model)
    cfg = model.cfg
    keep_experts = keep_experts or [list(range(b.moe.num_experts)) for b in model.blocks]
    hidden, experts, slicers, rm_units, rm_experts = [], [], {}, [], []
    for li, (blk, ku, ke) in enumerate(zip(model.blocks, keep_units, keep_experts, strict=True)):
        moe = blk.moe
        ku, ke = sorted(set(map(int, ku))), sorted(set(map(int, ke)))
        if not ku or not ke or ku[-1] >= moe.hidden or ke[-1] >= moe.num_experts:
            raise ValueError(f"block {li}: keep_units / keep_experts out of range or empty")
        hidden.append(len(ku))
        experts.append(len(ke))
        rm_units.append([j for j in range(moe.hidden) if j not in ku])
        rm_experts.append([e for e in range(moe.num_experts) if e not in ke])
        units = torch.tensor(ku, dtype=torch.long)
        w_rows = torch.tensor([e * moe.hidden + j for e in ke for j in ku], dtype=torch.long)
        ex = torch.tensor(ke, dtype=torch.long)
        p = f"blocks.{li}.moe."
        slicers.update({
            p + "w.weight": lambda t, r=w_rows: t[r], p + "w.bias": lambda t, r=w_rows: t[r],
            p + "v.weight": lambda t, r=units: t[r], p + "v.bias": lambda t, r=units: t[r],
            p + "w2.weight": lambda t, r=units: t[:, r],
            p + "router.weight": lambda t, r=ex: t[r], p + "noise.weight": lambda t, r=ex: t[r],
        })
    new = _rebuild(model, replace(cfg, block_hidden=tuple(hidden), block_experts=tuple(experts)), slicers)
    record = {"step": "prune-ffn", "removed_units": rm_units, "removed_experts": rm_experts,
              "hidden_before": [b.moe.hidden for b in model.blocks], "hidden_after": hidden,
              "experts_before": [b.moe.num_experts for b in model.blocks], "experts_after": experts}
    return new, record


# ------------------------------------------------------------------------------------ targets and plans
def plan_heads(model: nn.Module, batches: Batches, task: str, ratio: float | None = None,
               latency_ms: float | None = None, latency_fn: Callable[[nn.Module], float] | None = None,
               ) -> tuple[MedLiT, dict[str, Any]]:
    """Score heads on held-out data and prune to a ratio of all heads, or to a latency budget.

    Args:
        ratio: fraction of the query heads to remove (0..1), at least one head stays per block.
        latency_ms: instead of a ratio, remove the fewest heads that bring ``latency_fn(model)`` to
            <= this (binary search over the count; latency is assumed to fall as heads go).
    """
    model = _require_medlit(model)
    scores = gate_importance(model, batches, task, "heads")
    floor = [1] * len(scores)

    def build(n: int):
        return prune_heads(model, select_global(scores, n, floor))

    n, searched = _count(scores, floor, ratio, latency_ms, latency_fn, build)
    new, record = build(n)
    record.update({"target": {"ratio": ratio, "latency_ms": latency_ms}, "removed": n,
                   "scores": [s.tolist() for s in scores], "latency_search": searched,
                   "criterion": "accumulated |dL/d head gate| on held-out data, L2-normalised per block"})
    return new, record


def plan_ffn(model: nn.Module, batches: Batches, task: str, ratio: float | None = None,
             latency_ms: float | None = None, latency_fn: Callable[[nn.Module], float] | None = None,
             expert_min_load: float = 0.0, min_keep_fraction: float = 0.1) -> tuple[MedLiT, dict[str, Any]]:
    """Score MoE hidden units on held-out data and prune to a ratio of all units (or a latency budget);
    drop experts that receive at most ``expert_min_load`` of the held-out tokens.

    Args:
        ratio: fraction of all hidden units (over all blocks) to remove.
        min_keep_fraction: each block keeps at least this fraction of its units (and at least one).
    """
    model = _require_medlit(model)
    batches = list(batches)  # used twice
    loads = expert_load(model, batches)
    keep_experts = []
    for blk, load in zip(model.blocks, loads, strict=True):
        keep = [e for e, v in enumerate(load.tolist()) if v > expert_min_load]
        if len(keep) < blk.moe.top_k:  # never fewer experts than the router picks
            keep = sorted(load.argsort(descending=True)[: blk.moe.top_k].tolist())
        keep_experts.append(keep)
    scores = gate_importance(model, batches, task, "units")
    floor = [max(1, math.ceil(min_keep_fraction * len(s))) for s in scores]

    def build(n: int):
        return prune_ffn(model, select_global(scores, n, floor), keep_experts)

    n, searched = _count(scores, floor, ratio, latency_ms, latency_fn, build)
    new, record = build(n)
    record.update({"target": {"ratio": ratio, "latency_ms": latency_ms}, "removed": n,
                   "scores": [s.tolist() for s in scores], "expert_load": [v.tolist() for v in loads],
                   "expert_min_load": expert_min_load, "latency_search": searched,
                   "criterion": "accumulated |dL/d unit gate| on held-out data, L2-normalised per block; "
                                "experts with held-out load <= expert_min_load removed"})
    return new, record


def _count(scores, floor, ratio, latency_ms, latency_fn, build) -> tuple[int, list[dict[str, float]]]:
    """How many to remove: from a ratio, or the fewest meeting a latency budget (binary search)."""
    most = removable(scores, floor)
    if (ratio is None) == (latency_ms is None):
        raise ValueError("give exactly one of ratio and latency_ms")
    if ratio is not None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {ratio}")
        return min(most, int(round(ratio * sum(len(s) for s in scores)))), []
    if latency_fn is None:
        raise ValueError("a latency budget needs latency_fn")
    searched = []
    lo, hi = 0, most
    ms = latency_fn(build(hi)[0])
    searched.append({"removed": hi, "latency_ms": ms})
    if ms > latency_ms:
        log.warning("even removing %d gives %.2f ms > budget %.2f ms; removing the maximum", hi, ms, latency_ms)
        return hi, searched
    while lo < hi:
        mid = (lo + hi) // 2
        ms = latency_fn(build(mid)[0])
        searched.append({"removed": mid, "latency_ms": ms})
        if ms <= latency_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo, searched


def onnx_latency_ms(model: nn.Module, meta: dict[str, Any], threads: int = 1, warmup: int = 5,
                    repeats: int = 30) -> float:
    """Median batch-1 latency (ms) of ``model`` exported to ONNX and run by ONNX Runtime on the CPU."""
    import numpy as np
    import onnxruntime as ort

    from medlite.export.onnx import export_onnx

    pre = meta["preprocessing"]
    x = np.zeros((1, int(pre["channels"]), int(pre["size"]), int(pre["size"])), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="medlite-prune-") as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(model, _shape_meta(model, meta), path, check=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.fspath(path), so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        times = []
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _shape_meta(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the model entry describing ``model`` (its pruned config), for exports."""
    out = dict(meta)
    out["model"] = {**meta["model"], "kwargs": model_kwargs(model, meta["model"].get("kwargs", {}))}
    return out


def model_kwargs(model: nn.Module, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``create_model`` keyword arguments that rebuild ``model`` exactly: ``base`` plus its pruned shapes."""
    out = dict(base or {})
    if isinstance(model, MedLiT):
        for name in ("block_heads", "block_experts", "block_hidden"):
            value = getattr(model.cfg, name)
            if value is not None:
                out[name] = [list(v) for v in value] if name == "block_heads" else list(value)
    return out


# ----------------------------------------------------------------------------------------- checkpoints
def prune_checkpoint(src: str | os.PathLike, out: str | os.PathLike, heads: float | None = None,
                     heads_latency_ms: float | None = None, ffn: float | None = None,
                     ffn_latency_ms: float | None = None, expert_min_load: float = 0.0, data: str = "",
                     data_root: str = "", split: str = "val", batch_size: int = 128, max_images: int = 0,
                     threads: int = 1) -> tuple[Path, dict[str, Any]]:
    """Prune a MedLiT checkpoint (heads first, then FFN units / experts) and save the result.

    Importance is scored on the ``split`` split (validation by default: never test) of ``data`` (default:
    the checkpoint's data).  The new checkpoint's meta has the pruned shapes in ``model.kwargs`` (so
    :func:`medlite.engine.checkpoint.load_model` rebuilds it exactly) and one record per pruning step
    appended to ``meta["compress"]``; its ``metrics`` hold the validation AUC / ACC before and after.

    Returns:
        (path of the written checkpoint, meta).
    """
    import json

    from medlite.data import load_classification
    from medlite.engine.checkpoint import load_model, save_checkpoint
    from medlite.engine.evaluate import predict
    from medlite.metrics.classification import medmnist_acc, medmnist_auc

    if heads is None and heads_latency_ms is None and ffn is None and ffn_latency_ms is None:
        raise ValueError("nothing to prune: give a heads and/or an ffn target")
    model, meta = load_model(src)
    model = _require_medlit(model)
    meta = json.loads(json.dumps(meta))
    for k in ("optimizer", "history", "best_val_auc", "best_epoch", "epoch"):
        meta.pop(k, None)
    pre = meta["preprocessing"]
    ds = load_classification(data or meta["data"]["name"], size=int(pre["size"]), root=data_root or None)
    part = ds.splits()[split]
    n = min(len(part), max_images) if max_images else len(part)

    def batches():
        from medlite.data.transforms import to_float

        return [(to_float(part.images[i : min(i + batch_size, n)], pre["mean"], pre["std"]),
                 part.labels[i : min(i + batch_size, n)]) for i in range(0, n, batch_size)]

    def score(m):
        probs, labels, _ = predict(m, part, pre["mean"], pre["std"], ds.task)
        return {"auc": float(medmnist_auc(labels, probs, ds.task)),
                "acc": float(medmnist_acc(labels, probs, ds.task))}

    def latency(m):
        return onnx_latency_ms(m, meta, threads=threads)

    before = score(model)
    records = []
    params0 = sum(p.numel() for p in model.parameters())
    if heads is not None or heads_latency_ms is not None:
        model, rec = plan_heads(model, batches(), ds.task, heads, heads_latency_ms, latency)
        records.append(rec)
    if ffn is not None or ffn_latency_ms is not None:
        model, rec = plan_ffn(model, batches(), ds.task, ffn, ffn_latency_ms, latency, expert_min_load)
        records.append(rec)
    after = score(model.eval())
    for rec in records:
        rec.update({"scored_on": f"{ds.name}/{split} ({n} images)", "source": str(src)})
    records[-1].update({"params_before": params0, "params_after": sum(p.numel() for p in model.parameters()),
                        f"{split}_before": before, f"{split}_after": after})
    meta["model"]["kwargs"] = model_kwargs(model, meta["model"].get("kwargs", {}))
    meta["compress"] = [*meta.get("compress", []), *records]
    meta["metrics"] = {f"{split}_before_pruning": before, f"{split}_after_pruning": after}
    path = save_checkpoint(Path(out), model, meta)
    log.info("pruned %s: %d -> %d parameters, %s AUC %.4f -> %.4f", src, params0,
             records[-1]["params_after"], split, before["auc"], after["auc"])
    return path, meta
