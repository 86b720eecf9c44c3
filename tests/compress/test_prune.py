"""Physical pruning: parameters really go, zero gates predict the pruned outputs, round trips work."""

from __future__ import annotations

import pytest
import torch
from compress_tiny import TINY, meta_for, tiny_medlit

from medlite.compress.prune import (
    gate_importance,
    model_kwargs,
    plan_ffn,
    plan_heads,
    prune_checkpoint,
    prune_ffn,
    prune_heads,
    select_global,
)
from medlite.engine.checkpoint import load_model, save_checkpoint
from medlite.layers import MoESwiGLU


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def x_batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_prune_heads_removes_exact_weights_and_keeps_outputs_of_zero_gated_heads():
    model = tiny_medlit().eval()
    keep = [[0, 2, 3], [1]]  # block 0 keeps both groups; block 1 loses group 1 (heads 2, 3) entirely
    x = x_batch()
    for blk, k in zip(model.blocks, keep, strict=True):
        blk.attn.head_mask = torch.tensor([1.0 if h in k else 0.0 for h in range(4)])
    with torch.no_grad():
        ref = model(x)
    pruned, rec = prune_heads(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), ref, atol=1e-5, rtol=1e-5)
    hd, d = 8, 32  # head_dim = 32 / 4
    # block 0: one query head less (q rows + proj columns); block 1: 3 query heads and 1 kv group less
    removed = (2 * d * hd) + (3 * 2 * d * hd + 2 * d * hd)
    assert n_params(model) - n_params(pruned) == removed
    assert pruned.cfg.block_heads == ((0, 1, 1), (0,))
    assert rec["removed_heads"] == [[1], [0, 2, 3]] and rec["removed_kv_groups"] == [[], [1]]
    assert pruned.blocks[1].attn.k.weight.shape == (hd, d)


def test_prune_ffn_units_with_zero_gates_give_the_same_outputs():
    model = tiny_medlit().eval()
    keep = [list(range(0, 24, 2)), [0, 1, 5, 7, 11]]
    for blk, k in zip(model.blocks, keep, strict=True):
        mask = torch.zeros(blk.moe.hidden)
        mask[k] = 1.0
        blk.moe.unit_mask = mask
    x = x_batch()
    with torch.no_grad():
        ref = model(x)
    pruned, rec = prune_ffn(model, keep)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), ref, atol=1e-5, rtol=1e-5)
    assert pruned.cfg.block_hidden == (12, 5) and rec["hidden_after"] == [12, 5]
    # per removed unit: one row of W per expert (D + 1 bias each), a row of V (D + 1), a column of W2 (D)
    d = 32
    expected = 12 * (2 * (d + 1) + (d + 1) + d) + 7 * (3 * (d + 1) + (d + 1) + d)
    assert n_params(model) - n_params(pruned) == expected


def test_never_routed_expert_is_removed_without_changing_outputs():
    torch.manual_seed(0)
    moe = MoESwiGLU(8, 6, num_experts=3, top_k=2).eval()
    with torch.no_grad():
        moe.router.weight.normal_(0, 0.1)
        moe.router.weight[1] = -10.0  # inputs below are positive: expert 1 is never in the top 2
    x = torch.rand(20, 8) + 0.1
    with torch.no_grad():
        ref = moe(x)
    assert moe.last_load[1] == 0
    small = MoESwiGLU(8, 6, num_experts=2, top_k=2).eval()
    keep = torch.tensor([0, 2])
    rows = torch.cat([torch.arange(6) + 6 * e for e in keep.tolist()])
    sd = moe.state_dict()
    small.load_state_dict({**sd, "router.weight": sd["router.weight"][keep], "noise.weight": sd["noise.weight"][keep],
                           "w.weight": sd["w.weight"][rows], "w.bias": sd["w.bias"][rows]})
    with torch.no_grad():
        torch.testing.assert_close(small(x), ref)


def test_prune_ffn_drops_experts_and_rebuilds():
    model = tiny_medlit().eval()
    keep_units = [list(range(24)), list(range(12))]
    pruned, rec = prune_ffn(model, keep_units, keep_experts=[[0, 1], [0, 2]])
    assert pruned.cfg.block_experts == (2, 2) and rec["removed_experts"] == [[], [1]]
    assert pruned.blocks[1].moe.router.weight.shape == (2, 32)
    assert pruned(x_batch()).shape == (6, 3)


