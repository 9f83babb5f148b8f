"""A static HTTP server for local precomputed layers, for Neuroglancer in a browser.

It serves each folder under a name (``/<name>/<key>``) on 127.0.0.1 with CORS, never lists
folders and never serves anything outside them. cloud-volume may store a chunk compressed as
``<key>.gz``; a request for ``<key>`` then gets those bytes with ``Content-Encoding: gzip`` so
the browser inflates them. Single byte ranges (``Range: bytes=a-b``, used for sharded files)
are honoured on uncompressed files.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
log = logging.getLogger(__name__)


def locate(roots: Mapping[str, Path], request_path: str) -> tuple[Path, bool] | None:
    """The file to send for a request path, and whether it is gzip data (``<key>.gz``).

    None when there is no such file inside the roots (unknown name, ``..``, a folder, or a
    symlink that leads out of its root).
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(request_path).path)
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
        return None
    root = roots.get(parts[0])
    if root is None:
        return None
    file = root.joinpath(*parts[1:])
    for candidate, gzipped in ((file, False), (file.with_name(file.name + ".gz"), True)):
        if candidate.is_file() and Path(os.path.realpath(candidate)).is_relative_to(root):
            return candidate, gzipped
    return None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of a single-range ``Range`` header; None to send the whole file.

    Raises ValueError when the range cannot be satisfied.
    """
    match = RANGE.match(header or "")
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, stop = max(0, size - int(last)), size
    elif last != "" and int(last) < int(first):
        return None  # an invalid range is ignored
    else:
        start, stop = int(first), size if last == "" else min(size, int(last) + 1)
    if start >= stop:
        raise ValueError(f"range {header} outside a file of {size} bytes")
    return start, stop


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Encoding")

    def _empty(self, status: HTTPStatus, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self._cors()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_OPTIONS(self) -> None:
        headers = {
            "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
            "Access-Control-Allow-Headers": self.headers.get(
                "Access-Control-Request-Headers", "Range"
            ),
            "Access-Control-Max-Age": "86400",
        }
        if self.headers.get("Access-Control-Request-Private-Network"):
            # Chrome asks before a public page (the hosted viewer) reads from 127.0.0.1.
            headers["Access-Control-Allow-Private-Network"] = "true"
        self._empty(HTTPStatus.NO_CONTENT, headers)

    def do_GET(self) -> None:
        self._send(body=True)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def _send(self, body: bool) -> None:
        found = locate(self.server.roots, self.path)
        if found is None:
            self._empty(HTTPStatus.NOT_FOUND)
            return
        file, gzipped = found
        size = file.stat().st_size
        start, stop = 0, size
        status, headers = HTTPStatus.OK, {"Content-Type": "application/octet-stream"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        else:
            headers["Accept-Ranges"] = "bytes"
            try:
                span = byte_range(self.headers.get("Range"), size)
            except ValueError:
                self._empty(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"}
                )
                return
            if span is not None:
                start, stop = span
                status = HTTPStatus.PARTIAL_CONTENT
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        self.send_response(status)
        self._cors()
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        if body:
            with file.open("rb") as f:
                f.seek(start)
                self.wfile.write(f.read(stop - start))

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, roots: Mapping[str, Path]) -> None:
        self.roots = roots
        super().__init__((HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the browser dropped a request
            return
        super().handle_error(request, client_address)


class FileServer:
    """Serves `roots` ({name: folder}) at ``http://127.0.0.1:PORT/<name>/`` from a thread.

    Port 0 picks a free port. Use as a context manager; leaving it stops the server.
    """

    def __init__(self, roots: Mapping[str, str | Path], port: int = 0) -> None:
        self.roots = {name: Path(os.path.realpath(folder)) for name, folder in roots.items()}
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the file server is not running")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> FileServer:
        """Bind and serve; OSError when the port is taken."""
        self._server = _Server(self.port, self.roots)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="petavox-file-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
