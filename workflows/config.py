"""The run config: one YAML file, validated by pydantic before anything is dispatched or written.

A config has three parts. `output` and `stages` are the *spec*: what to compute, hashed into each
task's identity. `ray` and `storage` are runtime *context*: where and how to run, never hashed;
so are `overwrite` and `prices` (what `petavox plan` prices a run at).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext, normalize_url
from petavox.workflows.costs.prices import PriceOverrides
from petavox.workflows.params import Strict
from petavox.workflows.stages import STAGE_NAMES, STAGES, stage_named


def _stage_union() -> Any:
    """Any declared stage's params, told apart by their `stage:` tag."""
    return Annotated[Union[tuple(s.params for s in STAGES)], Field(discriminator="stage")]  # noqa: UP007


AnyStage = _stage_union()


class RayConfig(Strict):
    """Where tasks run. Context: never hashed."""

    address: str = Field(
        "local", description="local (start Ray here), auto (join the running cluster) or HOST:PORT"
    )
    workers: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: all cores)")
    gpus: int | None = Field(None, ge=0, description="GPUs of a local Ray (default: detected)")
    max_in_flight: int | None = Field(
        None, ge=1, description="tasks submitted at once (default: 2 × cluster CPUs)"
    )
    task_retries: int = Field(3, ge=0, description="reruns of a task whose worker died")
    storage_retries: int = Field(
        2,
        ge=0,
        description="reruns of a chunk whose storage request still fails transiently after "
        "the storage client's own retries (see the README's Retries)",
    )
    ledger_flush_seconds: float = Field(
        30.0,
        ge=0.0,
        description="the driver writes finished chunks to the ledger at most this often (a "
        "driver killed in between loses at most this much finished work; 0: after every chunk)",
    )
    lease_seconds: float = Field(
        60.0,
        ge=5.0,
        description="a driver's lease on its output lapses this long after its last heartbeat",
    )


class StorageConfig(Strict):
    """How to reach object storage. Context: never hashed; credentials come from the environment."""

    s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint for s3:// URLs, e.g. http://127.0.0.1:9000"
    )
    s3_region: str = Field("us-east-1", description="region sent to the S3 endpoint")
    gcs_endpoint: str | None = Field(None, description="GCS emulator endpoint (tests)")

    def context(self) -> StorageContext:
        return StorageContext(
            s3_endpoint=self.s3_endpoint, s3_region=self.s3_region, gcs_endpoint=self.gcs_endpoint
        )


class RunConfig(Strict):
    """A whole run: the output root, the stages in order, and the runtime context."""

    output: str = Field(description="run output root URL: layers and the ledger go here")
    stages: list[AnyStage] = Field(min_length=1, description="stages to run, in order")
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    overwrite: bool = Field(
        False,
        description="let a stage replace a product made by another stage or from other "
        "inputs (never hashed)",
    )
    prices: PriceOverrides = Field(
        default_factory=PriceOverrides,
        description="cloud prices for `petavox plan`, overriding its dated defaults (never hashed)",
    )

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        return normalize_url(value)


class ConfigError(InputError):
    """The run config is invalid; the message lists every problem with its key."""


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in STAGE_NAMES and parts and parts[-1].endswith("]"):
            continue  # the discriminator tag pydantic inserts
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _allowed(loc: tuple) -> str:
    """For an unknown key: the keys allowed at that place."""
    model: type[BaseModel] | None = RunConfig
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        if item in STAGE_NAMES:
            model = stage_named(item).params
            continue
        field = model.model_fields.get(item) if model is not None else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is None:
        return ""
    return "; allowed keys: " + ", ".join(sorted(model.model_fields))


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid run config {source}:"]
    for err in exc.errors():
        where = _location(err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key{_allowed(err['loc'])}")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"  {where}: unknown stage; stages are {', '.join(STAGE_NAMES)}")
        elif err["type"] == "union_tag_not_found":
            lines.append(f"  {where}: missing 'stage:' ({', '.join(STAGE_NAMES)})")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid run config {source}: expected a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path, what: str, error: type[InputError] = ConfigError) -> Any:
    """The content of a YAML file; `error` ("`what` PATH does not exist", "... is not valid
    YAML") when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None


def load_config(path: str | Path) -> RunConfig:
    return parse_config(read_yaml(path, "run config"), str(path))


def dump_config(config: RunConfig) -> str:
    data = config.model_dump(mode="json", exclude_defaults=True)
    data["output"] = config.output
    # the discriminator is a default value too, but the file cannot do without it
    data["stages"] = [
        {"stage": s.stage, **d}  # type: ignore[attr-defined]
        for s, d in zip(config.stages, data["stages"])
    ]
    return yaml.safe_dump(data, sort_keys=False)
