"""The runs of `bench_faults.py`: demo configs on S3, driver processes, kills, byte comparison.

Import after `common` (it sets the environment the storage clients and Ray read).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

MARKER_POLL_S = 0.25  # between listings of the ledger
WORKER_POLL_S = 0.02  # between looks for a worker running a chunk
AFTER_WORKER_KILL_S = 0.5
LEDGER = "ledger/"


def make_stacks(size: int, seed: int, folder: Path) -> dict[str, str]:
    """The demo's synthetic volume, misaligned, as .npy stacks in `folder` (`workflows/demo.py`)."""
    from petavox.tasks.synthetic.misalignment import random_misalignment
    from petavox.workflows.demo import MAX_SHIFT, WARP, demo_shape, demo_volume, write_stacks

    volume = demo_volume(size, seed)
    known = random_misalignment(demo_shape(size)[2], MAX_SHIFT, WARP, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    return write_stacks(volume, known, folder)


@dataclass
class DemoRun:
    """The demo's config on one S3 server, and what a driver needs to reach it.

    Every run writes to the same URL (on its own server): stage identities hash the output
    URL, and they name intermediate folders, so two runs are only comparable key for key when
    their URLs are the same.
    """

    folder: Path
    server: Any  # storage_servers.S3Server
    stacks: dict[str, str]
    workers: int
    prefix: str = "demo"
    sharding: str = "none"  # of every volume layer (`petavox demo --sharding`)

    @property
    def url(self) -> str:
        return f"s3://{self.server.bucket}/{self.prefix}"

    def config(self, endpoint: str):
        """The demo's RunConfig, its S3 requests sent to `endpoint` (the server or a proxy)."""
        from petavox.workflows.demo import demo_config

        ray = {"workers": self.workers, "ledger_flush_seconds": 0}  # progress seen at once
        runtime = {"ray": ray, "storage": {"s3_endpoint": endpoint}}
        return demo_config(self.url, self.stacks, runtime, self.sharding)

    def config_file(self, name: str, endpoint: str) -> Path:
        from petavox.workflows.config import dump_config

        path = self.folder / f"{name}.yaml"
        path.write_text(dump_config(self.config(endpoint)))
        return path

    def env(self, endpoint: str) -> dict[str, str]:
        """A driver's environment: credentials, and `endpoint` as the only S3 endpoint."""
        env = {**os.environ, **self.server.env(), "AWS_ENDPOINT_URL": endpoint}
        env.pop("AWS_ENDPOINT_URL_S3", None)  # it would win over the config's endpoint
        return env

    def client(self):
        """boto3 straight to the server (never through the proxy)."""
        from botocore.config import Config

        return self.server.boto3_client(config=Config(max_pool_connections=16))


class Driver:
    """`python -m petavox.workflows.cli run CONFIG --quiet`, its Ray under a temp dir of its own."""

    def __init__(self, config: Path, env: dict[str, str], folder: Path, name: str) -> None:
        self.ray_dir = folder / name
        self.ray_dir.mkdir(parents=True, exist_ok=True)
        self.log = folder / f"{name}.log"
        command = [sys.executable, "-m", "petavox.workflows.cli", "run", str(config), "--quiet"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                env={**env, "RAY_TMPDIR": str(self.ray_dir)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    def descendants(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.process.pid).children(recursive=True)
        return []

    def chunk_workers(self) -> list[psutil.Process]:
        """Ray workers of this driver that are running a chunk task (`ray::run_chunk`)."""
        found = []
        for proc in self.descendants():
            with contextlib.suppress(psutil.Error):
                if "run_chunk" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    def ray_processes(self) -> list[psutil.Process]:
        """Processes started for this driver's Ray: its descendants and any process whose
        command line names its Ray temp dir (workers a killed raylet left behind)."""
        found = {p.pid: p for p in self.descendants()}
        marker = str(self.ray_dir)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and marker in " ".join(proc.info["cmdline"] or []):
                    found.setdefault(proc.pid, proc)
        return list(found.values())

    def kill(self) -> None:
        """SIGKILL the driver, then every process of its Ray, by PID."""
        family = self.ray_processes()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.stop_ray(family)

    def stop_ray(self, family: list[psutil.Process] | None = None) -> None:
        family = (family or []) + self.ray_processes()
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(family, timeout=30)

    def retried(self) -> Counter[str]:
        """Transient errors the runner retried in this driver's tasks (its log's warnings)."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        found = re.findall(r"transient error \(attempt \d+/\d+\): (.*)", text)
        return Counter(re.sub(r"\d+", "N", message)[:160] for message in found)

    def error(self) -> str:
        """Why the driver failed: its `petavox: error` line, else the traceback's last line and
        the innermost frames in petavox's code."""
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        said = [line for line in lines if line.startswith("petavox: error")]
        if said or not lines:
            return said[-1] if said else "no output"
        frames = re.findall(r'File ".*?/((?:tasks|workflows)/[^"]+)", line (\d+), in (\w+)', text)
        where = " < ".join(f"{path}:{line} {fn}" for path, line, fn in reversed(frames[-3:]))
        return f"{lines[-1].strip()}" + (f" (at {where})" if where else "")


@dataclass
class Target:
    """A step to kill in: a worker running one of its chunks, then the driver."""

    step: str
    total: int  # finished chunks recorded when complete (0: the step keeps none)
    earlier: list[str] = field(default_factory=list, repr=False)  # steps with markers before it
    next_step: str | None = None  # the next step with markers
    wanted: bool = True  # kill in this step (else only followed)
    worker_killed: int | None = None
    driver_killed: bool = False
    note: str = ""
    worker_time: float | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"{self.step} ({self.note or 'no kill'})"

    def to_dict(self) -> dict[str, Any]:
        keys = ("step", "total", "worker_killed", "driver_killed", "note")
        return {k: v for k, v in asdict(self).items() if k in keys}


def plan_targets(demo: DemoRun, only: list[str] | None) -> list[Target]:
    """One target per step of the demo, in run order (`only`: kills in those steps only), with
    how many finished chunks each records when complete."""
    from storage_servers import client_env

    from petavox.workflows.pipeline import plan_run

    with client_env(demo.server.env()):
        plans = plan_run(demo.config(demo.server.endpoint))
    totals: Counter[str] = Counter()
    order: list[str] = []
    for plan in plans:
        if plan.stage not in order:
            order.append(plan.stage)
        if plan.use_ledger:
            totals[plan.stage] += len(plan.grid) + (plan.global_step is not None)
    targets = []
    for i, step in enumerate(order):
        later = [s for s in order[i + 1 :] if totals[s]]
        earlier = [s for s in order[:i] if totals[s]]
        targets.append(Target(step, totals[step], earlier, later[0] if later else None))
    if only is not None:
        unknown = set(only) - set(order)
        if unknown:
            raise SystemExit(f"unknown steps {sorted(unknown)}; the demo's: {', '.join(order)}")
        for target in targets:
            target.wanted = target.step in only
    return targets


def ledger_counts(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Per ledger step folder: its finished chunks (the positions its segments hold) and its
    global step (a step that began has at least its key)."""
    from petavox.workflows.ledger import Segment

    found: dict[str, set[Any]] = {}
    root = f"{prefix}/{LEDGER}"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        for item in page.get("Contents", []):
            # <step>/<identity>/[<epoch>/]done/<segment>.npz or .../global.json; stages/ keeps
            # configs, not records
            parts = item["Key"][len(root) :].split("/")
            if len(parts) < 3 or parts[0] == "stages":
                continue
            step = found.setdefault(parts[0], set())
            if parts[-1] == "global.json":
                step.add(("global", tuple(parts[1:-1])))
            elif parts[-2] == "done" and parts[-1].endswith(".npz"):
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                step.update(
                    (tuple(parts[1:-2]), p) for p in Segment.from_bytes(body).chunks.tolist()
                )
    return {step: len(chunks) for step, chunks in found.items()}


class Campaign:
    """The faulty run's state: targets, kills, failures, the proxy's counts."""

    def __init__(
        self, demo: DemoRun, proxy: Any, targets: list[Target], outage_s: float, outage_at: str
    ) -> None:
        self.demo, self.proxy, self.targets = demo, proxy, targets
        self.client = demo.client()
        self.totals = {t.step: t.total for t in targets}
        self.outage_s, self.outage_at = outage_s, outage_at
        self.outage_began: float | None = None
        self.drivers_killed = self.workers_killed = self.attempts = 0
        self.failures: list[str] = []
        self.retried: Counter[str] = Counter()  # errors the runner retried, from driver logs
        self.completed = False
        self.seconds = 0.0
        self.proxy_counts: dict[str, int] = {}
        self.started = time.monotonic()

    @property
    def reruns_after_kill(self) -> int:
        return self.drivers_killed

    def watch(self, driver: Driver) -> bool:
        """Follow the driver until it exits (False) or is killed in a target step (True)."""
        while driver.process.poll() is None:
            counts = ledger_counts(self.client, self.demo.server.bucket, self.demo.prefix)
            self._maybe_outage(counts)
            target = self._current(counts)
            if target is None or target.worker_time is not None:
                time.sleep(MARKER_POLL_S)  # (_act polls for workers meanwhile)
            if target is not None and self._act(target, driver, counts):
                return True
        return False

    def _maybe_outage(self, counts: dict[str, int]) -> None:
        if self.outage_began is None and self.outage_s > 0 and self.outage_at in counts:
            self.proxy.outage(self.outage_s)
            self.outage_began = time.monotonic() - self.started
            print(f"  outage of {self.outage_s:g} s as {self.outage_at} begins", flush=True)

    def _phase(self, target: Target, counts: dict[str, int]) -> str:
        """waiting, armed (every earlier step is complete: the next chunk task the driver runs
        is this step's, or, for a step without markers, the one before the next) or done."""
        if target.total and counts.get(target.step, 0) >= target.total:
            return "done"
        if not target.total and target.next_step in counts:
            return "done"
        complete = all(counts.get(s, 0) >= self.totals[s] for s in target.earlier)
        return "armed" if complete else "waiting"

    def _current(self, counts: dict[str, int]) -> Target | None:
        """The first target not yet dealt with, if its step is armed."""
        for target in self.targets:
            if target.driver_killed or target.note or not target.wanted:
                continue
            phase = self._phase(target, counts)
            if phase == "done":
                target.note = "finished before a chunk task was seen"
                print(f"  {target.describe()}", flush=True)
                continue
            return target if phase == "armed" else None
        return None

    def _act(self, target: Target, driver: Driver, counts: dict[str, int]) -> bool:
        """Kill a worker running a chunk of the target's step, then (a moment later, once a
        chunk of the step is done if it has several) the driver."""
        if target.worker_time is None:
            self._kill_worker(target, driver)
            return False
        since = time.monotonic() - target.worker_time
        done = counts.get(target.step, 0)
        if since < AFTER_WORKER_KILL_S or (done < 1 and target.total > 1 and since < 30):
            return False
        driver.kill()
        target.driver_killed = True
        target.note = "worker and driver killed"
        self.drivers_killed += 1
        print(f"  {target.step}: {target.note} ({done}/{target.total} markers)", flush=True)
        return True

    def _kill_worker(self, target: Target, driver: Driver) -> None:
        """Poll the driver's Ray workers until the next ledger listing is due; kill the first
        one running a chunk task of the target's step (the step's ledger folder is written
        before its tasks are submitted; a step without one runs before the next's is)."""
        deadline = time.monotonic() + MARKER_POLL_S
        while time.monotonic() < deadline:
            workers = driver.chunk_workers()
            if workers:
                counts = ledger_counts(self.client, self.demo.server.bucket, self.demo.prefix)
                mine = target.step in counts if target.total else target.next_step not in counts
                if mine:
                    for proc in workers:
                        with contextlib.suppress(psutil.Error):
                            proc.kill()
                            target.worker_killed = proc.pid
                            target.worker_time = time.monotonic()
                            self.workers_killed += 1
                            return
            time.sleep(WORKER_POLL_S)

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "seconds": round(self.seconds, 2),
            "driver_runs": self.attempts,
            "drivers_killed": self.drivers_killed,
            "workers_killed": self.workers_killed,
            "failures": self.failures,
            "retried_by_the_runner": dict(self.retried.most_common()),
            "outage_s": self.outage_s,
            "outage_began_s": self.outage_began and round(self.outage_began, 1),
            "proxy": self.proxy_counts,
            "targets": [t.to_dict() for t in self.targets],
        }


def run_clean(demo: DemoRun, name: str) -> float:
    """The demo straight to the server, in one driver; its wall time."""
    endpoint = demo.server.endpoint
    driver = Driver(demo.config_file(name, endpoint), demo.env(endpoint), demo.folder, name)
    try:
        code = driver.process.wait()
    finally:
        if driver.process.poll() is None:
            driver.kill()
        driver.stop_ray()
    if code != 0:
        raise RuntimeError(f"the clean run failed (exit {code}): {driver.error()}")
    return time.monotonic() - driver.started


def run_faulty(campaign: Campaign, name: str, max_attempts: int) -> None:
    """Drivers through the proxy, each followed (and killed in its target step) until one
    completes the run; failures are noted and the driver started again."""
    demo, endpoint = campaign.demo, campaign.proxy.endpoint
    config, env = demo.config_file(name, endpoint), demo.env(endpoint)
    campaign.started = time.monotonic()
    try:
        while campaign.attempts < max_attempts and not campaign.completed:
            campaign.attempts += 1
            driver = Driver(config, env, demo.folder, f"{name}-{campaign.attempts}")
            try:
                killed = campaign.watch(driver)
            finally:
                if driver.process.poll() is None:
                    driver.kill()
                driver.stop_ray()
            campaign.retried.update(driver.retried())
            code = driver.process.returncode
            if not killed and code == 0:
                campaign.completed = True
            elif not killed:
                campaign.failures.append(f"exit {code}: {driver.error()}")
                print(f"  driver {campaign.attempts} failed: {campaign.failures[-1]}", flush=True)
    finally:
        campaign.seconds = time.monotonic() - campaign.started
        campaign.proxy_counts = campaign.proxy.counts()


def _objects(client: Any, bucket: str, prefix: str) -> set[str]:
    """Keys under `prefix/`, relative to it, without the ledger folder (its records hold
    timings, hosts and pids; the lease a heartbeat) and the layers' `provenance` files (dates
    and the epochs of the run that wrote them)."""
    root = prefix + "/"
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        keys.update(item["Key"][len(root) :] for item in page.get("Contents", []))
    return {k for k in keys if not k.startswith(LEDGER) and k.rsplit("/", 1)[-1] != "provenance"}


def compare_runs(first: DemoRun, second: DemoRun) -> dict[str, Any]:
    """Every object of two runs (each on its own server, at the same URL): bytes and
    Content-Encoding, read straight from the servers."""
    clients = [first.client(), second.client()]
    runs = (first, second)
    a, b = (_objects(c, r.server.bucket, r.prefix) for c, r in zip(clients, runs))

    def compare(key: str) -> tuple[bool, int]:
        got = [
            c.get_object(Bucket=r.server.bucket, Key=f"{r.prefix}/{key}")
            for c, r in zip(clients, runs)
        ]
        encodings = [g.get("ContentEncoding") for g in got]
        bodies = [g["Body"].read() for g in got]
        return encodings[0] == encodings[1] and bodies[0] == bodies[1], len(bodies[0])

    common_keys = sorted(a & b)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(compare, common_keys))
    differing = [k for k, (ok, _) in zip(common_keys, results) if not ok]
    only_first, only_second = sorted(a - b), sorted(b - a)
    return {
        "compared": len(common_keys),
        "bytes": sum(n for _, n in results),
        "differing": len(differing) + len(only_first) + len(only_second),
        "only_first": only_first[:20],
        "only_second": only_second[:20],
        "examples": (differing + only_first + only_second)[:10],
    }
