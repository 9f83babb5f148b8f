"""The checks every encoded chunk passes before a decoder sees it: compressed_segmentation
headers, offsets and lookup-table indices, raw lengths, jpeg decodes of the right shape."""

from __future__ import annotations

import compressed_segmentation as cseg
import numpy as np
import pytest
from cloudvolume import chunks

from petavox.tasks.core.chunk_checks import (
    CorruptChunk,
    check_compressed_segmentation,
    check_raw,
    decode_checked,
)

BLOCK = (8, 8, 8)


def encoded(shape, dtype=np.uint64, ids=5, seed=0) -> tuple[np.ndarray, bytes]:
    labels = np.random.default_rng(seed).integers(0, ids, shape).astype(dtype)
    labels[labels > 0] += np.asarray(2**40 if dtype == np.uint64 else 2**20, dtype)
    return labels, cseg.compress(np.asfortranarray(labels), block_size=BLOCK, order="F")


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("shape", [(64, 64, 64), (20, 13, 9), (1, 1, 1), (32, 32, 16)])
@pytest.mark.parametrize("ids", [1, 3, 300, 70000])
def test_valid_chunks_pass_and_decode(shape, dtype, ids):
    labels, data = encoded(shape, dtype, ids)
    check_compressed_segmentation(data, (*shape, 1), dtype, BLOCK)
    out = decode_checked(data, "compressed_segmentation", (*shape, 1), dtype, BLOCK)
    np.testing.assert_array_equal(out[..., 0], labels)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("ids", [2, 300])
def test_every_truncation_is_caught(dtype, ids):
    _, data = encoded((20, 13, 9), dtype, ids)
    for words in range(len(data) // 4):
        with pytest.raises(CorruptChunk):
            check_compressed_segmentation(data[: 4 * words], (20, 13, 9, 1), dtype, BLOCK)
    with pytest.raises(CorruptChunk, match="not a whole number of 32-bit words"):
        check_compressed_segmentation(data[:-2], (20, 13, 9, 1), dtype, BLOCK)


def test_overwritten_header_and_bad_bit_width_are_caught():
    _, data = encoded((32, 32, 16))
    with pytest.raises(CorruptChunk, match="channel 0 starts at word 4294967295"):
        check_compressed_segmentation(b"\xff" * 16 + data[16:], (32, 32, 16, 1), np.uint64, BLOCK)
    words = np.frombuffer(data, "<u4").copy()
    words[1] = (words[1] & 0xFFFFFF) | (3 << 24)  # block 0: 3 bits per value
    with pytest.raises(CorruptChunk, match="block 0 has 3 bits per value"):
        check_compressed_segmentation(words.tobytes(), (32, 32, 16, 1), np.uint64, BLOCK)
    words = np.frombuffer(data, "<u4").copy()
    words[2] = words.size  # block 0's packed values start at the end
    with pytest.raises(CorruptChunk, match=r"block 0 needs words up to \d+ for its packed values"):
        check_compressed_segmentation(words.tobytes(), (32, 32, 16, 1), np.uint64, BLOCK)


def test_an_index_past_its_lookup_table_is_caught():
    """A block whose table is the last thing in the buffer loses the table's second entry:
    every offset still points inside the buffer, only the packed index 1 does not."""
    labels = np.zeros((8, 8, 8), np.uint64)
    labels[:4] = 7  # one block, 1 bit per value, a 2-entry table (4 words) at the end
    data = cseg.compress(labels, block_size=BLOCK, order="F")
    check_compressed_segmentation(data, (8, 8, 8, 1), np.uint64, BLOCK)
    words = np.frombuffer(data, "<u4")
    table = int(words[1]) & 0xFFFFFF  # relative to the channel's first word (word 1)
    assert words[1] >> 24 == 1 and 1 + table + 4 == words.size
    cut = words[:-2].tobytes()
    with pytest.raises(
        CorruptChunk, match=f"block 0 needs words up to {table + 4} for its lookup table"
    ):
        check_compressed_segmentation(cut, (8, 8, 8, 1), np.uint64, BLOCK)


def test_raw_length_must_match_shape_dtype_and_channels():
    check_raw(bytes(32 * 32 * 8 * 2), (32, 32, 8, 1), np.uint16)
    with pytest.raises(CorruptChunk, match="8192 bytes, a raw uint16 32x32x8 chunk has 16384"):
        check_raw(bytes(8192), (32, 32, 8, 1), np.uint16)
    with pytest.raises(CorruptChunk, match="of 3 channels has 24576"):
        check_raw(bytes(8192), (32, 32, 8, 3), np.uint8)
    with pytest.raises(CorruptChunk, match="it is empty"):
        decode_checked(b"", "raw", (32, 32, 8, 1), np.uint8)


def test_jpeg_must_decode_to_the_chunk_shape():
    image = np.tile(np.arange(32, dtype=np.uint8)[:, None, None, None] * 7, (1, 32, 8, 1))
    data = chunks.encode(image, "jpeg", compression_params={"level": 90})
    out = decode_checked(data, "jpeg", (32, 32, 8, 1), np.uint8)
    assert out.shape == (32, 32, 8, 1) and np.abs(out.astype(int) - image).mean() < 2
    with pytest.raises(CorruptChunk, match="jpeg decoder refused it"):
        decode_checked(data[: len(data) // 2], "jpeg", (32, 32, 8, 1), np.uint8)
    with pytest.raises(CorruptChunk, match="jpeg decoder refused it"):
        decode_checked(data, "jpeg", (32, 32, 16, 1), np.uint8)  # a chunk of another size
