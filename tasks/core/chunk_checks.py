"""Checks of an encoded chunk before it reaches a decoder, and the decode that uses them.

Every chunk petavox reads goes through `decode_checked`: a chunk that is truncated or corrupt
raises `CorruptChunk` (the caller names the layer and chunk), never a crash, a dead worker or
made-up labels. compressed_segmentation is checked by hand, in numpy, because its decoder (the
`compressed_segmentation` package that cloud-volume calls) does no bounds checks at all: it
follows every offset in the headers, so half a chunk decodes to different garbage ids on each
call, and a header of 0xFF bytes makes it read far outside the buffer and segfault.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

VALID_BITS = (0, 1, 2, 4, 8, 16, 32)


class CorruptChunk(ValueError):
    """An encoded chunk that cannot be what its layer says; the message says what is wrong."""


def _words(count: int) -> str:
    return f"{count} word{'s' if count != 1 else ''}"


def check_raw(data: bytes, shape: Sequence[int], dtype: np.dtype) -> None:
    """A raw chunk holds exactly one value per voxel and channel."""
    needed = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) != needed:
        size = "x".join(str(s) for s in shape[:3])
        channels = f" of {shape[3]} channels" if len(shape) > 3 and shape[3] != 1 else ""
        name = np.dtype(dtype).name
        raise CorruptChunk(f"{len(data)} bytes, a raw {name} {size} chunk{channels} has {needed}")


def check_compressed_segmentation(
    data: bytes, shape: Sequence[int], dtype: np.dtype, block_size: Sequence[int]
) -> None:
    """Every offset, bit width and lookup-table index of a compressed_segmentation chunk of
    `shape` (x, y, z, channels) lies inside the buffer (Neuroglancer's format: a table of
    channel offsets, then per channel two header words per block, the packed values and the
    lookup tables; all offsets in 32-bit words)."""
    if len(data) % 4:
        raise CorruptChunk(f"{len(data)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(data, "<u4")
    channels = int(shape[3]) if len(shape) > 3 else 1
    if words.size < channels:
        raise CorruptChunk(f"{_words(words.size)} cannot hold the {channels} channel offsets")
    starts = words[:channels].astype(np.int64)
    ends = np.append(starts[1:], words.size)
    bad = np.flatnonzero((starts < channels) | (starts > ends))
    if bad.size:
        c = int(bad[0])
        raise CorruptChunk(
            f"channel {c} starts at word {int(starts[c])}, outside words {channels}..{int(ends[c])}"
        )
    grid = -(-np.asarray(shape[:3], np.int64) // np.asarray(block_size, np.int64))
    value_words = 2 if np.dtype(dtype).itemsize == 8 else 1
    for c in range(channels):
        _check_channel(
            words[starts[c] : ends[c]], int(grid.prod()), int(np.prod(block_size)), value_words, c
        )


def _check_channel(
    words: np.ndarray, blocks: int, block_voxels: int, value_words: int, channel: int
) -> None:
    """One channel's block headers, packed values and lookup tables (offsets relative to the
    channel's first word)."""
    where = f"channel {channel}: " if channel else ""
    if words.size < 2 * blocks:
        raise CorruptChunk(
            f"{where}{_words(words.size)} cannot hold the headers of {blocks} blocks "
            f"({_words(2 * blocks)})"
        )
    header = words[: 2 * blocks].reshape(blocks, 2)
    table = (header[:, 0] & 0xFFFFFF).astype(np.int64)
    bits = (header[:, 0] >> 24).astype(np.int64)
    values = header[:, 1].astype(np.int64)
    bad = np.flatnonzero((bits > 32) | ((bits & (bits - 1)) != 0))  # VALID_BITS: 0, 2**k ≤ 32
    if bad.size:
        b = int(bad[0])
        allowed = "/".join(map(str, VALID_BITS))
        raise CorruptChunk(f"{where}block {b} has {bits[b]} bits per value ({allowed})")
    value_end = values + (bits * block_voxels + 31) // 32
    _first_outside(where, "packed values", value_end, words.size)
    _first_outside(where, "lookup table", table + value_words, words.size)
    # A block's table is as long as its largest packed index + 1. Only blocks whose table
    # could run past the end with 2**bits entries need their indices unpacked.
    risky = np.flatnonzero(table + (1 << bits) * value_words > words.size)
    if risky.size:
        largest = _largest_indices(words, values[risky], bits[risky], block_voxels)
        _first_outside(
            where, "lookup table", table[risky] + (largest + 1) * value_words, words.size, risky
        )


def _first_outside(
    where: str, what: str, ends: np.ndarray, size: int, blocks: np.ndarray | None = None
) -> None:
    bad = np.flatnonzero(ends > size)
    if bad.size:
        i = int(bad[0])
        block = int(blocks[i]) if blocks is not None else i
        raise CorruptChunk(
            f"{where}block {block} needs words up to {int(ends[i])} for its {what}, "
            f"past the end of the data ({_words(size)})"
        )


def _largest_indices(
    words: np.ndarray, offsets: np.ndarray, bits: np.ndarray, block_voxels: int
) -> np.ndarray:
    """The largest packed lookup-table index of each block (values known to be in the buffer;
    indices are packed from the low bits of each little-endian word)."""
    largest = np.zeros(offsets.size, np.int64)
    for b in np.unique(bits):
        b = int(b)
        if b == 0:
            continue
        mine = np.flatnonzero(bits == b)
        count = (b * block_voxels + 31) // 32
        packed = words[offsets[mine, None] + np.arange(count)]
        if b == 32:
            largest[mine] = packed.max(axis=1)
            continue
        shifts = np.arange(0, 32, b, dtype=np.uint32)
        indices = (packed[:, :, None] >> shifts) & np.uint32((1 << b) - 1)
        largest[mine] = indices.reshape(mine.size, -1)[:, :block_voxels].max(axis=1)
    return largest


def decode_checked(
    data: bytes,
    encoding: str,
    shape: Sequence[int],
    dtype: np.dtype,
    block_size: Sequence[int] | None = None,
) -> np.ndarray:
    """The chunk as an x, y, z, channel array, or `CorruptChunk` saying why it cannot be."""
    from cloudvolume import chunks  # heavy import, only where I/O happens

    shape = [int(s) for s in shape]
    if len(data) == 0:
        raise CorruptChunk("it is empty (0 bytes)")
    if encoding == "raw":
        check_raw(data, shape, dtype)
    elif encoding == "compressed_segmentation":
        check_compressed_segmentation(data, shape, dtype, block_size or (8, 8, 8))
    try:
        array = chunks.decode(data, encoding, shape=shape, dtype=dtype, block_size=block_size)
    except Exception as exc:  # jpeg, png and the other codecs check their own input
        problem = f"the {encoding} decoder refused it ({type(exc).__name__}: {exc})"
        raise CorruptChunk(problem) from None
    if tuple(array.shape) != tuple(shape):
        raise CorruptChunk(f"it decodes to shape {tuple(array.shape)}, not {tuple(shape)}")
    return array
