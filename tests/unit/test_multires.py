"""The sharded multi-resolution mesh format on synthetic meshes: welding across chunks, levels
of detail, the octree and its manifest as Neuroglancer reads them, and the merge's memory."""

from __future__ import annotations

import itertools
import tracemalloc

import DracoPy
import numpy as np
import pytest
import zmesh
from cloudvolume.datasource.precomputed.mesh.multilod import MultiLevelPrecomputedMeshManifest
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from petavox.tasks.core.geometry import Box, index_grid
from petavox.tasks.core.objects import put_arrays
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.shards import shard_of, sharding_spec
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.mesh.mesh_jobs import ShardMergeJob, pack
from petavox.tasks.mesh.multires import (
    Octree,
    levels_of_detail,
    multires_mesh,
    quantize,
    weld,
    zorder,
)
from petavox.tasks.mesh.surfaces import (
    Simplification,
    close_at_volume_faces,
    open_edges,
    voxel_meshes,
    without_twins,
)

BITS = 16


def ellipsoid(shape, centre, semi) -> np.ndarray:
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    return ((((grid - centre) / semi) ** 2).sum(-1) <= 1).astype(np.uint64)


def chunk_pieces(
    labels: np.ndarray, task: tuple[int, int, int], resolution, offset=(0, 0, 0)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Segment 1's meshes from every task of `task` voxels, as the sharded forge makes them (the
    volume's voxel 0 at `offset`)."""
    volume = Box((0, 0, 0), labels.shape)
    pieces = []
    for index in np.ndindex(*(-(-n // t) for n, t in zip(labels.shape, task))):
        box = Box(
            tuple(i * t for i, t in zip(index, task)),
            tuple(min((i + 1) * t, n) for i, t, n in zip(index, task, labels.shape)),
        )
        read = Box(box.start, box.stop + 1).intersection(volume)
        cut = labels[tuple(slice(a, b) for a, b in zip(read.start, read.stop))]
        padded, start = close_at_volume_faces(cut, read, volume)
        start = tuple(s + o for s, o in zip(start, offset))
        mesh = voxel_meshes(padded, start, resolution, Simplification()).get(1)
        if mesh is not None:
            pieces.append((mesh.vertices, mesh.faces))
    return pieces


def volume_of(vertices: np.ndarray, faces: np.ndarray) -> float:
    v = np.asarray(vertices, np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6)


def test_zorder_interleaves_bits_with_x_lowest():
    positions = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [2, 0, 0], [3, 5, 6]]
    )
    expected = [
        sum(((p[a] >> b) & 1) << (3 * b + a) for b in range(3) for a in range(3))
        for p in positions.tolist()
    ]
    assert zorder(positions).tolist() == expected
    # sorted by key, the 8 children of a node are contiguous
    grid = np.array(list(np.ndindex(4, 4, 4)))
    parents = grid[np.argsort(zorder(grid))] >> 1
    runs = np.flatnonzero((np.diff(parents, axis=0) != 0).any(axis=1))
    assert len(runs) == 7 and np.all(np.diff(runs) == 8)


@pytest.mark.parametrize(
    ("resolution", "offset"), [((8, 8, 16), (0, 0, 0)), ((3.7, 4.1, 33.3), (200_000, 90_000, 7))]
)
def test_pieces_from_neighbouring_chunks_weld_into_a_closed_mesh(resolution, offset):
    labels = ellipsoid((40, 36, 24), (20, 18, 12), (14, 11, 8))
    pieces = chunk_pieces(labels, (16, 16, 8), resolution, offset)
    assert len(pieces) >= 8
    whole = weld(pieces)
    assert len(open_edges(whole)) == 0
    voxels = labels.sum()
    assert volume_of(whole.vertices, whole.faces) == pytest.approx(voxels, rel=0.03)


def test_twin_triangles_are_dropped_in_pairs():
    """A flat fold (two triangles on the same vertices, back to back) goes as a whole: keeping
    one of the two, as a reader's clean-up does, would leave a hole."""
    faces = np.array(
        [
            [0, 1, 2],
            [0, 3, 1],
            [0, 2, 3],
            [1, 3, 2],  # a closed tetrahedron
            [4, 5, 6],
            [4, 6, 5],
        ],
        np.uint32,
    )  # a fold beside it
    kept = without_twins(faces)
    np.testing.assert_array_equal(kept, faces[:4])
    tetra = zmesh.Mesh(np.eye(4, 3, dtype=np.float32), kept, None)
    assert len(open_edges(tetra)) == 0


def test_quantize_spans_the_node_and_puts_mid_plane_vertices_on_the_split_value():
    node = np.array([64.0, 64.0, 32.0])
    corner = np.array([64.0, 0.0, 32.0])
    vertices = np.array(
        [[64, 0, 32], [128, 64, 64], [96, 10, 48], [96 - 1e-4, 32, 40], [96 - 5e-6, 32, 40]]
    )
    q = quantize(vertices, corner, node, BITS, split=True)
    top, half = 2**BITS - 1, 2 ** (BITS - 1)
    assert q[0].tolist() == [0, 0, 0] and q[1].tolist() == [top, top, top]
    assert q[2].tolist() == [half, round(10 / 64 * top), half]
    assert q[3, 0] < half  # off the plane: stays on its side
    assert q[4, 0] == half  # left on the plane by the cut (zmesh.chunk_mesh's tolerance)
    assert quantize(vertices, corner, node, BITS, split=False)[2, 0] == round(top / 2)


def test_levels_of_detail_shrink_and_stop_when_nothing_is_removed():
    labels = ellipsoid((50, 50, 30), (25, 25, 15), (20, 16, 10))
    mesh = weld(chunk_pieces(labels, (64, 64, 64), (8, 8, 16)))
    levels = levels_of_detail(mesh, 8, (8, 8, 16))
    counts = [len(m.faces) for m in levels]
    assert counts[0] == len(mesh.faces) and 3 <= len(levels) < 8
    assert all(b <= max(a // 4, 4) for a, b in itertools.pairwise(counts))
    tetra = zmesh.Mesh(
        np.eye(4, 3, dtype=np.float32),
        np.array([[0, 1, 2], [0, 3, 1], [0, 2, 3], [1, 3, 2]], np.uint32),
        None,
    )
    assert len(levels_of_detail(tetra, 3, (1, 1, 1))) == 1


def partition_masks(q: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Neuroglancer's octant mask of each triangle of a LOD > 0 piece (0: crosses octants)."""
    split = 2 ** (BITS - 1)
    masks = np.full(len(faces), 0xFF)
    for axis, (low, high) in enumerate(
        [(0b01010101, 0b10101010), (0b00110011, 0b11001100), (0b00001111, 0b11110000)]
    ):
        for corner in range(3):
            x = q[faces[:, corner], axis]
            masks &= np.where(x < split, low, np.where(x > split, high, 0xFF))
    return masks


def test_multires_mesh_is_an_octree_neuroglancer_can_draw():
    resolution = (8, 8, 16)
    labels = ellipsoid((96, 80, 40), (48, 40, 20), (40, 30, 16))
    task = (32, 32, 16)
    mesh = weld(chunk_pieces(labels, task, resolution))
    octree = Octree((0.5, 0.5, 0.5), task)
    fragments, raw = multires_mesh(mesh, octree, 3, BITS, resolution)
    manifest = MultiLevelPrecomputedMeshManifest.from_binary(raw, segment_id=1)
    assert manifest.num_lods == 3 and list(manifest.lod_scales) == [1, 2, 4]
    assert list(manifest.chunk_shape) == list(task)
    # the origin is on the forge's grid (half a voxel above task faces), below the mesh
    origin = np.asarray(manifest.grid_origin)
    assert np.all((origin - 0.5) % task == 0) and np.all(origin <= mesh.vertices.min(axis=0))
    sizes = [np.asarray(s, np.int64) for s in manifest.fragment_offsets]
    assert sum(int(s.sum()) for s in sizes) == len(fragments)
    offset = 0
    triangles = []
    lod0 = []
    previous = np.zeros((0, 3), np.int64)
    for lod in range(3):
        where = manifest.fragment_positions[lod].astype(np.int64)
        assert np.all(np.diff(zorder(where).astype(np.int64)) > 0)  # Z-curve order, no repeats
        # every node of the finer LOD has its parent
        assert {tuple(c) for c in (previous >> 1).tolist()} <= {tuple(p) for p in where.tolist()}
        previous = where
        count = 0
        for k, size in enumerate(sizes[lod].tolist()):
            if size == 0:
                continue
            decoded = DracoPy.decode(fragments[offset : offset + size])
            offset += size
            q, faces = np.asarray(decoded.points), np.asarray(decoded.faces)
            assert np.all(q == np.rint(q)) and q.min() >= 0 and q.max() <= 2**BITS - 1
            if lod:
                assert np.all(partition_masks(q, faces) != 0), "a triangle crosses an octant"
            node = np.asarray(task) * 2**lod
            vertices = origin + node * (where[k] + q / (2**BITS - 1))
            count += len(faces)
            if lod == 0:
                lod0.append((vertices.astype(np.float32), faces))
        triangles.append(count)
    assert triangles[0] > triangles[1] > triangles[2]
    assert len(manifest.fragment_positions[0]) >= 8  # LOD 0 nodes are the tasks
    # LOD 0 decoded: closed, and encloses what the welded mesh encloses
    decoded = weld(lod0).merge_close_vertices(1e-4)
    assert len(open_edges(decoded)) == 0
    assert volume_of(decoded.vertices, decoded.faces) == pytest.approx(
        volume_of(mesh.vertices, mesh.faces), rel=1e-4
    )


def write_segments(url: str, count: int, shard_bits: int) -> dict[int, int]:
    """Intermediate files as the sharded forge writes them, for `count` ellipsoids (16 per
    chunk file); returns the number of segments per shard."""
    labels = ellipsoid((24, 24, 16), (12, 12, 8), (9, 8, 6))
    mesh = weld(chunk_pieces(labels, (64, 64, 64), (8, 8, 16)))
    spec = ShardingSpecification.from_dict(sharding_spec(shard_bits, 4, "raw"))
    shards: dict[tuple[int, int], list] = {}
    for label in range(1, count + 1):
        moved = zmesh.Mesh(mesh.vertices + np.float32(30 * (label % 40)), mesh.faces, None)
        shards.setdefault((shard_of(label, spec), label // 16), []).append((label, moved))
    for (shard, chunk), group in shards.items():
        put_arrays(url, f"{shard}/{chunk}_0_0", pack(group))
    per_shard: dict[int, int] = {}
    for (shard, _), group in shards.items():
        per_shard[shard] = per_shard.get(shard, 0) + len(group)
    return per_shard


def merge_peak(tmp_path, name: str, count: int, shard_bits: int) -> tuple[int, int]:
    """(segments in shard 0, peak traced bytes of its merge task)."""
    work, out = f"file://{tmp_path}/{name}/work", f"file://{tmp_path}/{name}/mesh"
    per_shard = write_segments(work, count, shard_bits)
    buckets = ShardBuckets(
        work_url=work, sharding=sharding_spec(shard_bits, 4, "raw"), context=StorageContext()
    )
    job = ShardMergeJob(
        buckets=buckets,
        mesh_url=out,
        octree=Octree((0.5,) * 3, (32,) * 3),
        lods=3,
        bits=BITS,
        resolution=(8, 8, 16),
    )
    chunk = next(iter(index_grid(2**shard_bits)))
    tracemalloc.start()
    result = job.run(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result["segments"] == per_shard[0]
    return per_shard[0], peak


def test_merge_memory_follows_the_shard_not_the_dataset(tmp_path):
    merge_peak(tmp_path, "warm-up", 8, 0)  # first-call allocations (imports, caches) aside
    small, small_peak = merge_peak(tmp_path, "small", 40, 0)  # 40 segments, one shard
    big, big_peak = merge_peak(tmp_path, "big", 160, 2)  # 4× the segments, 4 shards
    whole, whole_peak = merge_peak(tmp_path, "whole", 160, 0)  # the same in one shard
    assert whole == 160 and 30 <= big <= 50
    per_segment = small_peak / small
    assert big_peak < 1.3 * per_segment * big  # as much per segment as a small dataset's shard
    assert whole_peak > 3 * big_peak  # and a shard 4× the size takes about 4× the memory
