"""`morphology` on a real local Ray and file:// layers: the table is the same under two chunk
shapes and two shard counts, and its values match direct computations on the whole volume
(voxels and centroids exactly, surface areas and cable lengths within 5 %, intensity, texture,
synapses in and out from the connectome); bad input is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.measure import marching_cubes, mesh_surface_area
from synapse_data import random_synapses

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.morphology.table_reads import read_dataset
from petavox.tasks.skeleton.skeletons import Cleanup, Teasar, chunk_skeletons, merge_pieces
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration

SHAPE = (96, 96, 64)
RESOLUTION = (8, 8, 16)
SPREAD = np.uint64(2**33 + 7)  # segment k is k × SPREAD: large ids, as synapse_data's are
DUST = 20


def volumes() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic segments (ids k × SPREAD) and their EM image, x, y, z."""
    volume = generate(SyntheticParams(shape=SHAPE, seed=11))
    return volume.labels.astype(np.uint64) * SPREAD, volume.aligned_raw


def write_inputs(root: Path, seg: np.ndarray, image: np.ndarray) -> synapse_table.Table:
    """The stacks as .npy (z, y, x) and synapse tables between the volume's first segments."""
    np.save(root / "seg.npy", seg.transpose(2, 1, 0))
    np.save(root / "image.npy", image.transpose(2, 1, 0))
    folder = root / "synapses" / "chunks"
    folder.mkdir(parents=True)
    table = random_synapses(400, seed=1, segments=30)
    (folder / "0_0_0.parquet").write_bytes(synapse_table.to_parquet(table))
    return table


def ingest(name: str, **more) -> dict:
    return {
        "stage": "ingest",
        "input": f"{name}.npy",
        "output": name,
        "resolution": list(RESOLUTION),
        "storage_chunk": [16, 16, 16],
        **more,
    }


def config(root: Path, *stages: dict):
    stages = [
        {**s, "input": str(root / s["input"])} if s["stage"] == "ingest" else s for s in stages
    ]
    return parse_config({"output": f"file://{root}", "stages": stages})


@pytest.fixture(scope="module")
def measured(tmp_path_factory, ray_session):
    """The inputs, and the tables of two runs of the stage with other chunks and shards."""
    root = tmp_path_factory.mktemp("morphology")
    seg, image = volumes()
    synapses = write_inputs(root, seg, image)
    common = {"stage": "morphology", "input": "seg", "image": "image", "connectome": "synapses"}
    cfg = config(
        root,
        ingest("seg", layer_type="segmentation"),
        ingest("image"),
        {"stage": "skeletonize", "input": "seg", "dust_threshold": DUST},
        {"stage": "connectome", "input": "synapses", "shard_bits": 1},
        {**common, "chunk_shape": [48, 48, 32], "shard_bits": 1},
        {**common, "table_dir": "morphology_b", "chunk_shape": [32, 16, 16], "shard_bits": 3},
    )
    run(cfg, session=ray_session, progress=False)
    tables = [read_dataset(root / "seg" / d) for d in ("morphology", "morphology_b")]
    return seg, image, synapses, tables, root


def test_the_table_is_the_same_under_two_chunkings_and_shard_counts(measured):
    seg, _, _, (a, b), root = measured
    assert len(list((root / "seg" / "morphology").glob("segment_shard=*/part.parquet"))) == 2
    assert len(list((root / "seg" / "morphology_b").glob("segment_shard=*/part.parquet"))) == 8
    assert sorted(a) == sorted(b)
    assert not np.array_equal(a["segment_shard"], b["segment_shard"])  # other partitions
    for name in set(a) - {"segment_shard"}:
        assert np.array_equal(a[name], b[name], equal_nan=True), name
    ids = np.unique(seg)
    assert a["segment_id"].tolist() == ids[ids != 0].tolist()


def test_voxels_centroids_and_boxes_are_exact(measured):
    seg, _, _, (table, _), _ = measured
    res = np.asarray(RESOLUTION, np.float64)
    for row, sid in enumerate(table["segment_id"]):
        where = np.argwhere(seg == sid)
        assert table["voxels"][row] == len(where)
        assert table["volume_um3"][row] == pytest.approx(len(where) * res.prod() * 1e-9)
        centroid = (where.mean(axis=0) + 0.5) * res  # voxel centres
        got = [table[f"centroid_{a}"][row] for a in "xyz"]
        assert np.allclose(got, centroid, rtol=1e-12, atol=1e-9)
        assert [table[f"low_{a}"][row] for a in "xyz"] == where.min(axis=0).tolist()
        assert [table[f"high_{a}"][row] for a in "xyz"] == (where.max(axis=0) + 1).tolist()


