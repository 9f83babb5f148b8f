"""Small chunk jobs for runner tests; pickled by value so Ray workers need not import tests/."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Chunk


@dataclass(frozen=True)
class RecordingJob:
    """Logs when each chunk starts and ends; sleeps a little so tasks could overlap."""

    log_dir: str
    seconds: float = 0.05

    def run(self, chunk: Chunk) -> dict:
        start = time.time()
        time.sleep(self.seconds)
        end = time.time()
        Path(self.log_dir, f"{chunk.id}.json").write_text(json.dumps([start, end]))
        return {"id": chunk.id}


@dataclass(frozen=True)
class FlakyJob:
    """Raises a transient error the first `failures` times each chunk is tried."""

    state_dir: str
    failures: int

    def run(self, chunk: Chunk) -> str:
        counter = Path(self.state_dir, chunk.id)
        tries = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(tries + 1))
        if tries < self.failures:
            raise ConnectionResetError("connection reset by peer (simulated)")
        return chunk.id


@dataclass(frozen=True)
class BrokenJob:
    """A bug on one chunk; the others are slow."""

    bad: str

    def run(self, chunk: Chunk) -> None:
        if chunk.id == self.bad:
            raise KeyError("a bug")
        time.sleep(0.2)


@dataclass(frozen=True)
class DyingJob:
    """Kills its worker process every time."""

    def run(self, chunk: Chunk) -> None:
        os._exit(1)


@dataclass(frozen=True)
class BadInputJob:
    """Finds bad input inside the task (as a corrupt chunk or a NaN is found)."""

    def run(self, chunk: Chunk) -> None:
        raise InputError("layer x: chunk y cannot be decoded (simulated)")


@dataclass(frozen=True)
class FailsUnlessFixedJob:
    """Raises on chunk `bad` until a file named `fixed` exists in `state_dir`; counts runs."""

    state_dir: str
    bad: str

    def run(self, chunk: Chunk) -> str:
        Path(self.state_dir, f"ran-{chunk.id}-{time.time_ns()}").touch()
        if chunk.id == self.bad and not Path(self.state_dir, "fixed").exists():
            raise ValueError(f"chunk {chunk.id} cannot be read (simulated)")
        return chunk.id


@dataclass(frozen=True)
class HangsOnceJob:
    """The first attempt at each chunk hangs (sleeps far past any timeout); later ones return."""

    state_dir: str

    def run(self, chunk: Chunk) -> str:
        seen = Path(self.state_dir, f"started-{chunk.id}")
        if not seen.exists():
            seen.touch()
            time.sleep(600)
        return chunk.id
