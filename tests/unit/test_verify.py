"""Finished chunks are checked against a listing of what their records say they wrote."""

from __future__ import annotations

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.workflows.ledger import Ledger, SegmentWriter, written_objects
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.verify import chunks_with_bad_objects


class NoJob:
    def run(self, chunk):  # never called: only the plan's outputs and grid matter here
        raise AssertionError


def plan_writing(url: str) -> StagePlan:
    grid = ChunkGrid(Box((0, 0, 0), (5, 1, 1)), (1, 1, 1))
    return StagePlan(
        label="t", stage="t", version=1, spec={}, grid=grid, job=NoJob(), outputs=(Output(url),)
    )


def finish(writer: SegmentWriter, position: int, writes: dict[tuple[str, str], bytes]) -> None:
    """Write `writes` as the task of the chunk at `position` would, then record it."""
    with objects.recording_writes() as written:
        for (url, key), data in writes.items():
            objects.put(url, key, data)
    writer.add(position, {"seconds": 0.0, "objects": written_objects(written)})


def bad_positions(plan: StagePlan, ledger: Ledger) -> tuple[list[int], str]:
    bad = chunks_with_bad_objects(plan, "k", ledger.finished("t", "k", (5, 1, 1)), ledger)
    return np.flatnonzero(bad.mask).tolist(), bad.example


def test_missing_and_changed_objects_are_found(tmp_path):
    out, work = f"file://{tmp_path}/out", f"file://{tmp_path}/intermediate"
    ledger = Ledger(f"file://{tmp_path}/ledger")
    writer = ledger.writer("t", "k", (5, 1, 1), flush_seconds=0)
    finish(writer, 0, {(out, "x/1"): b"abc", (work, "w/1"): b"12345"})
    finish(writer, 1, {(out, "x/2"): b"abcd"})
    finish(writer, 2, {(out, "x/3"): b"ab", (out, "top"): b"t"})
    plan = plan_writing(out)
    assert bad_positions(plan, ledger) == ([], "")

    (tmp_path / "intermediate" / "w" / "1").unlink()  # work folders may be cleaned up
    (tmp_path / "out" / "x" / "2").write_bytes(b"abcde")
    assert bad_positions(plan, ledger) == ([1], f"{out}/x/2 has 5 bytes, 4 written")
    (tmp_path / "out" / "top").unlink()
    assert bad_positions(plan, ledger)[0] == [1, 2]


def test_a_chunk_recorded_twice_is_judged_by_its_last_run(tmp_path):
    out = f"file://{tmp_path}/out"
    ledger = Ledger(f"file://{tmp_path}/ledger")
    finish(ledger.writer("t", "k", (5, 1, 1), flush_seconds=0), 3, {(out, "a"): b"old"})
    finish(ledger.writer("t", "k", (5, 1, 1), flush_seconds=0), 3, {(out, "a"): b"newer"})
    assert bad_positions(plan_writing(out), ledger) == ([], "")


def test_the_global_step_is_checked_and_its_rewrites_win(tmp_path):
    out = f"file://{tmp_path}/out"
    ledger = Ledger(f"file://{tmp_path}/ledger")
    finish(ledger.writer("t", "k", (5, 1, 1), flush_seconds=0), 0, {(out, "m"): b"part"})
    with objects.recording_writes() as written:
        objects.put(out, "m", b"whole manifest")
    ledger.mark_global("t", "k", {"objects": written_objects(written)})
    plan = plan_writing(out)
    finished = ledger.finished("t", "k", (5, 1, 1))
    bad = chunks_with_bad_objects(plan, "k", finished, ledger)
    assert bad.count == 0 and not bad.global_bad
    (tmp_path / "out" / "m").unlink()
    bad = chunks_with_bad_objects(plan, "k", finished, ledger)
    assert bad.global_bad and bad.count == 0 and bad.example == f"{out}/m is missing"


def test_a_plan_without_outputs_reads_no_segment(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    writer = ledger.writer("t", "k", (5, 1, 1), flush_seconds=0)
    writer.add(0, {"objects": {f"file://{tmp_path}/out": {"gone": 3}}})
    plan = plan_writing(f"file://{tmp_path}/out")
    no_outputs = StagePlan(**{**plan.__dict__, "outputs": ()})
    finished = ledger.finished("t", "k", (5, 1, 1))
    assert chunks_with_bad_objects(no_outputs, "k", finished, ledger).count == 0
    assert chunks_with_bad_objects(plan, "k", finished, ledger).count == 1
