"""A static HTTP server for local layers (precomputed, Zarr, N5), for Neuroglancer in a browser.

It serves each layer folder under a name (``/<name>/<key>``) on 127.0.0.1, never lists
folders and never serves anything outside them. cloud-volume may store a chunk compressed as
``<key>.gz``; a request for ``<key>`` then gets those bytes with ``Content-Encoding: gzip`` so
the browser inflates them. Single byte ranges (``Range: bytes=a-b``, used for sharded files)
are honoured on uncompressed files.

Who may read (any other request gets 403 and no CORS headers):

- A request with an ``Origin`` (a web page's) is served only when that origin is one of the
  server's `allowed_origins` (the viewers `petavox view` links to); the response echoes it in
  ``Access-Control-Allow-Origin`` with ``Vary: Origin``, and a preflight from it may reach
  127.0.0.1 (``Access-Control-Allow-Private-Network``). Requests without an Origin (curl,
  cloud-volume) are served without CORS headers.
- The ``Host`` must be 127.0.0.1 or localhost at the server's port, so a page whose own host
  name resolves to 127.0.0.1 (DNS rebinding) cannot read the layers as same-origin.

What is served (anything else is 404), decided per layer from its ``info`` (re-read when the
file changes): ``info`` and ``provenance``, and files below the folders the info names: each
scale's ``key`` (chunks, shards), ``mesh``, ``skeletons``, ``segment_properties``, and an
annotation layer's ``by_id``, ``relationships`` and ``spatial`` keys. A root without an
``info`` that holds Zarr or N5 metadata (``zarr.json``, ``.zarray``, ``.zgroup``, ``.zattrs``,
``attributes.json``) is a volume: every file below it is served unchanged (metadata at any
depth, chunks under any key, nested or not, Zarr v3 shards by byte range). Never a path with
a part that is hidden (``.name``, e.g. ``.tmp-*`` files being written; Zarr v2's metadata
names excepted), a temp file (``*.tmp``, ``*.part``, ``*~``) or named ``ledger`` or
``intermediate``, even inside those folders.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
HOST_NAMES = (HOST, "localhost")  # the names a request's Host may give
RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
LAYER_FILES = frozenset({"info", "provenance"})
NAMED_FOLDERS = ("mesh", "skeletons", "segment_properties")  # info keys naming a folder
NEVER_SERVED = frozenset({"ledger", "intermediate"})
ZARR_HIDDEN = frozenset({".zarray", ".zgroup", ".zattrs", ".zmetadata"})  # served, though hidden
VOLUME_METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs", "attributes.json")
TEMP_SUFFIXES = (".tmp", ".temp", ".part", "~")
log = logging.getLogger(__name__)


def origin_of(url: str) -> str:
    """The origin of an http(s) URL as a browser sends it: ``scheme://host[:port]``, lower
    case, without a default port. ValueError for other URLs."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"{url!r} is no http(s) URL: it has no web origin")
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}[scheme]
    return f"{scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _plain(part: str) -> bool:
    """Whether a path part may be served: not hidden, temporary, a ledger or work folder."""
    return not (part.startswith(".") or part.endswith(TEMP_SUFFIXES) or part in NEVER_SERVED)


def _volume_file(part: str) -> bool:
    """Whether a path part may be served from a Zarr/N5 volume: plain, or Zarr v2 metadata."""
    return part in ZARR_HIDDEN or _plain(part)


def _dicts(value: Any) -> Iterator[dict]:
    items = value if isinstance(value, list) else [value]
    return (item for item in items if isinstance(item, dict))


def info_folders(info: Mapping[str, Any]) -> frozenset[tuple[str, ...]]:
    """The folders (as path parts) a layer's info names: scale keys, `NAMED_FOLDERS`, and an
    annotation layer's index keys. Names that are not plain relative paths are left out."""
    names = [scale.get("key") for scale in _dicts(info.get("scales"))]
    names += [info.get(key) for key in NAMED_FOLDERS]
    for key in ("by_id", "relationships", "spatial"):
        names += [index.get("key") for index in _dicts(info.get(key))]
    folders = set()
    for name in names:
        if isinstance(name, str) and "://" not in name and not name.startswith("/"):
            parts = tuple(p for p in name.split("/") if p not in ("", "."))
            if parts and all(_plain(p) and p != ".." for p in parts):
                folders.add(parts)
    return frozenset(folders)


def servable(parts: tuple[str, ...], folders: frozenset[tuple[str, ...]]) -> bool:
    """Whether a layer serves the file at `parts` (below its folder), given its info's
    `folders`: `LAYER_FILES`, or a file below a named folder, no part hidden or temporary."""
    if not parts or not all(_plain(p) for p in parts):
        return False
    if len(parts) == 1 and parts[0].removesuffix(".gz") in LAYER_FILES:
        return True
    return any(len(parts) > len(f) and parts[: len(f)] == f for f in folders)


