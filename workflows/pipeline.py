"""A whole run: plan every selected stage first (no writes), then prepare and execute in order."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, read_info, write_info
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.evaluate.metrics import Scores, scores
from petavox.workflows.catalog import Catalog, part_key
from petavox.workflows.config import RayConfig, RunConfig, StorageConfig
from petavox.workflows.failures import ChunksFailedError, RunIncompleteError
from petavox.workflows.lease import DriverLease
from petavox.workflows.ledger import Finished, Ledger
from petavox.workflows.params import StageParams
from petavox.workflows.plan import StagePlan, StageSteps
from petavox.workflows.provenance import claim, epoch_of
from petavox.workflows.runner import (
    RaySession,
    StageReport,
    call_with_retries,
    execute,
    ledger_key,
)
from petavox.workflows.stages import STAGE_NAMES, plan_stage
from petavox.workflows.stages.evaluate import DEFAULT_CHUNK, TableSum, plan_scores
from petavox.workflows.verify import (
    BadChunks,
    chunks_with_bad_objects,
    remember_stage,
    remembered_stages,
)

log = logging.getLogger("petavox")


def ledger_for(config: RunConfig) -> Ledger:
    return Ledger(join_url(config.output, "ledger"), config.storage.context())


def select_stages(config: RunConfig, only: Iterable[str] | None) -> list[StageParams]:
    if not only:
        return list(config.stages)
    wanted = {s.strip() for s in only if s.strip()}
    unknown = wanted - set(STAGE_NAMES)
    if unknown:
        raise InputError(
            f"unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGE_NAMES)}"
        )
    chosen = [s for s in config.stages if s.stage in wanted]  # type: ignore[attr-defined]
    missing = wanted - {s.stage for s in chosen}  # type: ignore[attr-defined]
    if missing:
        raise InputError(f"the config has no {', '.join(sorted(missing))} stage to run")
    return chosen


def plan_stages(config: RunConfig, only: Iterable[str] | None = None) -> list[StageSteps]:
    """Plan the selected stages in order. Raises before anything is written if any is invalid.

    Each stage's plans get the stage's inputs and their lineage (see `Catalog`); a product that
    is also an input of its stage, or written by two stages, is refused.
    """
    catalog = Catalog(config.output, config.storage.context())
    stages: list[StageSteps] = []
    for params in select_stages(config, only):
        catalog.begin_stage()
        plans = plan_stage(params, catalog)
        inputs, lineage = tuple(sorted(catalog.reads)), catalog.reads_token()
        runtime = {"max_failures": params.max_failures, "task_timeout": params.task_timeout}
        plans = [replace(p, inputs=inputs, lineage=lineage, **runtime) for p in plans]
        steps = StageSteps(
            name=params.stage,  # type: ignore[attr-defined]
            plans=tuple(plans),
            inputs=inputs,
            # as given: a default dumped would count as given (mesh refuses the other format's)
            params={
                "stage": params.stage,  # type: ignore[attr-defined]
                **params.model_dump(mode="json", exclude_unset=True),
            },
        )
        check_outputs(steps, stages)
        for output in steps.outputs:
            catalog.writers[part_key(output.url, output.part)] = steps.identity
        stages.append(steps)
    return stages


def plan_run(config: RunConfig, only: Iterable[str] | None = None) -> list[StagePlan]:
    """The plans of `plan_stages`, in order."""
    return [plan for steps in plan_stages(config, only) for plan in steps.plans]


def check_outputs(steps: StageSteps, earlier: list[StageSteps]) -> None:
    for output in steps.outputs:
        if output.part == "" and output.url in steps.inputs:
            raise InputError(
                f"{steps.name}: the output {output.url} is also its input; writing it would "
                "destroy the input. Give the output another name or URL"
            )
        for other in earlier:
            if output in other.outputs:
                raise InputError(
                    f"{output} is written by two stages ({other.name} and {steps.name}); "
                    "give each its own output"
                )


def _write_infos(infos: Mapping[str, dict], context: StorageContext) -> None:
    for url, info in infos.items():
        if read_info(url, context) != info:
            write_info(url, info, context)


def prepare(plan: StagePlan, config: RunConfig) -> None:
    """Write the info files the plan needs before it runs (only those that changed)."""
    _write_infos(plan.layer_infos, config.storage.context())


def finish(plan: StagePlan, config: RunConfig) -> None:
    """Write the info files that say the plan's products are there (only those that changed)."""
    _write_infos(plan.final_infos, config.storage.context())


