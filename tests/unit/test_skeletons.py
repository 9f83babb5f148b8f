"""Skeleton kernels: bucketing by shard number, the fragment npz format, merging pieces."""

from __future__ import annotations

import numpy as np
from cloudvolume import Skeleton
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    synthesize_shard_files,
)
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from petavox.tasks.core.objects import get_arrays, put_arrays
from petavox.tasks.core.shards import shard_of, sharding_spec
from petavox.tasks.skeleton.skeletons import (
    RADIUS,
    Cleanup,
    Teasar,
    chunk_skeletons,
    merge_pieces,
    pack,
    unpack,
)

RESOLUTION = (8.0, 8.0, 16.0)


def path(points, radius: float = 1.0, label: int = 1) -> Skeleton:
    vertices = np.asarray(points, np.float32)
    edges = np.stack([np.arange(len(points) - 1), np.arange(1, len(points))], axis=1)
    radii = np.full(len(points), radius, np.float32)
    return Skeleton(
        vertices,
        edges.astype(np.uint32),
        radii=radii,
        segid=label,
        space="physical",
        extra_attributes=[RADIUS],
    )


def components(skel: Skeleton) -> int:
    n = len(skel.vertices)
    e = skel.edges
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[0]


def test_buckets_are_the_shard_numbers_of_the_sharding_spec():
    spec = ShardingSpecification.from_dict(sharding_spec(5, 3, "gzip"))
    labels = [*range(1, 2000), *(2**60 + k for k in range(50))]
    buckets = [shard_of(label, spec) for label in labels]
    assert set(buckets) == set(range(32))  # hashed ids fill every bucket
    for label, bucket in list(zip(labels, buckets))[::97]:
        # the shard file a merge task writes is the one Neuroglancer looks in
        (name,) = synthesize_shard_files(spec, {label: b"skeleton"})
        assert name == f"{bucket:02x}.shard"
    assert shard_of(2**60 + 3, spec) == shard_of(2**60 + 3, spec)


def test_fragments_round_trip_through_npz_without_pickle(tmp_path):
    url = f"file://{tmp_path}/work"
    big = 2**63 + 5  # beyond float64's exact integers and int64
    skeletons = {
        7: path([(0, 0, 0), (8, 0, 0), (16, 8, 0)], radius=3.5, label=7),
        big: path([(4, 4, 4), (4, 4, 20)], radius=1.25, label=big),
    }
    put_arrays(url, "3/0_1_2.npz", pack(skeletons))
    back = dict(unpack(get_arrays(url, "3/0_1_2.npz")))
    assert sorted(back) == sorted(skeletons)
    for label, skel in skeletons.items():
        np.testing.assert_array_equal(back[label].vertices, skel.vertices)
        np.testing.assert_array_equal(back[label].edges, skel.edges)
        np.testing.assert_array_equal(back[label].radius, skel.radius)
        assert back[label].id == label
    put_arrays(url, "3/empty.npz", pack({}))
    assert list(unpack(get_arrays(url, "3/empty.npz"))) == []


def test_pieces_sharing_a_border_vertex_merge_into_one_connected_skeleton():
    left = path([(0, 0, 0), (40, 0, 0), (80, 0, 0)])
    right = path([(80, 0, 0), (120, 0, 0), (160, 8, 0)])
    merged = merge_pieces(5, [left, right], Cleanup())
    assert merged.id == 5 and components(merged) == 1
    assert len(merged.vertices) == 5 and len(merged.edges) == 4  # the shared vertex once
    # pieces that do not meet (gap far beyond their radii) stay apart
    apart = merge_pieces(5, [left, path([(400, 0, 0), (480, 0, 0)])], Cleanup())
    assert components(apart) == 2


def test_pieces_that_close_a_loop_keep_every_vertex_in_one_tree():
    """Four chunks' pieces around a ring meet at four border vertices and close a loop (as a
    segment curving round a chunk corner does); kimimaro's clean-up emptied such a skeleton."""
    corners = [(0, 0, 0), (80, 0, 0), (80, 80, 0), (0, 80, 0)]
    sides = [
        path([a, ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, 0), b])
        for a, b in zip(corners, corners[1:] + corners[:1])
    ]
    merged = merge_pieces(3, sides, Cleanup())
    assert len(merged.vertices) == 8 and components(merged) == 1
    assert len(merged.edges) == 7  # a tree: the loop is broken at one edge


def test_short_stray_components_are_dropped_but_a_segment_keeps_its_longest():
    long = path([(0, 0, 0), (500, 0, 0), (1000, 0, 0)])
    stray = path([(0, 900, 0), (50, 900, 0)])
    merged = merge_pieces(1, [long, stray], Cleanup(min_cable=100))
    assert components(merged) == 1 and merged.cable_length() == 1000
    alone = merge_pieces(1, [stray], Cleanup(min_cable=100))
    assert alone.cable_length() == 50


def test_chunk_pieces_of_a_tube_meet_on_the_plane_the_chunks_share():
    shape = (60, 20, 12)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    nm = (grid - (0, 10, 6)) * RESOLUTION
    labels = np.where(np.hypot(nm[..., 1], nm[..., 2]) <= 50, 9, 0).astype(np.uint64)
    labels[:20, 3:6, 9:] = 4  # another object, in the low chunk only, apart from the tube
    params = Teasar(dust_threshold=10)
    # chunks [0, 30) and [30, 60), each read with one more voxel on its high face
    low = chunk_skeletons(labels[:31], (0, 0, 0), RESOLUTION, params)
    high = chunk_skeletons(labels[30:], (30, 0, 0), RESOLUTION, params)
    plane_x = (30 + 0.5) * RESOLUTION[0]
    for piece in (low[9], high[9]):
        assert np.isclose(piece.vertices[:, 0], plane_x).any()  # an end on the shared plane
    merged = merge_pieces(9, [low[9], high[9]], Cleanup())
    assert components(merged) == 1
    voxels = np.floor(merged.vertices / RESOLUTION).astype(int)
    assert (labels[tuple(voxels.T)] == 9).all()
    span = merged.vertices[:, 0].max() - merged.vertices[:, 0].min()
    assert span >= (shape[0] - 12) * RESOLUTION[0]  # end to end, less the ends' rounding
    assert set(low) == {4, 9} and set(high) == {9}


def test_a_segment_too_small_for_teasar_gets_one_vertex_and_only_when_alone():
    labels = np.zeros((12, 12, 12), np.uint32)
    labels[2:10, 5:7, 5:7] = 1  # a rod: TEASAR's
    labels[9, 10, 10] = 2  # one voxel: TEASAR gives nothing
    res = (8.0, 8.0, 40.0)
    found = chunk_skeletons(labels, (100, 0, 0), res, Teasar(dust_threshold=0))
    assert sorted(found) == [1, 2] and len(found[1].edges) > 0
    point = found[2]
    assert len(point.edges) == 0
    np.testing.assert_allclose(point.vertices, [[(109.5) * 8, 10.5 * 8, 10.5 * 40]])
    assert 2 not in chunk_skeletons(labels, (0, 0, 0), res, Teasar(dust_threshold=2))
    # merged: a lone point stays; beside a piece with edges (the segment's other chunks) it goes
    assert len(merge_pieces(2, [point], Cleanup()).vertices) == 1
    rod = path([(0, 0, 0), (40, 0, 0)])
    merged = merge_pieces(2, [point, rod], Cleanup())
    assert len(merged.vertices) == 2 and components(merged) == 1 and merged.id == 2