class LayerFiles:
    """The files the server may send: those `servable` in each root ({name: layer folder}),
    with each root's info read once per change of the file (mtime, size); every plain file
    (and Zarr v2 metadata) in a root that is a Zarr/N5 volume (`volumes`)."""

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = dict(roots)
        self.volumes = frozenset(
            name
            for name, root in self.roots.items()
            if not (root / "info").is_file()
            and any((root / key).is_file() for key in VOLUME_METADATA)
        )
        self._lock = threading.Lock()
        self._infos: dict[str, tuple[tuple[int, int, int], frozenset[tuple[str, ...]]]] = {}

    def folders(self, name: str) -> frozenset[tuple[str, ...]]:
        """The folders root `name`'s info names; none when it has no readable info."""
        for file in ("info", "info.gz"):
            path = self.roots[name] / file
            try:
                stat = path.stat()
                break
            except OSError:
                continue
        else:
            return frozenset()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._infos.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            data = path.read_bytes()
            info = json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
        except (OSError, ValueError, EOFError):
            return frozenset()  # being written, or no JSON: try again next time
        folders = info_folders(info) if isinstance(info, dict) else frozenset()
        with self._lock:
            self._infos[name] = (stamp, folders)
        return folders

    def locate(self, request_path: str) -> tuple[Path, bool] | None:
        """The file to send for a request path, and whether it is gzip data (``<key>.gz``).

        None when it is not servable or there is no such file inside the roots (unknown name,
        ``..``, a folder, or a symlink that leads out of its root).
        """
        path = urllib.parse.unquote(urllib.parse.urlsplit(request_path).path)
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or any(p in (".", "..") or "\\" in p or "\0" in p for p in parts):
            return None
        root = self.roots.get(parts[0])
        if root is None:
            return None
        if parts[0] in self.volumes:
            if not all(_volume_file(p) for p in parts[1:]):
                return None
        elif not servable(tuple(parts[1:]), self.folders(parts[0])):
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

    _origin: str | None = None  # the request's Origin, once admitted

    def _admit(self) -> bool:
        """Whether to answer the request (its Host is ours, its Origin, if any, allowed);
        otherwise it is refused with 403 and no CORS headers."""
        origin = self.headers.get("Origin")
        host = self.headers.get("Host")
        if (host is None or host.lower() in self.server.hosts) and (
            origin is None or origin in self.server.allowed_origins
        ):
            self._origin = origin
            return True
        self._origin = None
        self._empty(HTTPStatus.FORBIDDEN)
        return False

    def _cors(self) -> None:
        self.send_header("Vary", "Origin")
        if self._origin is not None:
            self.send_header("Access-Control-Allow-Origin", self._origin)
            self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Encoding")

    def _empty(self, status: HTTPStatus, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self._cors()
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_OPTIONS(self) -> None:
        if not self._admit():
            return
        methods = "GET, HEAD, OPTIONS"
        if self._origin is None:  # no CORS preflight
            self._empty(HTTPStatus.NO_CONTENT, {"Allow": methods})
            return
        headers = {
            "Access-Control-Allow-Methods": methods,
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
        if not self._admit():
            return
        found = self.server.files.locate(self.path)
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

    def __init__(self, port: int, files: LayerFiles, allowed_origins: frozenset[str]) -> None:
        self.files = files
        self.allowed_origins = allowed_origins
        super().__init__((HOST, port), _Handler)
        bound = self.server_address[1]
        self.hosts = frozenset(
            [f"{name}:{bound}" for name in HOST_NAMES] + (list(HOST_NAMES) if bound == 80 else [])
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # the browser dropped a request
            return
        super().handle_error(request, client_address)


class FileServer:
    """Serves the layer folders `roots` ({name: folder}) at ``http://127.0.0.1:PORT/<name>/``
    from a thread, to web pages at `allowed_origins` only (``scheme://host[:port]``, e.g.
    ``origin_of(viewer_url)``; none: no page may read them). See the module docstring.

    Port 0 picks a free port. Use as a context manager; leaving it stops the server.
    """

    def __init__(
        self,
        roots: Mapping[str, str | Path],
        port: int = 0,
        *,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.roots = {name: Path(os.path.realpath(folder)) for name, folder in roots.items()}
        self.port = port
        self.allowed_origins = frozenset(allowed_origins)
        for origin in self.allowed_origins:
            try:
                valid = origin_of(origin) == origin
            except ValueError:
                valid = False
            if not valid:
                raise ValueError(f"{origin!r} is no web origin (scheme://host[:port])")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the file server is not running")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> FileServer:
        """Bind and serve; OSError when the port is taken."""
        self._server = _Server(self.port, LayerFiles(self.roots), self.allowed_origins)
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