def test_surface_and_cable_match_the_whole_volume_within_5_percent(measured):
    seg, _, _, (table, _), _ = measured
    largest = np.argsort(table["voxels"])[::-1][:8]
    pieces = chunk_skeletons(seg, (0, 0, 0), RESOLUTION, Teasar(dust_threshold=DUST))
    for row in largest:
        sid = table["segment_id"][row]
        mask = np.pad(seg == sid, 1).astype(np.float32)
        verts, faces, _, _ = marching_cubes(mask, 0.5, spacing=RESOLUTION)
        area = mesh_surface_area(verts, faces) * 1e-6
        assert table["surface_um2"][row] == pytest.approx(area, rel=0.05)
        # the whole volume's skeleton, cleaned up as skeletonize's merge cleans up every one
        cable = merge_pieces(int(sid), [pieces[int(sid)]], Cleanup()).cable_length()
        assert table["cable_nm"][row] == pytest.approx(cable, rel=0.05), int(sid)
        assert table["end_points"][row] >= 2 and table["max_radius_nm"][row] > 0


def test_intensity_texture_and_synapses_match_direct_counts(measured):
    seg, image, synapses, (table, _), _ = measured
    image = image.astype(np.int64)
    both = (synapses["pre_id"] != 0) & (synapses["post_id"] != 0)  # the connectome's edges
    for row, sid in enumerate(table["segment_id"][:25]):
        inside = seg == sid
        assert table["intensity_mean"][row] == pytest.approx(image[inside].mean(), rel=1e-12)
        assert table["intensity_std"][row] == pytest.approx(image[inside].std(), rel=1e-9)
        steps = [
            np.abs(np.diff(image, axis=a))[
                inside[(slice(None),) * a + (slice(1, None),)]
                & inside[(slice(None),) * a + (slice(0, -1),)]
            ]
            for a in (0, 1)
        ]
        texture = np.concatenate(steps)
        assert table["texture"][row] == pytest.approx(texture.mean(), rel=1e-12)
        assert table["synapses_out"][row] == (both & (synapses["pre_id"] == sid)).sum()
        assert table["synapses_in"][row] == (both & (synapses["post_id"] == sid)).sum()
    assert table["synapses_out"].sum() == (both & np.isin(synapses["pre_id"], seg)).sum()
    assert table["synapses_out"].sum() > 300


def test_bad_input_is_refused_before_any_work(tmp_path):
    seg, image = volumes()
    np.save(tmp_path / "seg.npy", seg.transpose(2, 1, 0))
    np.save(tmp_path / "image.npy", image.transpose(2, 1, 0))
    np.save(tmp_path / "small.npy", image[:64].transpose(2, 1, 0))
    np.save(tmp_path / "prob.npy", (image / 255).astype(np.float32).transpose(2, 1, 0))
    inputs = [
        ingest("seg", layer_type="segmentation"),
        ingest("image"),
        ingest("small"),
        ingest("prob"),
    ]
    measure = {"stage": "morphology", "input": "seg"}
    cases = [
        ({**measure, "image": "prob"}, LayerMismatchError, "integer intensities"),
        ({**measure, "image": "small"}, LayerMismatchError, "same bounds"),
        ({**measure, "image": "seg"}, LayerMismatchError, "one-channel image"),
        ({**measure, "input": "image"}, LayerMismatchError, "segmentation"),
        ({**measure, "connectome": "image"}, InputError, "holds no connectome"),
        ({**measure, "table_dir": "8_8_16"}, InputError, "is taken"),
        ({**measure, "table_dir": "../x"}, InputError, "plain folder name"),
    ]
    for stage, error, words in cases:
        with pytest.raises(error, match=words):
            plan_run(config(tmp_path, *inputs, stage))
    assert not (tmp_path / "seg").exists()


def test_new_skeletons_or_a_new_connectome_make_a_new_table(tmp_path):
    """The skeletons and the connectome are parts of other products: their writers enter the
    table's identity, so recomputing them recomputes the table (and leaving them out does not)."""
    seg, image = volumes()
    write_inputs(tmp_path, seg, image)

    def identities(dust: int, shards: int, **measure) -> list[str]:
        plans = plan_run(
            config(
                tmp_path,
                ingest("seg", layer_type="segmentation"),
                {"stage": "skeletonize", "input": "seg", "dust_threshold": dust},
                {"stage": "connectome", "input": "synapses", "shard_bits": shards},
                {"stage": "morphology", "input": "seg", **measure},
            )
        )
        return [p.identity for p in plans if p.stage.startswith("morphology")]

    both = {"connectome": "synapses"}
    first = identities(20, 1, **both)
    assert len(first) == 2 and first == identities(20, 1, **both)
    assert all(a != b for a, b in zip(first, identities(30, 1, **both)))  # new skeletons
    assert all(a != b for a, b in zip(first, identities(20, 2, **both)))  # new connectome
    alone = identities(20, 1, skeletons=False)
    assert alone == identities(30, 2, skeletons=False)
