"""The static file server of `petavox view`, on layers written by petavox and cloud-volume."""

from __future__ import annotations

import gzip
import http.client
import socket

import numpy as np
import pytest
from cloudvolume import CloudVolume

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.workflows.file_server import FileServer

pytestmark = pytest.mark.integration

SIZE = Vec3(64, 64, 16)
CHUNK = Vec3(32, 32, 16)


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, with the path sent exactly as given (no normalisation)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def layers(tmp_path):
    """An image layer written by petavox (uncompressed) and one by cloud-volume (gzip)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, tuple(SIZE), dtype=np.uint8)
    spec = LayerSpec(
        layer_type="image", dtype="uint8", size=SIZE, resolution=(8, 8, 8), chunk_size=CHUNK
    )
    raw = Layer.create(f"file://{tmp_path}/raw", spec)
    raw.write(raw.bounds(), data)
    labels = rng.integers(0, 5, tuple(SIZE), dtype=np.uint64)
    Layer.create(
        f"file://{tmp_path}/seg",
        LayerSpec(
            layer_type="segmentation",
            dtype="uint64",
            size=SIZE,
            resolution=(8, 8, 8),
            chunk_size=CHUNK,
        ),
    )
    CloudVolume(f"file://{tmp_path}/seg", compress="gzip", progress=False)[:, :, :] = labels
    (tmp_path / "secret.txt").write_text("not served")
    return {"raw": tmp_path / "raw", "seg": tmp_path / "seg"}, data, labels


def test_serves_layers_with_cors_and_cloudvolume_reads_them_back(layers):
    roots, data, labels = layers
    with FileServer(roots) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, headers, body = request(server.url, "/raw/8_8_8/0-32_0-32_0-16")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert "Content-Encoding" not in headers
        assert body == (roots["raw"] / "8_8_8" / "0-32_0-32_0-16").read_bytes()
        assert body == data[:32, :32, :16].tobytes(order="F")
        status, headers, body = request(server.url, "/raw/info", "HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
        raw = CloudVolume(f"precomputed://{server.url}/raw", progress=False)
        np.testing.assert_array_equal(raw[:, :, :][..., 0], data)
        seg = CloudVolume(f"precomputed://{server.url}/seg", progress=False)
        np.testing.assert_array_equal(seg[:, :, :][..., 0], labels)


def test_gzip_chunks_are_served_with_content_encoding(layers):
    roots, _, _ = layers
    key = "8_8_8/32-64_0-32_0-16"
    stored = roots["seg"] / f"{key}.gz"
    assert stored.exists() and not (roots["seg"] / key).exists()  # cloud-volume gzipped it
    with FileServer(roots) as server:
        status, headers, body = request(server.url, f"/seg/{key}")
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert body == stored.read_bytes()
        assert gzip.decompress(body) == gzip.decompress(stored.read_bytes())
        assert len(gzip.decompress(body)) > 8  # a compressed_segmentation chunk
        status, _, _ = request(server.url, f"/seg/{key}.gz")
        assert status == 200  # the stored name works too


def test_cors_preflight(layers):
    roots, _, _ = layers
    with FileServer(roots) as server:
        status, headers, body = request(
            server.url,
            "/raw/info",
            "OPTIONS",
            {
                "Origin": "https://viewer.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
                "Access-Control-Request-Private-Network": "true",
            },
        )
        assert status == 204 and body == b""
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "range"
        assert headers["Access-Control-Allow-Private-Network"] == "true"


def test_byte_ranges_of_uncompressed_files(layers):
    roots, _, _ = layers
    whole = (roots["raw"] / "info").read_bytes()
    with FileServer(roots) as server:
        status, headers, body = request(server.url, "/raw/info", headers={"Range": "bytes=2-11"})
        assert status == 206 and body == whole[2:12]
        assert headers["Content-Range"] == f"bytes 2-11/{len(whole)}"
        status, headers, _ = request(server.url, "/raw/info", headers={"Range": "bytes=9999-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"


@pytest.mark.parametrize(
    "path",
    [
        "/raw/../secret.txt",
        "/raw/%2e%2e/secret.txt",
        "/raw/..%2fsecret.txt",
        "/../secret.txt",
        "/raw/8_8_8/../../secret.txt",
        "/secret.txt",
        "/",
        "/raw",
        "/raw/",
        "/raw/8_8_8",
        "/raw/missing",
        "/other/info",
    ],
)
def test_nothing_outside_the_layers_and_no_listings(layers, path):
    roots, _, _ = layers
    with FileServer(roots) as server:
        status, headers, body = request(server.url, path)
    assert status == 404 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_symlinks_out_of_a_layer_are_refused(layers, tmp_path):
    roots, _, _ = layers
    (roots["raw"] / "leak").symlink_to(tmp_path / "secret.txt")
    with FileServer(roots) as server:
        assert request(server.url, "/raw/leak")[0] == 404


def test_binds_127_0_0_1_and_stops(layers):
    roots, _, _ = layers
    server = FileServer(roots)
    with server:
        port = int(server.url.rsplit(":", 1)[1])
        assert request(server.url, "/raw/info")[0] == 200
        with pytest.raises(ConnectionRefusedError):  # another loopback address: not bound there
            socket.create_connection(("127.0.0.2", port), timeout=2)
        with pytest.raises(OSError):  # the port is taken while it runs
            FileServer(roots, port).start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    again = FileServer(roots, port)  # the port is free again
    with again:
        assert request(again.url, "/raw/info")[0] == 200
