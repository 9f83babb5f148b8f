"""`skeletonize` on a real local Ray and file:// layers, read back by cloud-volume: every segment
gets a skeleton, a tube through all 8 octants gets one connected skeleton under two chunkings,
sharded and unsharded, and bad input is refused before anything is written."""

from __future__ import annotations

import itertools

import cc3d
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.tasks.skeleton.skeletons import Teasar, chunk_skeletons
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration

SHAPE = (96, 96, 64)
VOLUME = Box((0, 0, 0), SHAPE)
RESOLUTION = (8, 8, 16)
DUST = 20  # voxels: the synthetic volume's smallest objects have 20
TUBE = 2**40 + 1
TUBE_RADIUS = 40.0  # nm: 5 voxels in x, y and 2.5 in z
# the centres of the 8 octants (the tasks of the 48×48×32 chunking), each next to the last
TUBE_PATH = [
    (24, 24, 16),
    (72, 24, 16),
    (72, 72, 16),
    (24, 72, 16),
    (24, 72, 48),
    (72, 72, 48),
    (72, 24, 48),
    (24, 24, 48),
]


def labelled_volume() -> np.ndarray:
    """Synthetic neurites, and the tube drawn over them."""
    labels = generate(SyntheticParams(shape=SHAPE, seed=3)).labels.astype(np.uint64)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1)
    nm = (grid + 0.5) * RESOLUTION
    points = (np.asarray(TUBE_PATH) + 0.5) * RESOLUTION
    inside = np.zeros(SHAPE, bool)
    for a, b in itertools.pairwise(points):
        t = np.clip(((nm - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        inside |= np.linalg.norm(nm - (a + t[..., None] * (b - a)), axis=-1) <= TUBE_RADIUS
    labels[inside] = TUBE
    return labels


def skeletonize_config(out, labels: np.ndarray, **stage):
    np.save(out / "labels.npy", labels.transpose(2, 1, 0))
    stages = [
        {
            "stage": "ingest",
            "input": str(out / "labels.npy"),
            "output": "seg",
            "layer_type": "segmentation",
            "resolution": list(RESOLUTION),
            "storage_chunk": [16, 16, 16],
        },
        {"stage": "skeletonize", "input": "seg", "dust_threshold": DUST, **stage},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


def expected_ids(labels: np.ndarray, chunk_shape) -> set[int]:
    """Segments with a 26-connected piece of more than DUST voxels in some task's read box
    (its write box and one voxel more on the high faces): what kimimaro skeletonizes."""
    found: set[int] = set()
    for chunk in ChunkGrid(VOLUME, chunk_shape):
        box = Box(chunk.write_box.start, chunk.write_box.stop + 1).intersection(VOLUME)
        piece = labels[box.slices()]
        cc = cc3d.connected_components(piece, connectivity=26)
        ids, counts = np.unique(cc, return_counts=True)
        big = ids[(counts > DUST) & (ids != 0)]
        found |= {int(v) for v in np.unique(piece[np.isin(cc, big)])}
    return found


def components(skel) -> int:
    n, e = len(skel.vertices), skel.edges
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[0]


@pytest.mark.parametrize("chunk_shape, sharded", [((48, 48, 32), False), ((32, 32, 32), True)])
def test_every_segment_gets_a_skeleton_and_the_tube_one_connected(
    tmp_path, ray_session, chunk_shape, sharded
):
    from cloudvolume import CloudVolume

    labels = labelled_volume()
    config = skeletonize_config(
        tmp_path, labels, chunk_shape=list(chunk_shape), sharded=sharded, shard_bits=2
    )
    run(config, session=ray_session, progress=False)
    cv = CloudVolume(f"file://{tmp_path}/seg")
    assert cv.info["skeletons"] == "skeletons"
    assert ("sharding" in cv.skeleton.meta.info) == sharded
    ids = set(int(i) for i in np.unique(labels)) - {0}
    expected = expected_ids(labels, chunk_shape)
    assert TUBE in expected and len(expected) >= 0.9 * len(ids)
    resolution = np.asarray(RESOLUTION)
    for label in sorted(expected):
        skel = cv.skeleton.get(label)
        assert len(skel.edges) > 0, f"segment {label} has no skeleton"
        voxels = np.floor(skel.vertices / resolution).astype(int)
        assert (labels[tuple(voxels.T)] == label).all(), f"segment {label}: vertex outside it"
        assert (skel.radius > 0).all()
    # the tube: its pieces came from all 8 octants' tasks, and make one connected skeleton
    tube = cv.skeleton.get(TUBE)
    assert components(tube) == 1
    where = np.argwhere(labels == TUBE)
    lo, hi = where.min(axis=0) * resolution, (where.max(axis=0) + 1) * resolution
    assert (tube.vertices.min(axis=0) >= lo).all() and (tube.vertices.max(axis=0) <= hi).all()
    reach = TUBE_RADIUS + resolution  # the ends lie within the tube's radius of its bounds
    assert (tube.vertices.min(axis=0) <= lo + reach).all()
    assert (tube.vertices.max(axis=0) >= hi - reach).all()
    centreline = np.linalg.norm(np.diff(np.asarray(TUBE_PATH) * resolution, axis=0), axis=1).sum()
    assert 0.95 * centreline <= tube.cable_length() <= 1.15 * centreline
    # as long as the skeleton of the whole volume in one piece
    whole = chunk_skeletons(labels, (0, 0, 0), RESOLUTION, Teasar(dust_threshold=DUST))[TUBE]
    assert tube.cable_length() == pytest.approx(whole.cable_length(), rel=0.05)
    fragments = tmp_path.glob("intermediate/skeletonize/*/*/*.npz")  # {bucket}/{chunk}.npz
    tube_chunks = {p.stem for p in fragments if TUBE in np.load(p)["labels"]}
    assert len(tube_chunks) >= 8


def test_skeletonize_refuses_bad_input_before_any_work(tmp_path):
    np.save(tmp_path / "raw.npy", np.zeros((16, 32, 32), np.uint8))
    np.save(tmp_path / "seg.npy", np.ones((16, 32, 32), np.uint32))
    ingest = [
        {
            "stage": "ingest",
            "input": str(tmp_path / "raw.npy"),
            "output": "raw",
            "resolution": [8, 8, 8],
        },
        {
            "stage": "ingest",
            "input": str(tmp_path / "seg.npy"),
            "output": "seg",
            "layer_type": "segmentation",
            "resolution": [8, 8, 8],
        },
    ]
    cases = [
        ({"input": "raw"}, LayerMismatchError, "not a one-channel segmentation layer"),
        ({"input": "seg", "skeleton_dir": "a/b"}, InputError, "plain folder name"),
        ({"input": "seg", "skeleton_dir": "8_8_8"}, InputError, "is taken"),
        ({"input": "seg", "chunk_shape": [40, 32, 16]}, InputError, "multiple of"),
    ]
    for stage, error, message in cases:
        config = {
            "output": f"file://{tmp_path}",
            "stages": [*ingest, {"stage": "skeletonize", **stage}],
        }
        with pytest.raises(error, match=message):
            plan_run(parse_config(config))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.npy", "seg.npy"]
