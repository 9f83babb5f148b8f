"""petavox's own layer, ledger and pipeline code on S3 (SeaweedFS, moto) and GCS (emulator).

The endpoint reaches petavox only through its storage context (as `storage.s3_endpoint` in a
config would), never through AWS_ENDPOINT_URL in the environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from storage_servers import client_env

from petavox.tasks.core import objects, tensorstore_io
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.objects import get_array, get_arrays, put_array, put_arrays
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.metrics import evaluate
from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.workflows.ledger import Ledger, Segment

pytestmark = pytest.mark.integration

ENDPOINT_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "STORAGE_EMULATOR_HOST",
    "TENSORSTORE_GCS_HTTP_URL",
)


@dataclass
class Store:
    name: str
    base: str  # URL prefix to write under
    context: StorageContext
    env: dict[str, str]  # credentials and client settings, without the endpoint
    secret: str | None = None


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """`StorageContext.apply` sets variables for the process; undo that after each test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(params=["seaweedfs", "moto", "gcs"])
def store(request, restore_environ) -> Iterator[Store]:
    if request.param == "gcs":
        server = request.getfixturevalue("gcs_module")
        env = {k: v for k, v in server.env().items() if k not in ENDPOINT_VARS}
        ctx = StorageContext(gcs_endpoint=server.endpoint)
        result = Store("gcs", f"gs://{server.bucket}/{request.node.name}", ctx, env)
    else:
        server = request.getfixturevalue(request.param)
        env = {k: v for k, v in server.env().items() if k not in ENDPOINT_VARS}
        ctx = StorageContext(s3_endpoint=server.endpoint)
        result = Store(
            request.param, f"s3://{server.bucket}/{request.node.name}", ctx, env, server.secret_key
        )
    for var in ENDPOINT_VARS:
        os.environ.pop(var, None)
    with client_env(env):
        yield result


def spec(**kw) -> LayerSpec:
    base = dict(
        layer_type="image",
        dtype="uint8",
        size=Vec3(80, 48, 12),
        resolution=(8, 8, 40),
        chunk_size=Vec3(32, 32, 8),
    )
    return LayerSpec(**{**base, **kw})


def test_layer_roundtrip_errors_and_pyramid(store):
    layer = Layer.create(f"{store.base}/img", spec(), store.context)
    data = np.random.default_rng(0).integers(0, 255, (80, 48, 12), dtype=np.uint8)
    layer.write(layer.bounds(), data)
    reopened = Layer.open(layer.url, store.context)
    out = reopened.read(Box((-4, 0, 0), (80, 50, 12)))
    np.testing.assert_array_equal(out[4:, :48], data)
    assert not out[:4].any() and not out[:, 48:].any()
    assert reopened.with_scales(Vec3(2, 2, 1), 1).num_mips == 2
    assert Layer.open(layer.url, store.context).num_mips == 2
    empty = Layer.create(f"{store.base}/empty", spec(), store.context)
    with pytest.raises(ChunkDataError, match=r"8_8_40/0-32_0-32_0-8 is missing"):
        empty.read(Box((0, 0, 0), (32, 32, 8)))


@pytest.mark.parametrize(
    ("kind", "dtype", "encoding"),
    [
        ("image", "uint8", "raw"),
        ("image", "uint8", "jpeg"),
        ("segmentation", "uint64", "compressed_segmentation"),
        ("segmentation", "uint32", "compressed_segmentation"),
    ],
)
def test_cloudvolume_and_tensorstore_read_each_others_layers(store, kind, dtype, encoding):
    if kind == "image":
        x = np.linspace(0, 1, 80)[:, None, None] * np.ones((80, 48, 12))
        data = (x * 180 + 30).astype(dtype)
    else:
        data = generate(SyntheticParams(shape=(80, 48, 12), seed=1)).labels.astype(dtype)
        data[data > 0] += 2**31 if dtype == "uint64" else 0
    exact = encoding != "jpeg"

    def same(a, b):
        if exact:
            np.testing.assert_array_equal(a, b)
        else:
            assert np.abs(a.astype(int) - b.astype(int)).mean() < 2

    ours = Layer.create(
        f"{store.base}/cv", spec(layer_type=kind, dtype=dtype, encoding=encoding), store.context
    )
    ours.write(ours.bounds(), np.asfortranarray(data))
    same(tensorstore_io.read(ours, ours.bounds()), data)

    theirs = Layer.create(
        f"{store.base}/ts", spec(layer_type=kind, dtype=dtype, encoding=encoding), store.context
    )
    tensorstore_io.write(theirs, theirs.bounds(), data)
    same(Layer.open(theirs.url, store.context).read(theirs.bounds()), data)


