"""What every stage's parameters share: strict frozen models, per-task resources, field types.

A stage's params model (declared in its module under `petavox.workflows.stages`) is part of the
run config's *spec*: its fields are hashed into the stage's identity, except those named in
`UNHASHED` (resources and other runtime choices that do not change the output).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

Triple = tuple[int, int, int]
PositiveTriple = tuple[
    Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]
]
NonNegativeTriple = tuple[
    Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]
]
Resolution = tuple[
    Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]
]


class Strict(BaseModel):
    """Unknown keys are errors; models are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes from ``1073741824``, ``"2GiB"``, ``"512MB"`` or ``"1.5G"`` (binary units)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else int(value)
    m = _MEMORY.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory size; write e.g. 2GiB, 512MiB or 1073741824")
    unit = (m.group(2) or "B").upper()[0]
    power = {"B": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit]
    return int(float(m.group(1)) * 1024**power)


class Resources(Strict):
    """What one task of a stage needs; the Ray autoscaler adds nodes that have it."""

    num_cpus: float = Field(1.0, ge=0, description="CPU cores per task")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per task")
    memory: int | None = Field(None, ge=0, description="memory per task, e.g. 2GiB")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        return parse_memory(value)


def _failure_budget(value: Any) -> Any:
    """``5`` (chunks), ``0.001`` or ``"0.1%"`` (of the step's chunks)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a count or a fraction (e.g. 5, 0.001 or 0.1%)"
            ) from None
    return value


def _whole_or_fraction(value: float) -> float:
    if value < 0 or (value >= 1 and value != int(value)):
        raise ValueError(f"{value} is neither a count of chunks nor a fraction below 1")
    return value


#: how many chunks of a step may fail: a count (``>= 1``, whole) or a fraction (``< 1``)
FailureBudget = Annotated[
    float, BeforeValidator(_failure_budget), AfterValidator(_whole_or_fraction)
]


def allowed_failures(budget: float, chunks: int) -> int:
    """The number of chunks of a step of `chunks` that `budget` lets fail."""
    return int(budget) if budget >= 1 or budget == 0 else int(budget * chunks)


class StageParams(Strict):
    """Fields every stage has. `resources`, `max_failures` and `task_timeout` are context (not
    hashed); the rest is the spec.

    Each subclass has a field ``stage: Literal["<name>"] = "<name>"``, the tag that tells the
    stages apart in a config (its stage declaration checks that the two agree)."""

    resources: Resources = Field(default_factory=Resources, description="Ray resources per task")
    max_failures: FailureBudget = Field(
        0,
        description="chunks that may fail (a bug, a bad input chunk) while the stage goes on: "
        "a count, or a fraction of the chunks such as 0.001; the stage then lists them, "
        "later stages that read its output do not start, and the run exits 1. 0: stop at the "
        "first",
    )
    task_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds a task may run; past that its worker is stopped and the task "
        "retried (ray.task_retries times), then counted as failed",
    )

    #: fields that do not change a stage's output, so they stay out of its identity hash
    UNHASHED: ClassVar[frozenset[str]] = frozenset({"resources", "max_failures", "task_timeout"})
    #: fields added after runs existed, whose default writes what was written before: hashed
    #: only when set to something else, so adding them changes no identity
    HASHED_UNLESS_DEFAULT: ClassVar[frozenset[str]] = frozenset()

    def hashed_fields(self) -> dict[str, Any]:
        fields = self.model_dump(mode="json", exclude=set(self.UNHASHED))
        for name in self.HASHED_UNLESS_DEFAULT:
            if getattr(self, name) == type(self).model_fields[name].default:
                fields.pop(name)
        return fields


class ShardSize(Strict):
    """Shards of a given number of storage chunks (a power of two)."""

    chunks_per_shard: int = Field(gt=0, description="storage chunks per shard, a power of two")

    @field_validator("chunks_per_shard")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"{value} is not a power of two (shards are 2^k chunks)")
        return value


def _chunks_per_shard(value: Any) -> Any:
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return {"chunks_per_shard": int(value)}
    return value


#: how a stage's output volume is stored: ``none``, ``auto`` or a number of chunks per shard
Sharding = Annotated[Literal["none", "auto"] | ShardSize | None, BeforeValidator(_chunks_per_shard)]
SHARDING_HELP = (
    "how the volume layers the stage writes are stored: none: one object per storage chunk; "
    "auto: neuroglancer sharded files of about 256 MiB of uncompressed voxels each; or N: "
    "shards of N storage chunks (a power of two). Tasks then write whole shards. Default: as "
    "the existing layer, else auto above 131072 storage chunks"
)


class VolumeWriterParams(StageParams):
    """Fields of a stage that writes volume layers (ingest, align, infer, segment)."""

    sharding: Sharding = Field(None, description=SHARDING_HELP)

    #: added after runs existed; its default (None) writes what was written before
    HASHED_UNLESS_DEFAULT: ClassVar[frozenset[str]] = frozenset({"sharding"})


def layer_sharding(choice: Literal["none", "auto"] | ShardSize | None) -> str | dict:
    """A `Sharding` field as `LayerSpec.sharding` takes it (None: "default")."""
    if choice is None:
        return "default"
    return choice if isinstance(choice, str) else choice.model_dump()
