"""Skeletons of a labelled chunk (kimimaro's TEASAR) and their merge across chunks.

A chunk is read with one extra voxel on its high faces, so neighbouring chunks share a plane of
voxels. kimimaro's `fix_borders` roots each piece that reaches a face of the chunk at a point of
that face fixed by the face alone (the maximum of the 2-D distance transform of each
cross-section), so the two chunks that share a plane both end their pieces at the same vertex.
Concatenating the pieces of a segment and unifying equal vertices joins them into one skeleton.

Vertices are in nm at voxel centres of the whole volume (voxel i at (i + 0.5) × resolution, as
igneous writes them), so the same voxel gives bit-identical float32 vertices in every chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import kimimaro
import numpy as np
from cloudvolume import Skeleton
from kimimaro.intake import DEFAULT_TEASAR_PARAMS

RADIUS = {"id": "radius", "data_type": "float32", "num_components": 1}
IDENTITY = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]


@dataclass(frozen=True, kw_only=True)
class Teasar:
    """Per-chunk skeletonization (kimimaro's parameters; lengths in nm)."""

    scale: float = 1.5  # invalidation radius: scale × distance to the boundary + const
    const: float = 300.0
    dust_threshold: int = 1000  # pieces of a segment in one chunk with fewer voxels are skipped
    fix_branching: bool = True

    def teasar_params(self) -> dict:
        return {**DEFAULT_TEASAR_PARAMS, "scale": self.scale, "const": self.const}


@dataclass(frozen=True, kw_only=True)
class Cleanup:
    """The merge's clean-up of a segment's joined pieces (nm)."""

    tick_threshold: float = 3000.0  # side branches shorter than this are removed (0: none)
    min_cable: float = 0.0  # components shorter than this are dropped, except the longest


def skeleton_info(sharding: dict | None) -> dict:
    """The info of a precomputed skeleton folder: vertices in nm, a float32 radius per vertex."""
    info: dict = {
        "@type": "neuroglancer_skeletons",
        "transform": IDENTITY,
        "vertex_attributes": [RADIUS],
    }
    if sharding is not None:
        info["sharding"] = sharding
    return info


def chunk_skeletons(
    labels: np.ndarray,
    start: tuple[int, int, int],
    resolution: tuple[float, float, float],
    params: Teasar,
) -> dict[int, Skeleton]:
    """{segment id: skeleton in nm} of `labels` (x, y, z), whose voxel 0 sits at voxel `start`
    of the volume. Segment 0 is background. A segment TEASAR gives nothing for (one voxel, a
    sliver) but that is not dust gets a single vertex, so every segment has a skeleton."""
    found = kimimaro.skeletonize(
        np.asfortranarray(labels),
        params.teasar_params(),
        anisotropy=resolution,
        dust_threshold=params.dust_threshold,
        fix_branching=params.fix_branching,
        fix_borders=True,
        progress=False,
        parallel=1,
    )
    res = np.asarray(resolution, np.float64)
    out = {}
    for label, skel in found.items():
        voxels = np.rint(skel.vertices / res)  # kimimaro's vertices: voxel index × resolution
        vertices = ((voxels + start + 0.5) * res).astype(np.float32)
        out[int(label)] = Skeleton(
            vertices,
            skel.edges.astype(np.uint32),
            radii=skel.radius,
            segid=int(label),
            space="physical",
            extra_attributes=[RADIUS],
        )
    ids, counts = np.unique(labels, return_counts=True)
    small = [
        i
        for i, n in zip(ids, counts)
        if i and int(i) not in out and n >= max(1, params.dust_threshold)
    ]
    if small:
        out.update(point_skeletons(labels, np.asarray(small, labels.dtype), start, res))
    return out


def point_skeletons(
    labels: np.ndarray, small: np.ndarray, start: tuple[int, int, int], res: np.ndarray
) -> dict[int, Skeleton]:
    """For each segment of `small` (sorted ids), one vertex at its voxel nearest its centroid;
    the chunk is scanned once for all of them."""
    inside = np.isin(labels, small)
    voxels, owner = np.argwhere(inside), labels[inside]
    order = np.argsort(owner, kind="stable")
    voxels, owner = voxels[order], owner[order]
    out = {}
    for label, group in zip(small, np.split(voxels, np.searchsorted(owner, small[1:]))):
        voxel = group[np.argmin(np.linalg.norm(group - group.mean(axis=0), axis=1))]
        vertex = ((voxel + start + 0.5) * res).astype(np.float32)[np.newaxis]
        out[int(label)] = Skeleton(
            vertex,
            np.zeros((0, 2), np.uint32),
            radii=np.full(1, res.min() / 2),
            segid=int(label),
            space="physical",
            extra_attributes=[RADIUS],
        )
    return out


def pack(skeletons: dict[int, Skeleton]) -> dict[str, np.ndarray]:
    """Skeletons as flat arrays for `put_arrays`: each label's vertices (and radii) and edges
    are rows ``offsets[k]:offsets[k + 1]``; edges index the label's own vertices."""
    labels = sorted(skeletons)
    parts = [skeletons[label] for label in labels]

    def stack(name: str, empty: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.concatenate([getattr(s, name) for s in parts] or [np.zeros(empty)]).astype(dtype)

    return {
        "labels": np.asarray(labels, np.uint64),
        "vertex_offsets": np.cumsum([0, *(len(s.vertices) for s in parts)], dtype=np.int64),
        "edge_offsets": np.cumsum([0, *(len(s.edges) for s in parts)], dtype=np.int64),
        "vertices": stack("vertices", (0, 3), np.float32),
        "edges": stack("edges", (0, 2), np.uint32),
        "radii": stack("radius", (0,), np.float32),
    }


def unpack(arrays: dict[str, np.ndarray]) -> Iterator[tuple[int, Skeleton]]:
    """The (label, skeleton) pairs stored by `pack`."""
    vo, eo = arrays["vertex_offsets"], arrays["edge_offsets"]
    for k, label in enumerate(arrays["labels"]):
        skel = Skeleton(
            arrays["vertices"][vo[k] : vo[k + 1]],
            arrays["edges"][eo[k] : eo[k + 1]],
            radii=arrays["radii"][vo[k] : vo[k + 1]],
            segid=int(label),
            space="physical",
            extra_attributes=[RADIUS],
        )
        yield int(label), skel


def spanning_tree(skel: Skeleton) -> Skeleton:
    """`skel` with its loops broken: the edges of a minimum spanning forest (by edge length),
    so every vertex and every connection stays."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n, edges = len(skel.vertices), np.asarray(skel.edges, np.int64)
    if len(edges) < n:  # a forest has fewer edges than vertices; nothing to break
        return skel
    lengths = np.linalg.norm(skel.vertices[edges[:, 0]] - skel.vertices[edges[:, 1]], axis=1)
    graph = coo_matrix((lengths + 1e-6, (edges[:, 0], edges[:, 1])), shape=(n, n))
    tree = minimum_spanning_tree(graph).tocoo()
    out = skel.clone()
    out.edges = np.stack([tree.row, tree.col], axis=1).astype(np.uint32)
    return out


def merge_pieces(label: int, pieces: list[Skeleton], cleanup: Cleanup) -> Skeleton:
    """One skeleton of a segment from its chunks' pieces: equal border vertices unified, loops
    (pieces from several chunks can close one) broken by a spanning tree, then kimimaro's
    clean-up (components whose ends lie within each other's radii joined, ticks that chunk faces
    cause removed), then short stray components dropped. Vertices are only removed, never moved
    or added, so every vertex stays on a voxel of the segment. Single-vertex pieces (segments
    too small for TEASAR in their chunk) count only when no chunk has more of the segment."""
    lines = [p for p in pieces if len(p.edges)]
    if not lines:
        point = pieces[0].clone()
        point.id = label
        return point
    tree = spanning_tree(Skeleton.simple_merge(lines).consolidate())
    skel = kimimaro.postprocess(tree, dust_threshold=0, tick_threshold=cleanup.tick_threshold)
    parts = skel.components() if cleanup.min_cable > 0 else []
    if len(parts) > 1:
        lengths = [p.cable_length() for p in parts]
        longest = int(np.argmax(lengths))
        keep = [p for k, p in enumerate(parts) if k == longest or lengths[k] >= cleanup.min_cable]
        skel = Skeleton.simple_merge(keep).consolidate()
    skel.id = label
    return skel