def test_corrupt_chunks_on_object_storage_name_the_chunk(store):
    """A truncated chunk, one with its header overwritten (both stored gzipped, as cloud-volume
    stores them) and a gzip body that does not inflate: each a ChunkDataError naming the chunk,
    from petavox's reader and from tensorstore's."""
    from cloudfiles import CloudFiles

    kind = dict(layer_type="segmentation", dtype="uint64", encoding="compressed_segmentation")
    layer = Layer.create(f"{store.base}/seg", spec(**kind), store.context)
    labels = generate(SyntheticParams(shape=(80, 48, 12), seed=1)).labels.astype(np.uint64)
    layer.write(layer.bounds(), labels + np.uint64(2**40))
    files = CloudFiles(layer.url)
    half, header, gzipped = "8_8_40/0-32_0-32_0-8", "8_8_40/32-64_0-32_0-8", "8_8_40/64-80_0-32_0-8"
    data = files.get(half)
    files.put(half, data[: len(data) // 8 * 4], compress="gzip")  # half, in whole words
    files.put(header, b"\xff" * 16 + files.get(header)[16:], compress="gzip")
    files.put(gzipped, files.get(gzipped, raw=True)[:200], compress="gzip", raw=True)
    for key, x, problem in ((half, 0, "needs words up to"), (header, 32, "starts at word 42949")):
        box = Box.from_shape((32, 32, 8), (x, 0, 0))
        with pytest.raises(ChunkDataError, match=f"chunk {key} is truncated/corrupt: .*{problem}"):
            layer.read(box)
        with pytest.raises(ChunkDataError, match=f"chunk {key} is truncated/corrupt"):
            tensorstore_io.read(layer, box)
    with pytest.raises(ChunkDataError, match=f"{gzipped} is truncated/corrupt: its gzip body"):
        layer.read(Box.from_shape((16, 32, 8), (64, 0, 0)))


def test_ledger_on_object_storage(store):
    ledger = Ledger(f"{store.base}/ledger", store.context)
    ledger.record_params("ingest", "abc", {"a": 1})
    ledger.record_params("ingest", "abc", {"a": 1})
    writer = ledger.writer("ingest", "abc", (11, 3, 4), flush_seconds=0)
    last = 10 + 11 * (2 + 3 * 3)  # chunk 10_2_3 of an 11 × 3 × 4 grid
    for position in (0, 1, last):
        writer.add(position, {"seconds": 0.1, "objects": {"s3://b/x": {"k": position}}})
    finished = ledger.finished("ingest", "abc", (11, 3, 4))
    assert np.flatnonzero(finished.mask).tolist() == [0, 1, last]
    assert ledger.finished("ingest", "abd", (11, 3, 4)).count == 0
    (segment,) = ledger.segments("ingest", "abc")
    assert list(segment.objects_of(2)) == [("s3://b/x", "k", last)]
    ledger.mark_global("ingest", "abc", {"objects": {}})
    assert ledger.finished("ingest", "abc", (11, 3, 4)).global_done


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_run_on_gcs(gcs_module, tmp_path, restore_environ):
    stack = tmp_path / "stack.npy"
    data = np.random.default_rng(3).integers(0, 255, (16, 64, 96), dtype=np.uint8)
    np.save(stack, data)
    url = f"gs://{gcs_module.bucket}/run"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output: {url}\n"
        f"storage: {{gcs_endpoint: '{gcs_module.endpoint}'}}\n"
        "stages:\n"
        f"  - {{stage: ingest, input: '{stack}', resolution: [8, 8, 40],"
        " storage_chunk: [32, 32, 8], chunk_shape: [64, 64, 8]}\n"
        "  - {stage: downsample, input: raw, mips: 1}\n"
    )
    env = {k: v for k, v in gcs_module.env().items() if k not in ENDPOINT_VARS}
    run_cli(["run", str(config), "--workers", "2", "--quiet"], env)
    status = run_cli(["status", str(config)], env).stdout
    assert status.count("done") == 2
    with client_env(env):
        raw = Layer.open(f"{url}/raw", StorageContext(gcs_endpoint=gcs_module.endpoint))
        np.testing.assert_array_equal(raw.read(raw.bounds()), data.transpose(2, 1, 0))
        assert raw.num_mips == 2


def test_array_objects_on_object_storage(store):
    url = f"{store.base}/intermediate"
    edges = np.arange(12, dtype=np.uint64).reshape(6, 2) + 2**40
    put_array(url, "edges/0/1_2_3.npy", edges, store.context)
    np.testing.assert_array_equal(get_array(url, "edges/0/1_2_3.npy", store.context), edges)
    graph = {"edges": edges, "sums": np.linspace(0, 1, 6), "face_ids": np.zeros(0, np.uint64)}
    put_arrays(url, "agglo/1/0_0_0.npz", graph, store.context)
    back = get_arrays(url, "agglo/1/0_0_0.npz", store.context)
    assert set(back) == set(graph)
    for key, value in graph.items():
        np.testing.assert_array_equal(back[key], value)
    with pytest.raises(FileNotFoundError, match=r"maps/9/0_0_0\.npy is missing"):
        get_array(url, "maps/9/0_0_0.npy", store.context)


def test_infer_with_a_model_in_s3_and_segment_on_seaweedfs(seaweedfs, tmp_path, restore_environ):
    """One `petavox run` with `--s3-endpoint` and the credentials in the environment (one Ray
    start for all, to keep the suite short): raw, model and boundary map all in S3, the workers
    fetching the model and checking its checksum; and a multi-chunk watershed whose faces,
    edges, region graphs and maps live in S3. No credential in the output or the ledger; then
    `petavox clean` removes the work files and nothing else. (The demo on S3 with credentials:
    tests/deploy/test_compose_demo_on_seaweedfs.py.)"""
    import yaml

    from petavox.tasks.core.objects import put
    from petavox.tasks.infer.onnx_model import builtin_path, sha256

    volume = generate(SyntheticParams(shape=(64, 48, 24), seed=6))
    np.save(tmp_path / "raw.npy", volume.raw.transpose(2, 1, 0))
    boundary = boundary_from_labels(volume.labels, seed=6)
    np.save(tmp_path / "boundary.npy", boundary.transpose(2, 1, 0))
    env = {k: v for k, v in seaweedfs.env().items() if k not in ENDPOINT_VARS}
    url = f"s3://{seaweedfs.bucket}/chain"
    context = StorageContext(s3_endpoint=seaweedfs.endpoint)
    data = builtin_path("boundary-synthetic.onnx").read_bytes()
    with client_env(env):
        put(f"{url}/models", "unet.onnx", data, context)
    ingest = {"stage": "ingest", "resolution": [8, 8, 8], "storage_chunk": [16, 16, 8]}
    stages = [
        {**ingest, "input": str(tmp_path / "raw.npy"), "output": "raw"},
        {**ingest, "input": str(tmp_path / "boundary.npy"), "output": "boundary"},
        {
            "stage": "infer",
            "input": "raw",
            "output": "predicted",
            "model": f"{url}/models/unet.onnx",
            "model_sha256": sha256(data),
            "chunk_shape": [32, 32, 16],
        },
        {
            "stage": "segment",
            "input": "boundary",
            "output": "seg",
            "chunk_shape": [32, 16, 8],
            "halo": [16, 16, 16],
            "merge_threshold": 0.6,
        },
    ]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"output": url, "stages": stages}))
    common = ["--s3-endpoint", seaweedfs.endpoint, "--workers", "2", "--quiet"]
    proc = run_cli(["run", str(config), *common], env)
    assert "agglomerate" in proc.stdout and seaweedfs.secret_key not in proc.stdout + proc.stderr
    with client_env(env):
        seg = Layer.open(f"{url}/seg", context)
        labels = seg.read(seg.bounds())
        predicted = Layer.open(f"{url}/predicted", context)
        pred = predicted.read(predicted.bounds())
    assert evaluate(labels, volume.labels).arand <= 0.05
    assert len(np.unique(labels)) > 5
    assert pred[volume.labels == 0].mean() > pred[volume.labels > 0].mean() + 100
    check_no_credential_in_the_ledger(seaweedfs, url, env)
    check_clean_removes_the_work_files(seaweedfs, url, env)


