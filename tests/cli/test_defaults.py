"""Option defaults cannot drift from the config dataclasses (and the library functions) they feed.

The CLI restates defaults instead of importing the configs, so that ``medlite --help`` needs no torch.
Every command is listed here with the source of its defaults; an option whose name (after ``RENAMES``)
is a field / parameter of that source must have the same default, unless ``EXCEPTIONS`` says why not.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer

from medlite.bench.latency import bench
from medlite.cli import app
from medlite.cli.common import parse_ints
from medlite.compress.prune import prune_checkpoint
from medlite.demo import run_demo
from medlite.engine.evaluate import evaluate_split
from medlite.engine.tasks.classify import TrainConfig
from medlite.engine.tasks.distill import DistillConfig
from medlite.engine.tasks.mae import PretrainConfig
from medlite.engine.tasks.promptable import SamTrainConfig, evaluate_sam
from medlite.engine.tasks.segment import SegTrainConfig
from medlite.explain import rollout_heatmap
from medlite.export.onnx import export_onnx
from medlite.export.sam_onnx import export_litesam
from medlite.serve.app import Server


def _or_none(v):
    return v or None


# command -> where its defaults come from
SOURCES = {
    "train": TrainConfig,
    "evaluate": evaluate_split,
    "pretrain": PretrainConfig,
    "explain": rollout_heatmap,
    "demo": run_demo,
    "export": export_onnx,
    "bench": bench,
    "distill": DistillConfig,
    "prune": prune_checkpoint,
    "seg train": SegTrainConfig,
    "seg evaluate": SegTrainConfig,
    "seg export": export_onnx,
    "sam train": SamTrainConfig,
    "sam evaluate": evaluate_sam,
    "sam export": export_litesam,
    "serve": Server,
}
# commands with no config or library defaults to follow
NO_SOURCE = {"datasets", "models", "predict", "seg predict", "sam predict", "data check",
             "sam cache-teacher"}  # its options describe the cache (teacher, splits, folder), no config
# (command, option) -> field / parameter name, where they differ
RENAMES = {
    ("bench", "batch_size"): "batch_for_throughput",
    ("bench", "runtime"): "runtimes",
    ("train", "leakage"): "leakage_check",
    ("sam train", "data"): "datasets",
    ("sam train", "time_budget"): "time_budget_s",
    ("sam evaluate", "prompt"): "prompts",
}
# (command, option) -> how the command turns the option's value into the config's
CONVERT = {
    ("bench", "threads"): lambda v: parse_ints(v, ""),
    ("bench", "runtime"): lambda v: tuple(v.split(",")),
    ("distill", "layer_map"): lambda v: parse_ints(v, ""),
    ("seg train", "mask_suffix"): _or_none,
    ("sam train", "data"): tuple,
    ("sam train", "teacher"): _or_none,
    ("sam train", "time_budget"): _or_none,
    ("sam train", "name"): _or_none,
    ("sam evaluate", "prompt"): lambda v: tuple(v.split(",")),
    ("sam evaluate", "boxes"): _or_none,
}
# (command, option) -> why its default differs on purpose
EXCEPTIONS = {
    ("train", "data"): "required: a training run names its data (TrainConfig's breastmnist is for the API)",
    ("train", "model"): "an argument: required",
    ("train", "size"): "0 = 28 for MedMNIST data where the model takes it, else the model's native size",
    ("pretrain", "model"): "an argument: required",
    ("distill", "teacher"): "required: the command distils (DistillConfig without a teacher fine-tunes)",
    ("distill", "student"): "required: the command names what it trains",
    ("seg train", "model"): "an argument: required",
    ("seg evaluate", "data"): "'' = the run's own test split; SegTrainConfig's busi is for training",
    ("seg evaluate", "out"): "the evaluation folder (default RUN/eval), not the run folder",
    ("sam evaluate", "split"): "not an evaluate_sam parameter (the split is chosen before)",
}


def _commands(group, prefix: str = ""):
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            yield from _commands(cmd, f"{path} ")
        else:
            yield path, cmd


COMMANDS = dict(_commands(typer.main.get_command(app)))


def _source_defaults(source) -> dict:
    if dataclasses.is_dataclass(source):
        out = {}
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    return {n: p.default for n, p in inspect.signature(source).parameters.items() if p.default is not p.empty}


def test_every_command_has_a_source_or_none():
    assert set(COMMANDS) == set(SOURCES) | NO_SOURCE


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_defaults_match_the_config(command):
    cmd, source = COMMANDS[command], SOURCES[command]
    defaults = _source_defaults(source)
    names = {p.name for p in cmd.params}
    for (c, opt), field in RENAMES.items():
        if c == command:
            assert opt in names and field in defaults, f"stale rename {command} --{opt} -> {field}"
    compared = 0
    for p in cmd.params:
        field = RENAMES.get((command, p.name), p.name)
        if (command, p.name) in EXCEPTIONS or field not in defaults:
            continue
        value = CONVERT.get((command, p.name), lambda v: v)(p.default)
        assert value == defaults[field], f"medlite {command} --{p.name}: {p.default!r} vs {field}={defaults[field]!r}"
        compared += 1
    assert compared, f"medlite {command}: no option matches {source.__name__}"


def test_exceptions_name_real_options():
    for command, opt in EXCEPTIONS:
        assert opt in {p.name for p in COMMANDS[command].params}, (command, opt)
