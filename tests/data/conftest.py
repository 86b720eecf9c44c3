"""Fixtures for the data tests: real-data lookup, local HTTP server (the tiny npz writer is in tests/conftest.py)."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def medlite_data() -> Callable[[str], Path]:
    """``medlite_data("breastmnist/breastmnist.npz")`` -> path under ``$MEDLITE_DATA``.

    When the variable or the file is missing the test is skipped, or fails when ``CI=true``.
    """

    def need(relative: str) -> Path:
        env = os.environ.get("MEDLITE_DATA")
        path = Path(env) / relative if env else None
        if path is not None and path.exists():
            return path
        msg = f"real data {relative} not found (MEDLITE_DATA={env!r})"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)

    return need


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support (206) when the server's ``ranges`` flag is set."""

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path.split("?")[0]))
        rng = self.headers.get("Range")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.server.requests.append(rng)
        if rng and self.server.ranges:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (base URL, server) with ``server.ranges`` (bool)
    and ``server.requests`` (Range header of each GET)."""
    www = tmp_path / "www"
    www.mkdir()

    def handler(*args, **kwargs):
        return _RangeHandler(*args, directory=str(www), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.ranges, server.requests, server.www = True, [], www
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()
