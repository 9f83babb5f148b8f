"""The plan contract between planning and execution: what one stage step is, before any write.

A planner (in `petavox.workflows.stages`) turns a stage's params into `StagePlan`s; the runner
(`petavox.workflows.runner`) only executes them. Nothing here imports Ray or the runner.

A plan maps its job over its grid, one task per chunk, on Ray workers. Around that map, code can
run on the driver in exactly two ways: `DriverHooks` (check the inputs before the first task,
bind the job once Ray is up, receive each task's result, sum up after the last) and
`global_step`, run once after every chunk is done and recorded in the ledger like a chunk. Work
too big for the driver is a plan of its own over a one-task grid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from petavox.tasks.core.geometry import Chunk, ChunkGrid
from petavox.workflows.params import Resources


class ChunkJob(Protocol):
    """What a stage does to one chunk (defined in `petavox.tasks`, picklable, no Ray)."""

    def run(self, chunk: Chunk) -> Any: ...


def identity(stage: str, version: int, spec: Mapping[str, Any]) -> str:
    """Hash of what determines a step's output: its name, code version and hashed params."""
    blob = json.dumps({"stage": stage, "version": version, "spec": spec}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: called on the driver once Ray is up with the plan's job; yields the job to dispatch (e.g. bound
#: to GPU actors it starts) and releases what it started when the map ends
JobBinding = Callable[[ChunkJob], AbstractContextManager[ChunkJob]]


@dataclass(frozen=True)
class DriverHooks:
    """Code that runs on the driver around a plan's tasks, never on a worker.

    `before` and `on_done` run only when the plan has chunks to run (not when a resume finds
    them all done). `before` runs just before the first dispatch, after the plans before it
    ran (so it sees the data they wrote): it returns warnings for people, which the runner
    logs and keeps in the step's report; it never refuses the run. `on_done` runs after the
    last task; what it returns is the report's `summary`.
    """

    bind: JobBinding | None = None
    on_result: Callable[[Chunk, Any], None] | None = None  # each task's result, as it arrives
    before: Callable[[], Sequence[str]] | None = None
    on_done: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Output:
    """A product a plan writes that a user sees: a layer's data (`part` ``""``) or one part of a
    layer (``"scale:<key>"``, ``"mesh"``, ``"skeletons"``). Its writer (stage identity and
    epoch) is recorded in the layer's provenance before the plan's first write."""

    url: str
    part: str = ""

    def __str__(self) -> str:
        return f"{self.url} ({self.part})" if self.part else self.url


@dataclass(frozen=True, kw_only=True)
class StagePlan:
    """One step of a stage, computed before any write; built once, never changed.

    `stage` names the step's ledger folder; with `version` and `spec` it makes the `identity`
    under which the step's finished chunks are recorded. `layer_infos` are written before the step
    runs (only those that changed). A step with `use_ledger` off reruns in full every time.
    `final_infos` are written after the step succeeds: what tells readers a product is there
    (a segmentation's `mesh` key), never before it is. `outputs` are the products it writes
    (see `Output`); `lineage` (filled in by the pipeline
    from the writers of the layers the stage reads) enters the identity, so an upstream
    recompute recomputes this step too. `work` names the work folders
    (``<output>/intermediate/<stage>/<id>``) the step's tasks or global step write or read:
    `petavox clean` removes a folder only once every stage that uses it is finished.
    """

    label: str
    stage: str
    version: int
    spec: Mapping[str, Any]
    grid: ChunkGrid
    job: ChunkJob
    resources: Resources = field(default_factory=Resources)
    layer_infos: Mapping[str, dict] = field(default_factory=dict)
    final_infos: Mapping[str, dict] = field(default_factory=dict)
    hooks: DriverHooks = DriverHooks()
    global_step: Callable[[], None] | None = None
    use_ledger: bool = True
    outputs: tuple[Output, ...] = ()
    inputs: tuple[str, ...] = ()  # the layers (or sources) the stage reads; set by the pipeline
    lineage: str = ""
    max_failures: float = 0  # the stage's failure budget (`params.FailureBudget`); not hashed
    task_timeout: float | None = None  # seconds a task may run; not hashed
    report: str | None = None  # URL of a file the step writes for people (`status` shows it)
    work: tuple[str, ...] = ()  # URLs of the work folders it writes or reads; not hashed

    @cached_property
    def identity(self) -> str:
        spec = {**self.spec, "lineage": self.lineage} if self.lineage else self.spec
        return identity(self.stage, self.version, spec)


@dataclass(frozen=True, kw_only=True)
class StageSteps:
    """The plans of one config stage, with what the stage reads. Its products are claimed
    together (see `petavox.workflows.provenance`): one writer identity and one epoch for all
    its steps, so taking a product over recomputes every step that feeds it."""

    name: str
    plans: tuple[StagePlan, ...]
    inputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)  # its config entry, for `verify`

    @property
    def outputs(self) -> tuple[Output, ...]:
        return tuple(dict.fromkeys(o for p in self.plans for o in p.outputs))

    @property
    def work(self) -> tuple[str, ...]:
        """The work folders its plans use."""
        return tuple(dict.fromkeys(w for p in self.plans for w in p.work))

    @cached_property
    def identity(self) -> str:
        return identity(self.name, 0, {"steps": [p.identity for p in self.plans]})

    @property
    def label(self) -> str:
        return self.plans[0].label if self.plans else self.name
