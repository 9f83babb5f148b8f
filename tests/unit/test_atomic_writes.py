"""file:// writes are atomic (a killed task leaves no half chunk under the real key) and give
files and folders the modes a plain open() / mkdir would (0644 / 0755 under umask 022)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import small_layers

from petavox.tasks.core import objects
from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
from petavox.workflows.ledger import Ledger

KEY = "8_8_40/0-32_0-32_0-16"
CHUNK = Box((0, 0, 0), (32, 32, 16))

# Writes one chunk; the first file opened for writing in the layer's scale folder gets half of
# its bytes, then the process is killed (SIGKILL: no cleanup runs). Both ways a file is opened
# are patched: builtins.open (cloud-files) and io.open (os.fdopen).
DIE_MID_WRITE = """
import builtins, io, os, signal, sys
import numpy as np
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
layer = Layer.open(sys.argv[1])
real_open = io.open

class Dying:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        self.f.write(bytes(data)[: len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

def dying_open(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    path = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else os.fspath(file)
    return Dying(f) if "w" in mode and path.startswith(sys.argv[3]) else f

builtins.open = io.open = dying_open
layer.write(Box((0, 0, 0), (32, 32, 16)), np.full((32, 32, 16), int(sys.argv[2]), np.uint8))
"""


def image_layer(tmp_path: Path, name: str = "img") -> Layer:
    return small_layers.image_layer(f"file://{tmp_path}/{name}")


def die_writing(layer: Layer, value: int) -> None:
    folder = layer.url[len("file://") :]
    proc = subprocess.run(
        [sys.executable, "-c", DIE_MID_WRITE, layer.url, str(value), f"{folder}/8_8_40"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def chunk_like_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".tmp-"))


def test_a_task_killed_mid_write_leaves_the_old_chunk_or_none(tmp_path):
    fresh = image_layer(tmp_path, "fresh")
    die_writing(fresh, 7)
    folder = tmp_path / "fresh" / "8_8_40"
    assert chunk_like_files(folder) == []  # the real key is absent, not half a chunk
    with pytest.raises(ChunkDataError, match=f"{KEY} is missing"):
        fresh.read(CHUNK)

    layer = image_layer(tmp_path)
    layer.write(CHUNK, np.full((32, 32, 16), 3, np.uint8))
    before = (tmp_path / "img" / KEY).read_bytes()
    die_writing(layer, 7)
    assert (tmp_path / "img" / KEY).read_bytes() == before  # the complete old chunk
    assert chunk_like_files(tmp_path / "img" / "8_8_40") == ["0-32_0-32_0-16"]
    assert (layer.read(CHUNK) == 3).all()
    assert list(objects.list_keys(layer.url, "8_8_40/")) == [KEY]


def test_a_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    layer = image_layer(tmp_path)
    layer.write(CHUNK, np.full((32, 32, 16), 3, np.uint8))
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        layer.write(CHUNK, np.full((32, 32, 16), 7, np.uint8))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "img" / "8_8_40")) == ["0-32_0-32_0-16"]
    assert (layer.read(CHUNK) == 3).all()


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)]
)
def test_files_and_folders_get_the_modes_of_a_plain_open(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        layer = image_layer(tmp_path)
        layer.write(layer.bounds(), np.zeros((64, 32, 16), np.uint8))
        ledger = Ledger(f"file://{tmp_path}/ledger")
        ledger.mark_global("ingest", "abc", {"seconds": 1.0})
        objects.put_array(f"file://{tmp_path}/work", "part/a.npy", np.arange(3))
    finally:
        os.umask(old)
    files = [
        tmp_path / "img" / "info",
        tmp_path / "img" / KEY,
        tmp_path / "ledger" / "ingest" / "abc" / "global.json",
        tmp_path / "work" / "part" / "a.npy",
    ]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
    for path in (tmp_path / "img" / "8_8_40", tmp_path / "ledger" / "ingest" / "abc"):
        assert stat.S_IMODE(path.stat().st_mode) == dir_mode, path
