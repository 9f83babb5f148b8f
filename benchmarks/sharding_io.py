"""What `bench_sharding.py` stands on: the test volume, the stores it writes to (file:// and S3
through a counting proxy), object listings and igneous's task shapes.

Import after `common` (it sets the environment the storage clients and Ray read).
"""

from __future__ import annotations

import math
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import common
import numpy as np

NEUROPROOF = common.BENCH_DIR.parent.parent / "shared" / "data" / "neuroproof_sample1"


# ---- the volume ---------------------------------------------------------------------------
def load_volume(shape: tuple[int, int, int], synthetic: bool) -> tuple[np.ndarray, str]:
    """An x,y,z uint8 volume of `shape` and what it is: the real FIB-SEM cube of
    ../shared/data/neuroproof_sample1 (250³), mirrored at its faces up to `shape` (so real EM
    statistics: gzip keeps ~85 % of it), or the synthetic EM-like volume when that is absent or
    `synthetic` is set."""
    path = NEUROPROOF / "raw.npz"
    if synthetic or not path.is_file():
        why = "asked for" if synthetic else f"{path.parent.name} not found"
        return common.em_like(shape, seed=1), f"synthetic EM-like ({why})"
    raw = np.load(path)["raw"].transpose(2, 1, 0)  # stored z, y, x
    pad = [(0, max(0, s - n)) for s, n in zip(shape, raw.shape)]
    data = np.pad(raw, pad, mode="symmetric")[: shape[0], : shape[1], : shape[2]]
    return np.asfortranarray(data), f"neuroproof_sample1 FIB-SEM 250³, mirrored to {shape}"


# ---- counting requests --------------------------------------------------------------------
def classify_key(key: str) -> str:
    """What an object (or a listing prefix) is: ``data`` (voxel chunks or shards: keys under
    a scale folder), ``ledger`` (petavox's ledger and lease) or ``meta`` (infos,
    provenance)."""
    parts = [p for p in key.split("/") if p]
    if "ledger" in parts:
        return "ledger"
    if len(parts) >= 2 and all(v.replace(".", "").isdigit() for v in parts[-2].split("_")):
        return "data"
    return "meta"


def request_kind(method: str, target: str) -> tuple[str, str]:
    """(PUT | GET | HEAD | LIST | DELETE | ..., what the key is) of one S3 request."""
    parts = urlsplit(target)
    query = parse_qs(parts.query)
    path = unquote(parts.path).split("/", 2)  # "", bucket, key
    key = path[2] if len(path) > 2 else ""
    if method == "GET" and ("list-type" in query or "prefix" in query or not key):
        return "LIST", classify_key(query.get("prefix", [""])[0] + "x")
    return method, classify_key(key)


def counting_proxy(upstream: str) -> Any:
    """`tests/fault_proxy.py`'s proxy with no faults, counting requests by `request_kind`."""
    from fault_proxy import FaultProxy

    class CountingProxy(FaultProxy):
        """Forwards every request; `by_kind` counts them (method, key class)."""

        def __init__(self) -> None:
            super().__init__(upstream)
            self.by_kind: Counter[tuple[str, str]] = Counter()

        def _read_request(self, client: Any, reader: Any) -> Any:
            request = super()._read_request(client, reader)
            if request is not None:
                kind = request_kind(request.method.upper(), request.target)
                with self._lock:
                    self.by_kind[kind] += 1
            return request

        def snapshot(self) -> Counter[tuple[str, str]]:
            with self._lock:
                return Counter(self.by_kind)

    return CountingProxy()


# ---- stores -------------------------------------------------------------------------------
@dataclass
class Store:
    """Where one storage phase writes: a file:// folder, or a bucket prefix on S3 reached
    through a counting proxy (`proxy`), listed and emptied straight at the server (`client`),
    so neither counts as a request of the runs."""

    name: str
    root: str
    folder: Path | None = None
    client: Any = None
    bucket: str = ""
    proxy: Any = None
    runtime: dict[str, Any] = field(default_factory=dict)  # the run config's storage section

    def url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def delete(self, prefix: str) -> None:
        """Remove everything under `prefix` (untimed, uncounted)."""
        if self.folder is not None:
            shutil.rmtree(self.folder / prefix, ignore_errors=True)
            return
        keys = [k for k, _ in self._listing(prefix)]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def objects(self, prefix: str) -> dict[str, int]:
        """key (relative to `prefix`) -> size of every object under `prefix`."""
        if self.folder is not None:
            base = self.folder / prefix
            return {
                str(p.relative_to(base)): p.stat().st_size for p in base.rglob("*") if p.is_file()
            }
        head = f"{self._key(prefix)}/"
        return {k[len(head) :]: size for k, size in self._listing(prefix)}

    def _key(self, prefix: str) -> str:
        return "/".join([self.root.split("/", 3)[3], prefix]) if prefix else ""

    def _listing(self, prefix: str) -> list[tuple[str, int]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self._key(prefix)}/"
        )
        return [(o["Key"], int(o["Size"])) for page in pages for o in page.get("Contents", [])]

    def requests(self) -> Counter[tuple[str, str]]:
        return self.proxy.snapshot() if self.proxy is not None else Counter()


