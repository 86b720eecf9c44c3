"""The run record: validation before anything reaches a constructor, old layouts upgraded, every reader
dispatching on ``kind``; one checkpoint of each kind from the layout before the one training loop
(tests/engine/legacy, made by make_legacy.py) still loads and runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medlite.cli import app
from medlite.engine.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from medlite.export.meta import ExportError, validate_meta
from medlite.record import KINDS, RecordError, RunRecord, require_kind, upgrade

LEGACY = Path(__file__).parent / "engine" / "legacy"
EXPECTED = {"classifier": "classifier", "distilled": "classifier", "mae_encoder": "mae-encoder",
            "segmentation": "segmentation", "promptable": "promptable"}


def _classifier(**over) -> dict:
    meta = {"kind": "classifier",
            "model": {"name": "resnet18", "num_classes": 2, "in_chans": 1, "img_size": 28, "kwargs": {}},
            "preprocessing": {"size": 28, "channels": 1, "mean": [0.5], "std": [0.5]},
            "data": {"task": "binary-class", "label_names": ["a", "b"]}}
    for path, value in over.items():
        section, _, key = path.partition(".")
        if key:
            meta[section][key] = value
        else:
            meta[section] = value
    return meta


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_legacy_checkpoint_of_each_kind_loads_and_runs(name, monkeypatch):
    if name == "mae_encoder":  # made with the registered medlit_nano_28 patched tiny (make_legacy.py): same here
        from medlite.models import medlit

        tiny = {"embed_dim": 32, "num_heads": 4, "num_kv_groups": 2, "depth": 2, "experts_per_stage": (2, 3),
                "expert_hidden_start": 24, "expert_hidden_end": 12}
        monkeypatch.setattr(medlit, "NANO_28", medlit.replace(medlit.NANO_28, stages=None, **tiny))
    raw = json.loads((LEGACY / f"{name}.json").read_text())
    model, meta = load_model(LEGACY / f"{name}.safetensors")
    assert meta["kind"] == EXPECTED[name] and meta["kind"] in KINDS
    assert ("kind" in raw) == (name != "promptable")  # LiteSAM checkpoints had no kind before
    size, chans = meta["model"]["img_size"], meta["model"]["in_chans"]
    x = torch.rand(1, chans, size, size)
    with torch.no_grad():
        if meta["kind"] == "promptable":
            coords, labels = torch.tensor([[[8.0, 8.0], [40.0, 40.0]]]), torch.tensor([[2.0, 3.0]])
            logits, iou = model(x, coords, labels, torch.zeros(1, 1, size, size), torch.zeros(1))
            assert logits.shape[-2:] == (size, size) and torch.isfinite(logits).all()
        else:
            out = model(x)
            assert torch.isfinite(out).all()
    if meta["kind"] == "classifier":
        assert out.shape == (1, len(meta["data"]["label_names"]))
    assert validate_meta(meta)["kind"] == meta["kind"]  # export accepts the upgraded record


def test_legacy_promptable_and_mae_records_are_upgraded():
    sam = upgrade(json.loads((LEGACY / "promptable.json").read_text()))
    assert sam["kind"] == "promptable" and "task" not in sam and sam["train_config"]["model"] == "litesam_swin_xs"
    mae = upgrade(json.loads((LEGACY / "mae_encoder.json").read_text()))
    assert "pretrain_config" not in mae and mae["train_config"]["mask_ratio"] == 0.75
    assert mae["data"]["n_images"] > 0


@pytest.mark.parametrize("over, match", [
    ({"kind": "virus"}, "unknown kind 'virus'"),
    ({"model.num_classes": -1}, "model.num_classes must be a positive integer"),
    ({"model.img_size": "28; rm -rf /"}, "model.img_size must be a positive integer"),
    ({"model.in_chans": True}, "model.in_chans must be a positive integer"),
    ({"model.name": ""}, "model.name"),
    ({"model.kwargs": {"act": {"__class__": object()}}}, "model.kwargs must map option names to JSON values"),
    ({"preprocessing.std": [0.0]}, "std must be positive"),
    ({"preprocessing.mean": "0.5"}, "preprocessing.mean must be a non-empty list"),
    ({"data.label_names": ["only one"]}, "1 label names for a model with 2 outputs"),
    ({"model": "resnet18"}, "'model' must be a JSON object"),
])
def test_invalid_records_are_refused_with_the_field_named(over, match):
    with pytest.raises(RecordError, match=match):
        RunRecord.from_dict(_classifier(**over), "x.safetensors")


def test_record_without_kind_of_an_unknown_layout_is_refused():
    meta = _classifier()
    del meta["kind"], meta["data"]
    with pytest.raises(RecordError, match="no 'kind'"):
        RunRecord.from_dict(meta, "x")


def test_round_trip_is_stable():
    rec = RunRecord.from_dict({**_classifier(), "epoch": 3}, "x")
    once = rec.to_dict()
    assert once["medlite_version"]  # the writer's version is filled in
    assert RunRecord.from_dict(once, "x").to_dict() == once and rec.extra == {"epoch": 3}


def test_checkpoints_with_invalid_records_are_refused_on_write_and_on_read(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="model.num_classes"):
        save_checkpoint(tmp_path / "bad.safetensors", model, _classifier(**{"model.num_classes": 0}))
    assert not (tmp_path / "bad.safetensors").exists()
    # a file whose header was edited by hand: refused when read, before any model is built
    good = save_checkpoint(tmp_path / "c.safetensors", model, _classifier())
    from safetensors.torch import load_file, save_file

    tampered = copy.deepcopy(read_checkpoint(good)[1])
    tampered["model"]["img_size"] = "big"
    save_file(load_file(good), tmp_path / "t.safetensors", metadata={"medlite": json.dumps(tampered)})
    with pytest.raises(CheckpointError, match=r"t.safetensors.*model.img_size must be a positive integer"):
        load_model(tmp_path / "t.safetensors")


def test_unknown_model_options_are_a_checkpoint_error(tmp_path):
    meta = _classifier()
    meta["model"].update(name="medlit_nano_28", kwargs={"not_an_option": 3})
    path = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, meta)
    with pytest.raises(CheckpointError, match=r"\['not_an_option'\] are not options of model 'medlit_nano_28'"):
        load_model(path)


@pytest.mark.parametrize("name, kwargs, match", [
    # timm would torch.load this file: a recorded option must never reach it
    ("resnet18", {"checkpoint_path": "weights.pth"}, "are not options of model 'resnet18'"),
    ("efficientnet_lite0", {"pretrained_cfg_overlay": {"file": "x.pth"}}, "are not options"),
    ("unet_lite0", {"encoder_weights": "imagenet"}, "are not options"),
    # an encoder name that is a hub reference or a path would make timm download or read files
    ("medlitenet", {"encoder": "hf-hub:timm/mobilenetv2_100"}, "looks like a path or a hub reference"),
    ("medlitenet", {"encoder": "../../evil"}, "looks like a path or a hub reference"),
    ("litesam_swin_xs", {"pretrained": True}, "are not options"),
])
def test_checkpoint_options_are_an_allow_list(tmp_path, monkeypatch, name, kwargs, match):
    """Checkpoint metadata is data, not instructions: options a model does not declare, and strings that
    name files or hubs, are refused before anything is built (nothing is opened, nothing downloaded)."""
    import timm

    meta = _classifier()
    meta["model"].update(name=name, kwargs=kwargs)
    path = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, meta)
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm reached"))
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_declared_options_still_load(tmp_path):
    import medlite

    meta = _classifier()
    meta["model"].update(name="medlit_nano_28", kwargs={"depth": 2, "experts_per_stage": [2, 2]})
    model = medlite.create_model("medlit_nano_28", num_classes=meta["model"]["num_classes"],
                                 in_chans=meta["model"]["in_chans"], img_size=28, depth=2, experts_per_stage=[2, 2])
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    loaded, _ = load_model(path)
    assert len(loaded.blocks) == 2


def test_export_refuses_a_record_it_cannot_deploy():
    meta = _classifier()
    del meta["data"]["task"]
    with pytest.raises(ExportError, match="needs data.task and data.label_names"):
        validate_meta(meta)


def test_require_kind_names_the_command_that_fits():
    with pytest.raises(RecordError, match=r"x holds a segmentation model; `medlite predict` needs a classifier "
                                          r"model \(for this one use medlite seg predict"):
        require_kind({"kind": "segmentation"}, "classifier", "x", "medlite predict")


@pytest.mark.parametrize("args", [["predict", "{seg}", "{img}"], ["evaluate", "{seg}"], ["export", "{seg}"],
                                  ["sam", "predict", "{seg}", "{img}", "--box", "1,1,5,5"],
                                  ["seg", "evaluate", "{sam}"]])
def test_cli_commands_refuse_the_wrong_kind_of_model(args, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("L", (16, 16)).save(img)
    subs = {"{seg}": str(LEGACY / "segmentation.safetensors"), "{sam}": str(LEGACY / "promptable.safetensors"),
            "{img}": str(img)}
    r = CliRunner().invoke(app, [subs.get(a, a) for a in args])
    assert r.exit_code == 2, r.output
    assert "model" in r.output and "needs a" in r.output and "Traceback" not in r.output
