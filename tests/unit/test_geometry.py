import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3

small = st.integers(min_value=1, max_value=40)
offsets = st.integers(min_value=-30, max_value=30)
triples = st.tuples(small, small, small)


@st.composite
def grids(draw):
    start = Vec3(*draw(st.tuples(offsets, offsets, offsets)))
    shape = Vec3(*draw(triples))
    chunk = Vec3(*draw(st.tuples(*(st.integers(1, 17) for _ in range(3)))))
    halo = Vec3(*draw(st.tuples(*(st.integers(0, 5) for _ in range(3)))))
    # the storage grid may start before the bounds (a sub-box of a layer)
    origin = start - Vec3(*draw(st.tuples(*(st.integers(0, 20) for _ in range(3)))))
    return ChunkGrid(Box(start, start + shape), chunk, halo, origin=origin)


@settings(max_examples=80, deadline=None)
@given(grids())
def test_write_boxes_tile_the_bounds_exactly_once(grid):
    b = grid.bounds
    count = np.zeros(tuple(b.shape), dtype=np.int32)
    for chunk in grid:
        count[chunk.write_box.slices(origin=b.start)] += 1
    assert (count == 1).all()


@settings(max_examples=80, deadline=None)
@given(grids())
def test_read_box_contains_write_box_and_stays_in_bounds(grid):
    for chunk in grid:
        assert chunk.read_box.contains(chunk.write_box)
        assert grid.bounds.contains(chunk.read_box)
        expected = chunk.write_box.grow(grid.halo).intersection(grid.bounds)
        assert chunk.read_box == expected


@settings(max_examples=100, deadline=None)
@given(grids())
def test_write_boxes_are_aligned_to_the_storage_grid(grid):
    for chunk in grid:
        assert chunk.write_box.is_aligned(grid.chunk_shape, grid.origin, grid.bounds)


@settings(max_examples=30, deadline=None)
@given(grids())
def test_chunk_ids_are_stable_and_unique(grid):
    ids = grid.ids()
    assert len(set(ids)) == len(ids) == len(grid)
    chunks = list(grid)
    for chunk in chunks[:: max(1, len(chunks) // 40)]:  # every lookup walks the grid: a sample
        assert grid.chunk_by_id(chunk.id) == chunk
    # a second grid built from the same arguments names the same boxes the same way
    again = ChunkGrid(grid.bounds, grid.chunk_shape, grid.halo, origin=grid.origin)
    assert [(c.id, c.write_box) for c in again] == [(c.id, c.write_box) for c in grid]


def test_misaligned_box_is_detected():
    bounds = Box((0, 0, 0), (100, 100, 10))
    assert Box((0, 0, 0), (64, 64, 10)).is_aligned((64, 64, 10), (0, 0, 0), bounds)
    assert Box((64, 64, 0), (100, 100, 10)).is_aligned((64, 64, 10), (0, 0, 0), bounds)
    assert not Box((1, 0, 0), (65, 64, 10)).is_aligned((64, 64, 10), (0, 0, 0), bounds)
    assert not Box((0, 0, 0), (63, 64, 10)).is_aligned((64, 64, 10), (0, 0, 0), bounds)
    assert not Box((64, 64, 0), (128, 128, 10)).is_aligned((64, 64, 10), (0, 0, 0), bounds)


def test_box_operations():
    a = Box((0, 0, 0), (10, 10, 10))
    assert a.intersection(Box((5, 5, 5), (20, 20, 20))) == Box((5, 5, 5), (10, 10, 10))
    assert a.intersection(Box((20, 0, 0), (30, 5, 5))).is_empty()
    assert a.scale_down((2, 2, 1)) == Box((0, 0, 0), (5, 5, 10))
    assert Box((3, 3, 0), (9, 9, 1)).scale_down((2, 2, 1)) == Box((1, 1, 0), (5, 5, 1))
    with pytest.raises(ValueError, match="before its start"):
        Box((5, 0, 0), (4, 1, 1))


def test_grid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="positive"):
        ChunkGrid(Box((0, 0, 0), (4, 4, 4)), (0, 4, 4))
    with pytest.raises(IndexError):
        ChunkGrid(Box((0, 0, 0), (4, 4, 4)), (2, 2, 2)).chunk((2, 0, 0))
