"""Neuroglancer's multi-resolution mesh format (``neuroglancer_multilod_draco``), sharded.

A segment's mesh is stored as levels of detail, LOD 0 the finest, each cut into the nodes of an
octree: LOD k's nodes are boxes of ``chunk_shape * 2**k`` voxels from the segment's
``grid_origin``. Each node's piece of the mesh is a Draco mesh whose integer positions
``[0, 2**bits)`` span the node's box. The manifest lists, per LOD, the node positions in
Z-curve order and the byte size of each node's piece (0: an empty node, kept so that every node
of a finer LOD has its parent). In a shard file a segment's pieces lie immediately before its
manifest, and the minishard index points at the manifest.

Vertices here are in voxels of the volume (the info's ``transform`` scales them to nm).
"""

from __future__ import annotations

from dataclasses import dataclass

import DracoPy
import numpy as np
import zmesh
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    synthesize_shard_files,
)

from petavox.tasks.mesh.surfaces import rows

LOD_REDUCTION = 4  # triangles per LOD: nodes double in size, so a pixel covers 4× the surface
DRACO_LEVEL = 5  # Draco compression level (0-10: smaller files, slower encoding)
ON_PLANE = 1e-5  # voxels: zmesh.chunk_mesh leaves a triangle whole if a vertex is this close


def mesh_info(resolution: tuple[float, float, float], bits: int, sharding: dict) -> dict:
    """The mesh folder's info: stored vertices are voxels, the transform scales them to nm."""
    rx, ry, rz = (float(r) for r in resolution)
    return {
        "@type": "neuroglancer_multilod_draco",
        "vertex_quantization_bits": bits,
        "transform": [rx, 0.0, 0.0, 0.0, 0.0, ry, 0.0, 0.0, 0.0, 0.0, rz, 0.0],
        "lod_scale_multiplier": 1.0,
        "sharding": sharding,
    }


def shard_file(
    sharding: dict, segments: dict[int, bytes], manifest_sizes: dict[int, int]
) -> tuple[str, bytes]:
    """(file name, bytes) of the one shard holding `segments` (id: pieces + manifest), each
    indexed at its manifest (its last `manifest_sizes[id]` bytes)."""
    spec = ShardingSpecification.from_dict(sharding)
    files = synthesize_shard_files(spec, segments, manifest_sizes)
    if len(files) != 1:
        raise ValueError(f"segments of {len(files)} shards given to one shard: {sorted(files)}")
    return next(iter(files.items()))


def weld(pieces: list[tuple[np.ndarray, np.ndarray]]) -> zmesh.Mesh:
    """One mesh from (vertices, faces) pieces whose shared vertices are bit-identical (each
    piece is already free of twin triangles, see `surfaces.without_twins`)."""
    vertices = np.concatenate([v for v, _ in pieces]).astype(np.float32) + np.float32(0)  # -0.0
    starts = np.cumsum([0] + [len(v) for v, _ in pieces[:-1]])
    faces = np.concatenate([f.astype(np.int64) + s for (_, f), s in zip(pieces, starts)])
    _, first, inverse = np.unique(rows(vertices), return_index=True, return_inverse=True)
    faces = inverse.reshape(-1)[faces]
    return zmesh.Mesh(vertices[first], faces.astype(np.uint32), None)


