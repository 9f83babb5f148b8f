"""Neuroglancer's uint64 sharded format: the spec of hashed segment ids, which shard holds an id
(so the merge task of that shard is the one that writes it), and a vectorised shard writer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification


def sharding_spec(
    shard_bits: int, minishard_bits: int, data_encoding: Literal["raw", "gzip"]
) -> dict:
    """The JSON form of a spec with murmurhash-hashed ids (even shards whatever the ids)."""
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": 0,
        "hash": "murmurhash3_x86_128",
        "minishard_bits": minishard_bits,
        "shard_bits": shard_bits,
        "minishard_index_encoding": "gzip",
        "data_encoding": data_encoding,
    }


def shard_name(shard: int, spec: ShardingSpecification) -> str:
    """The file of shard number `shard`: its hex digits, zero-padded to the shard bits."""
    return format(shard, "x").zfill(-(-int(spec.shard_bits) // 4)) + ".shard"


def shard_of(label: int, spec: ShardingSpecification) -> int:
    """The shard `label` is stored in."""
    return int(spec.compute_shard_location(label).shard_number, 16)


_C1, _C2, _C3, _C4 = (np.uint32(c) for c in (0x239B961B, 0xAB0E9789, 0x38B34AE5, 0xA1E38B93))


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmurhash3_x86_128_low64(keys: np.ndarray) -> np.ndarray:
    """The low 64 bits of MurmurHash3_x86_128 (seed 0) of each uint64 key's 8 little-endian
    bytes: what Neuroglancer's sharded format hashes ids with. Written out in numpy because
    cloud-volume hashes one id at a time in Python (~18 µs each, most of a connectome's time)."""
    keys = np.asarray(keys, np.uint64).ravel()
    k1 = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)  # bytes 0-3
    k2 = (keys >> np.uint64(32)).astype(np.uint32)  # bytes 4-7
    with np.errstate(over="ignore"):
        h2 = _rotl(k2 * _C2, 16) * _C3  # the 8-byte tail: k2 into h2, k1 into h1
        h1 = _rotl(k1 * _C1, 15) * _C2
        h3 = h4 = np.zeros_like(h1)
        length = np.uint32(8)
        h1, h2, h3, h4 = h1 ^ length, h2 ^ length, h3 ^ length, h4 ^ length
        h1 = h1 + h2 + h3 + h4
        h2, h3, h4 = h2 + h1, h3 + h1, h4 + h1
        h1, h2, h3, h4 = _fmix(h1), _fmix(h2), _fmix(h3), _fmix(h4)
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
    return h1.astype(np.uint64) | (h2.astype(np.uint64) << np.uint64(32))


def _hashed(labels: np.ndarray, spec: ShardingSpecification) -> np.ndarray:
    """The spec's hashed chunk id of each label (preshift, then the hash)."""
    keys = np.asarray(labels, np.uint64).ravel() >> np.uint64(int(spec.preshift_bits))
    if spec.hash == "murmurhash3_x86_128":
        return murmurhash3_x86_128_low64(keys)
    if spec.hash != "identity":
        raise ValueError(f"unknown sharding hash {spec.hash!r}")
    return keys


def _minishards_of(hashed: np.ndarray, spec: ShardingSpecification) -> np.ndarray:
    return (hashed & np.uint64((1 << int(spec.minishard_bits)) - 1)).astype(np.int64)


def _shards_of_hashed(hashed: np.ndarray, spec: ShardingSpecification) -> np.ndarray:
    mask = np.uint64((1 << int(spec.shard_bits)) - 1)
    return ((hashed >> np.uint64(int(spec.minishard_bits))) & mask).astype(np.int64)


def shards_of(labels: np.ndarray, spec: ShardingSpecification) -> np.ndarray:
    """`shard_of` for an array of ids at once (int64 shard numbers)."""
    return _shards_of_hashed(_hashed(labels, spec), spec)


