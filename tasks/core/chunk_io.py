"""A layer's chunks one storage object at a time: fetched by key, checked, decoded, assembled;
and encoded and written one object per storage chunk (atomically on file://).

Reads do not go through cloud-volume's download: petavox fetches each chunk's bytes by its key
(plain files on file://, cloud-files elsewhere), so the bytes are checked before any decoder
sees them (`chunk_checks`) and every error names the chunk, without downloading anything twice.
cloud-volume still provides the codecs (`cloudvolume.chunks`) and their parameters.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.chunk_checks import CorruptChunk, decode_checked
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.shards import shard_files
from petavox.tasks.core.storage import StorageContext, local_path
from petavox.tasks.core.transient import is_body_error

if TYPE_CHECKING:
    from petavox.tasks.core.layers import Layer
    from petavox.tasks.core.volume_shards import VolumeSharding

MISSING = "is missing (allow zero-filled missing chunks with fill_missing: true)"
# cloud-files already retries a body cut short 7 times inside each get; a body that still fails
# (or fails its md5/crc32c check, which cloud-files does not retry) is fetched again this many
# times in all before the chunk is reported: a stored object that disagrees with its own
# length or checksum must not be retried forever.
TRANSFER_ATTEMPTS = 3
TRANSFER_BACKOFF_S = 0.5
REMOTE_BATCH = 32  # chunks fetched together (in cloud-files' threads); bounds the bytes held
LOCAL_SUFFIXES = (("", None), (".gz", "gzip"), (".br", "br"), (".zstd", "zstd"))
LOCAL_SUFFIXES += ((".xz", "xz"), (".bz2", "bzip2"))  # what cloud-files may have written


def read_box(layer: Layer, box: Box, mip: int, fill_missing: bool) -> np.ndarray:
    """Voxels of `box` (x, y, z, channel; zeros outside the bounds and for missing chunks when
    `fill_missing`), each chunk checked before it is decoded."""
    scale = layer.scale(mip)
    out = np.zeros((*box.shape, layer.num_channels), layer.dtype, order="F")
    chunks = dict(layer.storage_chunks(box, mip))
    for key, data in fetch_chunks(layer.url, list(chunks), layer.context):
        decode_into(out, box, layer, scale, chunks[key], data, key, fill_missing)
    return out


def decode_into(
    out: np.ndarray,
    box: Box,
    layer: Layer,
    scale: dict,
    chunk: Box,
    data: bytes | None,
    name: str,
    fill_missing: bool,
) -> None:
    """Check and decode one storage chunk's bytes (None: it is missing) and copy its part in
    `box` into `out`; a missing or bad chunk is a `ChunkDataError` naming it as `name`."""
    if data is None:
        if fill_missing:
            return
        raise ChunkDataError(layer.url, name, MISSING)
    shape = (*chunk.shape, layer.num_channels)
    block_size = scale.get("compressed_segmentation_block_size")
    try:
        array = decode_checked(data, scale["encoding"], shape, layer.dtype, block_size)
    except CorruptChunk as exc:
        raise ChunkDataError(layer.url, name, f"is truncated/corrupt: {exc}") from None
    inner = chunk.intersection(box)
    out[_slices(inner, box.start)] = array[_slices(inner, chunk.start)]


def _slices(inner: Box, origin: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(a - o, b - o) for a, b, o in zip(inner.start, inner.stop, origin))


def fetch_chunks(
    url: str, keys: list[str], context: StorageContext
) -> Iterator[tuple[str, bytes | None]]:
    """Each key's inflated bytes (None: no such object), in batches so that a task never holds
    more than a batch of encoded chunks besides its output."""
    path = local_path(url)
    if path is not None:
        for key in keys:
            yield key, _inflate(url, key, *_read_local(os.path.join(path, key)))
        return
    files = objects.files(url, context)
    for first in range(0, len(keys), REMOTE_BATCH):
        batch = keys[first : first + REMOTE_BATCH]
        for key, (content, encoding) in _fetch_remote(url, files, batch):
            yield key, _inflate(url, key, content, encoding)


def _read_local(target: str) -> tuple[bytes | None, str | None]:
    for suffix, encoding in LOCAL_SUFFIXES:
        try:
            with open(target + suffix, "rb") as f:
                return f.read(), encoding
        except FileNotFoundError:
            continue
    return None, None


def _fetch_remote(
    url: str, files, keys: list[str]
) -> list[tuple[str, tuple[bytes | None, str | None]]]:
    """(content, content encoding) of each key; a body cut short or failing its checksum is
    fetched again, up to TRANSFER_ATTEMPTS in all, then reported as a bad chunk."""
    found: dict[str, tuple[bytes | None, str | None]] = {}
    pending, failures = list(keys), {}
    for attempt in range(TRANSFER_ATTEMPTS):
        if attempt:
            time.sleep(TRANSFER_BACKOFF_S * 2 ** (attempt - 1))
        failures = {}
        for result in files.get(pending, raw=True, raise_errors=False):
            error = result["error"]
            if error is None:
                found[result["path"]] = (result["content"], result["compress"])
            elif is_body_error(error):
                failures[result["path"]] = error
            else:
                raise error  # transient ones are retried by the caller, the rest reported
        pending = list(failures)
        if not pending:
            return [(key, found[key]) for key in keys]
    key, error = next(iter(failures.items()))
    raise ChunkDataError(
        url,
        key,
        f"is truncated/corrupt: its body arrived cut short or failed its checksum "
        f"{TRANSFER_ATTEMPTS} times in a row ({type(error).__name__}: {error})",
    )


def _inflate(url: str, key: str, content: bytes | None, encoding: str | None) -> bytes | None:
    if content is None or not encoding:
        return content
    from cloudfiles import compression

    try:
        return compression.decompress(content, encoding, filename=key)
    except Exception as exc:  # zlib, gzip, brotli... each raise their own
        raise ChunkDataError(
            url, key, f"is truncated/corrupt: its {encoding} body does not inflate ({exc})"
        ) from None


# cloud-volume's default Cache-Control for the chunks it uploads (its `cdn_cache=True`)
CHUNK_CACHE_CONTROL = "max-age=3600, s-max-age=3600"


def _encoded(
    layer: Layer, box: Box, data: np.ndarray, mip: int, params: dict, region: Box
) -> list[tuple[str, Box, bytes]]:
    """Key, box and cloud-volume's encoding of each storage chunk of `region` (inside `box`,
    whose voxels are `data`); `params`: cloud-volume's compression parameters of the scale."""
    from cloudvolume import chunks

    scale = layer.scale(mip)
    block_size = scale.get("compressed_segmentation_block_size")
    values = data if data.ndim == 4 else data[..., np.newaxis]
    return [
        (
            key,
            chunk,
            chunks.encode(
                values[_slices(chunk, box.start)],
                scale["encoding"],
                block_size,
                compression_params=params,
            ),
        )
        for key, chunk in layer.storage_chunks(region, mip)
    ]


