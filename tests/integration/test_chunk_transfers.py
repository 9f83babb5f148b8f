"""Chunk bodies that arrive cut short or fail their MD5 check, from an S3 endpoint on 127.0.0.1
that misbehaves on purpose, read through the real cloud-files / botocore stack: fetched again
a bounded number of times, then the chunk is named."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from small_layers import image_layer
from storage_servers import client_env

from petavox.tasks.core import chunk_io
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.layers import Layer

pytestmark = pytest.mark.integration

KEY = "8_8_40/0-32_0-32_0-8"


class Endpoint(ThreadingHTTPServer):
    """Serves `chunks` by key under /bucket/layer/; each GET of a key takes the next of its
    `plans` ("md5": a wrong ETag, "short": half the body then a closed connection, else whole;
    the last plan repeats)."""

    def __init__(self, chunks: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.chunks, self.plans, self.gets = chunks, {}, []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Endpoint

    def do_GET(self) -> None:
        key = self.path.split("/layer/", 1)[-1].split("?", 1)[0]
        self.server.gets.append(key)
        body = self.server.chunks.get(key)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        plans = self.server.plans.get(key, ["ok"])
        plan = plans.pop(0) if len(plans) > 1 else plans[0]
        digest = hashlib.md5(b"other" if plan == "md5" else body).hexdigest()
        self.send_response(200)
        self.send_header("ETag", f'"{digest}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if plan == "short":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint(tmp_path, monkeypatch) -> Iterator[tuple[Endpoint, Layer]]:
    local = image_layer(f"file://{tmp_path}/img", (32, 32, 8), (32, 32, 8), fill=5)
    server = Endpoint({KEY: (tmp_path / "img" / KEY).read_bytes()})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(chunk_io, "TRANSFER_BACKOFF_S", 0.0)
    env = {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    port = server.server_address[1]
    try:
        with client_env(env):
            yield server, Layer(f"s3://http://127.0.0.1:{port}/transfers/layer", local.info)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_bodies_failing_their_md5_check_are_fetched_again(endpoint):
    server, layer = endpoint
    server.plans[KEY] = ["md5", "md5", "ok"]
    assert (layer.read(layer.bounds()) == 5).all()
    assert server.gets == [KEY] * 3


def test_a_body_cut_short_is_never_taken_for_data(endpoint):
    server, layer = endpoint
    server.plans[KEY] = ["short", "ok"]
    assert (layer.read(layer.bounds()) == 5).all()
    assert len(server.gets) == 2  # cloud-files fetched it again itself


def test_a_stored_body_that_never_matches_names_the_chunk_after_bounded_attempts(endpoint):
    server, layer = endpoint
    server.plans[KEY] = ["md5"]
    with pytest.raises(ChunkDataError) as err:
        layer.read(layer.bounds())
    assert err.value.chunk_key == KEY and err.value.layer_url == layer.url
    assert "failed its checksum 3 times in a row (MD5IntegrityError" in str(err.value)
    assert server.gets == [KEY] * chunk_io.TRANSFER_ATTEMPTS
