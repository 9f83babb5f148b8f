"""The static file server of `petavox view`, on layers written by petavox and cloud-volume:
what it serves, to which origins, and what it refuses."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from cloudvolume import CloudVolume

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.workflows.file_server import FileServer, origin_of

pytestmark = pytest.mark.integration

SIZE = Vec3(64, 64, 16)
CHUNK = Vec3(32, 32, 16)
VIEWER = "https://viewer.example"  # the viewer origin the tests allow
LOCAL_VIEWER = "http://127.0.0.1:9"
EVIL = "https://evil.example"


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


def add_mesh_and_skeletons(seg: Path) -> None:
    """Name a `mesh` and a `skeletons` folder in the layer's info, with a file each."""
    info = json.loads((seg / "info").read_text())
    (seg / "info").write_text(json.dumps({**info, "mesh": "mesh", "skeletons": "skels"}))
    for folder, name in (("mesh", "3:0"), ("skels", "3")):
        (seg / folder).mkdir()
        (seg / folder / "info").write_text("{}")
        (seg / folder / name).write_bytes(b"geometry")


def add_files_not_to_serve(layer: Path) -> None:
    """What a run can leave in or beside a layer that is no layer data."""
    for name, text in (
        ("ledger/mesh-forge/0a1b/0_0_0.json", '{"host": "lab-pc", "pid": 4242}'),
        ("intermediate/mesh/0a1b/fragments.npz", "work"),
        (".hidden", "dotfile"),
        ("8_8_8/.tmp-a1b2c3", "half a chunk"),
        ("8_8_8/0-32_0-32_0-16.tmp", "half a chunk"),
        ("8_8_8/ledger/0_0_0.json", '{"host": "lab-pc"}'),
        ("8_8_8/.git/config", "[core]"),
        ("notes.txt", "not named by the info"),
        ("16_16_16/0-32_0-32_0-16", "a scale the info does not name"),
    ):
        (layer / name).parent.mkdir(parents=True, exist_ok=True)
        (layer / name).write_text(text)


def test_serves_layers_with_cors_and_cloudvolume_reads_them_back(layers):
    roots, data, labels = layers
    with FileServer(roots) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, headers, body = request(server.url, "/raw/8_8_8/0-32_0-32_0-16")
        assert status == 200 and "Access-Control-Allow-Origin" not in headers  # no Origin
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
    with FileServer(roots, allowed_origins=[VIEWER]) as server:
        status, headers, body = request(server.url, f"/seg/{key}", headers={"Origin": VIEWER})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert headers["Access-Control-Allow-Origin"] == VIEWER
        assert body == stored.read_bytes()
        assert gzip.decompress(body) == gzip.decompress(stored.read_bytes())
        assert len(gzip.decompress(body)) > 8  # a compressed_segmentation chunk
        status, _, _ = request(server.url, f"/seg/{key}.gz")
        assert status == 200  # the stored name works too


def preflight(url: str, origin: str) -> tuple[int, dict[str, str], bytes]:
    return request(
        url,
        "/raw/info",
        "OPTIONS",
        {
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range",
            "Access-Control-Request-Private-Network": "true",
        },
    )


def test_cors_preflight_of_a_viewer_origin(layers):
    roots, _, _ = layers
    with FileServer(roots, allowed_origins=[VIEWER]) as server:
        status, headers, body = preflight(server.url, VIEWER)
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Origin"] == VIEWER and headers["Vary"] == "Origin"
    assert "GET" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "range"
    assert headers["Access-Control-Allow-Private-Network"] == "true"


def test_preflight_of_another_origin_is_refused(layers):
    """A public page may not reach 127.0.0.1: no CORS and no private-network allowance."""
    roots, _, _ = layers
    with FileServer(roots, allowed_origins=[VIEWER]) as server:
        for origin in (EVIL, "null", VIEWER + ":444", "http://viewer.example"):
            status, headers, body = preflight(server.url, origin)
            assert status == 403 and body == b"", origin
            assert not [h for h in headers if h.lower().startswith("access-control-")], origin