def run(
    config: RunConfig,
    only: Iterable[str] | None = None,
    *,
    progress: bool = True,
    session: RaySession | None = None,
) -> list[StageReport]:
    """Plan, then take the output's lease (one driver per output) and run the plans in order.

    The driver's own storage calls (planning's reads, the lease, claims, infos) are retried on
    transient errors like a task's, `ray.storage_retries` times.
    """
    driver_io = partial(call_with_retries, attempts=config.ray.storage_retries)
    stages = driver_io(lambda: plan_stages(config, only))
    ledger = ledger_for(config)
    own_session = session is None
    session = session or RaySession(config.ray)
    reports = []
    context = config.storage.context()
    lease = DriverLease(config.output, context, ttl=config.ray.lease_seconds)
    try:
        driver_io(lease.acquire)
        # every product is claimed before the first write: a refusal writes nothing
        epochs = [driver_io(partial(claim, s, config.overwrite, context)) for s in stages]
        for steps in stages:
            driver_io(partial(remember_stage, steps, ledger))
        failed: list[ChunksFailedError] = []
        blocked: set[str] = set()  # outputs of stages that ended with failed chunks
        not_started: list[str] = []
        for steps, epoch in zip(stages, epochs, strict=True):
            if blocked.intersection(steps.inputs):
                not_started.append(steps.name)
                blocked.update(o.url for o in steps.outputs)
                continue
            try:
                run_steps(steps, epoch, config, ledger, session, lease, progress, reports)
            except ChunksFailedError as exc:  # within its budget: the run goes on without it
                log.error("%s", exc)
                failed.append(exc)
                blocked.update(o.url for o in steps.outputs)
        if failed:
            raise RunIncompleteError(failed, not_started)
    finally:
        lease.release()
        if own_session:
            session.shutdown()
    return reports


def run_steps(
    steps: StageSteps,
    epoch: str | None,
    config: RunConfig,
    ledger: Ledger,
    session: RaySession,
    lease: DriverLease,
    progress: bool,
    reports: list[StageReport],
) -> None:
    """Run one stage's plans in order, adding their reports to `reports`."""
    driver_io = partial(call_with_retries, attempts=config.ray.storage_retries)
    for plan in steps.plans:
        lease.check()
        driver_io(partial(prepare, plan, config))
        reports.append(
            execute(
                plan,
                ledger,
                session,
                progress=progress,
                still_owner=lease.check,
                epoch=epoch,
                distrust=partial(lost_data, ledger=ledger),
            )
        )
        driver_io(partial(finish, plan, config))


@dataclass(kw_only=True)
class StageStatus:
    """One step's state; `rate` (chunks per second over the newest finishes), `eta_seconds`
    (what is left at that rate) and `last_finished` (epoch seconds) come from the ledger."""

    label: str
    done: int
    total: int | None  # None: cannot be planned yet (its input is not written)
    note: str = ""
    rate: float | None = None
    eta_seconds: float | None = None
    last_finished: float | None = None
    failed: int = 0  # chunks that failed for good and have not succeeded since
    last_error: str | None = None
    scores: dict[str, float] | None = None  # an evaluation's, from its report


def status(config: RunConfig) -> list[StageStatus]:
    """Per-stage done/total from the ledger; reads only."""
    ledger = ledger_for(config)
    rows = []
    for index, params in enumerate(config.stages):
        try:
            steps = plan_stages(config.model_copy(update={"stages": config.stages[: index + 1]}))
        except InputError as exc:
            label = f"{params.stage}"  # type: ignore[attr-defined]
            rows.append(StageStatus(label=label, done=0, total=None, note=str(exc).splitlines()[0]))
            continue
        rows.extend(stage_status(steps[-1], ledger))
    return rows


def lost_data(plan: StagePlan, key: str, finished: Finished, ledger: Ledger) -> BadChunks:
    """Finished chunks of `plan` whose objects are gone or changed (logged; they are recomputed)."""
    bad = chunks_with_bad_objects(plan, key, finished, ledger)
    if bad.count or bad.global_bad:
        log.warning(
            "%s: %d finished chunk(s)%s lost or changed objects (e.g. %s); recomputing them",
            plan.label,
            bad.count,
            " and its global step" if bad.global_bad else "",
            bad.example,
        )
    return bad


