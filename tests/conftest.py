"""Test-session setup: hermetic storage-client settings, one shared local Ray, data helpers."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any storage library is imported: cloud-files/cloud-volume read these at import time,
# and must not pick up a developer's secrets or aliases.
_CLIENT_DIR = tempfile.mkdtemp(prefix="petavox-test-clients-")
os.environ["CLOUD_FILES_DIR"] = _CLIENT_DIR
os.environ["CLOUD_VOLUME_DIR"] = _CLIENT_DIR
atexit.register(shutil.rmtree, _CLIENT_DIR, ignore_errors=True)
# A local Ray that listens on 127.0.0.1 only, and that `ray job` clients can reach.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).parent))

from storage_servers import (  # noqa: E402  (needs the environment above)
    GCSServer,
    S3Server,
    client_env,
    gcs_server,
    moto_server,
    seaweedfs_server,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test run (start-up costs seconds)."""
    import ray

    from petavox.workflows.config import RayConfig
    from petavox.workflows.runner import RaySession

    session = RaySession(RayConfig(workers=2))
    session.ensure()
    yield session
    ray.shutdown()


@pytest.fixture(scope="session")
def gala_dir() -> Path:
    path = SHARED_DATA / "gala"
    if not (path / "test.npz").exists():
        pytest.skip("real EM data (../shared/data/gala) is not present on this machine")
    return path


@pytest.fixture(scope="session")
def neuroproof_stack():
    """The real, registered FIB-SEM stack of ../shared/data/neuroproof_sample1 (x, y, z)."""
    import numpy as np

    path = SHARED_DATA / "neuroproof_sample1" / "raw.npz"
    if not path.exists():
        pytest.skip("real EM data (../shared/data/neuroproof_sample1) is not present here")
    return np.ascontiguousarray(np.load(path)["raw"].transpose(2, 1, 0))


# ---- storage servers on 127.0.0.1, started once per session, only when a test asks -----------
@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server with enforced credentials: the stand-in for MinIO."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(bucket="petavox-moto") as server:
        yield server


@pytest.fixture(scope="session")
def gcs_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    with gcs_server(tmp_path_factory.mktemp("fake-gcs")) as server:
        yield server


@pytest.fixture(params=["seaweedfs", "moto"])
def s3(request: pytest.FixtureRequest) -> Iterator[S3Server]:
    """Each S3 server in turn, with its environment set and its cloud-files alias registered."""
    server: S3Server = request.getfixturevalue(request.param)
    with client_env(server.env()):
        server.register_alias()
        yield server


@pytest.fixture
def gcs(gcs_module: GCSServer) -> Iterator[GCSServer]:
    with client_env(gcs_module.env()):
        yield gcs_module
