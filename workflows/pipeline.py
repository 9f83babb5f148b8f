"""A whole run: plan every selected stage first (no writes), then prepare and execute in order."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import read_info, write_info
from petavox.tasks.core.storage import join_url
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import STAGE_MODELS, RunConfig, StageParams
from petavox.workflows.ledger import Ledger
from petavox.workflows.runner import RaySession, StagePlan, StageReport, execute
from petavox.workflows.stages import plan_stage


def ledger_for(config: RunConfig) -> Ledger:
    return Ledger(join_url(config.output, "ledger"), config.storage.context())


def select_stages(config: RunConfig, only: Iterable[str] | None) -> list[StageParams]:
    if not only:
        return list(config.stages)
    wanted = {s.strip() for s in only if s.strip()}
    unknown = wanted - set(STAGE_MODELS)
    if unknown:
        raise InputError(
            f"unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGE_MODELS)}"
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
    plans = plan_run(config, only)
    ledger = ledger_for(config)
    own_session = session is None
    session = session or RaySession(config.ray)
    reports = []
    try:
        for plan in plans:
            prepare(plan, config)
            reports.append(execute(plan, ledger, session, progress=progress))
    finally:
        if own_session:
            session.shutdown()
    return reports


@dataclass
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
            rows.append(StageStatus(label, 0, None, str(exc).splitlines()[0]))
            continue
        for plan in plans:
            if not plan.use_ledger:
                continue  # recomputed on every run (evaluation)
            ids = {c.id for c in plan.grid}
            done = len(ledger.done(plan.stage, plan.identity) & ids)
            rows.append(StageStatus(plan.label, done, len(ids)))
    return rows