def test_only_the_viewer_origins_get_cors(layers):
    """Each allowed origin is echoed (with `Vary: Origin`); any other Origin is refused with
    403 and no CORS headers; a request without an Origin (curl, cloud-volume) is served."""
    roots, _, _ = layers
    chunk = (roots["raw"] / "8_8_8" / "0-32_0-32_0-16").read_bytes()
    with FileServer(roots, allowed_origins=[VIEWER, LOCAL_VIEWER]) as server:
        for origin in (VIEWER, LOCAL_VIEWER):
            for method in ("GET", "HEAD"):
                status, headers, _ = request(
                    server.url, "/raw/8_8_8/0-32_0-32_0-16", method, {"Origin": origin}
                )
                assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
                assert headers["Vary"] == "Origin"
                assert "Content-Range" in headers["Access-Control-Expose-Headers"]
        for origin in (EVIL, "null", "http://127.0.0.1:10", server.url):
            for method in ("GET", "HEAD"):
                status, headers, body = request(
                    server.url, "/raw/8_8_8/0-32_0-32_0-16", method, {"Origin": origin}
                )
                assert status == 403 and body == b"", (origin, method)
                assert "Access-Control-Allow-Origin" not in headers
        status, headers, body = request(server.url, "/raw/8_8_8/0-32_0-32_0-16")
        assert status == 200 and body == chunk and "Access-Control-Allow-Origin" not in headers
        status, _, _ = request(server.url, "/raw/missing", headers={"Origin": EVIL})
        assert status == 403  # refused before it looks: nothing to learn about the files
    with FileServer(roots) as server:  # no viewer origins: no page may read the layers
        assert request(server.url, "/raw/info", headers={"Origin": VIEWER})[0] == 403


def test_requests_for_another_host_name_are_refused(layers):
    """A page whose host name resolves to 127.0.0.1 (DNS rebinding) is same-origin with
    itself, sends no Origin, and must not read the layers either."""
    roots, _, _ = layers
    with FileServer(roots) as server:
        port = server.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert request(server.url, "/raw/info", headers={"Host": host})[0] == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{int(port) + 1}"):
            status, _, body = request(server.url, "/raw/info", headers={"Host": host})
            assert status == 403 and body == b"", host


@pytest.mark.parametrize(
    "origin", ["https://viewer.example/", "https://viewer.example/#!", "viewer.example", "*", ""]
)
def test_allowed_origins_must_be_origins(layers, origin):
    roots, _, _ = layers
    with pytest.raises(ValueError, match="origin"):
        FileServer(roots, allowed_origins=[origin])


def test_origin_of_a_viewer_url():
    assert origin_of("https://viewer.example/#!%7B%7D") == VIEWER
    assert origin_of("http://127.0.0.1:8123/v/0123abcd/") == "http://127.0.0.1:8123"
    assert origin_of("HTTPS://Viewer.Example:443/x") == VIEWER  # as browsers send it
    with pytest.raises(ValueError):
        origin_of("file:///data/viewer.html")


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
    assert "Access-Control-Allow-Origin" not in headers


def test_only_the_files_the_info_names_are_served(layers):
    """`info`, the chunks of its scales and the files in the folders it names (mesh,
    skeletons); never ledger markers, work files, dotfiles, temp files or other files."""
    roots, _, _ = layers
    add_mesh_and_skeletons(roots["seg"])
    for layer in roots.values():
        add_files_not_to_serve(layer)
    served = ["/raw/info", "/raw/8_8_8/0-32_0-32_0-16", "/seg/info", "/seg/8_8_8/0-32_0-32_0-16"]
    served += ["/seg/mesh/info", "/seg/mesh/3:0", "/seg/mesh/3%3A0", "/seg/skels/3"]
    refused = [
        "/raw/ledger/mesh-forge/0a1b/0_0_0.json",
        "/raw/intermediate/mesh/0a1b/fragments.npz",
        "/raw/.hidden",
        "/raw/8_8_8/.tmp-a1b2c3",
        "/raw/8_8_8/0-32_0-32_0-16.tmp",
        "/raw/8_8_8/ledger/0_0_0.json",
        "/raw/8_8_8/.git/config",
        "/raw/notes.txt",
        "/raw/16_16_16/0-32_0-32_0-16",
        "/raw/mesh/3:0",  # raw's info names no mesh
        "/seg/ledger/mesh-forge/0a1b/0_0_0.json",
        "/seg/.hidden",
    ]
    with FileServer(roots, allowed_origins=[VIEWER]) as server:
        for path in served:
            status, headers, _ = request(server.url, path, headers={"Origin": VIEWER})
            assert status == 200 and headers["Access-Control-Allow-Origin"] == VIEWER, path
        for path in refused:
            for origin in ({"Origin": VIEWER}, {}):
                status, _, body = request(server.url, path, headers=origin)
                assert status == 404 and body == b"", path


def test_a_changed_info_changes_what_is_served(layers):
    roots, _, _ = layers
    with FileServer(roots) as server:
        assert request(server.url, "/seg/mesh/3:0")[0] == 404  # no mesh yet
        add_mesh_and_skeletons(roots["seg"])
        info = roots["seg"] / "info"
        stat = info.stat()  # a new mtime even on a coarse clock
        os.utime(info, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert request(server.url, "/seg/mesh/3:0")[0] == 200
        assert request(server.url, "/seg/skels/3")[0] == 200


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
