"""The app as a whole: one error wrapper on every command, help that reads at 80 columns, the layering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import medlite
from medlite.cli import app
from medlite.cli.common import CliError, checked
from medlite.data.base import DataError

runner = CliRunner()
PACKAGE = Path(medlite.__file__).parent


def _typer_commands(t: typer.Typer, prefix: tuple[str, ...] = ()):
    for c in t.registered_commands:
        yield (*prefix, c.name or c.callback.__name__.replace("_", "-")), c.callback
    for g in t.registered_groups:
        yield from _typer_commands(g.typer_instance, (*prefix, g.name))


COMMANDS = dict(_typer_commands(app))


def test_every_command_goes_through_the_one_wrapper():
    assert len(COMMANDS) == 23  # 20 + sam cache-teacher + data check + serve
    unchecked = [" ".join(k) for k, fn in COMMANDS.items() if not getattr(fn, "medlite_checked", False)]
    assert not unchecked


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_reads_at_80_columns(path):
    r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "…" not in r.output  # nothing cut short
    assert max(len(line) for line in r.output.splitlines()) <= 80


def _tiny_app(exc: BaseException) -> typer.Typer:
    t = typer.Typer()

    @t.command()
    @checked
    def boom(verbose: bool = False) -> None:
        raise exc

    return t


@pytest.mark.parametrize("exc", [DataError("data.npz: no such subset [x]"), CliError("bad [option]"),
                                 FileNotFoundError("missing.png"),
                                 ImportError("ExecuTorch export needs executorch: pip install medlite[mobile]")])
def test_user_errors_are_one_red_line_and_exit_2(exc):
    r = runner.invoke(_tiny_app(exc), [])
    assert r.exit_code == 2
    assert r.output.strip() == f"error: {exc}"  # markup in the message is printed, not interpreted


@pytest.mark.parametrize("exc", [ImportError("No module named 'foo'"), ValueError("a bug"), KeyError("k")])
def test_bugs_keep_their_traceback(exc):
    r = runner.invoke(_tiny_app(exc), [])
    assert r.exit_code == 1 and r.exception is exc


def test_unknown_model_names_are_user_errors(tmp_path):
    r = runner.invoke(app, ["train", "resnet81", "--data", "breastmnist", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown model 'resnet81'" in r.output and "resnet18" in r.output
    r = runner.invoke(app, ["seg", "train", "resnet18", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "segmentation model" in r.output
    r = runner.invoke(app, ["bench", "nosuchnet", "--runtime", "torch"])
    assert r.exit_code == 2 and "nosuchnet" in r.output


def test_bad_options_fail_before_any_work(tmp_path):
    r = runner.invoke(app, ["prune", str(tmp_path / "no-run")])
    assert r.exit_code == 2 and "nothing to prune" in r.output
    r = runner.invoke(app, ["prune", str(tmp_path / "no-run"), "--heads", "1.5"])
    assert r.exit_code == 2 and "[0, 1)" in r.output
    r = runner.invoke(app, ["sam", "evaluate", str(tmp_path / "no-run"), "--prompt", "box,lasso"])
    assert r.exit_code == 2 and "lasso" in r.output
    r = runner.invoke(app, ["sam", "train", "--data", "nosuchset"])
    assert r.exit_code == 2 and "nosuchset" in r.output


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_nothing_below_cli_imports_cli_and_export_stands_alone():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("cli", "__main__.py"):
            continue
        mods = _imports(path)
        assert not any(m == "medlite.cli" or m.startswith("medlite.cli.") for m in mods), rel
        if rel.parts[0] == "export":
            assert not any(m.startswith(("medlite.bench", "medlite.engine")) for m in mods), rel


def test_library_code_does_not_print():
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("cli", "engine"):  # the CLI prints; engine/ has its own rewrite
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                assert name != "print", f"{rel}:{node.lineno} prints; return data and let medlite.cli print"


def _narrow_ok(output: str) -> None:
    assert "…" not in output  # no cell cut short
    assert max(len(line.rstrip()) for line in output.splitlines()) <= 80


@pytest.mark.parametrize("argv", [["--version"], ["datasets"], ["models", "--family", "litesam"]], ids=" ".join)
def test_listings_read_at_80_columns(argv):
    if argv != ["--version"]:
        assert "--verbose" in {o for p in _params((argv[0],)).values() for o in p.opts}
    r = runner.invoke(app, argv, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    _narrow_ok(r.output)
    if argv == ["--version"]:
        assert r.output.startswith(f"medlite {medlite.__version__}")
    if argv[0] == "models":
        assert "litesam_swin_xs_distilled" in r.output and "litemedsam" in r.output


def test_markdown_tables_fit_80_columns_whole(capsys, monkeypatch):
    from rich.console import Console

    import medlite.cli.common as common

    monkeypatch.setattr(common, "console", Console(width=80, force_terminal=False))
    wide = ("| model | runtime | threads | batch-1 median (ms) | p90 (ms) | throughput (img/s) | params (M) "
            "| file (MB) |\n|---|---|---|---|---|---|---|---|\n"
            "| medlit_nano_28_dermamnist_pruned | onnxruntime-int8 | 2 | 0.41 | 0.52 | 2400 | 0.52 | 0.61 |\n")
    common.print_markdown("# report\n\nsome text\n\n" + wide + "\nmore text\n")
    out = capsys.readouterr().out
    _narrow_ok(out)
    for cell in ("medlit_nano_28_dermamnist_pruned", "onnxruntime-int8", "2400", "more text"):
        assert cell in out
    common.print_table("t", ["a", "b"], [["x", "1"]])  # fits: an ordinary table
    assert "┃ a" in capsys.readouterr().out


def test_a_missing_extra_is_one_line_naming_it():
    r = runner.invoke(_tiny_app(ModuleNotFoundError("No module named 'monai'", name="monai")), [])
    assert r.exit_code == 2
    assert r.output.strip() == ("error: this needs the optional package 'monai', which is not installed: "
                                "pip install 'medlite[seg]'")
    r = runner.invoke(_tiny_app(ModuleNotFoundError("No module named 'foo'", name="foo")), [])
    assert r.exit_code == 1  # not an extra of medlite: a bug, with its traceback


def _params(path: tuple[str, ...]) -> dict:
    import typer.main

    cmd = typer.main.get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    return {p.name: p for p in cmd.params}


LISTINGS = {("datasets",), ("models",)}  # they read, print and write nothing


@pytest.mark.parametrize("path", sorted(set(COMMANDS) - LISTINGS), ids=" ".join)
def test_one_vocabulary(path):
    """Every command that writes names its output --out; every command that computes takes --threads; a
    model or run is the first argument; model options are --model-opt; batch sizes --batch-size."""
    params = _params(path)
    opts = {o for p in params.values() for o in getattr(p, "opts", [])}
    assert "--out" in opts and "--threads" in opts and "--verbose" in opts, sorted(opts)
    first = next(iter(params.values()))
    if path not in {("demo",), ("sam", "cache-teacher")}:  # demo trains its own model; the cache names a teacher
        assert first.param_type_name == "argument" and first.name in {"model", "run", "models", "student", "data"}
    assert not {"--set-model", "--batch", "--root", "--out-dir"} & {o for p in params.values() if not p.hidden
                                                                   for o in p.opts[:1]}
    if "model_opt" in params or any(o == "--set" for o in opts):
        assert "--model-opt" in opts


def test_older_spellings_still_work(tmp_path):
    r = runner.invoke(app, ["distill", "medlit_nano_28", "--student", "medlit_seed_28", "--teacher", "x"])
    assert r.exit_code == 2 and "disagree" in r.output
    r = runner.invoke(app, ["distill", "--teacher", "x"])
    assert r.exit_code == 2 and "missing STUDENT" in r.output
    r = runner.invoke(app, ["datasets", "--root", str(tmp_path)], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and str(tmp_path) in r.output


def test_unwritable_out_fails_before_training(tmp_path, monkeypatch):
    """Hardening issue, item 10: a read-only --out used to end in a traceback after training."""
    import os

    if os.geteuid() == 0:  # root writes anywhere: make the folder's creation fail instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "run"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        out = ro / "run"
    r = runner.invoke(app, ["train", "medlit_nano_28", "--data", "no_such_data.npz", "--epochs", "1", "--out",
                            str(out), "--no-progress"])
    assert r.exit_code == 2, r.output
    assert "cannot write the run folder" in r.output and str(out) in r.output.replace("\n", "")
    assert "epoch" not in r.output.lower()


def test_full_disk_is_named_before_training(tmp_path, monkeypatch, make_npz):
    import shutil
    from collections import namedtuple

    make_npz("tiny.npz", sizes=(8, 4, 4), hw=(28, 28))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 20))
    r = runner.invoke(app, ["train", "medlit_nano_28", "--data", str(tmp_path / "tiny.npz"), "--epochs", "1",
                            "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and "MiB free" in r.output, r.output


def test_model_and_size_checked_before_any_data_is_loaded():
    """Ecosystem issue, workflows: medlit_nano at 28 px died after loading every image."""
    from medlite.cli.classify import checked_size

    r = runner.invoke(app, ["train", "medlit_nano", "--data", "no/such/folder", "--size", "28"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "--size 28 does not fit medlit_nano" in r.output and "native size is 256" in r.output
    assert checked_size("medlit_nano", 0, "my/folder") == 256  # the model's native size
    assert checked_size("medlit_nano_28", 0, "breastmnist") == 28
    assert checked_size("medlit_nano", 0, "breastmnist") == 256  # 28 does not fit its 16 px patches


REPORTERS = [("datasets",), ("models",), ("evaluate",), ("predict",), ("bench",), ("seg", "evaluate"),
             ("sam", "evaluate"), ("data", "check")]


@pytest.mark.parametrize("path", REPORTERS, ids=" ".join)
def test_reporting_commands_have_json(path):
    assert "--json" in {o for p in _params(path).values() for o in p.opts}


def test_json_mode_keeps_stdout_pure(tmp_path):
    import json

    r = runner.invoke(app, ["datasets", "--json", "--data-root", str(tmp_path)], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    rows = json.loads(r.stdout)  # the table went to stderr
    assert len(rows) == 12 and {"name", "task", "classes", "sizes"} <= set(rows[0])
