"""A whole run: plan every selected stage first (no writes), then prepare and execute in order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, read_info, write_info
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.evaluate.metrics import Scores, scores
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import RayConfig, RunConfig, StorageConfig
from petavox.workflows.lease import DriverLease
from petavox.workflows.ledger import Ledger
from petavox.workflows.params import StageParams
from petavox.workflows.plan import StagePlan
from petavox.workflows.runner import RaySession, StageReport, execute
from petavox.workflows.stages import STAGE_NAMES, plan_stage
from petavox.workflows.stages.evaluate import DEFAULT_CHUNK, TableSum, plan_scores


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


def plan_run(config: RunConfig, only: Iterable[str] | None = None) -> list[StagePlan]:
    """Plan the selected stages in order. Raises before anything is written if any is invalid."""
    catalog = Catalog(config.output, config.storage.context())
    return [plan for params in select_stages(config, only) for plan in plan_stage(params, catalog)]


def prepare(plan: StagePlan, config: RunConfig) -> None:
    """Write the info files the plan needs (only those that changed)."""
    context = config.storage.context()
    for url, info in plan.layer_infos.items():
        if read_info(url, context) != info:
            write_info(url, info, context)


def run(
    config: RunConfig,
    only: Iterable[str] | None = None,
    *,
    progress: bool = True,
    session: RaySession | None = None,
) -> list[StageReport]:
    """Plan, then take the output's lease (one driver per output) and run the plans in order."""
    plans = plan_run(config, only)
    ledger = ledger_for(config)
    own_session = session is None
    session = session or RaySession(config.ray)
    reports = []
    lease = DriverLease(config.output, config.storage.context(), ttl=config.ray.lease_seconds)
    try:
        with lease:
            for plan in plans:
                lease.check()
                prepare(plan, config)
                reports.append(
                    execute(plan, ledger, session, progress=progress, still_owner=lease.check)
                )
    finally:
        if own_session:
            session.shutdown()
    return reports


@dataclass(kw_only=True)
class StageStatus:
    label: str
    done: int
    total: int | None  # None: cannot be planned yet (its input is not written)
    note: str = ""


def status(config: RunConfig) -> list[StageStatus]:
    """Per-stage done/total from the ledger; reads only."""
    ledger = ledger_for(config)
    catalog = Catalog(config.output, config.storage.context())
    rows = []
    for params in config.stages:
        try:
            plans = plan_stage(params, catalog)
        except InputError as exc:
            label = f"{params.stage}"  # type: ignore[attr-defined]
            rows.append(StageStatus(label=label, done=0, total=None, note=str(exc).splitlines()[0]))
            continue
        for plan in plans:
            if not plan.use_ledger:
                continue  # recomputed on every run (evaluation)
            ids = {c.id for c in plan.grid}
            done = len(ledger.done(plan.stage, plan.identity) & ids)
            rows.append(StageStatus(label=plan.label, done=done, total=len(ids)))
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
