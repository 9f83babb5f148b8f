"""petavox's Python API: `run`, `plan` and `status` of a run config, and one function per
declared stage (`ingest`, `segment`, ...), generated from the declarations. The package
`petavox` re-exports them (loaded on first use).

They do what the commands do. A stage function builds the run config `petavox <stage>` builds
(with `stage_run_config`, which the command line calls too) and runs it; a bad parameter is the
same `ConfigError`, raised before anything is written.
"""

from __future__ import annotations

import argparse
import inspect
import operator
import os
import re
import textwrap
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from functools import partial, reduce
from typing import TYPE_CHECKING, Any, Union

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from petavox.tasks.core.storage import normalize_url
from petavox.workflows.config import (
    ConfigError,
    RayConfig,
    RunConfig,
    StorageConfig,
    format_validation_error,
    load_config,
    parse_config,
)
from petavox.workflows.params import StageParams
from petavox.workflows.runner import StageReport
from petavox.workflows.stage import Stage
from petavox.workflows.stages import STAGE_NAMES, STAGES

if TYPE_CHECKING:
    from petavox.workflows.pipeline import StageStatus
    from petavox.workflows.report_page import RunReport

__all__ = ["ConfigError", "RunConfig", "plan", "run", "run_report", "status", *STAGE_NAMES]

#: a run config as the API takes it: the model, a dict as the YAML holds it, or the YAML's path
ConfigLike = Union[RunConfig, Mapping[str, Any], str, os.PathLike]  # noqa: UP007
#: the keywords every stage function has besides its stage's fields
RUNTIME = ("output_root", "ray", "storage", "overwrite", "progress")


class ParameterError(ConfigError, TypeError):
    """A stage function called with a parameter it does not have, or without one it needs:
    a `ConfigError` like any bad parameter, and the `TypeError` Python callers expect."""


# ---- a run config ---------------------------------------------------------------------------
def as_config(config: ConfigLike) -> RunConfig:
    """`config` as a `RunConfig`: as it is, validated from a dict, or loaded from a YAML file."""
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config), "given as a dict")
    if isinstance(config, str | os.PathLike):
        return load_config(os.fspath(config))
    raise TypeError(f"config: a RunConfig, a dict or a YAML file's path, not {config!r}")


def _selected(stages: str | Iterable[str] | None) -> list[str] | None:
    if stages is None:
        return None
    return stages.split(",") if isinstance(stages, str) else list(stages)


def run(
    config: ConfigLike,
    stages: str | Iterable[str] | None = None,
    *,
    progress: bool = True,
    report: bool = True,
) -> list[StageReport]:
    """Run the config's stages, or those named in `stages` ("a,b" or a list), as `petavox run`
    does: every stage is planned first (an invalid one raises before anything is written), then
    they run in order on Ray, resuming where an earlier run stopped, and (`report`) the run
    report is written under the output (see `run_report`). One report per step."""
    from petavox.workflows.pipeline import run as run_stages

    chosen = as_config(config)
    reports = run_stages(chosen, _selected(stages), progress=progress)
    if report:
        run_report(chosen, stages)
    return reports


def run_report(config: ConfigLike, stages: str | Iterable[str] | None = None) -> RunReport:
    """Write the run report of what the stages wrote (``<output>/report/index.html`` and
    ``report.json``) and return it: `.page` is its URL, `.lines()` what `petavox run` prints."""
    from petavox.workflows.pipeline import plan_stages
    from petavox.workflows.report_page import write_run_report

    chosen = as_config(config)
    return write_run_report(chosen, plan_stages(chosen, _selected(stages)))


