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
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from tqdm import tqdm

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError, PetavoxError
from petavox.tasks.core.geometry import Chunk
from petavox.tasks.core.transient import is_transient
from petavox.workflows.config import RayConfig
from petavox.workflows.interrupts import terminate_as_interrupt
from petavox.workflows.ledger import GLOBAL_STEP, Ledger, written_objects
from petavox.workflows.params import Resources
from petavox.workflows.plan import ChunkJob, StagePlan

log = logging.getLogger("petavox")
DRAIN_SECONDS = 20  # within Kubernetes' default 30 s between SIGTERM and SIGKILL


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
    job: ChunkJob,
    chunk: Chunk,
    stage: str,
    ident: str,
    ledger: Ledger | None,
    storage_retries: int,
) -> Any:
    """Body of one task, on a worker: run the job, then write the chunk's done-marker, which
    lists the objects the job wrote and their sizes."""
    started = time.perf_counter()
    try:
        with objects.recording_writes() as written:
            result = call_with_retries(lambda: job.run(chunk), storage_retries)
        if ledger is not None:
            seconds = time.perf_counter() - started
            record = {
                "stage": stage,
                "identity": ident,
                "seconds": round(seconds, 4),
                "objects": written_objects(written),
            }
            if isinstance(result, dict):
                record["result"] = result
            call_with_retries(
                lambda: ledger.mark_done(stage, ident, chunk.id, record), storage_retries
            )
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
    return result


@dataclass(kw_only=True)
class StageReport:
    label: str
    total: int
    skipped: int
    ran: int
    seconds: float


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


def _unwrap(exc: BaseException, stage: str, chunk: Chunk) -> PetavoxError:
    """Turn what `ray.get` raised into a `ChunkFailedError` that names the chunk."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ChunkFailedError):
        return cause
    name = type(exc).__name__
    if "WorkerCrashed" in name or "NodeDied" in name or "OutOfMemory" in name:
        return ChunkFailedError(stage, chunk.id, f"its worker died on every retry ({name})")
    return ChunkFailedError(stage, chunk.id, f"{name}: {exc}")


def execute(
    plan: StagePlan,
    ledger: Ledger | None,
    session: RaySession,
    *,
    progress: bool = True,
    still_owner: Callable[[], None] = lambda: None,
    epoch: str | None = None,
    distrust: Callable[[StagePlan, str, set[str]], set[str]] | None = None,
) -> StageReport:
    """Run the plan's chunks that the ledger does not list as done, then its global step.

    `still_owner` raises when this driver no longer holds the output (see `lease`); it is
    called before every submission and before the global step. `epoch` (from
    `provenance.claim`) names the take-over of the plan's products its markers belong to;
    `distrust` (given the plan, its ledger key and the finished chunks) returns those whose
    recorded objects are not all there, whole (they run again).
    """
    started = time.perf_counter()
    use_ledger = plan.use_ledger and ledger is not None
    key = ledger_key(plan, epoch)
    # the driver's own reads and writes, retried as a task's
    driver_io = partial(call_with_retries, attempts=session.config.storage_retries)

    done = driver_io(lambda: ledger.done(plan.stage, key)) if use_ledger else set()
    if distrust is not None and done:
        done -= driver_io(lambda: distrust(plan, key, done))
    todo = [c for c in plan.grid if c.id not in done]
    total = len(plan.grid)
    if todo:
        if use_ledger:
            params = {**plan.spec, "inputs": list(plan.inputs), "lineage": plan.lineage}
            driver_io(lambda: ledger.record_params(plan.stage, key, params))
        marks = ledger if use_ledger else None
        _dispatch(plan, key, todo, marks, session, progress, still_owner)
    if plan.global_step is not None and GLOBAL_STEP not in done:
        still_owner()
        with objects.recording_writes() as written:
            plan.global_step()
        if use_ledger:
            record = {"stage": plan.stage, "objects": written_objects(written)}
            driver_io(lambda: ledger.mark_done(plan.stage, key, GLOBAL_STEP, record))
    return StageReport(
        label=plan.label,
        total=total,
        skipped=total - len(todo),
        ran=len(todo),
        seconds=time.perf_counter() - started,
    )


def ledger_key(plan: StagePlan, epoch: str | None) -> str:
    """The plan's folder in the ledger under its stage: identity, then epoch if it has one."""
    return plan.identity if epoch is None else f"{plan.identity}/{epoch}"


def _dispatch(
    plan: StagePlan,
    key: str,
    todo: list[Chunk],
    ledger: Ledger | None,
    session: RaySession,
    progress: bool,
    still_owner: Callable[[], None],
) -> None:
    import ray

    session.ensure()
    cfg = session.config
    limit = cfg.max_in_flight or max(64, 2 * session.cluster_cpus())
    remote = ray.remote(run_chunk).options(**_remote_options(plan.resources, cfg.task_retries))
    total = len(plan.grid)
    bar = tqdm(
        total=total,
        initial=total - len(todo),
        desc=plan.label,
        unit="chunk",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    with (plan.hooks.bind or nullcontext)(plan.job) as job, bar:
        job_ref = ray.put(job)

        def submit(chunk: Chunk) -> Any:
            return remote.remote(job_ref, chunk, plan.stage, key, ledger, cfg.storage_retries)

        _submit_all(plan, submit, todo, limit, bar, still_owner)


def _submit_all(
    plan: StagePlan,
    submit: Callable[[Chunk], Any],
    todo: list[Chunk],
    limit: int,
    bar: tqdm,
    still_owner: Callable[[], None],
) -> None:
    """Keep up to `limit` tasks submitted until every chunk of `todo` is done; hand each result
    to the plan's `on_result` hook as it arrives."""
    import ray

    on_result = plan.hooks.on_result
    pending: dict[Any, Chunk] = {}
    chunks = iter(todo)
    exhausted = False
    try:
        while pending or not exhausted:
            while not exhausted and len(pending) < limit:
                chunk = next(chunks, None)
                if chunk is None:
                    exhausted = True
                    break
                still_owner()
                pending[submit(chunk)] = chunk
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                chunk = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:
                    raise _unwrap(exc, plan.stage, chunk) from None
                if on_result is not None:
                    on_result(chunk, result)
                bar.update(1)
    except BaseException as exc:
        _drain(pending, interrupted=isinstance(exc, KeyboardInterrupt))
        raise


def _drain(pending: dict[Any, Chunk], interrupted: bool) -> None:
    """Let the tasks in flight finish (up to `DRAIN_SECONDS`) when the map stops early.

    Not `ray.cancel`: in Ray 2.60 a cancel that races the task's reply aborts the driver with a
    C++ check failure ("Tried to complete task that was not pending"; seen on 1 in 2 SIGTERMs).
    Finished tasks write their markers, and none writes after this driver let go of the output.
    """
    import ray

    if not pending:
        return
    if interrupted:
        print(
            f"petavox: letting {len(pending)} tasks in flight finish (up to {DRAIN_SECONDS} s; "
            "Ctrl-C again to leave now)",
            file=sys.stderr,
        )
    try:
        ray.wait(list(pending), num_returns=len(pending), timeout=DRAIN_SECONDS)
    except BaseException:  # a second Ctrl-C or SIGTERM: leave at once
        return
