"""The stages: one module each, declaring ``STAGE = Stage(...)``; found here, in pipeline order.

Adding a stage is adding its module here (with its params, planner and command line in one
`Stage`), its tasks package, its tests and its README section: the config, the planners and
the command line pick it up from `STAGES`.
"""

from __future__ import annotations

import importlib
import pkgutil

from petavox.tasks.core.errors import InputError
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import StageParams
from petavox.workflows.plan import StagePlan
from petavox.workflows.stage import Stage


def _discover() -> tuple[Stage, ...]:
    found = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        stage = getattr(module, "STAGE", None)
        if not isinstance(stage, Stage):
            raise TypeError(f"{module.__name__} declares no STAGE; stages/ holds stages only")
        found.append(stage)
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two stages share a name: {sorted(names)}")
    return tuple(sorted(found, key=lambda s: (s.order, s.name)))


STAGES: tuple[Stage, ...] = _discover()
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def stage_named(name: str) -> Stage:
    """The stage called `name`; an `InputError` listing the stages if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}") from None


def plan_stage(params: StageParams, catalog: Catalog) -> list[StagePlan]:
    """The runner plans of one config stage, in order (a stage may take several steps)."""
    return stage_named(params.stage).plan(params, catalog)  # type: ignore[attr-defined]
