"""`synapses` on a real local Ray and file:// layers, on synthetic volumes with EM-like synapses
and their ground-truth segmentation: precision, recall and direction against the generator's
synapses, the same synapse set under two chunk shapes, then `connectome` on the tables; the
kernel alone on more seeds (4-15: no Ray, the whole volume as one block, the same table as any
chunking). Seeds 1-15 were not used to choose the detector's parameters or its direction rule
(seeds 100-119 were). Bad input is refused before anything is written. The same volumes with
the generator's true clefts as a perfect cleft probability layer (`clefts`): the channel
detector, through the stage, under both chunk shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synapse_data import reference_edges

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.synapse_scores import match_centres, score_synapses
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.detection import DetectorParams, detect
from petavox.tasks.synapse.outputs import read_chunk_tables
from petavox.tasks.synapse.table import columns_from_parquet
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration

SEEDS = (1, 2, 3)
MORE_SEEDS = tuple(range(4, 16))  # the kernel alone (about 0.7 s each)
SHAPE = (128, 128, 64)
RESOLUTION = (8, 8, 8)
CHUNKS = {"a": [64, 64, 32], "b": [96, 32, 48]}  # partial chunks on every axis for b
RADIUS = 6.0  # voxels: a detection within this of a true centre can match it
VOLUMES: dict = {}  # seed -> the generated volume (with its cleft labels), filled by `runs`


def ingest(out: Path, name: str, array: np.ndarray, **extra) -> dict:
    np.save(out / f"{name}.npy", array.transpose(2, 1, 0))
    return {
        "stage": "ingest",
        "input": str(out / f"{name}.npy"),
        "output": name,
        "resolution": list(RESOLUTION),
        "storage_chunk": [32, 32, 16],
        **extra,
    }


def read_tables(folder: Path) -> synapse_table.Table:
    return read_chunk_tables(f"file://{folder}", StorageContext())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_session):
    """Each seed's volume through `synapses` with both chunk shapes, and `connectome` on one."""
    out = tmp_path_factory.mktemp("synapses")
    truth, stages = {}, []
    for seed in SEEDS:
        params = SyntheticParams(shape=SHAPE, seed=seed, bold_synapses=True, cleft_labels=True)
        volume = generate(params)  # cleft_labels changes nothing else
        truth[seed] = volume.synapse_table
        VOLUMES[seed] = volume
        stages += [
            ingest(out, f"raw{seed}", volume.raw),
            ingest(out, f"seg{seed}", volume.labels, layer_type="segmentation"),
            ingest(out, f"clefts{seed}", np.where(volume.clefts > 0, 255, 0).astype(np.uint8)),
        ]
        stages += [
            {
                "stage": "synapses",
                "input": f"raw{seed}",
                "segmentation": f"seg{seed}",
                "output": f"syn{seed}{k}",
                "chunk_shape": shape,
            }
            for k, shape in CHUNKS.items()
        ]
        stages += [
            {
                "stage": "synapses",
                "input": f"raw{seed}",
                "segmentation": f"seg{seed}",
                "clefts": f"clefts{seed}",
                "output": f"channel{seed}{k}",
                "chunk_shape": shape,
            }
            for k, shape in CHUNKS.items()
        ]
    stages.append(
        {
            "stage": "connectome",
            "input": f"syn{SEEDS[0]}a",
            "segmentation": f"seg{SEEDS[0]}",
            "shard_bits": 1,
            "readers": 2,
        }
    )
    run(
        parse_config({"output": f"file://{out}", "stages": stages}),
        session=ray_session,
        progress=False,
    )
    return out, truth


