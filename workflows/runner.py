"""Maps a stage's chunk job over its grid on Ray: bounded submission, retries, ledger, progress.

Two kinds of failure are told apart. A worker that dies (OOM kill, preemption, a killed process)
is Ray's business: the task is re-run elsewhere up to `task_retries` times. An exception inside a
task is ours: transient storage errors (see `petavox.tasks.core.transient`) are retried inside the
task with exponential backoff; anything else fails the stage at once, naming the chunk.
"""

from __future__ import annotations

import logging
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError, PetavoxError
from petavox.tasks.core.geometry import Chunk
from petavox.tasks.core.transient import is_transient
from petavox.workflows.config import RayConfig
from petavox.workflows.dispatch import Dispatch, TaskOutcome, run_tasks
from petavox.workflows.failures import FailureBudget
from petavox.workflows.interrupts import terminate_as_interrupt
from petavox.workflows.ledger import Finished, Ledger, SegmentWriter, written_objects
from petavox.workflows.params import Resources
from petavox.workflows.plan import ChunkJob, StagePlan
from petavox.workflows.watchdog import Watchdog

if TYPE_CHECKING:
    from petavox.workflows.verify import BadChunks

log = logging.getLogger("petavox")


class ChunkFailedError(PetavoxError):
    """A chunk's task raised a non-transient error; carries the chunk id and the cause.

    `bad_input` says the cause was an `InputError` (bad data or parameters found inside the
    task, e.g. a corrupt input chunk): the command exits 2 then, as for input refused up front.
    """

    def __init__(
        self, stage: str, chunk_id: str, message: str, details: str = "", bad_input: bool = False
    ) -> None:
        self.stage, self.chunk_id, self.message, self.details = stage, chunk_id, message, details
        self.bad_input = bad_input
        super().__init__(f"stage {stage} failed on chunk {chunk_id}: {message}")

    def __reduce__(self):
        args = (self.stage, self.chunk_id, self.message, self.details, self.bad_input)
        return (type(self), args)


