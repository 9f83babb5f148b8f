"""Read the skeletons of some segment ids from a segmentation layer's skeleton folder, sharded or
not, through cloud-volume (the reader Neuroglancer's other tools use); ids without a skeleton
(segments under `skeletonize`'s dust threshold) are left out rather than refused."""

from __future__ import annotations

from collections.abc import Iterable

from cloudvolume import Skeleton

from petavox.tasks.core.layers import Layer


def read_skeletons(layer: Layer, ids: Iterable[int]) -> dict[int, Skeleton]:
    """The skeleton of each of `ids` that has one, by id (vertices in nm)."""
    ids = sorted({int(i) for i in ids})
    if not ids or "skeletons" not in layer.info:
        return {}
    layer.context.apply()
    from cloudvolume import CloudVolume  # heavy import, only where I/O happens

    volume = CloudVolume(
        layer.url, info=layer.info, provenance={}, progress=False, parallel=1, cache=False
    )
    source = volume.skeleton
    if not source.meta.is_sharded():
        return {int(s.id): s for s in source.get(ids, allow_missing=True)}
    found = source.reader.get_data(ids, source.meta.skeleton_path, progress=False)
    attributes = source.meta.info["vertex_attributes"]
    out = {}
    for sid, data in found.items():
        if data is not None:
            skeleton = Skeleton.from_precomputed(data, segid=sid, vertex_attributes=attributes)
            skeleton.transform = source.meta.transform
            out[int(sid)] = skeleton.physical_space()
    return out