def match(found: synapse_table.Table, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detections to true centres within RADIUS voxels (closest
    overall): the matched rows of each."""
    det = np.column_stack([found[a] for a in "xyz"]) / RESOLUTION
    return match_centres(det, np.column_stack([truth[a] for a in "xyz"]), RADIUS)


class Tally:
    """Detections, true synapses, matches, and matches with pre and post right or swapped,
    summed over volumes."""

    def __init__(self) -> None:
        self.found = self.true = self.matched = self.right = self.swapped = 0

    def add(self, table: synapse_table.Table, truth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Count one volume's table against its truth; the matched rows of each."""
        rows, cols = match(table, truth)
        self.found, self.true = self.found + len(table["x"]), self.true + len(truth)
        self.matched += len(rows)
        pre, post = truth["pre"][cols], truth["post"][cols]
        got_pre, got_post = table["pre_id"][rows], table["post_id"][rows]
        self.right += int(np.sum((got_pre == pre) & (got_post == post)))
        self.swapped += int(np.sum((got_pre == post) & (got_post == pre)))
        return rows, cols

    def check(self, fewest_true: int) -> None:
        """At least `fewest_true` synapses; precision, recall and direction ≥ 0.9."""
        found, true, matched = self.found, self.true, self.matched
        assert true >= fewest_true and matched / found >= 0.9 and matched / true >= 0.9, (
            found,
            true,
            matched,
        )
        assert self.right / matched >= 0.9, (self.right, self.swapped, matched)


def test_precision_recall_and_direction_on_held_out_seeds(runs):
    out, truth = runs
    tally = Tally()
    for seed in SEEDS:
        table = read_tables(out / f"syn{seed}a")
        tally.add(table, truth[seed])
        assert np.all((table["confidence"] > 0) & (table["confidence"] <= 1))
        assert np.all(table["size"] > 0)
    tally.check(fewest_true=36)


def test_precision_recall_and_direction_of_the_kernel_on_more_seeds():
    box, cosines, tally = Box((0, 0, 0), SHAPE), [], Tally()
    for seed in MORE_SEEDS:
        volume = generate(SyntheticParams(shape=SHAPE, seed=seed, bold_synapses=True))
        table = detect(volume.raw, volume.labels, box, box, box, RESOLUTION, DetectorParams())
        truth = volume.synapse_table
        rows, cols = tally.add(table, truth)
        # the annotation line runs from the post side to the pre side across the cleft
        line = np.column_stack([table[f"pre_{a}"] - table[f"post_{a}"] for a in "xyz"])[rows]
        normal = np.column_stack([truth[f"n{a}"] for a in "xyz"])[cols]
        cosines += list(np.sum(line * normal, axis=1) / np.linalg.norm(line, axis=1))
    tally.check(fewest_true=120)
    assert np.mean(np.array(cosines) >= 0.7) >= 0.9  # within 45°


def test_the_same_synapses_under_two_chunk_shapes(runs):
    out, _ = runs
    for seed in SEEDS:
        a, b = read_tables(out / f"syn{seed}a"), read_tables(out / f"syn{seed}b")
        assert len(a["synapse_id"]) > 5
        for name in synapse_table.COLUMNS:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        # a table per chunk, empty ones included: (128/64)²·(64/32) and 2·4·2 chunks
        assert len(list((out / f"syn{seed}a" / "chunks").glob("*.parquet"))) == 8
        assert len(list((out / f"syn{seed}b" / "chunks").glob("*.parquet"))) == 16


def test_the_connectome_of_the_tables(runs):
    out, _ = runs
    folder = out / f"syn{SEEDS[0]}a"
    table = read_tables(folder)
    edges = {}
    for path in folder.glob("edges/*.parquet"):
        e = columns_from_parquet(path.read_bytes())
        for pre, post, n, size in zip(e["pre_id"], e["post_id"], e["synapses"], e["total_size"]):
            edges[int(pre), int(post)] = (int(n), int(size))
    assert edges == reference_edges(table) and len(edges) >= 5
    stats = [columns_from_parquet(p.read_bytes()) for p in folder.glob("stats/*.parquet")]
    assert sum(int(s["synapses_out"].sum()) for s in stats) == sum(n for n, _ in edges.values())
    assert all(np.all(s["volume"] > 0) for s in stats)


def test_the_cleft_channel_through_the_stage(runs):
    """Perfect clefts and the ground-truth segmentation: precision and recall >= 0.95, partners
    and direction right for >= 0.9 (summed over the seeds), the same synapse set under both
    chunk shapes, and the output says which detector made the tables."""
    out, _ = runs
    totals = np.zeros(4, int)
    for seed in SEEDS:
        volume = VOLUMES[seed]
        a, b = read_tables(out / f"channel{seed}a"), read_tables(out / f"channel{seed}b")
        assert len(a["synapse_id"]) > 5
        for name in synapse_table.COLUMNS:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        truth = volume.synapse_table
        s = score_synapses(
            a, volume.clefts, volume.labels, volume.labels, truth["pre"], truth["post"], RESOLUTION
        )
        totals += (s.detected, s.true, s.matched, s.right_direction)
        record = json.loads((out / f"channel{seed}a" / "detector.json").read_text())
        assert record == {
            "detector": "cleft channel",
            "clefts": f"file://{out}/clefts{seed}",
            "threshold": 0.5,
        }
    classical = json.loads((out / f"syn{SEEDS[0]}a" / "detector.json").read_text())
    assert classical == {"detector": "classical", "fallback": True}
    detected, true, matched, right = totals
    assert true >= 36 and matched / detected >= 0.95 and matched / true >= 0.95, totals
    assert right / matched >= 0.9, totals


def bad_config(out: Path, **synapses) -> dict:
    raw = np.zeros((64, 64, 32), np.uint8)
    labels = np.ones((64, 64, 32), np.uint32)
    stages = [
        ingest(out, "raw", raw),
        ingest(out, "wide", raw.astype(np.uint16)),
        ingest(out, "seg", labels, layer_type="segmentation"),
        ingest(out, "small", labels[:32], layer_type="segmentation"),
        ingest(out, "short", raw[:, :, :16]),
        {"stage": "synapses", "input": "raw", "segmentation": "seg", **synapses},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


@pytest.mark.parametrize(
    "synapses, error, message",
    [
        ({"input": "seg"}, LayerMismatchError, "synapses takes the raw EM image"),
        ({"input": "wide"}, LayerMismatchError, "holds uint16; synapses reads the raw image"),
        ({"segmentation": "raw"}, LayerMismatchError, "not a one-channel segmentation layer"),
        ({"segmentation": "small"}, LayerMismatchError, "same bounds and resolution"),
        ({"halo": [32, 32, 8]}, InputError, r"smaller than \(32, 32, 32\).*leave halo out"),
        ({"clefts": "short"}, LayerMismatchError, "cleft probability of this image"),
        ({"clefts": "raw", "halo": [36, 36, 36]}, InputError, r"smaller than \(37, 37, 37\)"),
        ({"threshold": 0.7}, InputError, "threshold is the cleft probability's"),
    ],
)
def test_bad_input_is_refused_before_any_write(tmp_path, synapses, error, message):
    with pytest.raises(error, match=message):
        plan_run(bad_config(tmp_path, **synapses))
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".npy"]