def test_select_global_respects_floor_and_count():
    scores = [torch.tensor([0.1, 0.2, 0.9]), torch.tensor([0.05, 0.3])]
    keep = select_global(scores, 3, min_keep=[1, 1])
    assert keep == [[2], [1]] or sum(len(k) for k in keep) == 2
    assert all(len(k) >= 1 for k in keep)


def test_plan_heads_ratio_removes_the_requested_count():
    model = tiny_medlit()
    batches = [(x_batch(8, s), torch.randint(0, 3, (8,))) for s in range(2)]
    pruned, rec = plan_heads(model, batches, "multi-class", ratio=0.5)
    assert sum(rec["heads_after"]) == 4 and rec["removed"] == 4
    assert n_params(pruned) < n_params(model)
    assert all(h >= 1 for h in rec["heads_after"])


def test_plan_ffn_ratio_and_latency_budget():
    model = tiny_medlit()
    batches = [(x_batch(8, s), torch.randint(0, 3, (8,))) for s in range(2)]
    total = 24 + 12
    pruned, rec = plan_ffn(model, batches, "multi-class", ratio=0.5)
    assert sum(rec["hidden_after"]) == total - round(0.5 * total)
    # a fake "latency" proportional to the parameter count: the search finds the fewest removals
    budget = n_params(model) - 1500

    def fake_ms(m):
        return float(n_params(m))

    pruned2, rec2 = plan_ffn(model, batches, "multi-class", latency_ms=budget, latency_fn=fake_ms)
    assert n_params(pruned2) <= budget
    fewer, _ = plan_ffn(model, batches, "multi-class", ratio=(rec2["removed"] - 1) / total)
    assert n_params(fewer) > budget


def test_gate_importance_is_finite_and_restores_gates():
    model = tiny_medlit()
    batches = [(x_batch(8), torch.randint(0, 3, (8,)))]
    scores = gate_importance(model, batches, "multi-class", "heads")
    assert [s.shape for s in scores] == [torch.Size([4])] * 2
    assert all(torch.isfinite(s).all() for s in scores)
    assert all(not b.attn.head_mask.requires_grad for b in model.blocks)
    assert all(p.requires_grad for p in model.parameters())


def test_pruned_checkpoint_round_trip_and_onnx_export(tmp_path):
    pytest.importorskip("onnxruntime")
    from medlite.export.onnx import export_onnx

    model = tiny_medlit().eval()
    pruned, _ = prune_heads(model, [[0, 3], [1, 2]])
    pruned, _ = prune_ffn(pruned, [list(range(10)), list(range(0, 12, 3))], [[0, 1], [1, 2]])
    meta = meta_for("medlit_nano_28", model_kwargs(pruned, TINY))
    path = save_checkpoint(tmp_path / "p.safetensors", pruned, meta)
    loaded, lmeta = load_model(path)
    x = x_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pruned.eval()(x))
    assert loaded.cfg.block_heads == ((0, 1), (0, 1))  # heads 1 and 2 of block 1 sit in different groups
    res = export_onnx(loaded, lmeta, tmp_path / "p.onnx")
    assert res["max_abs_diff"] < 1e-4


def test_unpruned_configs_and_checkpoints_are_unchanged():
    model = tiny_medlit()
    assert model.cfg.block_heads is None and model_kwargs(model, {"a": 1}) == {"a": 1}
    assert all(b.attn._rep == 2 for b in model.blocks)  # the repeat_interleave path, as before
    assert "kv_index" not in model.state_dict() and not any("mask" in k for k in model.state_dict())


def test_prune_checkpoint_records_what_was_removed(medlit_run, tiny_npz, tmp_path):
    out = tmp_path / "pruned.safetensors"
    path, meta = prune_checkpoint(medlit_run, out, heads=0.25, ffn=0.3, data=str(tiny_npz))
    steps = [r["step"] for r in meta["compress"]]
    assert steps == ["prune-heads", "prune-ffn"]
    assert meta["compress"][-1]["params_after"] < meta["compress"][-1]["params_before"]
    loaded, lmeta = load_model(path)
    assert sum(len(m) for m in loaded.cfg.block_heads) == 6
    assert lmeta["model"]["kwargs"]["block_hidden"] == list(loaded.cfg.block_hidden)
    with pytest.raises(ValueError, match="nothing to prune"):
        prune_checkpoint(medlit_run, out, data=str(tiny_npz))
