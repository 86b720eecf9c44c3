"""Run the page for real: the server in a background thread and a headless Chromium driven by Playwright,
as the browser test and the latency benchmark (``benchmarks/serve.py``) do.

Playwright cannot download its own browser here, so it drives the system's Chromium (Debian's
``chromium`` package, ``/usr/bin/chromium``) with the flags a closed network needs.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a background thread; yields its base URL and stops it afterwards."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def browser_page(downloads: Path | None = None):
    """A Playwright page in headless system Chromium (accepting downloads)."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("no Chromium found: apt-get install chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
            yield context.new_page()
        finally:
            browser.close()


def wait_for(page, expression: str, timeout_ms: float = 30_000) -> None:
    """Poll a JavaScript expression until it is truthy. (Playwright's wait_for_function evaluates a string in
    the page, which the page's Content-Security-Policy rightly forbids; page.evaluate is not subject to it.)"""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            shown = page.evaluate("document.getElementById('status').textContent")
            raise TimeoutError(f"waited {timeout_ms / 1000:g} s for {expression}; the page says: {shown}")
        page.wait_for_timeout(10)


def open_image(page, path: str | Path, timeout_ms: float = 60_000) -> float:
    """Open ``path`` with the page's file input; the page's own upload-to-ready time in ms."""
    n = page.evaluate("window.medlite.timings.upload.length")
    page.set_input_files("#file", str(path))
    wait_for(page, f"window.medlite.timings.upload.length > {n}", timeout_ms)
    return float(page.evaluate("window.medlite.timings.upload.at(-1)"))


def draw_box(page, box, timeout_ms: float = 30_000) -> float:
    """Drag a box (x0, y0, x1, y1 in image pixels) with the mouse; the page's release-to-overlay time in ms."""
    n = page.evaluate("window.medlite.timings.prompt.length")
    scale = page.evaluate("window.medlite.scale")
    r = page.locator("#overlay").bounding_box()
    box = [float(v) for v in box]
    x0, y0, x1, y1 = (r["x"] + box[0] * scale, r["y"] + box[1] * scale, r["x"] + box[2] * scale,
                      r["y"] + box[3] * scale)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=3)
    page.mouse.move(x1, y1, steps=3)
    page.mouse.up()
    wait_for(page, f"window.medlite.timings.prompt.length > {n}", timeout_ms)
    return float(page.evaluate("window.medlite.timings.prompt.at(-1)"))


def download(page, button: str, dest: Path) -> Path:
    """Click a download button (e.g. ``#dl-mask``) and save the file at ``dest``."""
    with page.expect_download() as d:
        page.click(button)
    d.value.save_as(str(dest))
    return dest
