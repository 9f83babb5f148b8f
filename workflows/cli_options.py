"""Command-line options shared by the commands: a model's fields as options, and the runtime
options (where Ray runs, the S3 endpoint) that never enter a run's identity."""

from __future__ import annotations

import argparse
import types
import typing
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from petavox.workflows.config import RunConfig

SKIPPED_FIELDS = {"stage", "resources", "input", "output"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _help(field: Any) -> str:
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    text = field.description or ""
    if isinstance(default, tuple):
        text += f" (default {','.join(str(v) for v in default)})"
    elif default is not None:
        text += f" (default {default})"
    return text


def nested_values(sizes: list[int], text: str) -> list[list[str]]:
    """``0,0,0,64,64,32`` as [[0,0,0],[64,64,32]] for a field of tuples of these `sizes`."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != sum(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: give {sum(sizes)} comma-separated values")
    out, start = [], 0
    for size in sizes:
        out.append(parts[start : start + size])
        start += size
    return out


def mapping(text: str) -> dict[str, str]:
    """``a=b,c=d`` as {"a": "b", "c": "d"}."""
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    if not all("=" in p for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=VALUE pairs, comma-separated")
    return dict(p.split("=", 1) for p in pairs)


def add_model_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    positionals: frozenset[str] = frozenset(),
) -> None:
    """One option per field but the `positionals`, the stage's own first and those every stage
    has (`StageParams`: failure budget, timeout) last; values stay strings, the model validates."""
    from petavox.workflows.params import StageParams

    shared = set(StageParams.model_fields)
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] in shared)
    for name, field in fields:
        if name in SKIPPED_FIELDS or name in positionals:
            continue
        ann = _unwrap_optional(field.annotation)
        origin = typing.get_origin(ann)
        common = {"dest": name, "default": None, "help": _help(field)}
        if ann is bool:
            parser.add_argument(flag(name), action=argparse.BooleanOptionalAction, **common)
            continue
        common["required"] = field.is_required()
        if origin is typing.Literal:
            choices = typing.get_args(ann)
            parser.add_argument(flag(name), choices=choices, type=type(choices[0]), **common)
        elif origin is tuple and all(typing.get_origin(a) is tuple for a in typing.get_args(ann)):
            sizes = [len(typing.get_args(a)) for a in typing.get_args(ann)]  # ((x,y,z),(x,y,z))
            metavar = ",".join(f"{axis}{k}" for k in range(len(sizes)) for axis in "XYZ")
            parser.add_argument(
                flag(name), metavar=metavar, type=partial(nested_values, sizes), **common
            )
        elif origin is tuple:
            parser.add_argument(
                flag(name),
                metavar="X,Y,Z",
                type=lambda s: [p.strip() for p in s.split(",")],
                **common,
            )
        elif origin is dict:
            parser.add_argument(flag(name), metavar="NAME=VALUE,...", type=mapping, **common)
        else:
            parser.add_argument(flag(name), **common)


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime (not part of the run's identity)")
    g.add_argument("--workers", type=int, help="CPUs of a local Ray (default: all cores)")
    g.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: local)")
    g.add_argument("--max-in-flight", type=int, help="tasks submitted at once")
    g.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs made by another stage or from other inputs (refused otherwise)",
    )


def runtime_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> dict[str, Any]:
    ray = dict(base.ray.model_dump()) if base else {}
    storage = dict(base.storage.model_dump()) if base else {}
    if args.workers is not None:
        ray["workers"] = args.workers
    if args.address:
        ray["address"] = args.address
    if args.max_in_flight:
        ray["max_in_flight"] = args.max_in_flight
    if args.s3_endpoint:
        storage["s3_endpoint"] = args.s3_endpoint
    runtime: dict[str, Any] = {"ray": ray, "storage": storage}
    if getattr(args, "overwrite", False) or (base is not None and base.overwrite):
        runtime["overwrite"] = True
    return runtime
