"""A fault-injecting HTTP reverse proxy on 127.0.0.1 in front of an S3 server (tests, benchmarks).

Requests and responses pass through byte for byte (method, path, query, headers, Host and the
SigV4 signature included: clients use the proxy's address as their endpoint, sign for it, and
the server checks the signature against the same Host header). Each request may instead get a
fault, drawn from one seeded generator with a probability per kind (`FaultMix`):

- ``slowdown``: a 503 with an S3 ``SlowDown`` XML error; the request is not forwarded;
- ``reset``: the connection is reset (RST), half of the time before forwarding, half after the
  server has done the work, with nothing or a part of the response sent first;
- ``truncate``: a GET's 2xx response is forwarded with its full ``Content-Length`` but only half
  of its body, then the connection is closed (only GETs with a body are cut);
- an outage (``FaultProxy.outage(seconds)``): for that long every new connection is accepted and
  reset at once and every request on an open connection is reset unanswered (or answered with
  503 ``SlowDown`` when ``mode="503"``).

``FaultProxy.counts()`` gives requests seen, requests forwarded and each fault injected. A
request carrying ``Expect: 100-continue`` is answered ``100 Continue`` by the proxy itself (the
server's own interim response is dropped), so clients never wait for it.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

HOST = "127.0.0.1"
KINDS = ("slowdown", "reset", "truncate")
MAX_HEAD_BYTES = 64 * 1024
SLOWDOWN_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message><Resource>{path}</Resource>"
    "<RequestId>fault-proxy-{n}</RequestId></Error>"
)


@dataclass(frozen=True)
class FaultMix:
    """Probability of each fault per request (they add up: at most one fault per request)."""

    slowdown: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    seed: int = 0

    @property
    def total(self) -> float:
        return self.slowdown + self.reset + self.truncate


@dataclass
class Message:
    """One HTTP request or response, as raw bytes plus what framing needs."""

    head: bytes
    body: bytes
    start_line: str
    headers: dict[str, str]  # lower-case names; the raw head keeps the original spelling

    @property
    def method(self) -> str:
        return self.start_line.split(" ")[0]

    @property
    def target(self) -> str:
        """A request's path and query; a response's status code."""
        parts = self.start_line.split(" ")
        return parts[1] if len(parts) > 1 else ""

    @property
    def status(self) -> int:
        return int(self.target) if self.target.isdigit() else 0

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"

    @property
    def delimited(self) -> bool:
        """Its end is known without closing the connection (a length, chunks or no body)."""
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        return chunked or "content-length" in self.headers or not self.body


def read_head(stream: BinaryIO) -> tuple[bytes, str, dict[str, str]] | None:
    """The start line and headers up to the blank line; None at a clean end of stream."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(MAX_HEAD_BYTES)
        if not line:
            if lines:
                raise ConnectionError("connection closed inside an HTTP head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # stray CRLF between messages
        lines.append(line)
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise ValueError("HTTP head too large")
        if line in (b"\r\n", b"\n"):
            break
    headers: dict[str, str] = {}
    for raw in lines[1:-1]:
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return b"".join(lines), lines[0].decode("latin-1").strip(), headers


def read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionError(f"connection closed after {len(data)} of {size} body bytes")
    return data


def read_chunked(stream: BinaryIO) -> bytes:
    """A chunked body as it came (size lines, data, last chunk, trailers)."""
    parts: list[bytes] = []
    while True:
        line = stream.readline(MAX_HEAD_BYTES)
        if not line:
            raise ConnectionError("connection closed inside a chunked body")
        parts.append(line)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        parts.append(read_exact(stream, size + 2))
    while True:  # trailers up to the blank line
        line = stream.readline(MAX_HEAD_BYTES)
        if not line:
            raise ConnectionError("connection closed inside chunked trailers")
        parts.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)


def read_body(stream: BinaryIO, headers: dict[str, str], until_close: bool) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return read_chunked(stream)
    if "content-length" in headers:
        return read_exact(stream, int(headers["content-length"]))
    return stream.read() if until_close else b""


def read_response(stream: BinaryIO, method: str) -> Message:
    """The final response to `method` (interim 1xx responses are skipped)."""
    while True:
        got = read_head(stream)
        if got is None:
            raise ConnectionError("the server closed the connection without a response")
        head, start, headers = got
        status = Message(head, b"", start, headers).status
        if 100 <= status < 200:
            continue
        no_body = method == "HEAD" or status in (204, 304)
        body = b"" if no_body else read_body(stream, headers, until_close=True)
        return Message(head, body, start, headers)