def levels_of_detail(
    mesh: zmesh.Mesh, lods: int, resolution: tuple[float, float, float]
) -> list[zmesh.Mesh]:
    """`mesh` then up to `lods - 1` coarser meshes, each simplified (in nm, so anisotropic
    voxels weigh right) to 1/`LOD_REDUCTION` of the previous one's triangles; stops early when
    simplification no longer removes triangles."""
    scale = np.asarray(resolution, np.float32)
    levels = [mesh]
    while len(levels) < lods:
        prev = levels[-1]
        target = max(len(prev.faces) // LOD_REDUCTION, 4)
        coarse = zmesh.simplify_fqmr(zmesh.Mesh(prev.vertices * scale, prev.faces, None), target)
        if len(coarse.faces) == 0 or len(coarse.faces) >= len(prev.faces):
            break
        levels.append(zmesh.Mesh(coarse.vertices / scale, coarse.faces, None))
    return levels


def zorder(positions: np.ndarray) -> np.ndarray:
    """Z-curve keys of (n, 3) non-negative node positions: bits interleaved, x lowest."""
    p = np.asarray(positions, np.uint64)
    keys = np.zeros(len(p), np.uint64)
    for bit in range(21):
        for axis in range(3):
            keys |= ((p[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(3 * bit + axis)
    return keys


def octree_pieces(
    mesh: zmesh.Mesh, node: np.ndarray, cut: np.ndarray
) -> dict[tuple[int, int, int], zmesh.Mesh]:
    """{node position: its piece} of `mesh` (vertices ≥ 0, from the octree origin) cut on the
    planes every `cut` voxels, each triangle in the `node`-sized box holding it."""
    parts = [
        p for p in zmesh.chunk_mesh(mesh, cut.tolist(), (0.0, 0.0, 0.0)).values() if len(p.faces)
    ]
    if not parts:
        return {}
    whole = zmesh.Mesh.concatenate(*parts)
    vertices, faces = whole.vertices, np.asarray(whole.faces, np.int64)
    # by centroid: zmesh.chunk_mesh files a triangle under the least flat index of its
    # vertices' cells, which is another cell when its vertices lie on two different faces
    cells = np.floor(vertices[faces].mean(axis=1) / node).astype(np.int64).clip(0)
    keys = zorder(cells)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    pieces = {}
    for group in np.split(order, bounds):
        used, local = np.unique(faces[group], return_inverse=True)
        pieces[tuple(int(c) for c in cells[group[0]])] = zmesh.Mesh(
            vertices[used], local.reshape(-1, 3).astype(np.uint32), None
        )
    return pieces


def quantize(
    vertices: np.ndarray, corner: np.ndarray, size: np.ndarray, bits: int, split: bool
) -> np.ndarray:
    """Integer positions [0, 2**bits) of `vertices` in the node box at `corner` of `size`. With
    `split` (LOD > 0), vertices on the box's mid-planes (within `ON_PLANE`, where the cut left
    them) go exactly to Neuroglancer's split value 2**(bits-1), which it counts in both halves
    when it sorts triangles into child octants."""
    top = 2**bits - 1
    offset = np.asarray(vertices, np.float64) - corner
    q = np.clip(np.rint(offset / size * top), 0, top)
    if split:
        q[np.abs(offset - size / 2) < ON_PLANE] = 2 ** (bits - 1)
    return q.astype(np.float32)


def draco(positions: np.ndarray, faces: np.ndarray, bits: int) -> bytes:
    """A Draco mesh whose stored integers are exactly `positions`: Neuroglancer reads Draco's
    quantized values as they are, so quantization is set to the identity (origin 0, range
    2**bits - 1) rather than to the fragment's bounding box."""
    return DracoPy.encode(
        positions,
        faces,
        quantization_bits=bits,
        quantization_range=float(2**bits - 1),
        quantization_origin=[0.0, 0.0, 0.0],
        compression_level=DRACO_LEVEL,
    )


@dataclass(frozen=True)
class Octree:
    """LOD 0 nodes of `node_shape` voxels on a grid through `anchor` (shared by all segments,
    so LOD 0 nodes can coincide with the chunks the meshes were made in)."""

    anchor: tuple[float, float, float]
    node_shape: tuple[int, int, int]

    def origin_below(self, low: np.ndarray) -> np.ndarray:
        """The grid corner at or below `low` (a segment's octree origin)."""
        anchor, node = np.asarray(self.anchor), np.asarray(self.node_shape)
        return anchor + node * np.floor((low - anchor) / node)


def manifest_bytes(
    chunk_shape: np.ndarray,
    grid_origin: np.ndarray,
    positions: list[np.ndarray],
    sizes: list[list[int]],
) -> bytes:
    """The binary manifest: LOD scales 2**k, no vertex offsets, positions as [3, n] per LOD."""
    lods = len(positions)
    parts = [
        np.asarray(chunk_shape, "<f4").tobytes(),
        np.asarray(grid_origin, "<f4").tobytes(),
        np.uint32(lods).astype("<u4").tobytes(),
        (2.0 ** np.arange(lods)).astype("<f4").tobytes(),
        np.zeros((lods, 3), "<f4").tobytes(),
        np.array([len(p) for p in positions], "<u4").tobytes(),
    ]
    for where, size in zip(positions, sizes):
        parts.append(np.ascontiguousarray(np.asarray(where, "<u4").T).tobytes())
        parts.append(np.asarray(size, "<u4").tobytes())
    return b"".join(parts)


def multires_mesh(
    mesh: zmesh.Mesh, octree: Octree, lods: int, bits: int, resolution: tuple[float, float, float]
) -> tuple[bytes, bytes]:
    """(the encoded pieces of all LODs in manifest order, the manifest) of a welded mesh."""
    levels = levels_of_detail(mesh, lods, resolution)
    origin = octree.origin_below(np.min([m.vertices.min(axis=0) for m in levels], axis=0))
    node0 = np.asarray(octree.node_shape, np.float64)
    data: list[bytes] = []
    positions: list[np.ndarray] = []
    sizes: list[list[int]] = []
    children = np.zeros((0, 3), np.int64)
    for lod, level in enumerate(levels):
        node = node0 * 2**lod
        local = zmesh.Mesh((level.vertices - origin).astype(np.float32), level.faces, None)
        pieces = octree_pieces(local, node, node / 2 if lod else node)
        # every node of the finer LOD needs its parent here (empty if it has no triangles)
        where = np.unique(
            np.concatenate([np.array(list(pieces), np.int64).reshape(-1, 3), children >> 1]), axis=0
        )
        where = where[np.argsort(zorder(where), kind="stable")]
        size = []
        for cell in where:
            piece = pieces.get((int(cell[0]), int(cell[1]), int(cell[2])))
            encoded = b""
            if piece is not None:
                q = quantize(piece.vertices, cell * node, node, bits, split=lod > 0)
                encoded = draco(q, piece.faces, bits)
            data.append(encoded)
            size.append(len(encoded))
        positions.append(where)
        sizes.append(size)
        children = where
    return b"".join(data), manifest_bytes(node0, origin, positions, sizes)
