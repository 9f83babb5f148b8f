"""Surface meshes of a labelled chunk: marching cubes + simplification (zmesh), per segment.

zmesh's simplifier never moves a vertex on the mesh's open border, and a chunk read with one
extra voxel on its high faces puts those borders on planes that the neighbouring chunk meshes
identically. So the fragments of one segment from neighbouring chunks meet vertex for vertex,
and their union is watertight. On the volume's own faces the chunk is padded with background,
so meshes close there (as igneous's `closed_dataset_edges`): a border left open would also be
left unsimplified, with about 2.6× the triangles on a 256×256×64 volume.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import zmesh

from petavox.tasks.core.geometry import Box

VOXEL_STEPS = 1024  # voxel_meshes' vertex grid, per voxel


@dataclass(frozen=True, kw_only=True)
class Simplification:
    reduction_factor: int = 100  # aim for this many times fewer triangles (0: no simplification)
    max_error: float = 40.0  # nm a simplified vertex may move (igneous's default)


def rows(array: np.ndarray) -> np.ndarray:
    """Each row of a 2-D array as one opaque value (np.unique(axis=0) is slow)."""
    a = np.ascontiguousarray(array)
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def without_twins(faces: np.ndarray) -> np.ndarray:
    """`faces` less twin triangles (the same three vertices, back to back: a flat fold zmesh's
    simplifier can leave). Both go: the surface stays closed, and a reader's clean-up (or
    Draco) would keep one of them and open a hole."""
    _, twins, counts = np.unique(
        rows(np.sort(faces, axis=1)), return_inverse=True, return_counts=True
    )
    return faces[counts[twins.reshape(-1)] == 1]


def local_meshes(
    labels: np.ndarray, resolution: tuple[float, float, float], params: Simplification
) -> Iterator[tuple[int, zmesh.Mesh]]:
    """(segment id, mesh in nm from voxel 0 of `labels` (x, y, z)); segment 0 is background."""
    mesher = zmesh.Mesher(resolution)
    mesher.mesh(np.asfortranarray(labels))
    for label in mesher.ids():
        if label == 0:
            continue
        # voxel_centered: voxel i spans [i, i + 1) as in Neuroglancer, so surfaces lie on voxel
        # faces and meshes overlay the segmentation exactly
        mesh = mesher.get(
            label,
            normals=False,
            reduction_factor=params.reduction_factor,
            max_error=params.max_error,
            voxel_centered=True,
        )
        mesh.faces = without_twins(mesh.faces)
        yield int(label), mesh
    mesher.clear()


def chunk_meshes(
    labels: np.ndarray,
    start: tuple[int, int, int],
    resolution: tuple[float, float, float],
    params: Simplification,
) -> dict[int, zmesh.Mesh]:
    """{segment id: mesh in nm} of `labels` (x, y, z), whose voxel 0 sits at voxel `start` of
    the volume. Segment 0 is background."""
    offset = np.asarray(start, np.float64) * np.asarray(resolution, np.float64)
    meshes = {}
    for label, mesh in local_meshes(labels, resolution, params):
        mesh.vertices = (mesh.vertices + offset).astype(np.float32)
        meshes[label] = mesh
    return meshes


def voxel_meshes(
    labels: np.ndarray,
    start: tuple[int, int, int],
    resolution: tuple[float, float, float],
    params: Simplification,
) -> dict[int, zmesh.Mesh]:
    """As `chunk_meshes`, in voxels of the volume, snapped to 1/`VOXEL_STEPS` of a voxel. The
    vertices the simplifier keeps on a chunk's faces lie on half voxels, so a neighbouring
    chunk's mesh has them bit for bit, whatever the resolution and however far from voxel 0."""
    scale = np.asarray(resolution, np.float64)
    meshes = {}
    for label, mesh in local_meshes(labels, resolution, params):
        vertices = np.rint((mesh.vertices / scale + start) * VOXEL_STEPS) / VOXEL_STEPS
        mesh.vertices = vertices.astype(np.float32)
        meshes[label] = mesh
    return meshes


def close_at_volume_faces(
    labels: np.ndarray, box: Box, volume: Box
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """`labels` read at `box`, padded with one voxel of background on each face that is a face
    of `volume`; and the volume voxel where the padded array starts."""
    low = [int(box.start[a] == volume.start[a]) for a in range(3)]
    high = [int(box.stop[a] == volume.stop[a]) for a in range(3)]
    padded = np.pad(labels, list(zip(low, high)))
    return padded, (box.start[0] - low[0], box.start[1] - low[1], box.start[2] - low[2])


def open_edges(mesh: zmesh.Mesh) -> np.ndarray:
    """(k, 2) vertex pairs of the edges not shared by exactly two triangles."""
    faces = np.asarray(mesh.faces, np.int64)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    keys = edges[:, 0] * (int(edges.max(initial=0)) + 1) + edges[:, 1]  # np.unique(axis=0) is slow
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return edges[first[counts != 2]]
