"""Synthetic synapse tables (the contract of `petavox.tasks.synapse.table`), a straightforward
in-memory connectome to compare with, and a reader of Neuroglancer's sharded format."""

from __future__ import annotations

import gzip
import struct
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from petavox.tasks.synapse.table import COLUMNS

Table = dict[str, np.ndarray]


def random_synapses(
    n: int, seed: int, first_id: int = 1, segments: int = 40, extent=(20000.0, 20000.0, 8000.0)
) -> Table:
    """`n` synapses with ids first_id.., uniform in `extent` nm, partners among `segments` ids
    (large, hashed-looking ids), ~5% without a pre or post partner (id 0)."""
    rng = np.random.default_rng(seed)
    ids = (np.arange(segments, dtype=np.uint64) + 1) * np.uint64(2**33 + 7)
    centre = rng.uniform(200, np.asarray(extent) - 200, (n, 3))
    offset = rng.normal(0, 60, (n, 3))
    table = {
        "synapse_id": np.arange(first_id, first_id + n, dtype=np.uint64),
        "size": rng.integers(5, 500, n),
        "confidence": rng.uniform(0.5, 1, n),
        "pre_id": ids[rng.integers(0, segments, n)],
        "post_id": ids[rng.integers(0, segments, n)],
    }
    for axis, i in zip("xyz", range(3)):
        table[axis] = centre[:, i]
        table[f"pre_{axis}"] = centre[:, i] + offset[:, i]
        table[f"post_{axis}"] = centre[:, i] - offset[:, i]
    table["pre_id"][rng.random(n) < 0.05] = 0
    table["post_id"][rng.random(n) < 0.05] = 0
    return {name: np.asarray(table[name]).astype(dtype) for name, dtype in COLUMNS.items()}


def reference_edges(table: Table) -> dict[tuple[int, int], tuple[int, int]]:
    """(pre, post) → (synapses, total size) by a plain loop over the connections."""
    edges: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for pre, post, size in zip(table["pre_id"], table["post_id"], table["size"]):
        if pre and post:
            edges[int(pre), int(post)][0] += 1
            edges[int(pre), int(post)][1] += int(size)
    return {k: (v[0], v[1]) for k, v in edges.items()}


def reference_stats(table: Table) -> dict[int, tuple[int, int, int, int]]:
    """segment → (out degree, in degree, synapses out, synapses in) over the connections."""
    edges = reference_edges(table)
    out_deg, in_deg, out_syn, in_syn = Counter(), Counter(), Counter(), Counter()
    for (pre, post), (count, _) in edges.items():
        out_deg[pre] += 1
        in_deg[post] += 1
        out_syn[pre] += count
        in_syn[post] += count
    return {s: (out_deg[s], in_deg[s], out_syn[s], in_syn[s]) for s in set(out_deg) | set(in_deg)}


def read_sharded(folder: Path, minishard_bits: int) -> dict[int, bytes]:
    """Every (key, data) of the shard files in `folder` (Neuroglancer's uint64 sharded format
    with gzip minishard indexes and gzip data, read from its specification)."""
    out: dict[int, bytes] = {}
    for path in sorted(folder.glob("*.shard")):
        blob = path.read_bytes()
        index_size = 16 * 2**minishard_bits
        for m in range(2**minishard_bits):
            start, end = struct.unpack_from("<QQ", blob, 16 * m)
            if start == end:
                continue
            raw = gzip.decompress(blob[index_size + start : index_size + end])
            table = np.frombuffer(raw, "<u8").reshape(3, -1)
            keys = np.cumsum(table[0])
            offsets = np.cumsum(table[1] + np.r_[0, table[2][:-1]].astype(np.uint64))
            for key, offset, size in zip(keys, offsets, table[2]):
                data = blob[index_size + int(offset) : index_size + int(offset) + int(size)]
                out[int(key)] = gzip.decompress(data)
    return out


def decode_single(data: bytes) -> tuple[list[float], int, float, list[list[int]]]:
    """LINE geometry (6 float32), properties uint32 size and float32 confidence (no padding:
    8 bytes), then per relationship a uint32 count and uint64 ids."""
    values = struct.unpack_from("<6fIf", data, 0)
    pos, rels = 32, []
    for _ in range(2):
        (count,) = struct.unpack_from("<I", data, pos)
        rels.append(list(struct.unpack_from(f"<{count}Q", data, pos + 4)))
        pos += 4 + 8 * count
    assert pos == len(data)
    return list(values[:6]), values[6], values[7], rels


def decode_multiple(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """uint64 count, count × 32-byte records, count × uint64 ids."""
    (count,) = struct.unpack_from("<Q", data, 0)
    assert len(data) == 8 + count * 40
    recs = np.frombuffer(data, "<f4", count * 8, 8).reshape(count, 8)
    return recs, np.frombuffer(data, "<u8", count, 8 + count * 32)
