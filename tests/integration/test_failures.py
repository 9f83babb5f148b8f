"""Reliability: a killed worker and a killed driver leave the same output as an undisturbed run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from ledger_checks import recorded_chunks
from tree_compare import layer_files

from petavox.tasks.core.layers import Layer
from petavox.workflows.config import dump_config, parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration


def make_config(tmp_path: Path, name: str, stack: Path, **ingest: Any):
    return parse_config(
        {
            "output": f"file://{tmp_path}/{name}",
            "stages": [
                {
                    "stage": "ingest",
                    "input": str(stack),
                    "resolution": [4, 4, 40],
                    "storage_chunk": [32, 32, 8],
                    "chunk_shape": [64, 64, 16],
                    **ingest,
                },
                {"stage": "downsample", "input": "raw", "mips": 1},
            ],
            "ray": {"ledger_flush_seconds": 0},  # every finished chunk recorded at once
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "stack.npy"
    rng = np.random.default_rng(7)
    np.save(path, rng.integers(0, 255, (48, 448, 448), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, stack, ray_session) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("reference")
    run(make_config(root, "out", stack), session=ray_session, progress=False)
    return layer_files(root / "out" / "raw")


def own_ray_workers() -> list[psutil.Process]:
    """Worker processes of this test session's Ray node that are running a chunk task."""
    import ray

    node = ray._private.worker._global_node
    raylet_pid = node.all_processes["raylet"][0].process.pid
    found = []
    for proc in psutil.Process(raylet_pid).children(recursive=True):
        try:
            if "run_chunk" in " ".join(proc.cmdline()) or "run_chunk" in proc.name():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_killed_worker_changes_nothing(tmp_path, stack, reference, ray_session):
    config = make_config(tmp_path, "out", stack)
    errors: list[BaseException] = []
    reports = []

    def target():
        try:
            reports.extend(run(config, session=ray_session, progress=False))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    killed = []
    deadline = time.monotonic() + 60
    while thread.is_alive() and not killed and time.monotonic() < deadline:
        for proc in own_ray_workers():
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
            break
        time.sleep(0.005)
    thread.join(timeout=300)
    assert killed, "no running chunk task was found to kill"
    assert not errors, errors
    assert [r.ran for r in reports] == [r.total for r in reports]
    assert layer_files(tmp_path / "out" / "raw") == reference


class Driver:
    """`petavox run` in a process of its own, with its Ray processes; stopped by the test."""

    def __init__(self, config_file: Path) -> None:
        command = [sys.executable, "-m", "petavox.workflows.cli", "run", str(config_file)]
        self.process = subprocess.Popen(
            [*command, "--workers", "2", "--quiet"],
            env={**os.environ},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.children: list[psutil.Process] = []

    def wait_for_markers(self, ledger: Path, count: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            self.children = psutil.Process(self.process.pid).children(recursive=True)
            if recorded_chunks(ledger) >= count:
                break
            time.sleep(0.02)
        assert self.process.poll() is None, self.process.stderr.read().decode()[-2000:]

    def stop_children(self) -> None:
        """The driver's own Ray processes (only those it started)."""
        for proc in self.children:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(self.children, timeout=30)


def assert_rerun_resumes(config, ledger: Path, reference, ray_session, out: Path) -> None:
    done_before = recorded_chunks(ledger)
    reports = run(config, session=ray_session, progress=False)
    assert reports[0].skipped >= 10 and reports[0].skipped == done_before
    assert reports[0].ran + reports[0].skipped == reports[0].total
    assert reports[0].ran > 0
    assert layer_files(out / "raw") == reference


def driver_at_work(tmp_path: Path, stack: Path, **ingest: Any) -> tuple[Any, Path, Driver]:
    """The run's config, its ingest ledger folder, and a driver that has finished 10 chunks."""
    config = make_config(tmp_path, "out", stack, **ingest)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(config))
    ledger = tmp_path / "out" / "ledger" / "ingest"
    driver = Driver(config_file)
    driver.wait_for_markers(ledger, 10)
    return config, ledger, driver


def test_killed_driver_then_rerun_resumes_and_matches(tmp_path, stack, reference, ray_session):
    config, ledger, driver = driver_at_work(tmp_path, stack)
    try:
        driver.process.send_signal(signal.SIGKILL)
        driver.process.wait(timeout=30)
    finally:
        driver.stop_children()
    assert_rerun_resumes(config, ledger, reference, ray_session, tmp_path / "out")


def test_a_killed_sharded_run_resumes_and_matches(tmp_path, stack, ray_session):
    """Tasks of whole shards (4 chunks each), the driver killed mid-run: the rerun writes
    the shards it had not, and the files match an undisturbed sharded run byte for byte."""
    run(make_config(tmp_path, "clean", stack, sharding=4), session=ray_session, progress=False)
    reference = layer_files(tmp_path / "clean" / "raw")
    assert any(name.endswith(".shard") for name in reference)
    config, ledger, driver = driver_at_work(tmp_path, stack, sharding=4)
    try:
        driver.process.send_signal(signal.SIGKILL)
        driver.process.wait(timeout=30)
    finally:
        driver.stop_children()
    assert_rerun_resumes(config, ledger, reference, ray_session, tmp_path / "out")


def test_sigterm_stops_like_ctrl_c_then_rerun_resumes(tmp_path, stack, reference, ray_session):
    """What Kubernetes sends: exit 130 with the resume message, no traceback or stack dump."""
    config, ledger, driver = driver_at_work(tmp_path, stack)
    try:
        driver.process.send_signal(signal.SIGTERM)
        status = driver.process.wait(timeout=60)
        stderr = driver.process.stderr.read().decode()
    finally:
        driver.stop_children()
    assert status == 130, stderr[-2000:]
    assert "interrupted; run the same command again to resume" in stderr
    assert "Traceback" not in stderr and "SIGTERM" not in stderr, stderr[-2000:]
    assert_rerun_resumes(config, ledger, reference, ray_session, tmp_path / "out")


def test_a_second_driver_on_the_same_output_is_refused(tmp_path):
    """A RayJob applied again while the first driver runs: the second writes nothing."""
    stack = tmp_path / "big.npy"  # big enough that the first driver is still at work
    np.save(stack, np.random.default_rng(3).integers(0, 255, (96, 896, 896), dtype=np.uint8))
    config_file = tmp_path / "run.yaml"
    config_file.write_text(dump_config(make_config(tmp_path, "out", stack)))
    first = Driver(config_file)
    try:
        first.wait_for_markers(tmp_path / "out" / "ledger" / "ingest", 3)
        command = [sys.executable, "-m", "petavox.workflows.cli", "run", str(config_file)]
        second = subprocess.run([*command, "--quiet"], capture_output=True, text=True, timeout=120)
        status = first.process.wait(timeout=300)
    finally:
        first.stop_children()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"pid {first.process.pid}" in second.stderr and "another driver" in second.stderr
    assert status == 0, first.process.stderr.read().decode()[-2000:]
    raw = Layer.open(f"file://{tmp_path}/out/raw")
    assert np.array_equal(raw.read(raw.bounds(0)), np.load(stack).transpose(2, 1, 0))