def report_status(label: str, url: str, context: StorageContext) -> StageStatus:
    """A step without a ledger, by the report it writes: done when there is one, with the
    scores it holds."""
    folder, _, key = url.rpartition("/")
    data = objects.get(folder, key, context)
    if data is None:
        return StageStatus(label=label, done=0, total=1, note="no report yet")
    found = json.loads(data)
    scored = {k: found[k] for k in ("arand", "voi_split", "voi_merge") if k in found}
    text = [f"{k} {v:.4f}" for k, v in scored.items()]
    note = ", ".join([*text, f"report: {url}"])
    return StageStatus(label=label, done=1, total=1, note=note, scores=scored or None)


def stage_status(steps: StageSteps, ledger: Ledger) -> list[StageStatus]:
    epoch = epoch_of(steps, ledger.context)
    rows = []
    for plan in steps.plans:
        if not plan.use_ledger:  # recomputed on every run (evaluation): what it last wrote
            if plan.report:
                rows.append(report_status(plan.label, plan.report, ledger.context))
            continue
        total = len(plan.grid)
        if epoch is False:  # its products hold another run's data: nothing of it stands
            rows.append(StageStatus(label=plan.label, done=0, total=total))
            continue
        key = ledger_key(plan, epoch)
        finished = ledger.finished(plan.stage, key, tuple(plan.grid.grid_shape))
        lost = chunks_with_bad_objects(plan, key, finished, ledger)
        notes = []
        if lost.count:
            notes.append(
                f"{lost.count} finished chunk(s) lost or changed objects, e.g. {lost.example}"
            )
        failures = [f for f in ledger.failures(plan.stage, key) if not finished.mask[f["position"]]]
        if plan.report and finished.count == total:
            notes.append(f"report: {plan.report}")
        done = finished.count - lost.count
        rate, last = finished.pace()
        rows.append(
            StageStatus(
                label=plan.label,
                done=done,
                total=total,
                note="; ".join(notes),
                rate=rate,
                eta_seconds=(total - done) / rate if rate and done < total else None,
                last_finished=last,
                failed=len(failures),
                last_error=failures[-1]["error"] if failures else None,
            )
        )
    return rows


def evaluate_layers(
    seg_url: str,
    gt_url: str,
    session: RaySession,
    *,
    ignore_gt: tuple[int, ...] = (0,),
    context: StorageContext = StorageContext(),
    chunk_shape: Vec3 = DEFAULT_CHUNK,
    progress: bool = True,
) -> Scores:
    """Scores of a segmentation against ground truth, streamed chunk by chunk on `session`."""
    seg, gt = Layer.open(seg_url, context), Layer.open(gt_url, context)
    tables = TableSum()
    plan = plan_scores(seg, gt, ignore_gt, tables, chunk_shape=chunk_shape)
    execute(plan, None, session, progress=progress)
    return scores(tables.total())


def score_layers(
    seg_url: str,
    gt_url: str,
    *,
    ray: RayConfig,
    storage: StorageConfig,
    ignore_gt: tuple[int, ...] = (0,),
    progress: bool = True,
) -> Scores:
    """`evaluate_layers` on a Ray session of its own (started only if there is work)."""
    session = RaySession(ray)
    try:
        return evaluate_layers(
            seg_url,
            gt_url,
            session,
            ignore_gt=ignore_gt,
            context=storage.context(),
            progress=progress,
        )
    finally:
        session.shutdown()


def verify_output(output: str, storage: StorageConfig) -> list[StageStatus]:
    """Each stage that wrote to `output` and still owns its products: chunks finished with all
    their objects in place. Reads markers, infos and listings, never the data."""
    ledger = Ledger(join_url(output, "ledger"), storage.context())
    rows = []
    for entry in remembered_stages(ledger):
        data = {"output": output, "stages": [entry], "storage": storage.model_dump()}
        try:
            (steps,) = plan_stages(RunConfig.model_validate(data))
        except InputError as exc:
            note = str(exc).splitlines()[0]
            rows.append(StageStatus(label=entry["stage"], done=0, total=None, note=note))
            continue
        if epoch_of(steps, ledger.context) is not False:  # else replaced since: not its data
            rows.extend(stage_status(steps, ledger))
    return rows
