"""Test-session setup: hermetic storage-client settings, one shared local Ray, data helpers."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Before any storage library is imported: cloud-files/cloud-volume read these at import time,
# and must not pick up a developer's secrets or aliases.
_CLIENT_DIR = tempfile.mkdtemp(prefix="petavox-test-clients-")
os.environ["CLOUD_FILES_DIR"] = _CLIENT_DIR
os.environ["CLOUD_VOLUME_DIR"] = _CLIENT_DIR
# A local Ray that listens on 127.0.0.1 only, and that `ray job` clients can reach.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

sys.path.insert(0, str(Path(__file__).parent))

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