def _codec(encoding: str) -> Callable[[bytes | memoryview], bytes]:
    """The spec's encoding of one chunk or minishard index, with cloud-volume's own codec (gzip
    level 9), so that the files are the bytes cloud-volume would write."""
    if encoding == "raw":
        return bytes
    from cloudvolume import compression

    return functools.partial(compression.compress, method=encoding)


#: mean bytes per piece above which `gather` copies slices instead of indexing every byte
LARGE_PIECES = 4096


def gather(data: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The byte ranges [start, start + size) of `data` (uint8), concatenated in the given order:
    by one index of every byte for many small pieces (annotations: no loop over 10^6 of them in
    Python), by one slice per piece for big ones (mesh fragments: no 8-byte index per byte)."""
    sizes = np.asarray(sizes, np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, np.uint8)
    nonempty = sizes > 0
    starts, sizes = np.asarray(starts, np.int64)[nonempty], sizes[nonempty]
    if total >= LARGE_PIECES * len(sizes):  # few big pieces: copy each slice
        flat = np.asarray(data, np.uint8)
        return np.concatenate([flat[a : a + n] for a, n in zip(starts.tolist(), sizes.tolist())])
    step = np.ones(total, np.int64)  # +1 inside a range, a jump at each range's first byte
    firsts = np.cumsum(sizes) - sizes
    step[firsts[1:]] = starts[1:] - (starts[:-1] + sizes[:-1] - 1)
    step[0] = starts[0]
    return np.asarray(data, np.uint8)[np.cumsum(step)]


def shard_files(
    spec: ShardingSpecification,
    keys: np.ndarray,
    data: np.ndarray | bytes | memoryview | list[bytes],
    offsets: np.ndarray | None = None,
) -> dict[str, bytes]:
    """The shard files ``{"<shard hex>.shard": bytes}`` of chunks keyed by uint64 `keys`, chunk i
    being ``data[offsets[i]:offsets[i + 1]]``: what cloud-volume's `synthesize_shard_files`
    makes of ``{key: chunk}`` (byte for byte when that dict is ordered by shard, minishard, key).

    Hand-written in numpy because cloud-volume's version loops in Python over every key (hash,
    dict of dicts, one index row at a time): at 10^6 annotations that loop was most of the
    connectome's time. Layout per Neuroglancer's spec (`sharded.md`): the shard index of
    2^minishard_bits [start, end) uint64 pairs relative to its end ([0, 0] for an empty
    minishard), then the chunks (each in `data_encoding`) by minishard and key, then each
    minishard's index, a 3 × n uint64 array [key deltas, offset deltas, sizes] in
    `minishard_index_encoding`. Only chunks' compression (gzip) remains a call per chunk."""
    keys = np.asarray(keys, np.uint64).ravel()
    if isinstance(data, list):  # one piece per key (volume chunks): no blob, fewer copies
        if len(data) != len(keys):
            raise ValueError(f"{len(keys)} keys need {len(keys)} chunks, not {len(data)}")
        return _shard_files_of_pieces(spec, keys, data)
    offsets = np.asarray(offsets, np.int64).ravel()
    buffer = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if len(offsets) != len(keys) + 1:
        raise ValueError(f"{len(keys)} keys need {len(keys) + 1} offsets, not {len(offsets)}")
    if len(keys) == 0:
        return {}
    order, keys, minishards, shards = _in_shard_order(keys, spec)
    starts, sizes = offsets[:-1][order], np.diff(offsets)[order]
    blob, sizes = _encoded_chunks(buffer, starts, sizes, spec.data_encoding)
    return _assemble_shards(spec, keys, minishards, shards, blob, sizes)


