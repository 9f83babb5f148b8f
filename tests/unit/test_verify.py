"""Finished chunks are checked against a listing of what their markers say they wrote."""

from __future__ import annotations

import time

from petavox.tasks.core import objects
from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.workflows.ledger import Ledger, written_objects
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.verify import UNRECORDED, chunks_with_bad_objects


class NoJob:
    def run(self, chunk):  # never called: only the plan's outputs and grid matter here
        raise AssertionError


def plan_writing(url: str) -> StagePlan:
    grid = ChunkGrid(Box((0, 0, 0), (5, 1, 1)), (1, 1, 1))
    return StagePlan(
        label="t", stage="t", version=1, spec={}, grid=grid, job=NoJob(), outputs=(Output(url),)
    )


def finish(ledger: Ledger, chunk: str, writes: dict[tuple[str, str], bytes]) -> None:
    """Write `writes` as chunk `chunk`'s task would, then its marker."""
    with objects.recording_writes() as written:
        for (url, key), data in writes.items():
            objects.put(url, key, data)
    ledger.mark_done("t", "k", chunk, {"objects": written_objects(written)})
    time.sleep(0.01)  # markers finished in order


def test_missing_changed_and_unrecorded_objects_are_found(tmp_path):
    out, work = f"file://{tmp_path}/out", f"file://{tmp_path}/intermediate"
    ledger = Ledger(f"file://{tmp_path}/ledger")
    finish(ledger, "0_0_0", {(out, "x/1"): b"abc", (work, "w/1"): b"12345"})
    finish(ledger, "1_0_0", {(out, "x/2"): b"abcd"})
    finish(ledger, "2_0_0", {(out, "x/3"): b"ab"})
    finish(ledger, "3_0_0", {(out, "x/3"): b"abcdef", (out, "top"): b"t"})  # the last writer
    ledger.mark_done("t", "k", "4_0_0", {})  # a marker from before markers listed objects
    plan, done = plan_writing(out), ledger.done("t", "k")
    assert chunks_with_bad_objects(plan, "k", done, ledger) == {"4_0_0": UNRECORDED}

    (tmp_path / "intermediate" / "w" / "1").unlink()  # work folders may be cleaned up
    (tmp_path / "out" / "x" / "2").write_bytes(b"abcde")
    (tmp_path / "out" / "top").unlink()
    bad = chunks_with_bad_objects(plan, "k", done, ledger)
    assert bad == {
        "1_0_0": f"{out}/x/2 has 5 bytes, 4 written",
        "3_0_0": f"{out}/top is missing",
        "4_0_0": UNRECORDED,
    }
    assert chunks_with_bad_objects(plan, "k", {"0_0_0"}, ledger) == {}


def test_a_plan_without_outputs_reads_no_marker(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    ledger.mark_done("t", "k", "0_0_0", {})
    plan = plan_writing(f"file://{tmp_path}/out")
    no_outputs = StagePlan(**{**plan.__dict__, "outputs": ()})
    assert chunks_with_bad_objects(no_outputs, "k", {"0_0_0"}, ledger) == {}
    assert chunks_with_bad_objects(plan, "k", {"0_0_0"}, ledger) == {"0_0_0": UNRECORDED}
