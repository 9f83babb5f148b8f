"""`petavox plan CONFIG [--json] [--workers N | --cluster FILE] [--steps]`: plan every stage of a
config (reading inputs' infos, writing nothing, starting no Ray) and print what the run will
take and cost."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from petavox.tasks.core.errors import InputError
from petavox.workflows.config import RunConfig, load_config
from petavox.workflows.costs.cluster import Cluster, load_cluster, this_machine, workers
from petavox.workflows.costs.estimate import StageEstimate, estimate_stages
from petavox.workflows.costs.report import plan_report, print_plan


def estimate_config(config: RunConfig, cluster: Cluster) -> tuple[list[StageEstimate], dict]:
    """The estimates of every stage of `config` on `cluster`, and the report's data."""
    from petavox.workflows.pipeline import plan_stages  # planning only: no Ray starts

    stages = estimate_stages(plan_stages(config), cluster)
    return stages, plan_report(stages, cluster, config.prices.apply())


def cluster_from_args(args: argparse.Namespace, config: RunConfig) -> Cluster:
    if args.workers is not None:
        if args.workers < 1:
            raise InputError(f"--workers {args.workers}: give at least 1")
        return workers(args.workers)
    if args.cluster:
        return load_cluster(args.cluster)
    return this_machine(config.ray.workers)


def cmd_plan(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    config = load_config(args.config)
    cluster = cluster_from_args(args, config)
    stages, report = estimate_config(config, cluster)
    report["planning_seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        report["config"] = str(args.config)
        report["output"] = config.output
        print(json.dumps(report, indent=2))
        return 0
    print(f"plan of {args.config} (output {config.output})")
    print_plan(report, stages, args.steps)
    print(f"planned in {report['planning_seconds']:.1f} s; nothing was written")
    return 0


def add_plan_parser(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="what a config's run will take and cost: tasks, bytes, objects, requests, "
        "memory, core-hours, wall time and dollars (writes nothing)",
    )
    p.add_argument("config", help="run config YAML")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--steps", action="store_true", help="a row per step of each stage too")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="estimate wall time on N cores")
    where.add_argument(
        "--cluster",
        metavar="FILE",
        help="estimate wall time on the node types of a cluster file (YAML: nodes: - cores: 8, "
        "gpus: 0, count: 20; see workflows/costs/cluster.py)",
    )
    p.set_defaults(func=cmd_plan)