def _in_shard_order(
    keys: np.ndarray, spec: ShardingSpecification
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The order that sorts `keys` by shard, minishard and key, and the sorted keys, minishards
    and shards; duplicate keys are a ValueError."""
    hashed = _hashed(keys, spec)
    minishards, shards = _minishards_of(hashed, spec), _shards_of_hashed(hashed, spec)
    order = np.lexsort((keys, minishards, shards))
    keys, minishards, shards = keys[order], minishards[order], shards[order]
    if len(keys) > 1 and (keys[1:] == keys[:-1]).any():
        raise ValueError("duplicate keys: a sharded index holds one chunk per key")
    return order, keys, minishards, shards


def _shard_files_of_pieces(
    spec: ShardingSpecification, keys: np.ndarray, pieces: list[bytes]
) -> dict[str, bytes]:
    """`shard_files` of one chunk per key, each shard's file made by one join of its pieces."""
    if len(keys) == 0:
        return {}
    order, keys, minishards, shards = _in_shard_order(keys, spec)
    encode = _codec(spec.data_encoding)  # raw: `bytes`, which returns a bytes piece as it is
    ordered = [encode(pieces[i]) for i in order]
    sizes = np.fromiter(map(len, ordered), np.int64, len(ordered))
    return _assemble_shards(spec, keys, minishards, shards, ordered, sizes)


def _encoded_chunks(
    buffer: np.ndarray, starts: np.ndarray, sizes: np.ndarray, encoding: str
) -> tuple[bytes, np.ndarray]:
    """The chunks at `starts` (`sizes` bytes each) in `encoding`, one after another, and their
    encoded sizes."""
    if encoding == "raw":
        return gather(buffer, starts, sizes).tobytes(), sizes
    view, encode = memoryview(np.ascontiguousarray(buffer)), _codec(encoding)
    chunks = [encode(view[a : a + n]) for a, n in zip(starts.tolist(), sizes.tolist())]
    return b"".join(chunks), np.fromiter(map(len, chunks), np.int64, len(chunks))


def _assemble_shards(
    spec: ShardingSpecification,
    keys: np.ndarray,
    minishards: np.ndarray,
    shards: np.ndarray,
    blob: bytes | list[bytes],
    sizes: np.ndarray,
) -> dict[str, bytes]:
    """Each shard's file from its encoded chunks (in `blob`, or one piece each, ordered by
    shard, minishard and key): the fixed index, the chunks, then each minishard's index."""
    ends = np.cumsum(sizes)
    positions = ends - sizes  # each chunk's start in `blob`
    new_minishard = np.r_[True, (shards[1:] != shards[:-1]) | (minishards[1:] != minishards[:-1])]
    new_shard = np.r_[True, shards[1:] != shards[:-1]]
    key_deltas = keys.copy()
    key_deltas[1:] -= np.where(new_minishard[1:], np.uint64(0), keys[:-1])
    shard_start = np.maximum.accumulate(np.where(new_shard, positions, 0))
    offset_deltas = np.where(new_minishard, positions - shard_start, 0).astype(np.uint64)
    index_rows = np.stack([key_deltas, offset_deltas, sizes.astype(np.uint64)])
    minishard_starts = np.flatnonzero(new_minishard)
    minishard_ends = np.r_[minishard_starts[1:], len(keys)].astype(np.int64)
    files: dict[str, bytes] = {}
    encode_index = _codec(spec.minishard_index_encoding)
    shard_firsts = np.flatnonzero(new_shard)
    for s, first in enumerate(shard_firsts):
        last = int(shard_firsts[s + 1]) if s + 1 < len(shard_firsts) else len(keys)
        lo, hi = int(positions[first]), int(ends[last - 1])
        fixed = np.zeros((1 << int(spec.minishard_bits), 2), "<u8")
        indexes, cursor = [], hi - lo
        mine = slice(*np.searchsorted(minishard_starts, [first, last]))
        for a, b in zip(minishard_starts[mine].tolist(), minishard_ends[mine].tolist()):
            index = encode_index(np.ascontiguousarray(index_rows[:, a:b], "<u8").tobytes())
            fixed[minishards[a]] = (cursor, cursor + len(index))
            cursor += len(index)
            indexes.append(index)
        name = shard_name(int(shards[first]), spec)
        body = blob[first:last] if isinstance(blob, list) else [blob[lo:hi]]
        files[name] = b"".join([fixed.tobytes(), *body, *indexes])
    return files
