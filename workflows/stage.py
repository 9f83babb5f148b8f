"""A stage's one declaration: its name, params model, planner, command line and summary.

Each module of `petavox.workflows.stages` declares ``STAGE = Stage(...)``. The run config's
union of stages, the planner lookup and the `petavox <stage>` subcommands are all derived from
the list of those declarations, so a stage is reachable everywhere once it is declared.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from petavox.tasks.core.storage import StorageContext
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import StageParams
from petavox.workflows.plan import StagePlan

P = TypeVar("P", bound=StageParams)


@dataclass(frozen=True, kw_only=True)
class Positional:
    """A positional argument of the stage's command, filling one field of its params."""

    field: str
    metavar: str
    help: str
    required: bool = True


class StageCommand(Protocol):
    """A command of a stage's own, instead of the one derived from its params (`evaluate`)."""

    help: str  # one line for `petavox --help`

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


@dataclass(frozen=True)
class Stage(Generic[P]):
    """Everything petavox needs to know about one stage.

    `order` places it in the pipeline (the order of `petavox --help` and of the stage lists in
    messages). `planner` returns the stage's steps in order; it validates its inputs through the
    catalog and writes nothing. `positionals` are the fields its command takes as positional
    arguments (the other fields become options). `summary`, if any, prints what the stage made
    after its command ran, given the run's output root.
    """

    name: str
    order: int
    params: type[P]
    planner: Callable[[P, Catalog], Sequence[StagePlan]]
    positionals: tuple[Positional, ...] = ()
    summary: Callable[[str, StorageContext], None] | None = None
    command: StageCommand | None = None

    def __post_init__(self) -> None:
        tag = self.params.model_fields.get("stage")
        if tag is None or typing.get_args(tag.annotation) != (self.name,):
            raise TypeError(
                f"stage {self.name}: {self.params.__name__} needs the field "
                f'stage: Literal["{self.name}"] = "{self.name}"'
            )
        for p in self.positionals:
            if p.field not in self.params.model_fields:
                raise TypeError(f"stage {self.name}: positional {p.field} is not a params field")

    def plan(self, params: Any, catalog: Catalog) -> list[StagePlan]:
        if not isinstance(params, self.params):
            raise TypeError(f"stage {self.name} plans {self.params.__name__}, not {params!r}")
        return list(self.planner(params, catalog))
