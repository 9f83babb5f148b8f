"""`connectome` on a real local Ray from synthetic per-chunk synapse tables: the table, edges,
statistics and annotation layer equal a straightforward in-memory computation, whatever the
number of shards; volumes come from a segmentation layer; bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synapse_data import (
    decode_multiple,
    decode_single,
    random_synapses,
    read_sharded,
    reference_edges,
    reference_stats,
)

from petavox.tasks.core.errors import InputError
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.outputs import summarize
from petavox.tasks.synapse.table import columns_from_parquet
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

CHUNKS = 7
PER_CHUNK = 300


def write_chunks(root: Path, seed: int = 0) -> synapse_table.Table:
    """Chunk tables under root/synapses/chunks (one empty); returns all rows."""
    folder = root / "synapses" / "chunks"
    folder.mkdir(parents=True)
    tables = []
    for i in range(CHUNKS):
        n = 0 if i == 3 else PER_CHUNK
        table = random_synapses(n, seed=seed + i, first_id=1 + i * PER_CHUNK)
        (folder / f"{i}_0_0.parquet").write_bytes(synapse_table.to_parquet(table))
        tables.append(table)
    return synapse_table.concat(tables)


def run_connectome(root: Path, session, **stage) -> None:
    stages = [
        {"stage": "connectome", "input": "synapses", "readers": 3, "spatial_cell": 5000, **stage}
    ]
    run(
        parse_config({"output": f"file://{root}", "stages": stages}),
        session=session,
        progress=False,
    )


def outputs(out: Path, minishard_bits: int = 6) -> dict:
    """Everything the stage wrote, decoded, independent of the shard count."""
    table = synapse_table.concat(
        [
            synapse_table.from_parquet(p.read_bytes())
            for p in sorted(out.glob("table/pre_shard=*/part.parquet"))
        ]
    )
    edges = [columns_from_parquet(p.read_bytes()) for p in sorted(out.glob("edges/*.parquet"))]
    stats = [columns_from_parquet(p.read_bytes()) for p in sorted(out.glob("stats/*.parquet"))]
    ann = out / "annotations"
    spatial = {}
    for path in sorted(ann.glob("spatial*/*")):
        recs, ids = decode_multiple(path.read_bytes())
        spatial[f"{path.parent.name}/{path.name}"] = (recs.tobytes(), ids.tolist())
    return {
        "table": {k: v[np.argsort(table["synapse_id"])] for k, v in table.items()},
        "edges": {
            (int(a), int(b)): (int(n), int(s))
            for e in edges
            for a, b, n, s in zip(e["pre_id"], e["post_id"], e["synapses"], e["total_size"])
        },
        "stats": {
            int(s): tuple(int(t[c][i]) for c in t if c != "segment_id")
            for t in stats
            for i, s in enumerate(t["segment_id"])
        },
        "by_id": read_sharded(ann / "by_id", minishard_bits),
        "rel_pre": read_sharded(ann / "rel_pre", minishard_bits),
        "rel_post": read_sharded(ann / "rel_post", minishard_bits),
        "spatial": spatial,
        "info": json.loads((ann / "info").read_text()),
    }


def test_outputs_equal_an_in_memory_computation_for_any_shard_count(tmp_path, ray_session):
    results = []
    for bits in (1, 3):
        root = tmp_path / f"bits{bits}"
        rows = write_chunks(root)
        run_connectome(root, ray_session, shard_bits=bits)
        results.append(outputs(root / "synapses"))
        parts = list((root / "synapses").glob("table/pre_shard=*/part.parquet"))
        assert len(parts) == 2**bits
    got, other = results
    order = np.argsort(rows["synapse_id"])
    for name in synapse_table.COLUMNS:
        np.testing.assert_array_equal(got["table"][name], rows[name][order])
    assert got["edges"] == reference_edges(rows)
    assert got["stats"] == reference_stats(rows)
    # the annotation layer: by id, by segment, and every annotation in the spatial index
    assert set(got["by_id"]) == set(rows["synapse_id"].tolist())
    i = 17
    geometry, size, _, (pre, _) = decode_single(got["by_id"][int(rows["synapse_id"][i])])
    assert geometry[0] == pytest.approx(rows["pre_x"][i]) and size == rows["size"][i]
    assert pre == ([int(rows["pre_id"][i])] if rows["pre_id"][i] else [])
    for rel in ("pre", "post"):
        column = rows[f"{rel}_id"]
        assert set(got[f"rel_{rel}"]) == {int(s) for s in column if s}
        for segment, data in got[f"rel_{rel}"].items():
            ids = decode_multiple(data)[1].tolist()
            assert sorted(ids) == sorted(rows["synapse_id"][column == segment].tolist())
    info = got["info"]
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "LINE"
    levels = {}
    for key, (_, ids) in got["spatial"].items():
        level = int(key.split("/")[0].removeprefix("spatial"))
        assert len(ids) <= info["spatial"][level]["limit"]
        for a in ids:
            assert levels.setdefault(a, level) == level
    assert set(levels) == set(rows["synapse_id"].tolist())
    assert len(info["spatial"]) >= 3 and len(set(levels.values())) == len(info["spatial"])
    # the number of shards changes nothing but the shard files
    for name in ("edges", "stats", "by_id", "rel_pre", "rel_post", "spatial", "info"):
        if name != "info":
            assert got[name] == other[name], name
    assert {k: v for k, v in got["info"].items() if k not in ("by_id", "relationships")} == {
        k: v for k, v in other["info"].items() if k not in ("by_id", "relationships")
    }
    # the summary reads only the per-shard summaries and edge files
    summary = summarize(f"file://{tmp_path}/bits1/synapses", top=3)
    assert summary["synapses"] == len(rows["synapse_id"])
    assert summary["edges"] == len(got["edges"]) and summary["segments"] == len(got["stats"])
    best = sorted(got["edges"].items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0][0], kv[0][1]))
    assert summary["strongest"] == [(a, b, n, s) for (a, b), (n, s) in best[:3]]


def test_volumes_from_a_segmentation_layer(tmp_path, ray_session):
    labels = np.zeros((40, 30, 20), np.uint64)  # x, y, z
    ids = (np.arange(40, dtype=np.uint64) + 1) * np.uint64(2**33 + 7)  # random_synapses' ids
    for k, segment in enumerate(ids):
        labels[k, : 1 + k % 30, :] = segment
    np.save(tmp_path / "seg.npy", labels.transpose(2, 1, 0))
    rows = write_chunks(tmp_path)
    stages = [
        {
            "stage": "ingest",
            "input": str(tmp_path / "seg.npy"),
            "output": "seg",
            "layer_type": "segmentation",
            "resolution": [8, 8, 40],
            "storage_chunk": [16, 16, 8],
        },
        {
            "stage": "connectome",
            "input": "synapses",
            "segmentation": "seg",
            "shard_bits": 2,
            "readers": 2,
        },
    ]
    run(
        parse_config({"output": f"file://{tmp_path}", "stages": stages}),
        session=ray_session,
        progress=False,
    )
    got = outputs(tmp_path / "synapses")
    expected = reference_stats(rows)
    assert set(got["stats"]) == set(expected)
    for segment, values in got["stats"].items():
        k = int(np.flatnonzero(ids == segment)[0])
        assert values == (*expected[segment], (1 + k % 30) * 20)


def test_the_command_builds_and_summarizes(tmp_path, ray_session, capsys):
    from petavox.workflows.cli import main

    rows = write_chunks(tmp_path)
    url = f"file://{tmp_path}/synapses"
    assert main(["connectome", url, "--readers", "2", "--shard-bits", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    edges = reference_edges(rows)
    connections = sum(n for n, _ in edges.values())
    assert f"synapses: {len(rows['synapse_id'])} ({connections} with both partners)" in text
    assert f"neurons with synapses: {len(reference_stats(rows))}" in text
    assert f"edges: {len(edges)}" in text
    (pre, post), (n, size) = max(edges.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
    assert f"  {pre} -> {post}: {n}, {size}" in text.split("strongest")[1].splitlines()[1]


def test_no_chunk_tables_is_an_input_error(tmp_path, ray_session):
    (tmp_path / "synapses").mkdir()
    with pytest.raises(InputError, match="no synapse tables"):
        run_connectome(tmp_path, ray_session)