def check_no_credential_in_the_ledger(seaweedfs, url: str, env: dict[str, str]) -> None:
    from cloudfiles import CloudFiles

    with client_env(env):
        ledger = CloudFiles(f"{url}/ledger")
        markers = list(ledger.list())
        found = ledger.get(markers)
        blobs = b"".join(r["content"] for r in found)
        for r in found:  # segments are compressed: what they hold, decoded
            if r["path"].endswith(".npz"):
                segment = Segment.from_bytes(r["content"])
                blobs += repr((segment.urls, segment.object_key.tolist())).encode()
    assert markers and seaweedfs.secret_key.encode() not in blobs


def check_clean_removes_the_work_files(seaweedfs, url: str, env: dict[str, str]) -> None:
    """`petavox clean` on the bucket: the work files go, nothing else."""
    client = seaweedfs.boto3_client()
    prefix = url.removeprefix(f"s3://{seaweedfs.bucket}/") + "/"

    def listing() -> dict[str, int]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=seaweedfs.bucket, Prefix=prefix
        )
        found = {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
        return {k: v for k, v in found.items() if not k.startswith(f"{prefix}ledger/driver.lease")}

    before = listing()
    work = {k: v for k, v in before.items() if k.startswith(f"{prefix}intermediate/")}
    assert work
    done = run_cli(["clean", url, "--s3-endpoint", seaweedfs.endpoint], env)
    assert f"({sum(work.values()):,} bytes) in " in done.stdout
    assert listing() == {k: v for k, v in before.items() if k not in work}
    # (a rerun after clean recomputes nothing: tests/integration/test_clean.py, on file://)


def test_models_load_from_object_storage_with_their_checksum(store):
    from petavox.tasks.core.objects import put
    from petavox.tasks.infer.onnx_model import ModelError, ModelRef, builtin_path, sha256

    data = builtin_path("boundary-synthetic.onnx").read_bytes()
    put(f"{store.base}/models", "unet.onnx", data, store.context)
    url = f"{store.base}/models/unet.onnx"
    assert ModelRef(url=url, sha256=sha256(data), context=store.context).load() == data
    with pytest.raises(ModelError, match="SHA-256"):
        ModelRef(url=url, sha256="0" * 64, context=store.context).load()
    with pytest.raises(ModelError, match="does not exist"):
        ModelRef(
            url=f"{store.base}/models/none.onnx", sha256=sha256(data), context=store.context
        ).load()


def test_the_sizes_a_write_records_are_those_a_listing_gives(store):
    """Done-markers record each object's stored size; resume compares them with a listing, so
    the two must agree on every backend, for gzip-compressed chunks as for plain objects."""
    image = Layer.create(f"{store.base}/img", spec(), store.context)
    labels = Layer.create(
        f"{store.base}/seg",
        spec(layer_type="segmentation", dtype="uint64", encoding="compressed_segmentation"),
        store.context,
    )
    rng = np.random.default_rng(5)
    with objects.recording_writes() as written:
        image.write(image.bounds(), rng.integers(0, 9, (80, 48, 12), dtype=np.uint8))
        labels.write(labels.bounds(), rng.integers(0, 3, (80, 48, 12)).astype(np.uint64))
        objects.put_json(f"{store.base}/tables", "summary/0.json", {"rows": 3}, store.context)
    assert len(written) == 12 + 12 + 1  # 3 × 2 × 2 storage chunks per layer
    for (url, key), size in written.items():
        folder = key.rpartition("/")[0] + "/"
        assert objects.list_sizes(url, folder, store.context)[key] == size
    chunk = f"{image.scale(0)['key']}/0-32_0-32_0-8"
    assert written[(image.url, chunk)] < 32 * 32 * 8  # stored gzipped, as cloud-volume does
    np.testing.assert_array_equal(
        Layer.open(image.url, store.context).read(Box((0, 0, 0), (32, 32, 8))),
        image.read(Box((0, 0, 0), (32, 32, 8))),
    )


def test_sharded_layers_on_object_storage(store):
    """Whole shards written as single objects, read back whole and by byte range."""
    layer = Layer.create(
        f"{store.base}/sharded",
        spec(sharding={"chunks_per_shard": 4}, size=Vec3(128, 64, 16)),
        store.context,
    )
    assert layer.scale(0)["sharding"]["data_encoding"] == "gzip"  # as unsharded chunks are
    data = np.random.default_rng(9).integers(0, 255, (128, 64, 16), dtype=np.uint8)
    with objects.recording_writes() as written:
        for shard in layer.sharding(0).shard_boxes(layer.bounds()):
            layer.write(shard, data[shard.slices()])
    assert len(written) == 2 * 1 * 2 and all(k.endswith(".shard") for _, k in written)
    listed = objects.list_sizes(layer.url, f"{layer.scale(0)['key']}/", store.context)
    assert listed == {key: size for (_, key), size in written.items()}
    reopened = Layer.open(layer.url, store.context)
    np.testing.assert_array_equal(reopened.read(reopened.bounds()), data)
    halo = Box((60, 0, 0), (70, 32, 8))  # one chunk of each of two shards: byte ranges
    np.testing.assert_array_equal(reopened.read(halo), data[halo.slices()])
