import time
import types

import numpy as np
import pytest

from petavox.workflows import ledger as ledger_module
from petavox.workflows.ledger import Ledger, Segment
from petavox.workflows.plan import identity


def test_identity_changes_with_params_and_version_only():
    spec = {"mips": 2, "factor": [2, 2, 1]}
    assert identity("downsample", 1, spec) == identity(
        "downsample", 1, dict(reversed(spec.items()))
    )
    assert identity("downsample", 1, spec) != identity("downsample", 1, {**spec, "mips": 3})
    assert identity("downsample", 1, spec) != identity("downsample", 2, spec)
    assert identity("downsample", 1, spec) != identity("ingest", 1, spec)


def record(seconds: float = 1.0, **objects: dict[str, int]) -> dict:
    return {"seconds": seconds, "objects": objects}


def test_finished_chunks_are_kept_per_stage_identity_and_grid(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    grid = (4, 2, 1)
    assert ledger.finished("ingest", "abc", grid).count == 0
    writer = ledger.writer("ingest", "abc", grid, flush_seconds=0)
    writer.add(0, record())
    writer.add(5, record(), {"predictor": "x"})
    ledger.writer("ingest", "def", grid, flush_seconds=0).add(2, record())
    finished = ledger.finished("ingest", "abc", grid)
    assert np.flatnonzero(finished.mask).tolist() == [0, 5] and not finished.global_done
    assert np.flatnonzero(ledger.finished("ingest", "def", grid).mask).tolist() == [2]
    assert ledger.finished("downsample", "abc", grid).count == 0
    assert ledger.finished("ingest", "abc", (8, 1, 1)).count == 0  # another grid's positions
    (segment,) = ledger.segments("ingest", "abc")
    assert segment.results == {5: {"predictor": "x"}}
    ledger.mark_global("ingest", "abc", {"objects": {}})
    assert ledger.finished("ingest", "abc", grid).global_done


def test_a_segment_keeps_what_each_chunk_wrote(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    writer = ledger.writer("s", "k", (10, 1, 1), flush_seconds=0)
    writer.add(3, record(0.5, **{"file:///a": {"x/1": 10, "x/2": 20}, "file:///b": {"y": 1}}))
    writer.add(7, record(0.25))
    (segment,) = ledger.segments("s", "k")
    again = Segment.from_bytes(segment.to_bytes())
    assert again.chunks.tolist() == [3, 7] and again.seconds.tolist() == [0.5, 0.25]
    assert sorted(again.objects_of(0)) == [
        ("file:///a", "x/1", 10),
        ("file:///a", "x/2", 20),
        ("file:///b", "y", 1),
    ]
    assert list(again.objects_of(1)) == []


def test_records_are_flushed_by_time_and_a_full_segment_is_closed(tmp_path, monkeypatch):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    writer = ledger.writer("s", "k", (100, 1, 1), flush_seconds=3600)
    writer.add(0, record())
    assert ledger.finished("s", "k", (100, 1, 1)).count == 0  # not due yet
    writer.flush(force=True)
    assert ledger.finished("s", "k", (100, 1, 1)).count == 1
    monkeypatch.setattr(ledger_module, "SEGMENT_CHUNKS", 4)
    for position in range(1, 10):
        writer.add(position, record())
    writer.flush(force=True)
    keys = ledger.segment_keys("s", "k")
    assert len(keys) == 3  # two full segments of 4, an open one of 2
    assert ledger.finished("s", "k", (100, 1, 1)).count == 10


def test_an_unreadable_segment_counts_as_nothing_finished(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    ledger.writer("s", "k", (4, 1, 1), flush_seconds=0).add(1, record())
    (key,) = ledger.segment_keys("s", "k")
    (tmp_path / "ledger" / key).write_bytes(b"not a segment")
    assert ledger.finished("s", "k", (4, 1, 1)).count == 0


def test_a_position_outside_the_grid_is_refused_by_the_grid():
    from petavox.tasks.core.geometry import Box, ChunkGrid

    grid = ChunkGrid(Box((0, 0, 0), (5, 3, 2)), (2, 2, 1))
    assert [grid.index_of(c.id) for c in grid] == list(range(len(grid)))
    assert [grid.chunk_at(i).id for i in range(len(grid))] == [c.id for c in grid]
    with pytest.raises(IndexError):
        grid.chunk_at(len(grid))


def test_the_pace_comes_from_the_newest_finishes(tmp_path, monkeypatch):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    clock = iter([1000.0, *np.arange(5000.0, 5000.0 + 2 * 1100, 2.0)])
    fake = types.SimpleNamespace(
        time=lambda: next(clock), time_ns=time.time_ns, monotonic=time.monotonic
    )
    monkeypatch.setattr(ledger_module, "time", fake)  # the ledger's clock only
    writer = ledger.writer("s", "k", (2000, 1, 1), flush_seconds=0)
    writer.add(0, record())  # long ago: outside the newest finishes
    assert ledger.finished("s", "k", (2000, 1, 1)).pace() == (None, 1000.0)
    for position in range(1, 1101):  # one chunk every 2 s
        writer.add(position, record())
    finished = ledger.finished("s", "k", (2000, 1, 1))
    rate, last = finished.pace()
    assert finished.recent.size == ledger_module.RECENT
    assert rate == pytest.approx(0.5)
    assert last == 5000.0 + 2 * 1099
