"""What every command shares: the Typer app, the consoles, the one error wrapper, the one logging set-up and
the option parsers. The area modules (classify, seg, sam, compress, deploy) import from here and register
their commands on :data:`app`; ``medlite.cli`` imports them. Nothing here imports torch, so
``medlite --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

from medlite.errors import MedliteError, missing_extra

app = typer.Typer(
    help="medlite: lightweight medical-image AI that trains on a laptop CPU and runs on a phone.\n\n"
    "Typical use: `medlite datasets` to see the data, `medlite train resnet18 --data breastmnist` to train, "
    "`medlite evaluate runs/RUN` to evaluate, `medlite export runs/RUN` to deploy.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        import platform

        from medlite import __version__

        typer.echo(f"medlite {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print medlite's version and exit.")) -> None:
    """medlite: lightweight medical-image AI that trains on a laptop CPU and runs on a phone."""


DATA_ROOT_HELP = "Data folder (default $MEDLITE_DATA)."
console = Console()  # results: tables, reports, the files written
err_console = Console(stderr=True)  # errors and log lines, so that stdout stays parseable (predict --json)

F = TypeVar("F", bound=Callable)


JSON_HELP = "Print the results as JSON on stdout (tables and notes go to stderr)."
# The options every command shares, declared once (Typer copies the option info per command)
Threads = Annotated[int, typer.Option(help="CPU threads (0 = torch default).")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
JsonOut = Annotated[bool, typer.Option("--json", help=JSON_HELP)]
Ema = Annotated[float, typer.Option(metavar="DECAY", help="Validate and keep a moving average of the weights "
                                    "(e.g. 0.998; 0 = off).")]
EncoderLrMult = Annotated[float, typer.Option(metavar="MULT", help="Learning rate of the (image) encoder = --lr x "
                                              "this (0.1 suits a pretrained or distilled encoder).")]


def print_json(obj) -> None:
    """The command's results as JSON on stdout (plain print: the console is on stderr in --json mode)."""
    print(json.dumps(obj, indent=2, default=float))


def print_table(title: str, columns: list[str], rows: list[list[str]], justify: dict[int, str] | None = None) -> None:
    """A table that reads at any terminal width: a Rich table where it fits whole, else one record per row
    (the first column as a heading, then ``column: value`` lines, wrapped, never cut short).

    Args:
        columns: header names; the first identifies the row.
        rows: cells as strings (Rich markup allowed).
        justify: column index -> "left" | "right" | "center" for the table layout.
    """
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify=(justify or {}).get(i, "left"), no_wrap=True)
    for row in rows:
        table.add_row(*row)
    if Measurement.get(console, console.options.update_width(100_000), table).maximum <= console.width:
        console.print(table)
        return
    from rich.padding import Padding

    if title:
        console.print(Text(title, style="bold"))
    for row in rows:
        fields = [(col, Text.from_markup(cell)) for col, cell in zip(columns[1:], row[1:], strict=True)
                  if Text.from_markup(cell).plain.strip()]
        short = [f"[dim]{escape(col)}:[/dim] {cell.markup}" for col, cell in fields if len(cell.plain) <= 30]
        lines = [" · ".join(short)] if short else []
        lines += [f"[dim]{escape(col)}:[/dim] {cell.markup}" for col, cell in fields if len(cell.plain) > 30]
        console.print(Text.from_markup(f"[bold]{row[0]}[/bold]"))
        for line in lines:
            console.print(Padding(Text.from_markup(line, overflow="fold"), (0, 0, 0, 2)))


def print_markdown(text: str) -> None:
    """Markdown on the terminal with its tables through :func:`print_table` (Rich's Markdown tables cut
    cells short on a narrow terminal)."""
    from rich.markdown import Markdown
    from rich.markup import escape

    blocks: list[tuple[bool, list[str]]] = []
    for line in text.splitlines():
        is_row = line.lstrip().startswith("|")
        if blocks and blocks[-1][0] == is_row:
            blocks[-1][1].append(line)
        else:
            blocks.append((is_row, [line]))
    for is_table, lines in blocks:
        if not is_table:
            if "".join(lines).strip():
                console.print(Markdown("\n".join(lines)))
            continue
        cells = [[escape(c.strip().replace("`", "").replace("**", "")) for c in ln.strip().strip("|").split("|")]
                 for ln in lines]
        body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
        print_table("", cells[0], [r + [""] * (len(cells[0]) - len(r)) for r in body])


class CliError(MedliteError):
    """A mistake on the command line that the CLI spots before calling the library (an unknown model name,
    nothing to do); printed like every other :class:`MedliteError`."""


def setup_logging(verbose: bool = False) -> None:
    """Library log records (INFO, DEBUG with ``verbose``) as Rich lines on stderr; replaces earlier set-ups."""
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True,
                        handlers=[RichHandler(console=err_console, show_path=False)])


def print_error(message: object) -> None:
    """``error: message`` in red on stderr, unwrapped so that paths stay whole and copyable."""
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(str(message))}", soft_wrap=True, highlight=False)


