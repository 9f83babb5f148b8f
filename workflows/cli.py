"""The `petavox` command line. Stage subcommands get their options from the stage params models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from petavox.tasks.core.errors import PetavoxError
from petavox.workflows.config import (
    STAGE_MODELS,
    ConfigError,
    RayConfig,
    RunConfig,
    StorageConfig,
    format_validation_error,
    load_config,
)
from petavox.workflows.runner import RaySession, StageReport

STAGE_POSITIONALS = {  # (field, metavar, help, required)
    "ingest": [
        ("input", "SRC", "image stack: slice folder, .tif, .npy or file.h5:dataset", True),
        ("output", "DST_URL", "layer URL to write", True),
    ],
    "downsample": [
        ("input", "INPUT_URL", "layer to downsample", True),
        ("output", "OUTPUT_URL", "layer that gets the pyramid (default: INPUT_URL)", False),
    ],
    "align": [
        ("input", "RAW_URL", "image stack to align (serial sections along z)", True),
        ("output", "OUTPUT_URL", "aligned image layer URL to write", True),
    ],
    "infer": [
        ("input", "RAW_URL", "image layer (uint8 or float 0-1)", True),
        ("output", "OUTPUT_URL", "boundary (or affinity) layer URL to write", True),
    ],
    "segment": [
        (
            "input",
            "BOUNDARY_URL",
            "boundary map (1 channel, high = membrane) or affinities (3 channels)",
            True,
        ),
        ("output", "OUTPUT_URL", "segmentation layer URL to write", True),
    ],
    "mesh": [("input", "SEG_URL", "segmentation layer to mesh (meshes go into its folder)", True)],
    "skeletonize": [
        (
            "input",
            "SEG_URL",
            "segmentation layer to skeletonize (skeletons go into its folder)",
            True,
        )
    ],
    "synapses": [
        ("input", "RAW_URL", "raw EM image layer (one channel)", True),
        ("segmentation", "SEG_URL", "segmentation of that image (same bounds)", True),
        ("output", "OUTPUT_URL", "folder for the synapse tables (chunks/*.parquet)", True),
    ],
    "connectome": [
        (
            "input",
            "OUTPUT_URL",
            "synapses output (chunks/*.parquet); the connectome "
            "is written beside them and summarized",
            True,
        )
    ],
}
COMMAND_STAGES = list(STAGE_POSITIONALS)  # `evaluate` has its own command (scores to stdout)
SKIPPED_FIELDS = {"stage", "resources", "input", "output"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def add_model_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    positionals: frozenset[str] = frozenset(),
) -> None:
    """One option per field but the `positionals`; values stay strings, the model validates."""
    for name, field in model.model_fields.items():
        if name in SKIPPED_FIELDS or name in positionals:
            continue
        ann = _unwrap_optional(field.annotation)
        origin = typing.get_origin(ann)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        text = field.description or ""
        if isinstance(default, tuple):
            text += f" (default {','.join(str(v) for v in default)})"
        elif default is not None:
            text += f" (default {default})"
        if ann is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif origin is typing.Literal:
            choices = typing.get_args(ann)
            parser.add_argument(
                _flag(name),
                dest=name,
                choices=choices,
                type=type(choices[0]),
                default=None,
                help=text,
                required=field.is_required(),
            )
        elif origin is tuple:
            parser.add_argument(
                _flag(name),
                dest=name,
                metavar="X,Y,Z",
                default=None,
                type=lambda s: [p.strip() for p in s.split(",")],
                help=text,
                required=field.is_required(),
            )
        else:
            parser.add_argument(
                _flag(name), dest=name, default=None, help=text, required=field.is_required()
            )


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("runtime (not part of the run's identity)")
    g.add_argument("--workers", type=int, help="CPUs of a local Ray (default: all cores)")
    g.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: local)")
    g.add_argument("--max-in-flight", type=int, help="tasks submitted at once")
    g.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


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
    return {"ray": ray, "storage": storage}


def stage_config(stage: str, args: argparse.Namespace) -> RunConfig:
    """The run config of an ad-hoc stage command: the stage alone, output root = its output."""
    model = STAGE_MODELS[stage]
    fields = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    fields["stage"] = stage
    output = fields.get("output") or fields["input"]
    data = {"output": output, "stages": [fields], **runtime_from_args(args)}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        text = format_validation_error(exc, f"for petavox {stage}")
        text = text.replace("stages[0].", "--").replace("_", "-")
        raise ConfigError(text) from None


def print_reports(reports: Sequence[StageReport]) -> None:
    for r in reports:
        note = f"{r.ran} run, {r.skipped} already done" if r.skipped else f"{r.ran} run"
        print(f"  {r.label}: {r.total} chunks ({note}) in {r.seconds:.1f} s")


# ---- commands ------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import run

    config = load_config(args.config)
    config = RunConfig.model_validate({**config.model_dump(), **runtime_from_args(args, config)})
    only = args.stages.split(",") if args.stages else None
    reports = run(config, only, progress=not args.quiet)
    print(f"run finished: {config.output}")
    print_reports(reports)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import status

    config = load_config(args.config)
    print(f"run {config.output}")
    for row in status(config):
        if row.total is None:
            print(f"  {row.label}: not ready ({row.note})")
        else:
            state = "done" if row.done == row.total else "incomplete"
            print(f"  {row.label}: {row.done}/{row.total} chunks {state}")
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import run

    config = stage_config(args.command, args)
    reports = run(config, progress=not args.quiet)
    print_reports(reports)
    return 0


def cmd_connectome(args: argparse.Namespace) -> int:
    """Build the connectome (resumes; nothing to do when built), then print its summary."""
    from petavox.tasks.synapse.connectome_jobs import summarize
    from petavox.workflows.pipeline import run

    config = stage_config(args.command, args)
    print_reports(run(config, progress=not args.quiet))
    summary = summarize(config.output, context=config.storage.context())
    print(f"synapses: {summary['synapses']} ({summary['connections']} with both partners)")
    print(f"neurons with synapses: {summary['segments']}")
    print(f"edges: {summary['edges']}")
    print("strongest connections (pre -> post: synapses, total cleft voxels):")
    for pre, post, count, size in summary["strongest"]:
        print(f"  {pre} -> {post}: {count}, {size}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from petavox.workflows.evaluate import evaluate_layers

    runtime = runtime_from_args(args)
    session = RaySession(RayConfig(**runtime["ray"]))
    try:
        result = evaluate_layers(
            args.seg,
            args.gt,
            session,
            ignore_gt=tuple(args.ignore),
            context=StorageConfig(**runtime["storage"]).context(),
            progress=not args.quiet,
        )
    finally:
        session.shutdown()
    print(json.dumps(result.to_dict()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from petavox.workflows.demo import run_demo

    runtime = runtime_from_args(args)
    return run_demo(
        size=args.size,
        output=args.output,
        seed=args.seed,
        runtime=runtime,
        progress=not args.quiet,
    )


def cmd_view(args: argparse.Namespace) -> int:
    from petavox.workflows.view import run_view

    storage = StorageConfig(s3_endpoint=args.s3_endpoint)
    return run_view(
        args.urls,
        port=args.port,
        segments=args.segments,
        serve=not args.no_serve,
        context=storage.context(),
    )


def _ids(text: str) -> list[int]:
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated segment ids") from None


def _triple(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three integers Z,Y,X")
    return parts[0], parts[1], parts[2]


def cmd_train(args: argparse.Namespace) -> int:
    from petavox.workflows.train import run_train

    if (args.val_raw is None) != (args.val_gt is None):
        raise ConfigError("give both --val-raw and --val-gt, or neither")
    validation = (args.val_raw, args.val_gt) if args.val_raw else None
    storage = StorageConfig(**runtime_from_args(args)["storage"])
    return run_train(
        args.raw,
        args.gt,
        args.out,
        args.minutes,
        args.target,
        args.seed,
        args.patch,
        batch=args.batch,
        base_channels=args.base_channels,
        depth=args.depth,
        pool=args.pool,
        validation=validation,
        context=storage.context(),
        progress=not args.quiet,
    )


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a 3D U-Net on your ground truth; writes ONNX")
    p.add_argument(
        "--raw",
        required=True,
        action="append",
        help="image: .npy (z,y,x) or layer URL; repeat for several volumes",
    )
    p.add_argument(
        "--gt",
        required=True,
        action="append",
        help="labels (0 = boundary/unknown), same shape; one per --raw",
    )
    p.add_argument("--out", required=True, help="model file to write (.onnx)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time (default 15)")
    p.add_argument(
        "--target",
        choices=("boundary", "affinities"),
        default="boundary",
        help="what the model predicts (default boundary)",
    )
    p.add_argument(
        "--patch",
        type=_triple,
        default=(32, 64, 64),
        help="training patch Z,Y,X (default 32,64,64)",
    )
    p.add_argument(
        "--pool",
        type=_triple,
        default=(2, 2, 2),
        help="pooling Z,Y,X per level; 1,2,2 for anisotropic stacks (default 2,2,2)",
    )
    p.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--base-channels", type=int, default=8, help="width of the U-Net (default 8)")
    p.add_argument("--depth", type=int, default=3, help="U-Net levels (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-raw", help="held-out image for a validation loss")
    p.add_argument("--val-gt", help="held-out labels for a validation loss")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint for s3:// inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train, workers=None, address=None, max_in_flight=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petavox",
        description="Chunked, resumable connectomics reconstruction on Ray and precomputed layers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="synthetic volume through every stage; prints the layers")
    p.add_argument("--size", type=int, default=256, help="volume side in x and y (z = size/4)")
    p.add_argument("--output", default="./petavox-demo", help="output root URL")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    add_runtime_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("view", help="show layers in Neuroglancer; serves local layers")
    p.add_argument(
        "urls",
        metavar="URL",
        nargs="+",
        help="layer URL or folder: image, segmentation or annotation layer",
    )
    p.add_argument("--port", type=int, help="port of the file server on 127.0.0.1 (default: any)")
    p.add_argument(
        "--segments",
        type=_ids,
        default=[],
        metavar="ID,ID...",
        help="segment ids to select (and mesh) in segmentation layers",
    )
    p.add_argument(
        "--no-serve",
        action="store_true",
        help="print the link and exit; serve the local layers yourself",
    )
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("run", help="run the stages of a config (resumes where it stopped)")
    p.add_argument("config", help="run config YAML")
    p.add_argument("--stages", help="comma-separated stages to run (default: all)")
    add_runtime_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="per-stage done/total chunks from the ledger")
    p.add_argument("config", help="run config YAML")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("evaluate", help="adapted Rand error and VOI of a segmentation, as JSON")
    p.add_argument("--seg", required=True, help="segmentation layer URL")
    p.add_argument("--gt", required=True, help="ground-truth layer URL")
    p.add_argument(
        "--ignore",
        type=int,
        nargs="*",
        default=[0],
        help="ground-truth labels to leave out (default 0)",
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_evaluate)

    add_train_parser(sub)

    for stage in COMMAND_STAGES:
        model = STAGE_MODELS[stage]
        p = sub.add_parser(stage, help=(model.__doc__ or "").strip().splitlines()[0])
        for dest, metavar, text, required in STAGE_POSITIONALS[stage]:
            p.add_argument(dest, metavar=metavar, help=text, nargs=None if required else "?")
        add_model_options(p, model, frozenset(f for f, *_ in STAGE_POSITIONALS[stage]))
        add_runtime_options(p)
        p.set_defaults(func=cmd_connectome if stage == "connectome" else cmd_stage)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except PetavoxError as exc:
        print(f"petavox: error: {exc}", file=sys.stderr)
        return 2 if not exc.__class__.__name__.startswith("ChunkFailed") else 1
    except KeyboardInterrupt:
        print("petavox: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
