"""The `mesh` stage's tasks: fragments per chunk, then one manifest per segment (legacy format).

Neuroglancer's legacy precomputed meshes are files in the segmentation layer's mesh folder:
``{id}:0:{box}`` fragments (one per chunk the segment touches) and a ``{id}:0`` manifest
listing them. Manifest tasks each own a range of ids by decimal prefix and find their
fragments by a prefix listing, so no machine ever gathers more than its own ids' names.
"""

from __future__ import annotations

from dataclasses import dataclass

from petavox.tasks.geometry import Box, Chunk
from petavox.tasks.layers import Layer
from petavox.tasks.meshing import Simplification, chunk_meshes, close_at_volume_faces
from petavox.tasks.objects import list_keys, put, put_json
from petavox.tasks.storage import StorageContext

LEGACY_INFO = {"@type": "neuroglancer_legacy_mesh"}


def fragment_name(label: int, box: Box) -> str:
    """igneous's naming: ``{id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` (the chunk's voxel box)."""
    ranges = "_".join(f"{a}-{b}" for a, b in zip(box.start, box.stop))
    return f"{label}:0:{ranges}"


def id_prefixes(digits: int) -> list[str]:
    """Prefixes that split all ids into disjoint groups: ids shorter than `digits` whole (with
    the ``:`` after them), longer ones by their first `digits` digits."""
    short = [f"{n}:" for n in range(1, 10 ** (digits - 1))]
    return short + [str(n) for n in range(10 ** (digits - 1), 10**digits)]


@dataclass(frozen=True)
class MeshForgeJob:
    """Mesh one chunk (read with one more voxel on its high faces, closed on the volume's
    faces) and write its fragments."""

    source: Layer
    mesh_url: str
    params: Simplification
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        volume = self.source.bounds(0)
        read = Box(box.start, box.stop + 1).intersection(volume)
        labels, start = close_at_volume_faces(
            self.source.read(read, fill_missing=self.fill_missing), read, volume
        )
        meshes = chunk_meshes(labels, start, self.source.resolution(0), self.params)
        context = self.source.context
        for label, mesh in meshes.items():
            put(self.mesh_url, fragment_name(label, box), mesh.to_precomputed(), context)
        return {"fragments": len(meshes)}


@dataclass(frozen=True)
class ManifestJob:
    """Chunk k of an `index_grid` writes the manifests of the ids that start with prefix k."""

    mesh_url: str
    prefixes: tuple[str, ...]
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        prefix = self.prefixes[chunk.write_box.start[0]]
        fragments: dict[str, list[str]] = {}
        for key in list_keys(self.mesh_url, prefix, self.context):
            parts = key.split(":")
            if len(parts) == 3:  # a fragment; ``{id}:0`` manifests have two parts
                fragments.setdefault(parts[0], []).append(key)
        for label, names in fragments.items():
            put_json(self.mesh_url, f"{label}:0", {"fragments": sorted(names)}, self.context)
        return {"segments": len(fragments)}
