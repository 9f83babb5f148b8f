"""The retry policy against a store that always fails (issue 18): how many requests and how long
before one storage request gives up (the storage client's own retries) and before a chunk does
(petavox's reruns of the chunk on top, `ray.storage_retries`, default 2).

A SeaweedFS on 127.0.0.1 behind the fault proxy (tests/fault_proxy.py) answering every
request with 503 SlowDown. The chunk is `runner.run_chunk` of a job that reads one object, in
this process (no Ray: a worker would do the same).

    .venv/bin/python benchmarks/bench_retry.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import time
from typing import Any

import common

sys.path.insert(0, str(common.BENCH_DIR.parent / "tests"))

from fault_proxy import FaultMix, FaultProxy
from storage_servers import client_env, seaweedfs_server


class ReadJob:
    def __init__(self, url: str, context: Any) -> None:
        self.url, self.context = url, context

    def run(self, chunk: Any) -> bytes | None:
        from petavox.tasks.core import objects

        return objects.get(self.url, "policy/object", self.context)


def measure(proxy: FaultProxy, fn: Any) -> tuple[int, float]:
    before, started = proxy.counts()["requests"], time.perf_counter()
    try:
        fn()
    except Exception:
        pass
    else:
        raise AssertionError("a store that always fails did not fail")
    return proxy.counts()["requests"] - before, time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="runs of each (default 3)")
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    from petavox.tasks.core import objects
    from petavox.tasks.core.geometry import index_grid
    from petavox.tasks.core.storage import StorageContext
    from petavox.workflows.config import RayConfig
    from petavox.workflows.runner import run_chunk

    retries = RayConfig().storage_retries
    scratch = common.scratch_dir("retry")
    requests: dict[str, list[int]] = {"request": [], "chunk": []}
    seconds: dict[str, list[float]] = {"request": [], "chunk": []}
    weed = seaweedfs_server(scratch / "weed", bucket="petavox-retry")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, ignore_errors=True)
        server = stack.enter_context(weed)
        proxy = stack.enter_context(FaultProxy(server.endpoint))
        through = {"AWS_ENDPOINT_URL": proxy.endpoint, "AWS_ENDPOINT_URL_S3": proxy.endpoint}
        with client_env({**server.env(), **through}):
            context = StorageContext(s3_endpoint=proxy.endpoint)
            url = f"s3://{server.bucket}/retry"
            objects.put(url, "policy/object", b"there", context)
            job, chunk = ReadJob(url, context), index_grid(1).chunk((0, 0, 0))
            proxy.set_mix(FaultMix(slowdown=1.0))
            for _ in range(args.repeats):
                for what, fn in (
                    ("request", lambda: job.run(chunk)),
                    ("chunk", lambda: run_chunk(job, chunk, "retry", retries)),
                ):
                    n, s = measure(proxy, fn)
                    requests[what].append(n)
                    seconds[what].append(s)
    rows = [
        common.row(
            "retry",
            f"{what}: requests before it fails",
            max(requests[what]),
            "requests",
            "bounded",
            None,
            f"{args.repeats} runs: {requests[what]}; seconds median "
            f"{statistics.median(seconds[what]):.1f}, max {max(seconds[what]):.1f}"
            + (f"; storage_retries {retries}" if what == "chunk" else ""),
        )
        for what in ("request", "chunk")
    ]
    payload = {"requests": requests, "seconds": seconds, "storage_retries": retries}
    payload["rows"] = rows
    common.write_results("retry", payload)
    common.print_rows(rows)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