def file_store(scratch: Path) -> Store:
    folder = scratch / "out"
    folder.mkdir(parents=True, exist_ok=True)
    return Store("file", common.file_url(folder), folder=folder)


def s3_store(server: Any, proxy: Any) -> Store:
    """Runs reach the server through `proxy`: credentials from the environment, the proxy as
    the only endpoint (set before Ray and igneous's processes start, which inherit it)."""
    env = {**server.env(), "AWS_ENDPOINT_URL": proxy.endpoint}
    env.pop("AWS_ENDPOINT_URL_S3", None)  # it would win over the proxy
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    os.environ.update(env)
    return Store(
        "s3",
        f"s3://{server.bucket}/bench",
        client=server.boto3_client(),
        bucket=server.bucket,
        proxy=proxy,
        runtime={"s3_endpoint": proxy.endpoint},
    )


def object_counts(objects: dict[str, int]) -> dict[str, int]:
    """Objects and bytes per class (`classify_key`)."""
    out: Counter[str] = Counter()
    for key, size in objects.items():
        kind = classify_key(key)
        out[f"{kind}_objects"] += 1
        out[f"{kind}_bytes"] += size
    return dict(out)


def request_counts(before: Counter, after: Counter) -> dict[str, int]:
    """Requests between two snapshots, as ``"PUT data"`` etc., plus totals per method."""
    out: Counter[str] = Counter()
    for (method, kind), n in (after - before).items():
        out[f"{method} {kind}"] += n
        out[method] += n
    return dict(out)


# ---- igneous's task shapes ----------------------------------------------------------------
def igneous_shard_shape(size: tuple[int, ...], chunk: tuple[int, ...], chunks: int) -> list[int]:
    """The shard shape igneous's `create_sharded_image_info` picks for shards of `chunks`
    uint8 chunks over a scale of `size`."""
    from igneous.shards import image_shard_shape_from_spec
    from igneous.task_creation.image import create_sharded_image_info

    spec = create_sharded_image_info(
        dataset_size=size,
        chunk_size=chunk,
        encoding="raw",
        dtype="uint8",
        uncompressed_shard_bytesize=chunks * math.prod(chunk),
    )
    return [int(v) for v in image_shard_shape_from_spec(spec, size, chunk)]


def igneous_downsample_task(
    size: tuple[int, int, int], chunk: tuple[int, int, int], factor: tuple, mips: int, chunks: int
) -> tuple[int, int, int]:
    """The task shape of `create_image_shard_downsample_tasks` for shards of `chunks` chunks at
    every new mip: the largest mip-i shard scaled back to mip 0 (as igneous computes it)."""
    shape = [0, 0, 0]
    for mip in range(1, mips + 1):
        f = [k**mip for k in factor]
        scale = tuple(-(-s // k) for s, k in zip(size, f))
        shard = igneous_shard_shape(scale, chunk, chunks)
        shape = [max(a, b * k) for a, b, k in zip(shape, shard, f)]
    return (shape[0], shape[1], shape[2])


def igneous_downsample_chunks(
    size: tuple[int, int, int],
    chunk: tuple[int, int, int],
    factor: tuple,
    mips: int,
    task: tuple,
    fallback: int,
) -> int:
    """The largest shard (in chunks, a power of two) for which igneous's shard downsample tasks
    have the shape `task` (petavox's), so both sides run tasks of the same shape; `fallback`
    when no shard size gives that shape."""
    for bits in range(20, -1, -1):
        if igneous_downsample_task(size, chunk, factor, mips, 2**bits) == tuple(task):
            return 2**bits
    print(f"no igneous shard size gives downsample tasks of {task}: shards of {fallback} chunks")
    return fallback
