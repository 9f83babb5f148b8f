"""`morphology.surface_cells`: surface areas from cell-case counts equal marching cubes on each
whole segment, bit for bit the same under any chunking."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import marching_cubes, mesh_surface_area

from petavox.tasks.morphology.surface_cells import (
    block_box,
    case_areas,
    cell_counts,
    merge_counts,
    surface_areas,
)

RES = (8.0, 8.0, 40.0)
SHAPE = (40, 36, 20)


def labels(seed: int = 0) -> np.ndarray:
    """Blobs of several sizes, some touching the volume's faces."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(SHAPE), (2.5, 1.2, 0.8))
    seg, _ = ndimage.label(noise > np.percentile(noise, 70))
    return seg.astype(np.uint64)


def chunked_areas(seg: np.ndarray, chunk) -> dict[int, float]:
    zero, parts = (0, 0, 0), []
    for start in itertools.product(*(range(0, s, c) for s, c in zip(seg.shape, chunk))):
        stop = tuple(min(a + c, s) for a, c, s in zip(start, chunk, seg.shape))
        lo, hi = block_box(start, stop, seg.shape)
        block = seg[tuple(slice(a, b) for a, b in zip(lo, hi))]
        parts.append(cell_counts(block, start, stop, zero, seg.shape))
    return surface_areas(merge_counts(reversed(parts)), RES)


def test_areas_equal_marching_cubes_on_each_whole_segment():
    seg = labels()
    areas = chunked_areas(seg, (16, 16, 8))
    assert sorted(areas) == sorted(int(v) for v in np.unique(seg) if v) and len(areas) > 20
    for sid, area in areas.items():
        mask = np.pad(seg == sid, 1).astype(np.float32)
        verts, faces, _, _ = marching_cubes(mask, 0.5, spacing=RES)
        assert area == pytest.approx(mesh_surface_area(verts, faces), rel=1e-9), sid


@pytest.mark.parametrize("chunk", [(13, 36, 7), (40, 5, 20), (40, 36, 20)])
def test_any_chunking_gives_the_same_areas_bit_for_bit(chunk):
    seg = labels(seed=1)
    assert chunked_areas(seg, chunk) == chunked_areas(seg, (16, 16, 8))


def test_a_box_has_its_faces_area_less_its_cut_edges():
    """A 10×6×4 box of voxels at 1 nm: marching cubes cuts each edge and corner by half a
    voxel, so the area is below the faces' 2·(60 + 40 + 24) and above the inner box's."""
    seg = np.zeros((14, 10, 8), np.uint64)
    seg[2:12, 2:8, 2:6] = 7
    res = (1.0, 1.0, 1.0)
    hist = merge_counts([cell_counts(seg, (0, 0, 0), seg.shape, (0, 0, 0), seg.shape)])
    area = surface_areas(hist, res)[7]
    assert 2 * (9 * 5 + 9 * 3 + 5 * 3) < area < 2 * (10 * 6 + 10 * 4 + 6 * 4)
    assert case_areas(res)[0] == case_areas(res)[255] == 0.0