def plan(
    config: ConfigLike,
    stages: str | Iterable[str] | None = None,
    *,
    workers: int | None = None,
    cluster: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What the run will take and cost, as `petavox plan --json` prints it: per stage and in
    total, on `workers` cores, the node types of a `cluster` file, or (default) the config's
    `ray.workers` or this machine. Reads the inputs' infos; writes nothing, starts no Ray."""
    from petavox.workflows.costs.command import cluster_from_args, estimate_config
    from petavox.workflows.pipeline import select_stages

    started = time.perf_counter()
    full = as_config(config)
    chosen = full.model_copy(update={"stages": select_stages(full, _selected(stages))})
    where = cluster_from_args(argparse.Namespace(workers=workers, cluster=cluster), full)
    _, report = estimate_config(chosen, where)
    report["planning_seconds"] = round(time.perf_counter() - started, 3)
    report["config"] = os.fspath(config) if isinstance(config, str | os.PathLike) else None
    report["output"] = full.output
    return report


def status(config: ConfigLike) -> list[StageStatus]:
    """Per stage (and step): chunks done and in all, from the ledger, as `petavox status`
    prints them; a finished chunk whose objects are gone counts as not done. Reads only."""
    from petavox.workflows.pipeline import status as stage_rows

    return stage_rows(as_config(config))


# ---- one stage alone, from its parameters (shared with the command line) ---------------------
def from_cwd(value: object, positional: bool) -> object:
    """A path given to a stage command or function is relative to the current directory, as a
    shell user means it: a positional without a scheme, or an option value with a folder in it
    (``run1/raw``, ``./gt``). URLs and bare names (a layer under the output) stay as they are."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or "://" in value:
        return value
    if positional or "/" in value or value.startswith((".", "~")):
        return normalize_url(value)
    return value


def stage_run_config(
    stage: Stage,
    fields: Mapping[str, Any],
    runtime: Mapping[str, Any],
    *,
    source: str,
    spell: Callable[[str], str] = str,
    output_root: str | os.PathLike | None = None,
) -> RunConfig:
    """The run config of `stage` run alone, as `petavox <stage>` and `petavox.<stage>()` build
    it: the given `fields` (paths resolved by `from_cwd`), `runtime` (its `ray`, `storage`,
    `overwrite`), and the output root `output_root`, else the stage's output, else its input.

    An invalid field is a `ConfigError` (`source` says where the config came from) naming the
    field as `spell` spells it (the command line: ``--chunk-shape``)."""
    positionals = {p.field for p in stage.positionals}
    given = {k: from_cwd(v, k in positionals) for k, v in fields.items()}
    given["stage"] = stage.name
    root = os.fspath(output_root) if output_root else given.get("output") or given.get("input")
    data = {"output": root, "stages": [given], **runtime}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        text = format_validation_error(exc, source)
        # the fields as the caller spells them; values are echoed as given
        text = re.sub(r"stages\[0\]\.(\w+)", lambda m: spell(m.group(1)), text)
        raise ConfigError(text) from None


def stage_fields(stage: Stage) -> list[tuple[str, FieldInfo]]:
    """The fields a stage function takes: positionals in order, the stage's own fields, then
    those every stage has (failure budget, timeout, resources), as the command's options."""
    fields = stage.params.model_fields
    positional = [p.field for p in stage.positionals]
    shared = set(StageParams.model_fields)
    rest = [n for n in fields if n != "stage" and n not in positional]
    rest.sort(key=lambda n: n in shared)
    return [(n, fields[n]) for n in positional + rest]


def _plain(annotation: Any) -> Any:
    """`annotation` without pydantic's `Annotated` constraints: what a reader of the signature
    needs (``tuple[int, int, int] | None``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _plain(args[0])
    if origin is None or origin is typing.Literal or not args:
        return annotation
    plain = tuple(_plain(a) for a in args)
    try:
        if origin in (typing.Union, types.UnionType):
            return reduce(operator.or_, plain)
        return origin[plain]
    except TypeError:
        return annotation


def _default(field: FieldInfo) -> Any:
    if field.is_required():
        return inspect.Parameter.empty
    return field.get_default(call_default_factory=True)


def stage_signature(stage: Stage) -> inspect.Signature:
    """The stage's fields as parameters (its command's positionals positional, the rest
    keyword-only, with the model's defaults), then the runtime keywords (`RUNTIME`)."""
    required = {p.field for p in stage.positionals if p.required}
    kinds = {p.field: inspect.Parameter.POSITIONAL_OR_KEYWORD for p in stage.positionals}
    params = [
        inspect.Parameter(
            name,
            kinds.get(name, inspect.Parameter.KEYWORD_ONLY),
            default=inspect.Parameter.empty if name in required else _default(field),
            annotation=_plain(field.annotation),
        )
        for name, field in stage_fields(stage)
    ]
    keyword = partial(inspect.Parameter, kind=inspect.Parameter.KEYWORD_ONLY)
    params += [
        keyword("output_root", default=None, annotation=str | None),
        keyword("ray", default=None, annotation=RayConfig | dict | None),
        keyword("storage", default=None, annotation=StorageConfig | dict | None),
        keyword("overwrite", default=False, annotation=bool),
        keyword("progress", default=True, annotation=bool),
    ]
    return inspect.Signature(params, return_annotation=list[StageReport])


RUNTIME_DOC = """\
Runtime (not part of the run's identity):
    output_root: the run's root: its ledger, and where bare layer names resolve (default:
        the stage's output, else its input, as `petavox {name}` has it)
    ray, storage: as the run config's `ray:` and `storage:` (dicts, or RayConfig and
        StorageConfig)
    overwrite: replace outputs made by another stage or from other inputs (else refused)
    progress: progress bars"""


def stage_doc(stage: Stage) -> str:
    """The stage function's docstring: the params model's, then every parameter."""
    lines = [
        inspect.cleandoc(stage.params.__doc__ or stage.name),
        "",
        textwrap.fill(
            f"Runs the stage alone on Ray, as `petavox {stage.name}` does (paths without a "
            "scheme are relative to the current directory), and returns a report per step. A "
            "bad parameter raises `ConfigError` before anything is written.",
            96,
        ),
        "",
        "Parameters, as the stage's entry in a run config:",
    ]
    for name, field in stage_fields(stage):
        text = f"{name}: {field.description or ''}".rstrip(": ")
        lines += textwrap.wrap(text, 96, initial_indent="    ", subsequent_indent="        ")
    return "\n".join([*lines, "", RUNTIME_DOC.format(name=stage.name)])


def stage_config(stage: Stage, *args: Any, **kwargs: Any) -> RunConfig:
    """The run config `petavox.<stage>(*args, **kwargs)` runs (nothing is planned or run)."""
    try:
        bound = stage_signature(stage).bind(*args, **kwargs)
    except TypeError as exc:
        names = ", ".join(stage_signature(stage).parameters)
        raise ParameterError(f"petavox.{stage.name}(): {exc}; its parameters: {names}") from None
    given = dict(bound.arguments)
    runtime = {k: given.pop(k) for k in RUNTIME if k in given}
    root = runtime.pop("output_root", None)
    if not (root or given.get("output") or given.get("input")):
        raise ParameterError(f"petavox.{stage.name}(): give output_root (the run's root URL)")
    runtime.pop("progress", None)
    context = {k: v for k, v in runtime.items() if v is not None}
    return stage_run_config(
        stage, given, context, source=f"for petavox.{stage.name}()", output_root=root
    )


def run_stage(stage: Stage, *args: Any, **kwargs: Any) -> list[StageReport]:
    """`petavox.<stage>(...)`: the stage alone, planned then run on Ray; its reports."""
    from petavox.workflows.pipeline import run as run_stages

    config = stage_config(stage, *args, **kwargs)
    return run_stages(config, progress=kwargs.get("progress", True))


def stage_function(stage: Stage) -> Callable[..., list[StageReport]]:
    """`petavox.<stage>`, with the stage's signature and documentation; its `config` attribute
    returns the run config a call would run."""

    def call(*args: Any, **kwargs: Any) -> list[StageReport]:
        return run_stage(stage, *args, **kwargs)

    call.__name__ = call.__qualname__ = stage.name
    call.__module__ = "petavox"
    call.__doc__ = stage_doc(stage)
    call.__signature__ = stage_signature(stage)  # type: ignore[attr-defined]
    call.config = partial(stage_config, stage)  # type: ignore[attr-defined]
    return call


def _stage_functions() -> dict[str, Callable[..., list[StageReport]]]:
    taken = set(globals())
    for stage in STAGES:
        if stage.name in taken:
            raise TypeError(f"stage {stage.name}: the name is taken in petavox's API")
        clash = set(RUNTIME) & set(stage.params.model_fields)
        if clash:
            raise TypeError(f"stage {stage.name}: field(s) {sorted(clash)} are runtime keywords")
    return {stage.name: stage_function(stage) for stage in STAGES}


STAGE_FUNCTIONS = _stage_functions()
globals().update(STAGE_FUNCTIONS)
