"""The region graph and the agglomeration from it: the real jobs, run one by one on file://
layers over an octree of chunks, against the whole volume in memory."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3, octree_level_grid, octree_levels
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.agglomerate_jobs import (
    MAPPING_FOLDER,
    AgglomerateJob,
    MappingJob,
    MergeRule,
)
from petavox.tasks.segment.agglomeration import RegionGraph, quantised
from petavox.tasks.segment.equivalence import apply_maps
from petavox.tasks.segment.region_graph import (
    GRAPH_FOLDER,
    ChunkGraphJob,
    NodeGraphJob,
    first_voxels,
    part_keys,
    read_columns,
)
from petavox.tasks.segment.stitch_jobs import RelabelJob
from petavox.tasks.segment.watershed import WatershedParams
from petavox.tasks.segment.whole_volume import agglomerate, fragments_and_graph


@pytest.fixture(scope="module")
def volume():
    """A smooth random boundary map (x, y, z) and its watershed fragments, as one chunk."""
    rng = np.random.default_rng(3)
    boundary = ndimage.gaussian_filter(rng.random((40, 36, 30)).astype(np.float32), 1.0)
    boundary = (boundary - boundary.min()) / np.ptp(boundary)
    fragments, graph = fragments_and_graph(boundary, WatershedParams(seed_threshold=0.3))
    return boundary, fragments, graph


def layer(url: str, data: np.ndarray, dtype: str, layer_type: str) -> Layer:
    spec = LayerSpec(
        layer_type=layer_type,
        dtype=dtype,
        size=Vec3.of(data.shape),
        resolution=(8, 8, 8),
        chunk_size=Vec3(2, 2, 3),
    )
    out = Layer.create(url, spec)
    out.write(out.bounds(0), data.astype(dtype))
    return out


def build_graph(tmp, boundary, fragments, chunk) -> tuple[Layer, ChunkGrid, str]:
    """The graph steps of `segment`, chunk by chunk: (supervoxels, grid, graph URL)."""
    svs = layer(f"file://{tmp}/svs", fragments, "uint64", "segmentation")
    source = layer(f"file://{tmp}/boundary", boundary, "float32", "image")
    grid = ChunkGrid(Box((0, 0, 0), fragments.shape), chunk)
    graph_url, work = f"{svs.url}/{GRAPH_FOLDER}", f"file://{tmp}/work"
    first = ChunkGraphJob(
        supervoxels=svs, source=source, grid=grid, graph_url=graph_url, work_url=work
    )
    for c in grid:
        first.run(c)
    for level in range(1, octree_levels(grid) + 1):
        job = NodeGraphJob(
            level=level,
            child_grid=octree_level_grid(grid, level - 1),
            chunk_grid=grid,
            graph_url=graph_url,
            work_url=work,
            context=svs.context,
        )
        for node in octree_level_grid(grid, level):
            job.run(node)
    return svs, grid, graph_url


COLUMNS = {
    "edges": ("sv_a", "sv_b", "faces", "affinity_sum", "affinity_mean", "part"),
    "supervoxels": ("sv", "voxels", "closed", "x", "y", "z", "part"),
    MAPPING_FOLDER: ("sv", "segment", "part"),
}


def read_all(url: str, folder: str) -> dict[str, np.ndarray]:
    """Every column of every part under `url`/`folder`."""
    return read_columns(url, folder, 8, COLUMNS[folder], StorageContext())


def agglomerate_octree(tmp, svs: Layer, grid: ChunkGrid, graph_url: str, rule: MergeRule):
    """The agglomerate steps: every level, the mapping table, the relabelled volume.
    (segmentation, mapping table)."""
    work = f"file://{tmp}/agglo-{rule.threshold}-{rule.size_penalty}"
    top = octree_levels(grid)
    for level in range(top + 1):
        job = AgglomerateJob(
            level=level,
            top=top,
            child_grid=octree_level_grid(grid, level - 1) if level else None,
            graph_url=graph_url,
            rule=rule,
            work_url=work,
            context=svs.context,
        )
        for node in octree_level_grid(grid, level):
            job.run(node)
    mapping = MappingJob(
        graph_url=graph_url, work_url=work, mapping_url=work, top=top, context=svs.context
    )
    shape = tuple(svs.bounds(0).shape)
    out = layer(f"{work}/seg", np.zeros(shape, np.uint64), "uint64", "segmentation")
    levels = tuple(range(top + 2))  # and the (here empty) joins
    relabel = RelabelJob(source=svs, target=out, work_url=work, map_dir="agglo-maps", levels=levels)
    for c in grid:
        mapping.run(c)
        relabel.run(c)
    return out.read(out.bounds(0)), read_all(work, MAPPING_FOLDER)


@pytest.mark.parametrize("chunk", [(14, 18, 15), (8, 8, 6), (40, 36, 30)])
def test_the_graph_holds_every_pair_once_with_the_whole_volumes_sums(tmp_path, volume, chunk):
    boundary, fragments, whole = volume
    *_, graph_url = build_graph(tmp_path, boundary, fragments, chunk)
    edges = read_all(graph_url, "edges")
    pairs = np.stack([edges["sv_a"], edges["sv_b"]], axis=1)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    np.testing.assert_array_equal(pairs[order], whole.edges)  # once each, sv_a < sv_b
    np.testing.assert_array_equal(edges["faces"][order], whole.counts)
    np.testing.assert_array_equal(edges["affinity_sum"][order], whole.sums)  # exactly
    np.testing.assert_allclose(edges["affinity_mean"], edges["affinity_sum"] / edges["faces"])
    svs_table = read_all(graph_url, "supervoxels")
    closed = svs_table["closed"]
    ids, counts = np.unique(fragments[fragments > 0], return_counts=True)
    order = np.argsort(svs_table["sv"][closed])
    np.testing.assert_array_equal(svs_table["sv"][closed][order], ids)  # closed once each
    np.testing.assert_array_equal(svs_table["voxels"][closed][order], counts)
    # each supervoxel's anchor: its first voxel in z, y, x order in the whole volume
    _, first = first_voxels(fragments, (0, 0, 0))
    anchors = np.stack([svs_table[a] for a in "xyz"], axis=1)[closed][order]
    np.testing.assert_array_equal(anchors, first)
    assert (fragments[tuple(anchors.T)] == ids).all()
    if chunk != fragments.shape:
        levels = {part.split("/")[0] for part in edges["part"]}
        assert len(levels) > 1  # written up the octree, not all at the top


def test_agglomerating_the_graph_over_the_octree_equals_one_volume(tmp_path, volume):
    """Without and with the size penalty, each equal to its own whole-volume result."""
    boundary, fragments, whole = volume
    svs, grid, graph_url = build_graph(tmp_path, boundary, fragments, (14, 18, 15))
    counts = []
    for penalty in (0.0, 0.05):
        rule = MergeRule(threshold=0.6, size_penalty=penalty, size_floor=64)
        seg, mapping = agglomerate_octree(tmp_path, svs, grid, graph_url, rule)
        want = agglomerate(fragments, whole, 0.6, penalty, 64)
        np.testing.assert_array_equal(seg, want)
        counts.append(len(np.unique(want)))
        # the mapping table: every supervoxel once, to the segment its voxels got
        ids = np.unique(fragments[fragments > 0])
        assert len(mapping["sv"]) == len(np.unique(mapping["sv"])) == len(ids)
        np.testing.assert_array_equal(apply_maps_table(fragments, mapping), want)
    assert len(np.unique(fragments)) > counts[1] > counts[0] > 2  # the penalty keeps some apart


def apply_maps_table(fragments: np.ndarray, mapping: dict[str, np.ndarray]) -> np.ndarray:
    table = np.stack([mapping["sv"], mapping["segment"]], axis=1).astype(np.uint64)
    table = table[np.argsort(table[:, 0])]
    return apply_maps(fragments.ravel(), [table]).reshape(fragments.shape)


def test_a_region_only_just_before_a_chunk_is_open_there():
    """The chunk's contacts reach one voxel before it: a supervoxel seen only there has no
    voxel in the chunk and lies elsewhere, so its pairs go up instead of being written."""
    from petavox.tasks.segment.region_graph import split_node

    graph = RegionGraph(
        edges=np.array([[1, 2], [2, 3]], np.uint64),
        sums=np.array([0.5, 0.25]),
        counts=np.array([1, 1]),
        size_ids=np.array([2, 3], np.uint64),
        sizes=np.array([4, 5]),
    )
    anchors = np.array([[0, 0, 0], [1, 0, 0]])
    part, carry = split_node(graph, np.array([2], np.uint64), anchors)  # 2 on a face; 1 not here
    assert part.graph.edges.tolist() == [[2, 3]] and carry.edges.tolist() == [[1, 2]]
    assert dict(zip(part.graph.size_ids.tolist(), part.closed.tolist())) == {2: False, 3: True}
    assert carry.size_map() == {2: 4}


def test_affinities_are_summed_exactly_in_any_order():
    rng = np.random.default_rng(0)
    values = quantised(rng.random(100_000).astype(np.float32))
    forward, backward = np.sum(values), np.sum(values[::-1])
    assert forward == backward == sum(sorted(values.tolist()))
    assert np.abs(values - rng.random(0).sum()).max() <= 1.0  # still affinities in [0, 1]
    assert part_keys(2, "0_1_0") == ("edges/2/0_1_0.parquet", "supervoxels/2/0_1_0.parquet")