def write_chunks(layer: Layer, box: Box, data: np.ndarray, mip: int, params: dict) -> None:
    """Encode each storage chunk of `box` (aligned, checked by the caller) with cloud-volume's
    encoder and write it as one object, compressed as cloud-volume's upload compresses it.

    Not cloud-volume's upload, for two reasons. On file:// it (through cloud-files) opens the
    chunk's real name and writes into it, so a kill leaves a truncated chunk that later reads
    take for data; here each file is written atomically (uncompressed, as Layer's file://
    client is set up). And every object goes through `objects`, so the chunk's record in
    the ledger holds its key and stored size (`objects.recording_writes`). `params` are
    cloud-volume's compression parameters of the scale; the bytes are those its upload would
    write."""
    from cloudvolume.datasource.precomputed.common import content_type, should_compress

    encoding = layer.scale(mip)["encoding"]
    compress = None if local_path(layer.url) else should_compress(encoding, None, None)
    for key, _, encoded in _encoded(layer, box, data, mip, params, box):
        objects.put_encoded(
            layer.url,
            key,
            encoded,
            compress=compress,
            content_type=content_type(encoding),
            cache_control=CHUNK_CACHE_CONTROL,
            context=layer.context,
        )


def write_shards(
    layer: Layer, box: Box, data: np.ndarray, mip: int, params: dict, sharding: VolumeSharding
) -> None:
    """Encode the storage chunks of each shard in `box` (whole shards, checked by the caller)
    with cloud-volume's encoder and write each shard file as one object. The files are what
    cloud-volume's `synthesize_shard_files` makes of the chunks (`shards.shard_files`)."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    spec = ShardingSpecification.from_dict(sharding.spec)
    folder = layer.scale(mip)["key"]
    for shard in sharding.shard_boxes(box):
        stored = _encoded(layer, box, data, mip, params, shard)
        codes = sharding.codes([chunk.start for _, chunk, _ in stored])
        pieces = [encoded for _, _, encoded in stored]
        for name, content in shard_files(spec, codes, pieces).items():
            objects.put(layer.url, f"{folder}/{name}", content, layer.context)
