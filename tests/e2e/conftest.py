"""One small demo run shared by the tests that look at its layers in the viewer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from viewer import DEMO_SIZE, DemoRun


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, ray_session) -> DemoRun:
    import ray

    out = tmp_path_factory.mktemp("view") / "demo"
    command = ["demo", "--size", str(DEMO_SIZE), "--output", str(out), "--quiet"]
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", *command, "--address", address],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"petavox {' '.join(command)}:\n{proc.stdout}\n{proc.stderr}"
    return DemoRun(out, proc.stdout)


@pytest.fixture(scope="session")
def demo(demo_run: DemoRun) -> Path:
    """The demo's output folder."""
    return demo_run.output
