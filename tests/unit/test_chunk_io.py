"""Reading chunks checked and named (truncated, overwritten, cut-short or badly gzipped bodies),
and writing them atomically with normal file modes, on real file:// layers."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from small_layers import image_layer

from petavox.tasks.core import chunk_io, objects, tensorstore_io
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec

HALF = "8_8_40/0-32_0-32_0-16"  # truncated to half its bytes
HEADER = "8_8_40/32-64_32-64_16-32"  # first 16 bytes set to 0xFF


def segmentation(tmp_path: Path) -> tuple[Layer, np.ndarray]:
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=Vec3(64, 64, 32),
        resolution=(8, 8, 40),
        chunk_size=Vec3(32, 32, 16),
        encoding="compressed_segmentation",
    )
    layer = Layer.create(f"file://{tmp_path}/seg", spec)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, (64, 64, 32)).astype(np.uint64) + np.uint64(2**63)
    layer.write(layer.bounds(), labels)
    return layer, labels


def corrupt(layer: Layer) -> None:
    root = Path(layer.url[len("file://") :])
    data = (root / HALF).read_bytes()
    (root / HALF).write_bytes(data[: len(data) // 2])
    data = (root / HEADER).read_bytes()
    (root / HEADER).write_bytes(b"\xff" * 16 + data[16:])


READ_TWICE = """
import json, sys
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
layer = Layer.open(sys.argv[1])
found = []
for box in (Box((0, 0, 0), (32, 32, 16)), Box((32, 32, 16), (64, 64, 32)), layer.bounds()):
    for _ in range(2):
        try:
            layer.read(box)
            found.append(None)
        except ChunkDataError as exc:
            found.append([exc.layer_url, exc.chunk_key, str(exc)])
print(json.dumps(found))
"""


def test_corrupt_segmentation_chunks_are_named_never_decoded(tmp_path):
    """In a subprocess: today's decoder segfaults on the overwritten header."""
    layer, labels = segmentation(tmp_path)
    corrupt(layer)
    proc = subprocess.run(
        [sys.executable, "-c", READ_TWICE, layer.url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout)
    assert found[0] == found[1] and found[2] == found[3] and found[4] == found[5]
    (url_a, key_a, msg_a), (url_b, key_b, msg_b) = found[0], found[2]
    assert (url_a, key_a, url_b, key_b) == (layer.url, HALF, layer.url, HEADER)
    assert f"layer {layer.url}: chunk {HALF} is truncated/corrupt" in msg_a
    assert f"chunk {HEADER} is truncated/corrupt: channel 0 starts at word 4294967295" in msg_b
    assert found[4][1] in (HALF, HEADER)
    np.testing.assert_array_equal(layer.read(Box((32, 0, 0), (64, 32, 32))), labels[32:, :32])


def test_tensorstore_reads_of_corrupt_chunks_name_the_chunk(tmp_path):
    layer, _ = segmentation(tmp_path)
    corrupt(layer)
    for key, box in (
        (HALF, Box((0, 0, 0), (32, 32, 16))),
        (HEADER, Box((32, 32, 16), (64, 64, 32))),
    ):
        with pytest.raises(ChunkDataError) as err:
            tensorstore_io.read(layer, box)
        assert err.value.chunk_key == key and err.value.layer_url == layer.url
        assert "is truncated/corrupt" in str(err.value)


def raw_layer(tmp_path: Path) -> Layer:
    return image_layer(f"file://{tmp_path}/raw", fill=9)


@pytest.mark.parametrize("fill_missing", [False, True])
def test_truncated_empty_and_badly_gzipped_raw_chunks(tmp_path, fill_missing):
    layer = raw_layer(tmp_path)
    chunk = tmp_path / "raw" / "8_8_40" / "0-32_0-32_0-16"
    chunk.write_bytes(chunk.read_bytes()[:1000])
    with pytest.raises(ChunkDataError, match="0-32_0-32_0-16 is truncated/corrupt: 1000 bytes"):
        layer.read(layer.bounds(), fill_missing=fill_missing)
    chunk.write_bytes(b"")
    with pytest.raises(ChunkDataError, match="0-32_0-32_0-16 is truncated/corrupt: it is empty"):
        layer.read(layer.bounds(), fill_missing=fill_missing)
    chunk.unlink()
    zipped = gzip.compress(bytes(32 * 32 * 16))
    Path(f"{chunk}.gz").write_bytes(zipped)
    assert not layer.read(Box((0, 0, 0), (32, 32, 16))).any()  # cloud-files' gzipped files
    Path(f"{chunk}.gz").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(ChunkDataError, match="0-32_0-32_0-16 is truncated/corrupt: its gzip body"):
        layer.read(layer.bounds(), fill_missing=fill_missing)


class FlakyStore:
    """Stands in for a cloud-files client: `get` as cloud-files returns it (errors in the
    results), each key failing its checksum `failures[key]` times first."""

    def __init__(self, objects_: dict[str, bytes], failures: dict[str, int], error=None):
        self.objects, self.failures, self.error, self.calls = objects_, failures, error, []

    def get(self, paths, raw=False, raise_errors=True):
        from cloudfiles.exceptions import MD5IntegrityError

        assert raw and not raise_errors
        self.calls.append(list(paths))
        results = []
        for path in paths:
            error = None
            if self.error is not None:
                error = self.error
            elif self.failures.get(path, 0) > 0:
                self.failures[path] -= 1
                error = MD5IntegrityError(f"{path} failed its md5 check. server md5: x")
            content = None if error else gzip.compress(self.objects[path])
            results.append({"path": path, "content": content, "error": error, "compress": "gzip"})
        return results


def remote_layer(tmp_path, monkeypatch, failures, error=None) -> tuple[Layer, FlakyStore]:
    local = raw_layer(tmp_path)
    root = tmp_path / "raw"
    stored = {k: (root / k).read_bytes() for k, _ in local.storage_chunks(local.bounds())}
    store = FlakyStore(stored, failures, error)
    monkeypatch.setattr(objects, "files", lambda url, context: store)
    monkeypatch.setattr(chunk_io, "TRANSFER_BACKOFF_S", 0.0)
    return Layer("s3://bucket/raw", local.info), store


def test_bodies_failing_their_checksum_are_fetched_again(tmp_path, monkeypatch):
    key = "8_8_40/32-64_0-32_0-16"
    layer, store = remote_layer(tmp_path, monkeypatch, {key: chunk_io.TRANSFER_ATTEMPTS - 1})
    assert (layer.read(layer.bounds()) == 9).all()
    assert store.calls[1:] == [[key]] * (chunk_io.TRANSFER_ATTEMPTS - 1)


def test_a_body_that_always_fails_names_the_chunk_after_bounded_attempts(tmp_path, monkeypatch):
    key = "8_8_40/32-64_0-32_0-16"
    layer, store = remote_layer(tmp_path, monkeypatch, {key: 10**6})
    with pytest.raises(ChunkDataError) as err:
        layer.read(layer.bounds())
    assert err.value.chunk_key == key and err.value.layer_url == "s3://bucket/raw"
    assert "failed its checksum 3 times in a row (MD5IntegrityError" in str(err.value)
    assert len(store.calls) == chunk_io.TRANSFER_ATTEMPTS


def test_other_storage_errors_reach_the_caller_unchanged(tmp_path, monkeypatch):
    layer, store = remote_layer(tmp_path, monkeypatch, {}, ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):  # the runner retries it (transient)
        layer.read(layer.bounds())
    assert len(store.calls) == 1