def fail(message: object, code: int = 2) -> NoReturn:
    """:func:`print_error`, then exit with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def checked(command: F) -> F:
    """Decorate every command with this (under ``@app.command()``): it sets up logging (``--verbose`` if
    the command has it) and turns a user-caused error into one red line and exit code 2.

    User-caused means a :class:`~medlite.errors.MedliteError` (bad data, checkpoint, image, export, or a
    :class:`CliError`), a missing file, or an ``ImportError`` of an optional extra (the message names the
    extra to install).
    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(command)
    def run(*args, **kwargs):
        setup_logging(bool(kwargs.get("verbose", False)))
        quiet = bool(kwargs.get("json_out", False))  # --json: stdout carries the JSON alone; tables go to stderr
        previous = console._file  # None = "whatever sys.stdout is at print time"; keep that, not today's stream
        if quiet:
            console.file = err_console.file
        try:
            return command(*args, **kwargs)
        except (MedliteError, FileNotFoundError) as e:
            fail(e)
        except ImportError as e:
            if "pip install" in str(e):
                fail(e)
            if (hint := missing_extra(e)) is None:
                raise
            fail(hint)
        finally:
            if quiet:
                console._file = previous

    run.medlite_checked = True  # tests/cli/test_app.py checks that every command has it
    return run  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- option parsers
def use_threads(threads: int) -> None:
    """``--threads N``: torch's intra-op threads for this command (0 leaves torch's default)."""
    if threads < 0:
        raise typer.BadParameter(f"--threads {threads}: give 0 (default) or a positive count")
    if threads:
        import torch

        torch.set_num_threads(threads)


def one_of(argument: str, option: str, arg_name: str, opt_name: str) -> str:
    """The value given as the argument or (older spelling) as the option; exactly one of them."""
    if argument and option and argument != option:
        raise typer.BadParameter(f"{arg_name} and {opt_name} disagree ({argument!r} vs {option!r}); give one")
    if not (argument or option):
        raise typer.BadParameter(f"missing {arg_name}")
    return argument or option


def parse_kv(items: list[str] | None) -> dict:
    """``["embed_dim=96", "drop=0.1"]`` -> ``{"embed_dim": 96, "drop": 0.1}`` (values parsed as JSON)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"'{item}' is not KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def parse_ints(text: str, what: str) -> tuple[int, ...] | None:
    """``"2,5,8"`` -> ``(2, 5, 8)``; ``""`` -> None."""
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise typer.BadParameter(f"{what} '{text}' is not a comma-separated list of integers") from e


def parse_floats(text: str, n: int, what: str) -> list[float]:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]``, exactly ``n`` of them."""
    try:
        v = [float(x) for x in text.split(",")]
    except ValueError:
        v = []
    if len(v) != n:
        raise typer.BadParameter(f"{what} must be {n} comma-separated numbers; got '{text}'")
    return v


def parse_choices(text: str, choices: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``"box, point"`` -> ``("box", "point")``, each one of ``choices``."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in items if s not in choices]
    if unknown or not items:
        raise typer.BadParameter(f"{what} '{text}': choose from {', '.join(choices)}")
    return items


def known_model(name: str, task: str | None = None) -> str:
    """``name`` if it is a registered model (of ``task``, when given), else a :class:`CliError` that says
    what to use instead. Imports the model modules (torch)."""
    import difflib

    import medlite

    names = medlite.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise CliError(f"unknown model '{name}'; {hint}`medlite models` lists them all")
    card = medlite.model_card(name)
    if task and card.task != task:
        fits = ", ".join(n for n in names if medlite.model_card(n).task == task)
        raise CliError(f"'{name}' is a {card.task} model; this command needs a {task} model: {fits}")
    return name


def model_or_checkpoint(spec: str, task: str | None = None) -> str:
    """``spec`` if it is an existing checkpoint / run folder or a registered model name; a model-zoo name
    becomes the path of its (hash-checked) weights file."""
    path = resolve_weights(spec)
    return path if path != spec or Path(spec).exists() else known_model(spec, task)


def resolve_weights(spec: str) -> str:
    """A checkpoint / run folder as given, or the hash-checked file of shipped model-zoo weights ``spec``."""
    if Path(spec).exists():
        return spec
    from medlite import zoo

    return str(zoo.weights_file(spec)) if zoo.has(spec) and zoo.get(spec).shipped else spec


def load_kind(path: str, kinds: str | tuple[str, ...], command: str):
    """(model, meta) of a checkpoint or run folder whose run record is of one of ``kinds``, or of a model-zoo
    name (e.g. ``medlit_nano_28_dermamnist``, ``litemedsam``: weights shipped or from an installed package);
    a clear error naming the command that fits otherwise (e.g. a segmentation run given to `medlite predict`)."""
    from medlite import zoo
    from medlite.engine.checkpoint import load_model, resolve_checkpoint
    from medlite.record import require_kind

    if not Path(path).exists() and zoo.has(path):
        model, meta = zoo.load(path)
        require_kind(meta, kinds, f"{path} (model zoo)", command)
        return model, meta
    if not Path(path).exists() and not Path(path).suffix and os.sep not in path:
        import medlite

        if path in medlite.list_models():
            names = zoo.for_model(path)
            raise CliError(f"'{path}' is an architecture, not weights: give a checkpoint / run folder"
                           + (f" or one of its zoo weights: {', '.join(names)}" if names else
                              f" (train one with `medlite train {path} --data ...`)"))
        from medlite.errors import UnknownModelError

        try:
            zoo.get(path)  # an unknown name: the error lists the closest zoo names
        except UnknownModelError as e:
            raise CliError(f"{path}: no checkpoint or run folder there, and {e}") from e
    model, meta = load_model(path)
    require_kind(meta, kinds, str(resolve_checkpoint(path)), command)
    return model, meta
