"""The `petavox` command line: the run commands, and one subcommand per declared stage."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

import petavox
from petavox.tasks.core.errors import PetavoxError
from petavox.tasks.core.storage import normalize_url
from petavox.workflows.analyze import add_analyze_parser
from petavox.workflows.api import from_cwd as from_cwd  # re-exported: cli.from_cwd as before
from petavox.workflows.api import stage_run_config
from petavox.workflows.clean import add_clean_parser
from petavox.workflows.cli_options import (
    add_model_options,
    add_runtime_options,
    flag,
    runtime_from_args,
)
from petavox.workflows.config import ConfigError as ConfigError  # `stage_config` raises it
from petavox.workflows.config import (
    RayConfig,
    RunConfig,
    StorageConfig,
    load_config,
)
from petavox.workflows.costs.command import add_plan_parser
from petavox.workflows.costs.report import duration
from petavox.workflows.failures import ChunksFailedError, RunIncompleteError
from petavox.workflows.interrupts import terminate_as_interrupt
from petavox.workflows.proofreading import add_proofreading_parser
from petavox.workflows.runner import ChunkFailedError, StageReport
from petavox.workflows.stage import Stage
from petavox.workflows.stages import STAGES
from petavox.workflows.train_cli import add_train_parser, add_tune_parser

if TYPE_CHECKING:
    from petavox.workflows.pipeline import StageStatus


def stage_config(stage: Stage, args: argparse.Namespace) -> RunConfig:
    """The run config of an ad-hoc stage command: the stage alone, output root = its output (else
    its input); built as `petavox.<stage>()` builds it, errors naming the options."""
    model = stage.params
    fields = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    runtime = runtime_from_args(args)
    return stage_run_config(stage, fields, runtime, source=f"for petavox {stage.name}", spell=flag)


def print_reports(reports: Sequence[StageReport]) -> None:
    for r in reports:
        note = f"{r.ran} run, {r.skipped} already done" if r.skipped else f"{r.ran} run"
        print(f"  {r.label}: {r.total} chunks ({note}) in {r.seconds:.1f} s")


class StageRun:
    """`petavox <stage> POSITIONALS [--field value ...]`: the stage alone on Ray, then its
    summary; the command every stage gets unless it declares one of its own."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.help = (stage.params.__doc__ or "").strip().splitlines()[0]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for p in self.stage.positionals:
            nargs = None if p.required else "?"
            parser.add_argument(p.field, metavar=p.metavar, help=p.help, nargs=nargs)
        names = frozenset(p.field for p in self.stage.positionals)
        add_model_options(parser, self.stage.params, names)
        add_runtime_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        from petavox.workflows.pipeline import run

        config = stage_config(self.stage, args)
        print_reports(run(config, progress=not args.quiet))
        if self.stage.summary is not None:
            self.stage.summary(config.output, config.storage.context())
        return 0


