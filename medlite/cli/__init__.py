"""The medlite command line: one Typer app, ``medlite <command> --help`` for each command.

:mod:`medlite.cli.common` holds the app, the consoles, the error wrapper (:func:`checked`), the logging
set-up and the option parsers; each area module registers its commands on the app when imported here:
:mod:`~medlite.cli.classify` (datasets, models, train, evaluate, pretrain, explain, demo),
:mod:`~medlite.cli.deploy` (export, predict, bench), :mod:`~medlite.cli.compress` (distill, prune),
:mod:`~medlite.cli.seg` (``medlite seg ...``), :mod:`~medlite.cli.sam` (``medlite sam ...``), data and
:mod:`~medlite.cli.serve` (the local web page).
The import order is the order of ``medlite --help``.
"""

from medlite.cli.common import CliError, app, checked, console, parse_kv, setup_logging

# isort: off
from medlite.cli import classify  # noqa: F401
from medlite.cli.deploy import bench, export, predict
from medlite.cli import compress, seg, sam, data, serve  # noqa: F401

# isort: on

__all__ = ["CliError", "app", "bench", "checked", "console", "export", "parse_kv", "predict", "setup_logging"]
