"""Fault injection: the demo on S3 through a faulty proxy, drivers and workers killed, then every
output object compared byte for byte with an undisturbed run.

The demo's config (`workflows/demo.py`: every stage, the same synthetic volume) runs twice
through `python -m petavox.workflows.cli run CONFIG` in a subprocess, each run on a SeaweedFS of
its own (a real S3 server with enforced credentials, on 127.0.0.1) at the same URL, since stage
identities hash the output URL and name the intermediate folders:

- *clean*: straight to its server;
- *faulty*: through `tests/fault_proxy.py` on 127.0.0.1, which answers a share of requests with
  503 SlowDown, resets connections (before or after the server did the work) and cuts GET bodies
  short (5 % each by default); once the `--outage-at` step begins, the proxy resets everything
  for `--outage` seconds. During every step of the run (each ledger folder, plus `evaluate`,
  which keeps no ledger), one Ray worker running a chunk is killed (SIGKILL; Ray reruns the
  task) and then the driver itself, with every process of its Ray; the driver is started
  again, and again after any failure, until the run completes.

Then both runs' objects are listed and every one (the ledger folder excepted: its records hold
timings, hosts and pids, the lease a heartbeat; and the layers' `provenance` files, which hold
dates and epochs) is compared, bytes and Content-Encoding. Exit 1
when an object differs or is missing on one side, or the faulty run never completed.
`--control` first checks that a second clean run differs from the first in nothing else.

    .venv/bin/python benchmarks/bench_faults.py [--quick] [--size 192] [--slowdown 0.05]
        [--reset 0.05] [--truncate 0.05] [--outage 20] [--outage-at STEP] [--kill-at STEP,...]
        [--control] [--sharding none|auto|N]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

sys.path.insert(0, str(common.BENCH_DIR.parent / "tests"))

from fault_proxy import KINDS, FaultMix, FaultProxy
from fault_runs import (
    Campaign,
    DemoRun,
    compare_runs,
    make_stacks,
    plan_targets,
    run_clean,
    run_faulty,
)
from storage_servers import S3Server, seaweedfs_server

FULL_SIZE, QUICK_SIZE = 192, 128  # 192: 8 tasks a step; the full run takes ~15 min
QUICK_KILLS = ("ingest", "infer", "segment", "mesh-forge")
DEFAULT_OUTAGE_AT = "segment"
BUCKET = "petavox-faults"
SERVERS = contextlib.ExitStack()  # the clean and the faulty run's servers, stopped at the end


def server_at(scratch: Path, name: str) -> S3Server:
    """A SeaweedFS of its own for one run, up until `SERVERS` closes (every run writes the same
    URL: see `DemoRun`)."""
    return SERVERS.enter_context(seaweedfs_server(scratch / f"weed-{name}", bucket=BUCKET))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"size {QUICK_SIZE}, 4 kill steps")
    parser.add_argument("--size", type=int, help=f"demo volume side (default {FULL_SIZE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the volume and the faults")
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=float, default=0.05, help=f"{kind} probability")
    parser.add_argument("--outage", type=float, default=20.0, help="outage seconds (0: none)")
    parser.add_argument(
        "--outage-at", default=DEFAULT_OUTAGE_AT, help="the outage starts as this step begins"
    )
    parser.add_argument(
        "--kill-at",
        help="comma-separated steps to kill a worker and the driver in (default: every step; "
        f"--quick: {','.join(QUICK_KILLS)}; 'none': no kills)",
    )
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs of each driver")
    parser.add_argument(
        "--sharding", default="none", help="every volume layer: none, auto or N chunks per shard"
    )
    parser.add_argument("--max-attempts", type=int, default=60, help="driver starts, at most")
    parser.add_argument(
        "--control", action="store_true", help="also a second clean run, compared with the first"
    )
    return parser.parse_args(argv)


def print_summary(campaign: Campaign, compared: dict[str, Any], clean_s: float) -> None:
    counts = campaign.proxy_counts
    faults = sum(counts[k] for k in (*KINDS, "outage_resets", "outage_503"))
    print(f"\nrequests through the proxy: {counts['requests']} ({counts['forwarded']} forwarded)")
    print(
        "faults injected: "
        + ", ".join(f"{k} {counts[k]}" for k in (*KINDS, "outage_resets"))
        + f" = {faults} ({100 * faults / max(1, counts['requests']):.1f} % of requests)"
    )
    survived = faults if campaign.completed and not compared["differing"] else 0
    print(
        f"faults survived: {survived} of {faults} (survived: the run completed with every byte "
        f"the same; {len(campaign.failures)} driver runs failed on the way and were rerun)"
    )
    print(
        f"drivers killed: {campaign.drivers_killed}, workers killed: {campaign.workers_killed}, "
        f"driver runs: {campaign.attempts} ({campaign.reruns_after_kill} reruns after a kill, "
        f"{len(campaign.failures)} after a failure)"
    )
    for failure in campaign.failures:
        print(f"  failed run: {failure}")
    retried = sum(campaign.retried.values())
    print(f"errors that reached the runner and were retried there: {retried}")
    for message, n in campaign.retried.most_common(5):
        print(f"  {n} × {message}")
    missed = [t.describe() for t in campaign.targets if t.wanted and not t.driver_killed]
    if missed:
        print("  steps without a driver kill: " + "; ".join(missed))
    print(
        f"objects compared: {compared['compared']}, differing: {compared['differing']} "
        f"({compared['bytes'] / 1e6:.1f} MB; only in the clean run: {len(compared['only_first'])}, "
        f"only in the faulty run: {len(compared['only_second'])})"
    )
    for key in compared["examples"]:
        print(f"  differs: {key}")
    print(f"wall time: clean {clean_s:.1f} s, faulty {campaign.seconds:.1f} s")


def rows_for(campaign: Campaign, compared: dict[str, Any], clean_s: float) -> list[dict]:
    counts = campaign.proxy_counts
    injected = ", ".join(f"{k} {counts[k]}" for k in (*KINDS, "outage_resets"))
    ok = campaign.completed and compared["differing"] == 0
    return [
        common.row(
            "faults",
            "objects differing from the clean run",
            compared["differing"],
            "objects",
            "0",
            ok,
            f"{compared['compared']} compared; completed: {campaign.completed}",
        ),
        common.row(
            "faults",
            "faults injected",
            sum(counts[k] for k in (*KINDS, "outage_resets")),
            "faults",
            note=f"{injected}; {counts['requests']} requests",
        ),
        common.row(
            "faults",
            "kills (drivers + workers)",
            campaign.drivers_killed + campaign.workers_killed,
            "kills",
            note=f"{campaign.drivers_killed} drivers, {campaign.workers_killed} workers; "
            f"{campaign.attempts} driver runs, {len(campaign.failures)} failed",
        ),
        common.row(
            "faults",
            "faulty / clean wall time",
            campaign.seconds / clean_s,
            "×",
            note=f"clean {clean_s:.0f} s, faulty {campaign.seconds:.0f} s",
        ),
    ]


def demo_run(args: argparse.Namespace, scratch: Path, stacks: dict[str, str], name: str):
    """A demo run on an S3 server of its own, named `name`."""
    return DemoRun(scratch, server_at(scratch, name), stacks, args.workers, sharding=args.sharding)


def clean_runs(args: argparse.Namespace, stacks: dict[str, str], scratch: Path) -> tuple:
    """The clean run (and with --control a second one, compared with it) on servers of their
    own; (clean DemoRun, its seconds, the control's comparison or None)."""
    clean = demo_run(args, scratch, stacks, "clean")
    clean_s = run_clean(clean, "clean")
    print(f"clean run: {clean_s:.1f} s", flush=True)
    if not args.control:
        return clean, clean_s, None
    control = demo_run(args, scratch, stacks, "control")
    seconds = run_clean(control, "control")
    compared = {"seconds": round(seconds, 2), **compare_runs(clean, control)}
    print(
        f"control run: {seconds:.1f} s; {compared['differing']} of {compared['compared']} "
        f"objects differ from the clean run ({', '.join(compared['examples'][:3])})",
        flush=True,
    )
    return clean, clean_s, compared


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)
    kills = args.kill_at.split(",") if args.kill_at else (QUICK_KILLS if args.quick else None)
    mix = FaultMix(args.slowdown, args.reset, args.truncate, seed=args.seed)
    # short: Ray's socket paths under it must stay below 108 bytes
    scratch = Path(tempfile.mkdtemp(prefix="pvf-"))
    out: dict[str, Any] = {"quick": args.quick, "size": size, "mix": vars(mix)}
    out["sharding"] = args.sharding
    try:
        with SERVERS:
            stacks = make_stacks(size, args.seed, scratch / "stacks")
            print(f"demo volume {size}×{size}×{max(8, size // 4)}", flush=True)
            clean, clean_s, out["control"] = clean_runs(args, stacks, scratch)
            faulty = demo_run(args, scratch, stacks, "faulty")
            targets = plan_targets(faulty, [] if kills == ["none"] else kills)
            if args.outage and args.outage_at not in {t.step for t in targets if t.total}:
                raise SystemExit(f"--outage-at {args.outage_at}: not a step with a ledger")
            with FaultProxy(faulty.server.endpoint, mix) as proxy:
                campaign = Campaign(faulty, proxy, targets, args.outage, args.outage_at)
                run_faulty(campaign, "faulty", args.max_attempts)
            compared = compare_runs(clean, faulty)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_summary(campaign, compared, clean_s)
    out.update(
        workload=f"demo {size}, faults {100 * mix.total:.0f} % + {args.outage:g} s outage, "
        f"{campaign.drivers_killed} driver and {campaign.workers_killed} worker kills",
        clean_s=round(clean_s, 2),
        campaign=campaign.to_dict(),
        compared=compared,
        rows=rows_for(campaign, compared, clean_s),
    )
    common.write_results("faults", out)
    common.print_rows(out["rows"])
    return 0 if campaign.completed and compared["differing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