def with_runtime(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The config with the command line's runtime options (ray, storage) applied. The stages are
    kept as validated: dumping them with their defaults would mark every option as given (the
    mesh stage refuses the other format's options when given)."""
    runtime = runtime_from_args(args, config)
    return config.model_copy(
        update={
            "ray": RayConfig.model_validate(runtime["ray"]),
            "storage": StorageConfig.model_validate(runtime["storage"]),
            "overwrite": runtime.get("overwrite", config.overwrite),
        }
    )


# ---- commands ------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import plan_stages, run
    from petavox.workflows.report_page import write_run_report

    config = with_runtime(load_config(args.config), args)
    only = args.stages.split(",") if args.stages else None
    reports = run(config, only, progress=not args.quiet)
    print(f"run finished: {config.output}")
    print_reports(reports)
    print("\n".join(write_run_report(config, plan_stages(config, only)).lines()))
    return 0


def print_status(rows: Sequence[StageStatus]) -> bool:
    """Print status rows; True when every stage is done."""
    complete = True
    for row in rows:
        if row.total is None:
            print(f"  {row.label}: not ready ({row.note})")
            complete = False
            continue
        state = "done" if row.done == row.total else "incomplete"
        notes = "; ".join(n for n in (pace_text(row, time.time()), row.note) if n)
        print(
            f"  {row.label}: {row.done}/{row.total} chunks {state}"
            + (f" ({notes})" if notes else "")
        )
        complete = complete and row.done == row.total
    return complete


def rate_text(per_second: float) -> str:
    for seconds, unit in ((1, "s"), (60, "min")):
        if per_second * seconds >= 1:
            return f"{per_second * seconds:.3g} chunks/{unit}"
    return f"{per_second * 3600:.3g} chunks/h"


def pace_text(row: StageStatus, now: float) -> str:
    """Throughput, ETA, when the last chunk finished and the failures, as far as known."""
    parts = []
    if row.rate:
        parts.append(rate_text(row.rate))
    if row.eta_seconds is not None:
        parts.append(f"ETA {duration(row.eta_seconds)} at that pace")
    if row.last_finished is not None and row.total is not None and row.done < row.total:
        parts.append(f"last chunk finished {duration(max(now - row.last_finished, 0))} ago")
    if row.failed:
        parts.append(f"{row.failed} chunk(s) failed, last error: {row.last_error}")
    return ", ".join(parts)


def cmd_status(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import status

    config = load_config(args.config)
    if args.s3_endpoint:
        storage = {**config.storage.model_dump(), "s3_endpoint": args.s3_endpoint}
        config = config.model_copy(update={"storage": StorageConfig.model_validate(storage)})
    rows = status(config)
    if args.json:
        print(json.dumps({"output": config.output, "stages": [asdict(r) for r in rows]}))
        return 0
    print(f"run {config.output}")
    print_status(rows)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from petavox.workflows.pipeline import verify_output

    output = normalize_url(args.output)
    storage = StorageConfig.model_validate(runtime_from_args(args)["storage"])
    rows = verify_output(output, storage)
    print(f"output {output}")
    if not rows:
        print("  no stage has written to it")
        return 1
    if print_status(rows):
        return 0
    print(
        "some chunks are not done, or lost or changed objects since: run the stage again to "
        "recompute them"
    )
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from petavox.workflows.demo import run_demo

    runtime = runtime_from_args(args)
    return run_demo(
        size=args.size,
        output=args.output,
        seed=args.seed,
        runtime=runtime,
        progress=not args.quiet,
        sharding=args.sharding,
        tiles=args.tiles,
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


def add_demo_and_view(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic volume through every stage; prints the layers")
    p.add_argument("--size", type=int, default=256, help="volume side in x and y (z = size/4)")
    p.add_argument("--output", default="./petavox-demo", help="output root URL")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic volume")
    p.add_argument(
        "--sharding",
        default="none",
        help="storage of every volume layer: none, auto or N (storage chunks per shard, a "
        "power of two; the demo's tasks hold 16); the voxels are the same either way",
    )
    p.add_argument(
        "--tiles",
        action="store_true",
        help="start from tiles: each raw section cut into 3×3 damaged tiles, montaged first",
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("view", help="show layers in Neuroglancer; serves local layers")
    p.add_argument(
        "urls",
        metavar="URL",
        nargs="+",
        help="layer URL or folder: image, segmentation or annotation layer",
    )
    p.add_argument(
        "--port",
        type=int,
        help="port of the file server on 127.0.0.1; the local viewer takes the next one "
        "(default: any free ones)",
    )
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


def add_run_and_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the stages of a config (resumes where it stopped)")
    p.add_argument("config", help="run config YAML")
    p.add_argument("--stages", help="comma-separated stages to run (default: all)")
    add_runtime_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="per-stage done/total chunks from the ledger")
    p.add_argument("config", help="run config YAML")
    p.add_argument("--json", action="store_true", help="the rows as one line of JSON")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "verify",
        help="check every stage that wrote to an output: finished chunks with all their objects "
        "(exit 1 if any are missing)",
    )
    p.add_argument("output", metavar="OUTPUT_URL", help="run output root")
    add_runtime_options(p)
    p.set_defaults(func=cmd_verify)


def add_stage_commands(sub: argparse._SubParsersAction) -> None:
    """`petavox <stage>` for every declared stage, with its own command or the derived one."""
    for stage in STAGES:
        command = stage.command or StageRun(stage)
        p = sub.add_parser(stage.name, help=command.help)
        command.add_arguments(p)
        p.set_defaults(func=command.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petavox",
        description="Chunked, resumable connectomics reconstruction on Ray and precomputed layers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"petavox {petavox.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_and_view(sub)
    add_run_and_status(sub)
    add_clean_parser(sub)
    add_plan_parser(sub)
    add_train_parser(sub)
    add_tune_parser(sub)
    add_proofreading_parser(sub)
    add_analyze_parser(sub)
    add_stage_commands(sub)
    return parser


def exit_status(exc: PetavoxError) -> int:
    """1 for a failure inside a task (a bug, storage giving up); 2 for bad input, found before
    work starts or inside a task."""
    if isinstance(exc, ChunksFailedError | RunIncompleteError):
        return 1  # a stage went on through failed chunks: they are listed, the run is not done
    return 1 if isinstance(exc, ChunkFailedError) and not exc.bad_input else 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    terminate_as_interrupt()
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except PetavoxError as exc:
        print(f"petavox: error: {exc}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("petavox: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader closed stdout (`petavox status | head`): stop quietly, as a tool killed by
        # SIGPIPE does; stdout goes to /dev/null so the interpreter's final flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
