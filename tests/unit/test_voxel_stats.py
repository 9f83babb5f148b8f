"""`morphology.voxel_stats`: per-segment statistics from chunks, merged exactly, against direct
computations on the whole volume, and the same bits under any chunking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.morphology.voxel_stats import COLUMNS, chunk_part, finish, merge

RES = (8.0, 8.0, 40.0)


def volume(seed: int = 0, shape=(48, 40, 24)) -> tuple[np.ndarray, np.ndarray]:
    """Labelled blobs (some elongated, some touching the faces) and an image."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(shape), (2.5, 1.2, 0.8))
    seg, _ = ndimage.label(noise > np.percentile(noise, 70))
    image = rng.integers(0, 256, shape).astype(np.uint8)
    return seg.astype(np.uint64), image


def parts_of(seg, image, chunk):
    for start in itertools.product(*(range(0, s, c) for s, c in zip(seg.shape, chunk))):
        box = tuple(slice(a, a + c) for a, c in zip(start, chunk))
        yield chunk_part(seg[box], image[box], start)


@pytest.mark.parametrize("chunk", [(16, 16, 8), (48, 13, 5), (7, 40, 24)])
def test_any_chunking_gives_the_whole_volume_table_bit_for_bit(chunk):
    seg, image = volume()
    whole = finish(merge([chunk_part(seg, image, (0, 0, 0))]), RES)
    chunked = finish(merge(reversed(list(parts_of(seg, image, chunk)))), RES)
    assert whole.keys() == chunked.keys() and len(whole["segment_id"]) > 20
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key], err_msg=key)


def test_values_match_direct_computations():
    seg, image = volume(seed=1)
    table = finish(merge(parts_of(seg, image, (16, 16, 8))), RES)
    res = np.asarray(RES)
    for row, sid in enumerate(table["segment_id"]):
        voxels = np.argwhere(seg == sid)
        assert table["voxels"][row] == len(voxels)
        assert table["volume_um3"][row] == pytest.approx(len(voxels) * np.prod(res) * 1e-9)
        lo, hi = voxels.min(axis=0), voxels.max(axis=0) + 1
        assert [table[f"low_{a}"][row] for a in "xyz"] == lo.tolist()
        assert [table[f"high_{a}"][row] for a in "xyz"] == hi.tolist()
        points = (voxels + 0.5) * res  # voxel centres, as the skeletons' vertices
        centroid = [table[f"centroid_{a}"][row] for a in "xyz"]
        np.testing.assert_allclose(centroid, points.mean(axis=0), rtol=1e-12)
        values = image[seg == sid].astype(np.float64)
        assert table["intensity_mean"][row] == pytest.approx(values.mean())
        assert table["intensity_std"][row] == pytest.approx(values.std(), abs=1e-9)
        if len(voxels) > 10:
            cov = np.cov(points.T, bias=True)
            evals, evecs = np.linalg.eigh(cov)
            axis = np.array([table[f"axis_{a}"][row] for a in "xyz"])
            assert abs(abs(axis @ evecs[:, 2]) - 1) < 1e-9
            if evals[1] > 0:
                expected = np.sqrt(evals[2] / evals[1])
                assert table["elongation"][row] == pytest.approx(expected)
            if evals[0] > 1e-9 * evals[2]:
                flat = np.sqrt(evals[1] / evals[0])
                assert table["flatness"][row] == pytest.approx(flat, rel=1e-6)


def test_second_moments_past_int64_stay_exact():
    """A segment far from the origin: Σx² passes 2^63, the sums stay the Python integers."""
    seg = np.ones((10, 10, 10), np.uint64)
    image = np.full(seg.shape, 200, np.uint8)
    far = 2**31  # n·o² = 1000 · 2^62 > 2^63
    totals = merge([chunk_part(seg, image, (far, 0, 0))])[1]
    xs = np.arange(far, far + 10)
    assert totals.sums["xx"] == 100 * sum(int(x) * int(x) for x in xs)
    assert totals.sums["xx"] > 2**63
    row = finish({1: totals}, RES)
    assert row["centroid_x"][0] == (far + 4.5 + 0.5) * RES[0]
    assert row["intensity_std"][0] == 0.0


def test_an_empty_chunk_adds_nothing():
    seg = np.zeros((4, 4, 4), np.uint64)
    part = chunk_part(seg, np.zeros_like(seg, np.uint8), (8, 8, 8))
    assert len(part.ids) == 0 and merge([part]) == {}
    empty = finish({}, RES)
    assert list(empty) == ["segment_id", *COLUMNS]  # the same columns as a table with rows
    assert all(len(column) == 0 for column in empty.values())
