"""The compose laptop path against a real S3 server with enforced credentials: SeaweedFS, the
stand-in for MinIO, with the MinIO service's root credentials and the documented bucket. The
Ray processes and the demo get exactly what deploy/docker-compose.yml gives its Ray containers:
the head service's environment block (interpolated as compose does, laptop defaults) and the
command its header documents, `petavox demo --output s3://... --address auto`. Two things are
substituted: the endpoint's host:port (minio:9000 becomes the local SeaweedFS) and `auto` (the
address of the Ray head started here; `auto` would find whatever cluster this machine runs).

The Ray head is started here with that environment, as the compose containers have it: Ray
workers inherit their node's environment, not the driver's, so the shared test Ray (started
without these credentials) could not reach the bucket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from deploy_files import compose, documented_command, interpolate
from storage_servers import client_env, free_ports, seaweedfs_server

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.core.tensorstore_io import open_scale
from petavox.tasks.synthetic.misalignment import apply, random_misalignment
from petavox.workflows.demo import MAX_SHIFT, WARP, demo_volume

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).with_name("ray"))
SIZE = 64
#: keep clients away from a developer's AWS files and the instance metadata service
HERMETIC = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def compose_environment(endpoint: str) -> dict[str, str]:
    """The ray-head service's environment, its endpoint host:port replaced by `endpoint`'s."""
    env = {
        k: interpolate(str(v), {})
        for k, v in compose()["services"]["ray-head"]["environment"].items()
    }
    theirs, ours = urlparse(env["AWS_ENDPOINT_URL"]), urlparse(endpoint)
    assert theirs.scheme == ours.scheme, "the URL scheme must stay as compose has it"
    env["AWS_ENDPOINT_URL"] = theirs._replace(netloc=ours.netloc).geturl()
    return env


def process_environment(compose_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without AWS settings, plus the container's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**base, **HERMETIC, **compose_env}


@contextmanager
def ray_head(workdir: Path, env: dict[str, str]) -> Iterator[str]:
    """A Ray head (2 CPUs) whose processes have `env`; stopped by its process group."""
    gcs, agent = free_ports(2)
    log = workdir / "ray-head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                f"--port={gcs}",
                "--num-cpus=2",
                "--node-ip-address=127.0.0.1",
                "--include-dashboard=false",
                f"--dashboard-agent-listen-port={agent}",
                "--object-store-memory=200000000",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    address = f"127.0.0.1:{gcs}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(
            [RAY, "health-check", "--address", address], env=env, capture_output=True, timeout=60
        ).returncode:
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)


def test_demo_as_documented_for_compose_writes_layers_tensorstore_reads(tmp_path):
    command = documented_command("ray-head")
    output = command[command.index("--output") + 1]
    bucket = urlparse(output).netloc
    minio = {
        k: interpolate(str(v), {}) for k, v in compose()["services"]["minio"]["environment"].items()
    }
    with seaweedfs_server(
        tmp_path / "seaweedfs",
        bucket=bucket,
        access_key=minio["MINIO_ROOT_USER"],
        secret_key=minio["MINIO_ROOT_PASSWORD"],
    ) as server:
        compose_env = compose_environment(server.endpoint)
        env = process_environment(compose_env)
        with ray_head(tmp_path, env) as head_address:
            args = [head_address if a == "auto" else a for a in command[1:]]
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "petavox.workflows.cli",
                    *args,
                    "--size",
                    str(SIZE),
                    "--quiet",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert server.secret_key not in proc.stdout + proc.stderr
        volume = demo_volume(SIZE, seed=0)
        known = random_misalignment(SIZE // 4, MAX_SHIFT, WARP, seed=0)
        with client_env({**HERMETIC, **compose_env}):
            # No endpoint in the context: tensorstore gets it from AWS_ENDPOINT_URL, as the
            # containers do.
            raw = open_scale(f"{output}/raw", 0, StorageContext())[..., 0].read().result()
            labels = open_scale(f"{output}/segmentation", 0, StorageContext())
            segmentation = labels[..., 0].read().result()
        np.testing.assert_array_equal(raw, apply(volume.raw, known))
        assert len(np.unique(segmentation)) > 10
