import json

import pytest
import torch

import medlite
from medlite.engine.checkpoint import (
    CheckpointError,
    load_model,
    load_optimizer_state,
    optimizer_state_tensors,
    read_checkpoint,
    save_checkpoint,
)


def _meta(name="resnet18", **kw):
    return {"kind": "classifier",
            "model": {"name": name, "num_classes": 3, "in_chans": 1, "img_size": 28, "kwargs": kw},
            "preprocessing": {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]},
            "data": {"task": "multi-class", "label_names": ["a", "b", "c"]}}


def test_round_trip_rebuilds_identical_model(tmp_path):
    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=28).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, _meta())
    loaded, meta = load_model(path)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta["model"]["name"] == "resnet18"
    # the JSON copy beside the weights is the same metadata, readable by people
    assert json.loads(path.with_suffix(".json").read_text()) == meta


def test_run_folder_resolves_to_best(tmp_path):
    model = medlite.create_model("resnet18", num_classes=3, in_chans=1, img_size=28)
    save_checkpoint(tmp_path / "best.safetensors", model, _meta())
    _, meta = load_model(tmp_path)
    assert meta["model"]["num_classes"] == 3


def test_optimizer_state_round_trip(tmp_path):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    tensors, info = optimizer_state_tensors(opt)
    save_checkpoint(tmp_path / "c.safetensors", model, {**_meta(), "optimizer": info}, state=tensors)
    _, meta, state = read_checkpoint(tmp_path / "c.safetensors")
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-2)
    load_optimizer_state(opt2, state, meta["optimizer"])
    for k in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(opt.state_dict()["state"][0][k], opt2.state_dict()["state"][0][k])


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = torch.nn.Linear(4, 2)
    path = save_checkpoint(tmp_path / "c.safetensors", model, _meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.safetensors"):
        read_checkpoint(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_checkpoint_is_not_a_pickle(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(4, 2), _meta())
    # safetensors: 8-byte little-endian header length, then a JSON header; no pickle opcodes
    head = path.read_bytes()[:9]
    assert head[8:9] == b"{"


def test_no_temp_files_left_behind(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", torch.nn.Linear(4, 2), _meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]
