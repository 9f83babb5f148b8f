"""The Ray runner's guarantees, with small purpose-built jobs."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import ray.cloudpickle
import runner_jobs
from runner_jobs import (
    BadInputJob,
    BrokenJob,
    DyingJob,
    FailsUnlessFixedJob,
    FlakyJob,
    HangsOnceJob,
    RecordingJob,
)

from petavox.tasks.core.geometry import Box, ChunkGrid
from petavox.workflows.cli import exit_status
from petavox.workflows.config import RayConfig
from petavox.workflows.failures import ChunksFailedError
from petavox.workflows.ledger import Ledger
from petavox.workflows.plan import DriverHooks, StagePlan
from petavox.workflows.runner import ChunkFailedError, RaySession, execute

pytestmark = pytest.mark.integration
ray.cloudpickle.register_pickle_by_value(runner_jobs)


def grid(n: int) -> ChunkGrid:
    return ChunkGrid(Box((0, 0, 0), (n, 1, 1)), (1, 1, 1))


def plan(job, n: int, finalize=None, name: str = "test", on_result=None, **runtime) -> StagePlan:
    return StagePlan(
        **runtime,
        label=name,
        stage=name,
        version=1,
        spec={},
        grid=grid(n),
        job=job,
        hooks=DriverHooks(on_result=on_result),
        global_step=finalize,
    )


IDENTITY = plan(None, 1).identity  # of every plan above: same stage, version and spec


def session_with(ray_session, **changes) -> RaySession:
    """The shared cluster with different runner settings (no new Ray)."""
    config = RayConfig(**{**ray_session.config.model_dump(), **changes})
    return RaySession(config)


def test_global_step_runs_once_after_the_map(tmp_path, ray_session):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    calls = []

    def finalize():
        calls.append(len(list((tmp_path / "log").glob("*.json"))))

    (tmp_path / "log").mkdir()
    job = RecordingJob(str(tmp_path / "log"), 0.0)
    report = execute(plan(job, 6, finalize), ledger, ray_session, progress=False)
    assert report.ran == 6 and calls == [6]  # after every chunk was written
    assert ledger.finished("test", IDENTITY, grid(6).grid_shape).global_done
    again = execute(plan(job, 6, finalize), ledger, ray_session, progress=False)
    assert again.ran == 0 and calls == [6]


def test_in_flight_tasks_are_bounded(tmp_path, ray_session):
    log = tmp_path / "log"
    log.mkdir()
    one_at_a_time = session_with(ray_session, max_in_flight=1)
    execute(plan(RecordingJob(str(log), 0.05), 8), None, one_at_a_time, progress=False)
    spans = sorted(json.loads(p.read_text()) for p in log.glob("*.json"))
    assert len(spans) == 8
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans)), "tasks overlapped"

    log2 = tmp_path / "log2"
    log2.mkdir()
    execute(plan(RecordingJob(str(log2), 0.3), 8), None, ray_session, progress=False)
    spans = sorted(json.loads(p.read_text()) for p in log2.glob("*.json"))
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), "no parallelism at all"


def test_transient_errors_are_retried_inside_the_task(tmp_path, ray_session):
    results = []
    report = execute(
        plan(FlakyJob(str(tmp_path), 2), 3, on_result=lambda chunk, r: results.append(r)),
        None,
        ray_session,
        progress=False,
    )
    assert report.ran == 3 and sorted(results) == ["0_0_0", "1_0_0", "2_0_0"]
    assert all((tmp_path / c).read_text() == "3" for c in results)


def test_transient_errors_give_up_after_the_configured_attempts(tmp_path, ray_session):
    few = session_with(ray_session, storage_retries=1)
    with pytest.raises(ChunkFailedError, match="ConnectionResetError"):
        execute(plan(FlakyJob(str(tmp_path), 5), 1), None, few, progress=False)
    assert (tmp_path / "0_0_0").read_text() == "2"


def test_a_bug_fails_fast_with_the_chunk_id(tmp_path, ray_session):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    with pytest.raises(ChunkFailedError) as err:
        execute(plan(BrokenJob("3_0_0"), 40, name="broken"), ledger, ray_session, progress=False)
    assert err.value.chunk_id == "3_0_0" and "KeyError" in str(err.value)
    assert "a bug" in err.value.details  # the worker's traceback travels with it
    broken = plan(None, 1, name="broken").identity
    finished = ledger.finished("broken", broken, grid(40).grid_shape)
    assert not finished.mask[3] and finished.count > 0  # the others that finished are recorded
    assert finished.count < 40  # it did not wait for every other chunk


def test_a_worker_that_always_dies_is_reported(ray_session):
    once = session_with(ray_session, task_retries=1)
    with pytest.raises(ChunkFailedError, match=r"chunk 0_0_0: its worker died"):
        execute(plan(DyingJob(), 1), None, once, progress=False)


def test_bad_input_found_inside_a_task_is_marked_as_such(ray_session):
    with pytest.raises(ChunkFailedError) as err:
        execute(plan(BadInputJob(), 1), None, ray_session, progress=False)
    assert err.value.bad_input and "chunk 0_0_0" in str(err.value)
    assert exit_status(err.value) == 2
    with pytest.raises(ChunkFailedError) as bug:
        execute(plan(BrokenJob("0_0_0"), 1, name="broken"), None, ray_session, progress=False)
    assert not bug.value.bad_input and exit_status(bug.value) == 1


def runs_of(state, chunk_id: str) -> int:
    return len(list(state.glob(f"ran-{chunk_id}-*")))


def test_within_max_failures_the_map_goes_on_and_a_rerun_runs_the_failed_chunk(
    tmp_path, ray_session
):
    ledger, state = Ledger(f"file://{tmp_path}/ledger"), tmp_path / "state"
    state.mkdir()
    finalized = []
    job = FailsUnlessFixedJob(str(state), "3_0_0")
    budget = plan(job, 12, lambda: finalized.append(1), name="bad", max_failures=2)
    with pytest.raises(ChunksFailedError) as err:
        execute(budget, ledger, ray_session, progress=False)
    assert err.value.errors[0].chunk_id == "3_0_0" and "cannot be read" in str(err.value)
    assert "1 of 12 chunks failed (max_failures allows 2)" in str(err.value)
    assert exit_status(err.value) == 1 and finalized == []  # no global step over a hole
    finished = ledger.finished("bad", budget.identity, grid(12).grid_shape)
    assert np.flatnonzero(~finished.mask).tolist() == [3]  # every other chunk done
    (failure,) = ledger.failures("bad", budget.identity)
    assert failure["chunk"] == "3_0_0" and failure["position"] == 3
    assert "ValueError" in failure["error"] and "simulated" in failure["details"]

    (state / "fixed").touch()
    report = execute(budget, ledger, ray_session, progress=False)
    assert report.ran == 1 and report.skipped == 11 and finalized == [1]
    assert runs_of(state, "3_0_0") == 2 and runs_of(state, "4_0_0") == 1


def test_past_max_failures_the_stage_stops(tmp_path, ray_session):
    ledger, state = Ledger(f"file://{tmp_path}/ledger"), tmp_path / "state"
    state.mkdir()
    job = FailsUnlessFixedJob(str(state), "0_0_0")
    with pytest.raises(ChunkFailedError, match="chunk 0_0_0"):
        execute(plan(job, 4, name="strict", max_failures=0), ledger, ray_session, progress=False)
    assert ledger.failures("strict", plan(None, 1, name="strict").identity)[0]["chunk"] == "0_0_0"


def test_a_task_past_its_timeout_is_ended_and_retried(tmp_path, ray_session):
    state = tmp_path / "state"
    state.mkdir()
    results = []
    hangs = plan(
        HangsOnceJob(str(state)),
        2,
        name="hang",
        task_timeout=3,
        on_result=lambda chunk, r: results.append(r),
    )
    started = time.monotonic()
    report = execute(hangs, None, ray_session, progress=False)
    assert report.ran == 2 and sorted(results) == ["0_0_0", "1_0_0"]
    assert time.monotonic() - started < 120  # not the 600 s the first attempts would sleep


def test_a_task_that_always_hangs_fails_after_its_retries(tmp_path, ray_session):
    once = session_with(ray_session, task_retries=1)
    job = RecordingJob(str(tmp_path), 600)
    with pytest.raises(ChunkFailedError, match="task_timeout 2 s"):
        execute(plan(job, 1, name="stuck", task_timeout=2), None, once, progress=False)
