"""One shard's rows of the morphology table: its segments' chunk parts merged (voxel statistics,
surface cells, texture pairs), then the features of their skeletons and their synapses joined.

Every column is there in every shard, in `COLUMNS` order; a value that cannot be known is NaN
(the intensity and texture without an image, the skeleton's features for a segment under the
skeletons' dust threshold or without skeletons, the synapses without a connectome).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petavox.tasks.morphology import surface_cells, voxel_stats
from petavox.tasks.morphology.skeleton_features import FEATURES, skeleton_features
from petavox.tasks.morphology.texture import sum_by_id

Table = dict[str, np.ndarray]
Triple = tuple[np.ndarray, np.ndarray, np.ndarray]

COLUMNS = (
    "segment_id",
    *voxel_stats.COLUMNS,
    "surface_um2",
    "texture",
    *FEATURES,
    "synapses_in",
    "synapses_out",
)


def shard_table(
    voxels: Sequence[voxel_stats.VoxelPart],
    cells: Sequence[Triple],
    texture: Sequence[Triple],
    resolution: Sequence[float],
    has_image: bool,
) -> Table:
    """The merged statistics of the segments in `voxels` (rows by id ascending); `cells` are
    `surface_cells.cell_counts` parts and `texture` `texture.pair_sums` parts."""
    table = voxel_stats.finish(voxel_stats.merge(voxels), resolution)
    ids = table["segment_id"]
    areas = surface_cells.surface_areas(surface_cells.merge_counts(cells), resolution)
    table["surface_um2"] = np.array([areas.get(i, 0.0) for i in ids.tolist()], np.float64) * 1e-6
    found, pairs, steps = sum_by_id(
        *(np.concatenate([p[k] for p in texture] or [[]]) for k in range(3))
    )
    table["texture"] = np.full(len(ids), np.nan)
    where = np.searchsorted(ids, found)
    table["texture"][where] = steps / np.maximum(pairs, 1)
    if not has_image:
        for name in ("intensity_mean", "intensity_std", "texture"):
            table[name] = np.full(len(ids), np.nan)
    return table


def add_skeletons(table: Table, skeletons: dict) -> None:
    """The skeleton features of each row's segment (NaN where `skeletons` has none)."""
    missing = dict.fromkeys(FEATURES, np.nan)
    rows = [
        skeleton_features(skeletons[i]) if i in skeletons else missing
        for i in table["segment_id"].tolist()
    ]
    for name in FEATURES:
        table[name] = np.array([r[name] for r in rows], np.float64)


def add_synapses(table: Table, synapses: tuple[np.ndarray, np.ndarray] | None) -> None:
    """Synapses in and out per row (`segment_synapses`'s columns), or NaN without a connectome."""
    n = len(table["segment_id"])
    found = synapses or (np.full(n, np.nan), np.full(n, np.nan))
    table["synapses_in"] = np.asarray(found[0], np.float64)
    table["synapses_out"] = np.asarray(found[1], np.float64)