def reset(sock: socket.socket) -> None:
    """Close with a TCP RST, not a FIN: the peer sees 'connection reset by peer'."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def slowdown_response(path: str, n: int) -> bytes:
    body = SLOWDOWN_BODY.format(path=path.split("?", 1)[0], n=n).encode()
    head = (
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\n\r\n"
    )
    return head.encode() + body


class FaultProxy:
    """The proxy: ``start()``/``stop()`` or a context manager; ``endpoint`` is its URL."""

    def __init__(self, upstream: str, mix: FaultMix = FaultMix(), host: str = HOST) -> None:
        up_host, _, up_port = upstream.split("://", 1)[-1].rstrip("/").rpartition(":")
        self.upstream = (up_host, int(up_port))
        self.mix = mix
        self._rng = random.Random(mix.seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._outage_until = 0.0
        self._outage_mode = "reset"
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the listener and every open connection, join the thread."""
        self._stopping.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:  # threads blocked on them return
            reset(sock)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_mix(self, mix: FaultMix) -> None:
        """New probabilities (and a generator reseeded with ``mix.seed``)."""
        with self._lock:
            self.mix, self._rng = mix, random.Random(mix.seed)

    def outage(self, seconds: float, mode: str = "reset") -> None:
        """From now on for `seconds`: reset every connection (``mode="503"``: answer 503)."""
        if mode not in ("reset", "503"):
            raise ValueError(f"outage mode {mode!r}: 'reset' or '503'")
        with self._lock:
            self._outage_mode = mode
            self._outage_until = time.monotonic() + seconds
            self._counts["outages"] += 1

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def counts(self) -> dict[str, int]:
        """requests (and per method, ``GET`` etc.), forwarded, connections, each fault kind,
        outage_resets, outage_503 and outages."""
        keys = ("requests", "forwarded", "connections", *KINDS, "outage_resets", "outage_503")
        with self._lock:
            methods = {k: v for k, v in self._counts.items() if k.isupper()}
            return {**{key: self._counts[key] for key in (*keys, "outages")}, **methods}

    def _count(self, key: str) -> int:
        with self._lock:
            self._counts[key] += 1
            return self._counts[key]

    def _draw(self, request: Message) -> str | None:
        """The fault for this request, or None (truncation only applies to GETs)."""
        with self._lock:
            if time.monotonic() < self._outage_until:
                return "outage_" + ("503" if self._outage_mode == "503" else "resets")
            r, mix = self._rng.random(), self.mix
        if r < mix.slowdown:
            return "slowdown"
        if r < mix.slowdown + mix.reset:
            return "reset"
        if r < mix.total and request.method == "GET":
            return "truncate"
        return None

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._count("connections")
            if self.in_outage and self._outage_mode == "reset":
                self._count("outage_resets")
                reset(client)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """One client connection: requests in turn, each forwarded or faulted."""
        client.settimeout(None)
        upstream = Upstream(self.upstream, self._sockets, self._lock)
        with self._lock:
            self._sockets.add(client)
        reader = client.makefile("rb")
        try:
            while not self._stopping.is_set():
                request = self._read_request(client, reader)
                if request is None or not self._answer(client, request, upstream):
                    return
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._sockets.discard(client)
            reader.close()
            with contextlib.suppress(OSError):
                client.close()
            upstream.close()

    def _read_request(self, client: socket.socket, reader: BinaryIO) -> Message | None:
        got = read_head(reader)
        if got is None:
            return None
        head, start, headers = got
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = read_body(reader, headers, until_close=False)
        request = Message(head, body, start, headers)
        with self._lock:
            self._counts["requests"] += 1
            self._counts[request.method.upper()] += 1
        return request

    def _random(self) -> float:
        with self._lock:
            return self._rng.random()

    def _answer(self, client: socket.socket, request: Message, upstream: Upstream) -> bool:
        """Forward or fault one request; False when the connection is done."""
        fault = self._draw(request)
        if fault == "outage_resets" or (fault == "reset" and self._random() < 0.5):
            self._count(fault)
            reset(client)
            return False
        if fault in ("slowdown", "outage_503"):
            client.sendall(slowdown_response(request.target, self._count(fault)))
            return True
        response = upstream.exchange(request)
        self._count("forwarded")
        raw = response.head + response.body
        if fault == "reset":
            self._count("reset")
            client.sendall(raw[: int(self._random() * len(raw))])
            reset(client)
            return False
        if fault == "truncate" and response.body and 200 <= response.status < 300:
            self._count("truncate")
            client.sendall(response.head + response.body[: len(response.body) // 2])
            return False
        client.sendall(raw)
        return not (request.closes or response.closes or not response.delimited)


class Upstream:
    """The proxy's connection to the server for one client connection (opened on first use,
    reopened once when the server closed an idle one)."""

    def __init__(
        self, address: tuple[str, int], registry: set[socket.socket], lock: threading.Lock
    ) -> None:
        self.address, self.registry, self.lock = address, registry, lock
        self.sock: socket.socket | None = None
        self.reader: BinaryIO | None = None

    def exchange(self, request: Message) -> Message:
        for attempt in range(2):
            fresh = self.sock is None
            sock, reader = self._connect()
            try:
                sock.sendall(request.head + request.body)
                response = read_response(reader, request.method)
            except (ConnectionError, OSError):
                self.close()
                if fresh or attempt:
                    raise
                continue
            if request.closes or response.closes or not response.delimited:
                self.close()
            return response
        raise AssertionError("unreachable")

    def _connect(self) -> tuple[socket.socket, BinaryIO]:
        if self.sock is None or self.reader is None:
            self.sock = socket.create_connection(self.address, timeout=300)
            self.reader = self.sock.makefile("rb")
            with self.lock:
                self.registry.add(self.sock)
        return self.sock, self.reader

    def close(self) -> None:
        if self.sock is not None:
            with self.lock:
                self.registry.discard(self.sock)
            if self.reader is not None:
                self.reader.close()
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = self.reader = None
