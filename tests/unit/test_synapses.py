"""The synthetic synapses' ground truth and the classical detector's kernel: detection, the
owner rule under re-blocking, partner direction. Seeds 100-119 chose the detector's defaults
and its direction rule; these tests use other seeds."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.detection import DetectorParams, detect, linear_index, required_halo
from petavox.tasks.synthetic.generator import SyntheticParams, generate

SHAPE = (96, 96, 48)
ISO = (1.0, 1.0, 1.0)
RADIUS = 6.0  # voxels: the largest cleft radius is 5.5; synapses are >= 17.5 apart


@pytest.fixture(scope="module")
def volume():
    return generate(
        SyntheticParams(shape=SHAPE, seed=7, bold_synapses=True, n_synapses=10, cleft_labels=True)
    )


def test_generator_returns_direction_and_clefts(volume):
    table = volume.synapse_table
    assert len(table) == len(volume.synapses) >= 8
    np.testing.assert_array_equal(
        np.column_stack([table["x"], table["y"], table["z"]]), volume.synapses
    )
    labels = volume.labels
    for i, row in enumerate(table):
        centre = np.array([row["x"], row["y"], row["z"]])
        normal = np.array([row["nx"], row["ny"], row["nz"]])
        assert np.linalg.norm(normal) == pytest.approx(1.0)
        assert row["pre"] != row["post"] and row["pre"] > 0 and row["post"] > 0
        assert (volume.clefts == i + 1).sum() > 5  # the cleft voxels, on membrane
        assert np.all(labels[volume.clefts == i + 1] == 0)
        ahead = np.clip(np.rint(centre + 3 * normal), 0, np.array(SHAPE) - 1).astype(int)
        assert labels[tuple(ahead)] != row["post"]  # the normal points to the pre side


def _whole(volume) -> dict[str, np.ndarray]:
    box = Box((0, 0, 0), SHAPE)
    return detect(volume.raw, volume.labels, box, box, box, ISO, DetectorParams())


def test_detects_clefts_with_partners(volume):
    found = _whole(volume)
    det = np.column_stack([found["x"], found["y"], found["z"]])  # nm == voxels here
    dist = np.linalg.norm(det[:, None] - volume.synapses[None], axis=-1)
    matched = dist.min(axis=1) <= RADIUS
    assert matched.mean() >= 0.8 and (dist.min(axis=0) <= RADIUS).mean() >= 0.8
    assert np.all((found["confidence"] > 0) & (found["confidence"] <= 1))
    nearest = dist.argmin(axis=1)[matched]
    pre = volume.synapse_table["pre"][nearest]
    post = volume.synapse_table["post"][nearest]
    right = (found["pre_id"][matched] == pre) & (found["post_id"][matched] == post)
    assert right.mean() >= 0.75
    # the line annotation runs from the pre side through the centroid to the post side
    for k in np.flatnonzero(matched):
        a = np.array([found["pre_x"][k], found["pre_y"][k], found["pre_z"][k]])
        b = np.array([found["post_x"][k], found["post_y"][k], found["post_z"][k]])
        c = np.array([found["x"][k], found["y"][k], found["z"][k]])
        assert np.dot(a - c, b - c) < 0


def test_no_data_is_not_dark_cytoplasm(volume):
    """An aligned stack is black (0) where a section moved out of view, while its labels (or
    the segmentation) may go on there: the detector takes 0 for no data, not for a dark
    synapse, so the margin adds nothing and the rest keeps its synapses."""
    raw = volume.raw.copy()
    raw[:, :, 20:30][:12] = 0  # sections 20-29 shifted by 12 voxels along x
    raw[:, :, 20:30][:, -9:] = 0  # ...and 9 along y
    box = Box((0, 0, 0), SHAPE)
    found = detect(raw, volume.labels, box, box, box, ISO, DetectorParams())
    det = np.column_stack([found["x"], found["y"], found["z"]])
    dist = np.linalg.norm(det[:, None] - volume.synapses[None], axis=-1)
    assert len(det) > 0 and (dist.min(axis=1) <= RADIUS).all()  # no false detections
    whole = _whole(volume)
    away = (whole["x"] > 20) & (whole["y"] < SHAPE[1] - 17)  # clear of the margins
    assert np.isin(whole["synapse_id"][away], found["synapse_id"]).all()


def test_same_synapses_whatever_the_blocks(volume):
    params = DetectorParams()
    halo = required_halo(params, ISO)
    whole = _whole(volume)
    for chunk_shape in ((32, 32, 16), (48, 40, 24)):
        grid = ChunkGrid(Box((0, 0, 0), SHAPE), chunk_shape, halo)
        parts = []
        for chunk in grid:
            sl = chunk.read_box.slices()
            parts.append(
                detect(
                    volume.raw[sl],
                    volume.labels[sl],
                    chunk.read_box,
                    chunk.write_box,
                    grid.bounds,
                    ISO,
                    params,
                )
            )
        blocks = synapse_table.concat(parts)
        mine, theirs = np.argsort(blocks["synapse_id"]), np.argsort(whole["synapse_id"])
        assert len(blocks["synapse_id"]) == len(whole["synapse_id"]) > 0
        for name in synapse_table.COLUMNS:
            np.testing.assert_array_equal(blocks[name][mine], whole[name][theirs], err_msg=name)


def test_owner_is_the_lowest_voxel_in_zyx_order():
    volume = Box((10, 20, 30), (20, 40, 60))
    voxels = np.array([[19, 20, 30], [10, 21, 30], [10, 20, 31]])
    keys = linear_index(voxels, volume)
    assert list(np.argsort(keys)) == [0, 1, 2]
    assert keys[0] == 9
