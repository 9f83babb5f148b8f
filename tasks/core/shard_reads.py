"""Chunks of a sharded scale, fetched from their shard files and checked before any decoder
sees them, with every error naming the layer, the shard file and the chunk.

Written by hand because cloud-volume's sharded download hands whatever bytes an index points
at to the codecs (a truncated shard decodes to made-up labels or crashes the worker, as
unsharded chunks did before `chunk_checks`), and its errors do not say which file is bad.

A shard file is a fixed index of ``2^minishard_bits`` [start, end) pairs, the chunks, then the
minishard indexes (Neuroglancer's ``sharded.md``). A read that needs most of a shard's chunks
fetches the whole file once (a task reading the shards it is aligned to); a read that needs a
few (a halo) fetches the index, the minishard indexes and the chunks by byte range.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from petavox.tasks.core import chunk_io, objects
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.shards import _hashed, _minishards_of, _shards_of_hashed, shard_name
from petavox.tasks.core.storage import local_path

if TYPE_CHECKING:
    from petavox.tasks.core.layers import Layer

#: fetch the whole shard file when at least this share of its chunks is wanted
WHOLE_SHARE = 0.5

Fetch = Callable[[int, int], bytes]  # the bytes [start, stop) of one shard file


class _Corrupt(Exception):
    """A shard file that disagrees with its own index (turned into a ChunkDataError)."""


def read_box(layer: Layer, box: Box, mip: int, fill_missing: bool) -> np.ndarray:
    """Voxels of `box` (x, y, z, channel) from a sharded scale; zeros outside the bounds and,
    with `fill_missing`, for chunks no shard holds."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    scale = layer.scale(mip)
    spec = ShardingSpecification.from_dict(scale["sharding"])
    sharding = layer.sharding(mip)
    assert sharding is not None
    out = np.zeros((*box.shape, layer.num_channels), layer.dtype, order="F")
    stored = layer.storage_chunks(box, mip)
    if not stored:
        return out
    codes = sharding.codes([chunk.start for _, chunk in stored])
    hashed = _hashed(codes, spec)
    minishards, shards = _minishards_of(hashed, spec), _shards_of_hashed(hashed, spec)
    per_shard = 2 ** (int(spec.preshift_bits) + int(spec.minishard_bits))
    for shard in np.unique(shards).tolist():
        mine = np.flatnonzero(shards == shard)
        key = f"{scale['key']}/{shard_name(shard, spec)}"
        whole = len(mine) >= WHOLE_SHARE * per_shard
        found = _chunks_of_shard(layer, key, spec, codes[mine], minishards[mine], whole)
        for i in mine.tolist():
            (chunk_key, chunk), data = stored[i], found.get(int(codes[i]))
            name = f"{key} (chunk {chunk_key.rpartition('/')[2]})"
            if data is not None and spec.data_encoding != "raw":
                try:
                    data = _inflate(data, spec.data_encoding)
                except _Corrupt as exc:
                    raise ChunkDataError(layer.url, name, f"is truncated/corrupt: {exc}") from None
            chunk_io.decode_into(out, box, layer, scale, chunk, data, name, fill_missing)
    return out


def _inflate(data: bytes, encoding: str) -> bytes:
    from cloudfiles import compression

    try:
        return compression.decompress(data, encoding)
    except Exception as exc:  # zlib, gzip... each raise their own
        raise _Corrupt(f"its {encoding} data does not inflate ({exc})") from None


def _chunks_of_shard(
    layer: Layer,
    key: str,
    spec,
    codes: np.ndarray,
    minishards: np.ndarray,
    whole: bool,
) -> dict[int, bytes]:
    """The stored bytes of each wanted chunk (code -> bytes) that the shard file holds."""
    opened = _whole_file(layer, key) if whole else _ranges(layer, key)
    if opened is None:
        return {}  # no such shard file: none of its chunks was written
    fetch, size = opened
    try:
        index_size = 16 * 2 ** int(spec.minishard_bits)
        index = np.frombuffer(_exact(fetch, 0, index_size, "shard index"), "<u8").reshape(-1, 2)
        found: dict[int, bytes] = {}
        wanted = set(codes.tolist())
        for minishard in np.unique(minishards).tolist():
            start, stop = (int(v) for v in index[minishard])
            if not start <= stop <= size - index_size:
                raise _Corrupt(
                    f"minishard {minishard}'s index lies at [{start}, {stop}) after the shard "
                    f"index, outside a file of {size} bytes"
                )
            if start == stop:
                continue  # an empty minishard
            raw = _exact(fetch, index_size + start, index_size + stop, f"minishard {minishard}")
            if spec.minishard_index_encoding != "raw":
                raw = _inflate(raw, spec.minishard_index_encoding)
            if len(raw) % 24:
                raise _Corrupt(f"minishard {minishard}'s index is {len(raw)} bytes, not 3 × n × 8")
            rows = np.frombuffer(raw, "<u8").reshape(3, -1).astype(np.int64)
            keys = np.cumsum(rows[0].astype(np.uint64))
            sizes = rows[2]
            offsets = np.cumsum(rows[1] + np.r_[0, sizes[:-1]]) + index_size
            for code, offset, length in zip(keys.tolist(), offsets.tolist(), sizes.tolist()):
                if code in wanted:
                    found[code] = _exact(fetch, offset, offset + length, f"chunk {code}")
        return found
    except _Corrupt as exc:
        raise ChunkDataError(layer.url, key, f"is truncated/corrupt: {exc}") from None


def _exact(fetch: Fetch, start: int, stop: int, what: str) -> bytes:
    if start < 0 or stop < start:
        raise _Corrupt(f"{what} lies at [{start}, {stop}), outside the file")
    if start == stop:
        return b""
    data = fetch(start, stop)
    if len(data) != stop - start:
        raise _Corrupt(f"{what} lies at [{start}, {stop}), past the file's end")
    return data


def _whole_file(layer: Layer, key: str) -> tuple[Fetch, int] | None:
    """The file fetched once; its byte ranges sliced from memory. None: no such file."""
    ((_, content),) = chunk_io.fetch_chunks(layer.url, [key], layer.context)
    if content is None:
        return None
    return (lambda start, stop: content[start:stop]), len(content)


def _ranges(layer: Layer, key: str) -> tuple[Fetch, int] | None:
    """The file's size, and its byte ranges fetched one at a time. None: no such file."""
    path = local_path(layer.url)
    if path is not None:
        target = os.path.join(path, key)
        if not os.path.exists(target):
            return None

        def read_local(start: int, stop: int) -> bytes:
            with open(target, "rb") as f:
                f.seek(start)
                return f.read(stop - start)

        return read_local, os.path.getsize(target)
    files = objects.files(layer.url, layer.context)

    def read_remote(start: int, stop: int) -> bytes:
        (result,) = files.get([{"path": key, "start": start, "end": stop}], raw=True)
        return result["content"] or b""

    size = files.size(key)
    return None if size is None else (read_remote, int(size))
