"""Synthetic volumes' clefts as the detectors' inputs: perfect probability channels (from the
generator's cleft labels and partners) and segmentations with the pipeline's kinds of error."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.tasks.evaluate.synapse_scores import score_synapses
from petavox.tasks.ml.examples import SYNAPSE_BITS
from petavox.tasks.ml.synapse_targets import volume_flags
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.cleft_channel import CleftParams, detect_clefts, required_halo
from petavox.tasks.synthetic.generator import SyntheticParams, generate


def filled(labels: np.ndarray) -> np.ndarray:
    """The labels grown into every 0 voxel by the nearest label: a segmentation that fills the
    membranes, as the pipeline's does."""
    index = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[tuple(index)]


def perfect(volume) -> np.ndarray:
    return np.where(volume.clefts > 0, 255, 0).astype(np.uint8)


def perfect_sides(volume) -> np.ndarray:
    """A perfect "synapses" model's output (x, y, z, 3) uint8: cleft, presynaptic side and
    postsynaptic side (`volume_flags`) as 255."""
    flags = volume_flags(volume)
    return np.stack([np.where(flags & bit, 255, 0) for bit in SYNAPSE_BITS], -1).astype(np.uint8)


def split_behind_clefts(seg: np.ndarray, volume, depth: float) -> np.ndarray:
    """`seg` with every synapse's postsynaptic object cut in two by a plane parallel to its
    cleft, `depth` voxels behind the cleft centre: the part beyond the plane gets a new id (a
    split error of the segmentation right next to the synapse)."""
    seg = seg.copy()
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in seg.shape), indexing="ij"), axis=-1)
    fresh = int(seg.max()) + 1
    for row in volume.synapse_table:
        centre = np.array([row["x"], row["y"], row["z"]])
        normal = np.array([row["nx"], row["ny"], row["nz"]])  # towards the presynaptic side
        beyond = (grid - centre) @ -normal > depth
        cut = (seg == row["post"]) & beyond
        seg[cut] = fresh
        fresh += 1
    return seg


def blockwise(prob, raw, seg, chunk_shape, params: CleftParams, res) -> synapse_table.Table:
    """The cleft-channel detector over the chunks of `chunk_shape` (halo: `required_halo`),
    each seeing its read box only; the chunks' tables concatenated."""
    grid = ChunkGrid(Box((0, 0, 0), seg.shape), chunk_shape, required_halo(params, res))
    parts = []
    for chunk in grid:
        sl = chunk.read_box.slices()
        block = (prob[sl], raw[sl], seg[sl], chunk.read_box, chunk.write_box)
        parts.append(detect_clefts(*block, grid.bounds, res, params))
    return synapse_table.concat(parts)


def assert_same_whatever_the_blocks(prob, raw, seg, res) -> None:
    """The synapse table over the whole volume equals the chunks' (two chunk shapes, partial
    chunks on every axis), row for row by synapse id."""
    params = CleftParams()
    box = Box((0, 0, 0), seg.shape)
    reference = detect_clefts(prob, raw, seg, box, box, box, res, params)
    for chunk_shape in ((64, 48, 32), (40, 128, 24)):
        blocks = blockwise(prob, raw, seg, chunk_shape, params, res)
        mine, theirs = np.argsort(blocks["synapse_id"]), np.argsort(reference["synapse_id"])
        assert len(mine) == len(theirs) > 5
        for name in synapse_table.COLUMNS:
            np.testing.assert_array_equal(blocks[name][mine], reference[name][theirs], err_msg=name)


def counts(found: synapse_table.Table, volume, seg: np.ndarray, res) -> np.ndarray:
    """(detected, true, matched, right direction) of `found` on `seg` against the volume's
    synapses: sums over volumes give pooled precision, recall and direction."""
    truth = volume.synapse_table
    s = score_synapses(found, volume.clefts, volume.labels, seg, truth["pre"], truth["post"], res)
    return np.array([s.detected, s.true, s.matched, s.right_direction])


def bold(seeds, shape=(128, 128, 64)) -> list:
    """The generator's volumes of `seeds` with EM-like synapses and their cleft labels."""
    return [
        generate(SyntheticParams(shape=shape, seed=s, bold_synapses=True, cleft_labels=True))
        for s in seeds
    ]