def call_with_retries(
    fn: Callable[[], Any],
    attempts: int,
    *,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Call `fn`; retry transient errors up to `attempts` times with jittered backoff."""
    for attempt in range(attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= attempts or not is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("transient error (attempt %d/%d): %s", attempt + 1, attempts, exc)
            sleep(delay)
    raise AssertionError("unreachable")


def run_chunk(
    job: ChunkJob, chunk: Chunk, stage: str, storage_retries: int, timeout: float | None = None
) -> TaskOutcome:
    """Body of one task, on a worker: run the job, recording the objects it writes and their
    sizes; the driver puts that record in the ledger. Past `timeout` seconds the worker process
    exits (`Watchdog`): Ray then retries the task like any task whose worker died."""
    started = time.perf_counter()
    try:
        watchdog = Watchdog(timeout, f"stage {stage}, chunk {chunk.id}")
        with watchdog, objects.recording_writes() as written:
            result = call_with_retries(lambda: job.run(chunk), storage_retries)
    except ChunkFailedError:
        raise
    except Exception as exc:
        raise ChunkFailedError(
            stage,
            chunk.id,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            bad_input=isinstance(exc, InputError),
        ) from None
    record = {
        "seconds": round(time.perf_counter() - started, 4),
        "objects": written_objects(written),
    }
    return TaskOutcome(result, record)


@dataclass(kw_only=True)
class StageReport:
    """What one plan did; `warnings` and `summary` come from its driver hooks (`DriverHooks`:
    `before`, `on_done`), when it ran chunks."""

    label: str
    total: int
    skipped: int
    ran: int
    seconds: float
    warnings: tuple[str, ...] = ()
    summary: Any = None


class RaySession:
    """Starts or joins Ray lazily: a run with nothing left to do never starts a cluster."""

    def __init__(self, config: RayConfig) -> None:
        self.config = config
        self._started = False

    def ensure(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.config.address == "local":
            # A laptop or CI cluster listens on loopback only.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            ray.init(
                address="local",
                num_cpus=self.config.workers or os.cpu_count(),
                num_gpus=self.config.gpus,
                include_dashboard=False,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=self.config.address, logging_level=logging.WARNING)
        terminate_as_interrupt()  # ray.init installs its own SIGTERM handler (exit 15)
        self._started = True

    def cluster_cpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("CPU", 0))

    def shutdown(self) -> None:
        if not self._started:
            return  # never imports Ray when it was not needed
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self._started = False


def _remote_options(resources: Resources, task_retries: int) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "num_cpus": resources.num_cpus,
        "num_gpus": resources.num_gpus,
        "max_retries": task_retries,
        "retry_exceptions": False,
    }
    if resources.memory:
        opts["memory"] = resources.memory
    return opts


def _unwrap(
    exc: BaseException, stage: str, chunk: Chunk, timeout: float | None = None
) -> PetavoxError:
    """Turn what a task's future raised into a `ChunkFailedError` that names the chunk."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChunkFailedError):
        return cause
    name = type(exc).__name__
    if "WorkerCrashed" in name or "NodeDied" in name or "OutOfMemory" in name:
        why = f"its worker died on every retry ({name})"
        if timeout is not None:
            why += f"; with task_timeout {timeout:g} s, a task running past it ends its worker"
        return ChunkFailedError(stage, chunk.id, why)
    return ChunkFailedError(stage, chunk.id, f"{name}: {exc}")


def execute(
    plan: StagePlan,
    ledger: Ledger | None,
    session: RaySession,
    *,
    progress: bool = True,
    still_owner: Callable[[], None] = lambda: None,
    epoch: str | None = None,
    distrust: Callable[[StagePlan, str, Finished], BadChunks] | None = None,
) -> StageReport:
    """Run the plan's chunks that the ledger does not list as finished, then its global step.

    `still_owner` raises when this driver no longer holds the output (see `lease`); it is
    called before every submission and before the global step. `epoch` (from
    `provenance.claim`) names the take-over of the plan's products its records belong to;
    `distrust` (given the plan, its ledger key and what is finished) returns the finished
    chunks and global step whose recorded objects are not all there, whole (they run again).
    """
    started = time.perf_counter()
    marks = ledger if plan.use_ledger else None  # where the step's records go, if anywhere
    key = ledger_key(plan, epoch)
    # the driver's own reads and writes, retried as a task's
    driver_io = partial(call_with_retries, attempts=session.config.storage_retries)
    total = len(plan.grid)
    trusted = driver_io(lambda: standing(plan, marks, key, distrust))
    done = trusted.count
    warnings: tuple[str, ...] = ()
    summary = None
    if done < total:
        warnings = before_dispatch(plan, driver_io)
        writer = None
        if marks is not None:
            params = {**plan.spec, "inputs": list(plan.inputs), "lineage": plan.lineage}
            driver_io(lambda: marks.record_params(plan.stage, key, params))
            flush = session.config.ledger_flush_seconds
            writer = marks.writer(plan.stage, key, plan.grid.grid_shape, flush, retry=driver_io)
        budget = FailureBudget.of(plan, marks, key, retry=driver_io)
        todo = _todo(trusted.mask)
        _dispatch(plan, todo, total, done, writer, budget, session, progress, still_owner)
        summary = plan.hooks.on_done() if plan.hooks.on_done is not None else None
    if plan.global_step is not None and not trusted.global_done:
        still_owner()
        with objects.recording_writes() as written:
            plan.global_step()
        if marks is not None:
            record = {"stage": plan.stage, "objects": written_objects(written)}
            driver_io(lambda: marks.mark_global(plan.stage, key, record))
    return StageReport(
        label=plan.label,
        total=total,
        skipped=done,
        ran=total - done,
        seconds=time.perf_counter() - started,
        warnings=warnings,
        summary=summary,
    )


def before_dispatch(
    plan: StagePlan, driver_io: Callable[[Callable[[], Any]], Any]
) -> tuple[str, ...]:
    """The plan's `before` hook (its reads retried as the driver's), each warning logged."""
    if plan.hooks.before is None:
        return ()
    warnings = tuple(driver_io(plan.hooks.before))
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def standing(
    plan: StagePlan,
    ledger: Ledger | None,
    key: str,
    distrust: Callable[[StagePlan, str, Finished], BadChunks] | None = None,
) -> Finished:
    """What of the plan stands (a resume's check, before any dispatch): the chunks and global
    step the ledger lists as finished under `key`, less those `distrust` finds wanting."""
    total = len(plan.grid)
    if ledger is None:
        return Finished(mask=np.zeros(total, bool), global_done=False)
    finished = ledger.finished(plan.stage, key, plan.grid.grid_shape)
    if distrust is None or not (finished.count or finished.global_done):
        return finished
    bad = distrust(plan, key, finished)
    return Finished(
        mask=finished.mask & ~bad.mask, global_done=finished.global_done and not bad.global_bad
    )


def _todo(mask: np.ndarray, block: int = 1 << 20) -> Iterator[int]:
    """The positions not set in `mask`, found a block at a time (no index array of the whole
    grid)."""
    for first in range(0, len(mask), block):
        for position in np.flatnonzero(~mask[first : first + block]).tolist():
            yield first + position


def ledger_key(plan: StagePlan, epoch: str | None) -> str:
    """The plan's folder in the ledger under its stage: identity, then epoch if it has one."""
    return plan.identity if epoch is None else f"{plan.identity}/{epoch}"


def _dispatch(
    plan: StagePlan,
    positions: Iterator[int],
    total: int,
    done: int,
    writer: SegmentWriter | None,
    budget: FailureBudget,
    session: RaySession,
    progress: bool,
    still_owner: Callable[[], None],
) -> None:
    """Run the chunks at `positions` on Ray; raises the first failure past the plan's budget,
    or after the map `ChunksFailedError` if chunks failed within it."""
    import ray

    session.ensure()
    cfg = session.config
    limit = cfg.max_in_flight or max(64, 2 * session.cluster_cpus())
    remote = ray.remote(run_chunk).options(**_remote_options(plan.resources, cfg.task_retries))
    timeout = plan.task_timeout

    def submit(job_ref: Any, chunk: Chunk) -> Any:
        return remote.remote(job_ref, chunk, plan.stage, cfg.storage_retries, timeout)

    def unwrap(exc: BaseException, chunk: Chunk) -> PetavoxError:
        return _unwrap(exc, plan.stage, chunk, timeout)

    dispatch = Dispatch(
        plan=plan,
        submit=submit,
        unwrap=unwrap,
        limit=limit,
        still_owner=still_owner,
        writer=writer,
        tolerate=budget.tolerate,
    )
    run_tasks(dispatch, positions, total, done, progress)
    budget.check()
