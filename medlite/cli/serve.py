"""``medlite serve``: the local web page (see :mod:`medlite.serve`)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer

from medlite.cli.common import CliError, Threads, Verbose, app, checked, console, load_kind

log = logging.getLogger(__name__)

DEFAULT_SAM = "litesam_swin_xs_distilled"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _sam_folder(spec: str, cache: str | None) -> Path:
    from medlite.export.sam_runtime import is_sam_folder
    from medlite.serve.models import export_sam_cached, weights_key

    if is_sam_folder(spec):
        return Path(spec)
    model, meta = load_kind(spec, "promptable", "medlite serve")
    return export_sam_cached(model, meta, Path(spec).stem or spec, weights_key(spec), cache)


def _classifier_file(spec: str, cache: str | None) -> Path:
    from medlite.serve.models import export_classifier_cached, weights_key

    if spec.lower().endswith(".onnx"):
        if not Path(spec).is_file():
            raise CliError(f"{spec}: ONNX file not found")
        return Path(spec)
    model, meta = load_kind(spec, "classifier", "medlite serve --classifier")
    return export_classifier_cached(model, meta, Path(spec).stem or spec, weights_key(spec), cache)


@app.command()
@checked
def serve(
    model: Annotated[str, typer.Argument(help="Promptable model: zoo name, run folder, checkpoint or the folder "
                                              "of `medlite sam export`.")] = DEFAULT_SAM,
    classifier: Annotated[list[str], typer.Option(help="Classifier for the Classify tab: zoo name, run, "
                                                       "checkpoint or .onnx; repeatable (default: the zoo's "
                                                       "classifiers; 'none' for no tab).")] = [],  # noqa: B006
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback needs --allow-remote.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a --host other than loopback (other "
                                                                      "machines can then send images).")] = False,
    max_upload_mb: Annotated[float, typer.Option(help="Largest image file accepted, MB.")] = 64.0,
    out: Annotated[str, typer.Option(help="Folder for the ONNX graphs made from checkpoints (default: the "
                                          "medlite cache); the server writes nothing else.")] = "",
    threads: Threads = 1,
    verbose: Verbose = False,
    model_flag: Annotated[str, typer.Option("--model", hidden=True)] = "",
) -> None:
    """A local web page: open an image, draw a box, click or scribble, get the mask; classify with the zoo's
    classifiers. It runs ONNX graphs on this machine (made once from checkpoints, then cached) and keeps
    images in memory only; it listens on 127.0.0.1 unless told otherwise."""
    if not _is_loopback(host) and not allow_remote:
        raise typer.BadParameter(f"--host {host} would let other machines send images to this one; add "
                                 "--allow-remote if that is what you want")
    if threads < 0:
        raise typer.BadParameter("--threads: give 0 (ONNX Runtime's default) or a positive count")
    if max_upload_mb <= 0:
        raise typer.BadParameter("--max-upload-mb must be positive")
    import uvicorn

    from medlite import zoo
    from medlite.serve.app import Server, create_app

    cache = out or None
    sam = _sam_folder(model_flag or model, cache)
    specs = classifier or [n for n, e in zoo.entries().items() if e.kind == "classifier"]
    specs = [] if [s.lower() for s in specs] == ["none"] else specs
    classifiers = {}
    for spec in specs:
        console.print(f"classifier {spec} …")
        classifiers[Path(spec).stem if spec.lower().endswith(".onnx") else spec] = _classifier_file(spec, cache)
    name = model_flag or model
    server = Server(sam, classifiers, threads=threads, max_upload_mb=max_upload_mb,
                    sam_name=name if not Path(name).exists() else None)
    allowed = None
    if not _is_loopback(host):
        console.print(f"[yellow]warning:[/] listening on {host}: any machine that reaches this address can send "
                      "images to this server and read the masks of its own session")
        allowed = ["*"]
    shown = "127.0.0.1" if host in ("127.0.0.1", "0.0.0.0") else host
    console.print(f"medlite serve: {server.sam_name} and {len(classifiers)} classifier(s) on {threads} thread(s); "
                  f"open http://{shown}:{port}/  (Ctrl+C stops)")
    uvicorn.run(create_app(server, allowed), host=host, port=port, log_level="info" if verbose else "warning")
