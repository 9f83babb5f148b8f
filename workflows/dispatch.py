"""The driver's loop over one plan's remaining chunks on Ray: at most `limit` tasks in flight,
each task's record handed to the ledger's segment writer as it returns.

The loop costs O(1) per task whatever the number in flight: each task's future puts its
position on a queue when it completes (no `ray.wait` over every pending reference), and the
chunks are made one at a time from their grid positions (the grid is never materialised).
"""

from __future__ import annotations

import queue
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

from tqdm import tqdm

from petavox.tasks.core.geometry import Chunk
from petavox.workflows.ledger import SegmentWriter
from petavox.workflows.plan import StagePlan

DRAIN_SECONDS = 20  # within Kubernetes' default 30 s between SIGTERM and SIGKILL


class TaskOutcome(NamedTuple):
    """What a task returns to the driver: the job's result and the record for the ledger
    (``seconds``, ``objects``: what it wrote)."""

    result: Any
    record: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Dispatch:
    """How to run one plan's tasks: `submit` starts the task of a chunk and returns its Ray
    reference; `unwrap` turns what a failed task raised into the error to report."""

    plan: StagePlan
    submit: Callable[[Any, Chunk], Any]  # (bound job ref, chunk) -> ObjectRef
    unwrap: Callable[[BaseException, Chunk], BaseException]
    limit: int
    still_owner: Callable[[], None]
    writer: SegmentWriter | None
    #: given a failed chunk (position, chunk, the unwrapped error): True to go on without it
    tolerate: Callable[[int, Chunk, BaseException], bool] = lambda position, chunk, error: False


class _InFlight:
    """The tasks submitted and not yet collected, and the queue their futures report to."""

    def __init__(self) -> None:
        self.chunks: dict[int, tuple[Any, Chunk]] = {}  # position -> (ref, chunk)
        self.ready: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self.failed = 0  # tasks that failed and were tolerated

    def add(self, position: int, ref: Any, chunk: Chunk) -> None:
        self.chunks[position] = (ref, chunk)
        ref.future().add_done_callback(lambda f, p=position: self.ready.put((p, f)))

    def __len__(self) -> int:
        return len(self.chunks)

    def next_done(self, timeout: float | None = None) -> tuple[int, Chunk, Any]:
        """(position, chunk, future) of a finished task; `queue.Empty` after `timeout`."""
        position, future = self.ready.get(timeout=timeout)
        _, chunk = self.chunks.pop(position)
        return position, chunk, future


def run_tasks(d: Dispatch, positions: Iterator[int], total: int, done: int, progress: bool):
    """Run the chunks at `positions` of the plan's grid; raises the first task failure (after
    letting the others in flight finish and recording them)."""
    plan = d.plan
    bar = tqdm(
        total=total,
        initial=done,
        desc=plan.label,
        unit="chunk",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    import ray

    flight = _InFlight()
    with (plan.hooks.bind or nullcontext)(plan.job) as job, bar:
        job_ref = ray.put(job)
        try:
            for position in positions:
                while len(flight) >= d.limit:
                    _collect(d, flight, bar)
                d.still_owner()
                chunk = plan.grid.chunk_at(int(position))
                flight.add(int(position), d.submit(job_ref, chunk), chunk)
            while len(flight):
                _collect(d, flight, bar)
        except BaseException as exc:
            _drain(d, flight, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        finally:
            if d.writer is not None:
                d.writer.flush(force=True)


def _collect(d: Dispatch, flight: _InFlight, bar: tqdm) -> None:
    """Take one finished task: record it, hand its result to the plan's hook."""
    position, chunk, future = flight.next_done()
    try:
        outcome: TaskOutcome = future.result()
    except Exception as exc:
        error = d.unwrap(exc, chunk)
        if not d.tolerate(position, chunk, error):
            raise error from None
        flight.failed += 1
        bar.set_postfix_str(f"{flight.failed} failed", refresh=False)
        bar.update(1)
        return
    _record(d, position, chunk, outcome)
    bar.update(1)


def _record(d: Dispatch, position: int, chunk: Chunk, outcome: TaskOutcome) -> None:
    if d.writer is not None:
        d.writer.add(position, outcome.record, outcome.result)
    if d.plan.hooks.on_result is not None:
        d.plan.hooks.on_result(chunk, outcome.result)


def _drain(d: Dispatch, flight: _InFlight, interrupted: bool) -> None:
    """Let the tasks in flight finish (up to `DRAIN_SECONDS`) when the map stops early, and
    record those that succeed.

    Not `ray.cancel`: in Ray 2.60 a cancel that races the task's reply aborts the driver with a
    C++ check failure ("Tried to complete task that was not pending"; seen on 1 in 2 SIGTERMs).
    None writes after this driver let go of the output.
    """
    if not len(flight):
        return
    if interrupted:
        print(
            f"petavox: letting {len(flight)} tasks in flight finish (up to {DRAIN_SECONDS} s; "
            "Ctrl-C again to leave now)",
            file=sys.stderr,
        )
    deadline = time.monotonic() + DRAIN_SECONDS
    try:
        while len(flight) and (left := deadline - time.monotonic()) > 0:
            position, _, future = flight.next_done(timeout=left)
            if future.exception() is None and d.writer is not None:
                outcome = future.result()
                d.writer.add(position, outcome.record, outcome.result)
    except BaseException:  # out of time (queue.Empty), or a second Ctrl-C: leave at once
        return
