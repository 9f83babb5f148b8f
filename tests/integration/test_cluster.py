"""petavox on Ray clusters started as an operator would: an autoscaling cluster that starts
with no workers (Ray's fake multi-node provider: worker "nodes" are processes on this machine),
and `ray job submit` of a petavox run to a running head."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from petavox.tasks.core.layers import Layer

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))
GCS_PORT = 6379  # the fake multi-node provider only works with a head on Ray's default port


def ray_env() -> dict[str, str]:
    return {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_head(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ray start --head --block` in its own process group, so that stopping the group stops
    the head and every process it started (and nothing else on the machine). Its agents get
    free ports: Ray's defaults are taken by the test session's own Ray."""
    agents = [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    return subprocess.Popen(
        [RAY, "start", "--head", "--block", *args, *agents],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the head's group (`ray start --block` stops what it started), then SIGKILL
    to whatever of the group is left (a head drains for up to 30 s; a test need not wait)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)


def wait_for(check, timeout: float, what: str, step: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def stack_config(out: Path, chunk: int) -> Path:
    """A run config: ingest a small stack in tasks of `chunk`³ voxels (each needs one CPU)."""
    rng = np.random.default_rng(0)
    np.save(out / "stack.npy", rng.integers(0, 255, (32, 64, 64), dtype=np.uint8))
    config = {
        "output": f"file://{out}/run",
        "stages": [
            {
                "stage": "ingest",
                "input": str(out / "stack.npy"),
                "output": "raw",
                "resolution": [8, 8, 8],
                "storage_chunk": [chunk, chunk, chunk],
                "chunk_shape": [chunk, chunk, chunk],
            },
        ],
    }
    path = out / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def autoscaling_config(path: Path) -> Path:
    """A cluster config for the fake multi-node provider: a head with no CPUs, and up to two
    one-CPU worker nodes that come when tasks wait and go when idle."""
    config = {
        "cluster_name": "petavox-autoscaling-test",
        "max_workers": 2,
        "idle_timeout_minutes": 0.1,
        "upscaling_speed": 1.0,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {
                "resources": {"CPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    path.write_text(yaml.safe_dump(config))
    return path


NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
print("NODES", json.dumps([[n["Alive"], n["Resources"].get("CPU", 0)] for n in ray.nodes()]))
"""


def worker_nodes(address: str, env: dict[str, str]) -> tuple[int, int] | None:
    """(worker nodes ever joined, of which alive) from the GCS's node table, which keeps dead
    nodes: a worker that came and went between two looks is still seen. None: no answer."""
    proc = subprocess.run(
        [sys.executable, "-c", NODES, address], env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        return None
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("NODES ")]
    nodes = json.loads(line.removeprefix("NODES "))
    workers = [alive for alive, cpus in nodes if cpus > 0]  # the head has no CPUs
    return len(workers), sum(workers)


@pytest.fixture
def autoscaling_head(tmp_path: Path) -> Iterator[str]:
    if port_taken(GCS_PORT):
        pytest.fail(f"port {GCS_PORT} is taken; the fake autoscaling cluster needs it")
    env = {**ray_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    config = autoscaling_config(tmp_path / "cluster.yaml")
    head = start_head(
        [
            f"--port={GCS_PORT}",
            f"--autoscaling-config={config}",
            "--num-cpus=0",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
        ],
        env,
        tmp_path / "head.log",
    )
    address = f"127.0.0.1:{GCS_PORT}"
    try:
        wait_for(lambda: worker_nodes(address, env) is not None, 120, "the head")
        yield address
    finally:
        stop_group(head)


def test_an_autoscaling_cluster_adds_workers_for_a_stage_and_removes_them(
    tmp_path, autoscaling_head
):
    env = ray_env()
    address = autoscaling_head
    assert worker_nodes(address, env) == (0, 0)  # nothing but the head, which has no CPUs
    config = stack_config(tmp_path, chunk=16)  # 2 × 4 × 4 = 32 tasks of one CPU each
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "petavox.workflows.cli",
            "run",
            str(config),
            "--address",
            address,
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    joined, _ = worker_nodes(address, env) or (0, 0)
    assert joined >= 1, "no worker node was added"
    layer = Layer.open(f"file://{tmp_path}/run/raw")
    np.testing.assert_array_equal(
        layer.read(layer.bounds()), np.load(tmp_path / "stack.npy").transpose(2, 1, 0)
    )
    # idle workers go (idle_timeout_minutes 0.1)
    wait_for(
        lambda: (worker_nodes(address, env) or (0, 1))[1] == 0, 180, "idle workers to be removed"
    )


def test_ray_job_submit_runs_petavox_on_a_running_head(tmp_path):
    env = ray_env()
    port, dashboard = free_port(), free_port()
    options = [f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1"]
    options += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"]
    head = start_head(options, env, tmp_path / "head.log")
    jobs = f"http://127.0.0.1:{dashboard}"
    try:

        def jobs_api_up() -> bool:
            probe = subprocess.run(
                [RAY, "job", "list", "--address", jobs], env=env, capture_output=True, timeout=60
            )
            return probe.returncode == 0

        wait_for(jobs_api_up, 300, "the Jobs API")
        config = stack_config(tmp_path, chunk=32)
        run = [sys.executable, "-m", "petavox.workflows.cli", "run", str(config)]
        command = [RAY, "job", "submit", "--address", jobs, "--", *run, "--address", "auto"]
        command.append("--quiet")

        def submitted() -> subprocess.CompletedProcess | None:
            # the Jobs API answers a little before the node's job agent takes jobs
            proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            busy = proc.returncode != 0 and "No available agent" in proc.stdout + proc.stderr
            return None if busy else proc

        submit = wait_for(submitted, 300, "the job agent", step=2.0)
        text = submit.stdout + submit.stderr
        assert submit.returncode == 0, text
        job = re.search(r"raysubmit_\w+", text)
        assert job, text
        status = subprocess.run(
            [RAY, "job", "status", "--address", jobs, job.group(0)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "succeeded" in (status.stdout + status.stderr).lower()
        layer = Layer.open(f"file://{tmp_path}/run/raw")
        np.testing.assert_array_equal(
            layer.read(layer.bounds()), np.load(tmp_path / "stack.npy").transpose(2, 1, 0)
        )
    finally:
        stop_group(head)
