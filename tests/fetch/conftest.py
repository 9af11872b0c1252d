"""Fixtures for the fetch tests: a real local HTTP server with failure knobs, and a cache dir.

Everything is offline: the server binds 127.0.0.1 on an ephemeral port and serves only
bytes the test put into ``server.files``.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest


@dataclass
class Seen:
    """One request the server received."""

    path: str
    range: str | None
    status: int


@dataclass
class FileServer:
    """Serves ``files`` (URL path -> bytes); a missing path is a 404.

    Knobs: ``honor_range`` (206 partial responses vs. ignoring Range with a full 200),
    ``cut_after`` bytes of body for the first ``cut_requests`` requests (the full
    Content-Length is still announced, then the connection closes).
    """

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    honor_range: bool = True
    cut_after: int | None = None
    cut_requests: int = 0
    requests: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base_url + path


def _handler(state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            body = state.files.get(path)
            range_header = self.headers.get("Range")
            if body is None:
                state.requests.append(Seen(path, range_header, 404))
                self.send_error(404, "Not Found")
                return
            status, start = 200, 0
            if range_header and state.honor_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                status = 206
            if start >= len(body) > 0:  # nothing left to send, as real servers answer
                state.requests.append(Seen(path, range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.requests.append(Seen(path, range_header, status))
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if path.endswith("/") else
                             "application/octet-stream")
            self.send_header("Content-Length", str(len(body) - start))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            payload = body[start:]
            if state.cut_after is not None and state.cut_requests > 0:
                state.cut_requests -= 1
                payload = payload[: state.cut_after]
                self.close_connection = True
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache; POSEZOO_CACHE points at it too, so nothing touches ~/.cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("POSEZOO_CACHE", str(root))
    return root
